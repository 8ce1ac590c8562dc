"""The follow-up dispatcher: acts on callback tasks whose next_action_at has come.

Run by the one periodic due-work job (contactcenter.dispatch). Each batch is one short transaction that
claims rows with SELECT … FOR UPDATE SKIP LOCKED, so any number of dispatchers can run at once and each
row is handled by exactly one of them. SQLite (the embedded demo) has no row locks, but its transactions
are IMMEDIATE there (config/settings.py): one writer at a time, so a plain select inside the transaction
is equally safe.

What a due row means, by its state:
- scheduled, past deadline → expired, never sent or opened (the dispatcher was down, or a survey waited for
                             calling hours or a retry past its deadline); plan_note says why
- scheduled call           → open it on the worklist; next action: escalation at the deadline
- scheduled SMS survey     → open it and start the survey (start_survey); if the patient cannot be surveyed
                             after all, it becomes a call on the worklist
- open call, past deadline → escalate (once); the worklist shows escalated tasks to supervisors
- call waiting for a retry → back on the worklist, unassigned (the worklist's record_attempt set retry_at and
                             next_action_at = plans.retry_next_action(task, retry_at))
Every transition leaves next_action_at at the next moment something is due, or None, so finished rows
are never read again.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections import defaultdict

from django.db import transaction
from django.db.models import F
from django.utils import timezone

from callbacks import business_calendar, plans
from callbacks.models import OPEN_STATUSES, CallbackTask, TaskKind, TaskStatus
from callbacks.surveys import flow as survey_flow
from contactcenter.dispatch import skip_locked

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
# A survey that failed to start for an unexpected reason is tried again this much later, not every tick.
SURVEY_START_BACKOFF = dt.timedelta(minutes=15)

_SAVE_FIELDS = ["kind", "status", "plan_note", "next_action_at", "assignee", "claimed_at", "opened_at", "escalated_at"]
# The same, as attribute names, for comparing and for queryset.update().
_STATE_FIELDS = [name + "_id" if name == "assignee" else name for name in _SAVE_FIELDS]
# Stands for "next_action_at = deadline_at" in a grouped UPDATE, where each row has its own deadline.
_DEADLINE = object()


def dispatch_due_tasks(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Act on up to ``limit`` due callback tasks; returns how many rows were handled."""
    now = now or timezone.now()
    # An SMS sent by the dispatcher respects calling hours too: a survey due (or backlogged) at night waits
    # for the morning instead of waking the patient. Worked out once per run, not per row.
    sms_window_opens = business_calendar.next_calling_time(now)
    handled = 0
    while handled < limit:
        size = min(BATCH_SIZE, limit - handled)
        done = _dispatch_batch(now=now, size=size, sms_window_opens=sms_window_opens)
        handled += done
        if done < size:
            break
    if handled:
        logger.info("follow-up dispatcher handled %d task(s)", handled)
    return handled


def _dispatch_batch(*, now: dt.datetime, size: int, sms_window_opens: dt.datetime) -> int:
    with transaction.atomic():
        due = CallbackTask.objects.filter(next_action_at__lte=now).order_by("next_action_at", "id")
        due = skip_locked(due)
        tasks = list(due[:size])
        if not tasks:
            return 0
        # Rows that end up with the same changes are written with one UPDATE: at 09:00 a whole weekend's
        # first calls come due together, and a statement per row would make the last of them late.
        same_changes: dict[tuple[tuple[str, object], ...], list[int]] = defaultdict(list)
        surveys: list[CallbackTask] = []
        escalated = expired = 0
        for task in tasks:
            before = {name: getattr(task, name) for name in _STATE_FIELDS}
            if _too_late(task, now=now, sms_window_opens=sms_window_opens):
                _expire(task)
                expired += 1
            elif task.kind == TaskKind.SMS_SURVEY and task.status == TaskStatus.SCHEDULED:
                if sms_window_opens <= now:
                    task.status = TaskStatus.OPEN
                    task.opened_at = task.opened_at or now
                    task.next_action_at = None
                    surveys.append(task)
                else:
                    task.next_action_at = sms_window_opens
            elif task.kind == TaskKind.CALL and task.status in OPEN_STATUSES:
                _advance_call(task, now=now)
            else:
                # Finished, or an SMS survey already running (the survey session has its own clock).
                task.next_action_at = None
            escalated += before["escalated_at"] is None and task.escalated_at is not None
            changes = {name: getattr(task, name) for name in _STATE_FIELDS if getattr(task, name) != before[name]}
            if changes.get("next_action_at") is not None and changes["next_action_at"] == task.deadline_at:
                changes["next_action_at"] = _DEADLINE
            if changes:
                same_changes[tuple(sorted(changes.items()))].append(task.pk)
        for change, ids in same_changes.items():
            values = {name: F("deadline_at") if value is _DEADLINE else value for name, value in change}
            CallbackTask.objects.filter(pk__in=ids).update(**values)
        # After the UPDATEs: start_survey links its session to a task that is already open in the database.
        for task in surveys:
            _start_survey(task, now=now)
    if escalated:
        logger.warning("%d callback task(s) escalated: contact deadline passed", escalated)
    if expired:
        logger.warning("%d callback task(s) expired unsent: contact deadline passed before they started", expired)
    return len(tasks)


def _too_late(task: CallbackTask, *, now: dt.datetime, sms_window_opens: dt.datetime) -> bool:
    """A step never started whose contact deadline has passed, or will before its SMS may go out."""
    if task.status != TaskStatus.SCHEDULED or task.opened_at is not None or task.attempt_count:
        return False
    if task.kind == TaskKind.SMS_SURVEY:
        return task.deadline_at <= max(now, sms_window_opens)
    return task.deadline_at <= now


def _expire(task: CallbackTask) -> None:
    task.status = TaskStatus.EXPIRED
    task.plan_note = (
        plans.NOTE_DEADLINE_PASSED_UNSENT if task.kind == TaskKind.SMS_SURVEY else plans.NOTE_DEADLINE_PASSED_UNOPENED
    )
    task.next_action_at = None


def _start_survey(task: CallbackTask, *, now: dt.datetime) -> None:
    """Start the survey of a task already marked open; on failure put it back to be tried again later."""
    try:
        # A savepoint, so a survey that fails half-way leaves nothing behind but the task we retry later.
        with transaction.atomic():
            # Through the module attribute: the surveys package owns start_survey and tests may wrap it.
            session = survey_flow.start_survey(task, now=now)
    except Exception:
        logger.exception("survey for callback task %s did not start; retrying later", task.pk)
        task.status = TaskStatus.SCHEDULED
        task.opened_at = None
        task.next_action_at = now + SURVEY_START_BACKOFF
        task.save(update_fields=_SAVE_FIELDS)
        return
    if session is None:
        # No mobile number any more, opted out since planning, or no SMS inbox: a nurse calls instead.
        task.kind = TaskKind.CALL
        task.plan_note = plans.NOTE_SURVEY_NOT_STARTED
        _set_call_next_action(task, now=now, retry_at=None)
        task.save(update_fields=["kind", "plan_note", "next_action_at", "escalated_at"])


def _advance_call(task: CallbackTask, *, now: dt.datetime) -> None:
    if task.status == TaskStatus.SCHEDULED and task.opened_at is None and not task.attempt_count:
        task.status = TaskStatus.OPEN
        task.opened_at = now
        _set_call_next_action(task, now=now, retry_at=None)
        return
    # Already on the worklist at least once: this is the deadline, a retry coming due, or both.
    retry_at = task.retry_at
    if retry_at is not None and retry_at <= now:
        # The worklist hid the task until retry_at; it is back on the shared list now. A nurse who picked it
        # up in the meantime keeps it.
        if task.assignee_id is None:
            task.status = TaskStatus.OPEN
            task.claimed_at = None
        task.opened_at = task.opened_at or now
        retry_at = None
    _set_call_next_action(task, now=now, retry_at=retry_at)


def _set_call_next_action(task: CallbackTask, *, now: dt.datetime, retry_at: dt.datetime | None) -> None:
    """Escalate if the deadline has passed, then point next_action_at at whatever comes next (or nothing)."""
    if task.escalated_at is None and task.deadline_at <= now:
        task.escalated_at = now
    pending = [t for t in (retry_at, task.deadline_at if task.escalated_at is None else None) if t is not None]
    task.next_action_at = min(pending) if pending else None

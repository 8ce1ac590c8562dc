"""Turning a discharge into callback tasks: which plan applies, when each step is due, who is excluded.

Called by the intake actions (callbacks.actions.discharges) inside their transaction; the worklist calls
schedule_retry after a failed call attempt. Nothing here sends anything: tasks are rows with due times,
and the dispatcher (callbacks.dispatcher) acts on them when they come due.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

import phonenumbers
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext_noop

from callbacks.business_calendar import (
    add_business_days,
    calling_hours,
    local_at,
    local_date,
    local_end_of,
    next_business_day,
    next_calling_time,
)
from callbacks.models import (
    OPEN_STATUSES,
    CallbackTask,
    Discharge,
    DischargeStatus,
    Disposition,
    FollowUpPlan,
    PlanStep,
    StepKind,
    TaskKind,
    TaskStatus,
)
from contactcenter.models import Consent, ConsentStatus, IdentityKind, PatientIdentity

logger = logging.getLogger(__name__)

# Stored in English and translated where shown ({% translate task.plan_note %}), so one row reads right in
# either language; locale/zh_Hans has the Chinese.
NOTE_EXPIRED = gettext_noop("No follow-up contact: the patient died in hospital.")
NOTE_TRANSFERRED = gettext_noop("No survey: the patient was transferred to another facility.")
NOTE_NO_MOBILE = gettext_noop("Call instead of the SMS survey: no mobile number on file.")
NOTE_OPTED_OUT = gettext_noop("Call instead of the SMS survey: the patient opted out of SMS.")
NOTE_SURVEY_NOT_STARTED = gettext_noop("Call instead of the SMS survey: the survey could not be started.")
NOTE_PHONE_REVIEW = gettext_noop(
    "Call instead of the SMS survey: the phone number from the hospital system could not be read; check it."
)
NOTE_DEADLINE_PASSED = gettext_noop(
    "Not contacted: the contact deadline had already passed when the discharge arrived."
)
NOTE_DEADLINE_PASSED_UNSENT = gettext_noop(
    "Not contacted: the contact deadline passed before the survey could be sent."
)
NOTE_DEADLINE_PASSED_UNOPENED = gettext_noop(
    "Not contacted: the contact deadline passed before the call reached the worklist."
)

# Only rows nobody has touched may be re-planned; a task a nurse opened or a survey already sent stays.
# An expired step was never worked either: a corrected discharge time may bring it back.
_REPLANNABLE = (TaskStatus.SCHEDULED, TaskStatus.EXCLUDED, TaskStatus.EXPIRED)
_PLANNED_FIELDS = (
    "kind",
    "status",
    "plan_note",
    "due_at",
    "deadline_at",
    "next_action_at",
    "department_id",
    "patient_id",
    "max_attempts",
    "retry_interval_hours",
)
_BULK_CHUNK = 2000


def _normalize_code(code: str) -> str:
    return code.replace(".", "").replace(" ", "").upper()


@dataclass(frozen=True)
class _Rule:
    plan: FollowUpPlan
    steps: tuple[PlanStep, ...]
    prefixes: tuple[str, ...]
    dispositions: frozenset[str]

    def matches(self, *, department_id: int, codes: Sequence[str], disposition: str) -> bool:
        if self.plan.department_id is not None and self.plan.department_id != department_id:
            return False
        if self.dispositions and disposition not in self.dispositions:
            return False
        return not self.prefixes or any(code.startswith(self.prefixes) for code in codes)

    @property
    def specificity(self) -> tuple[bool, bool, bool, int, int]:
        # A diagnosis rule says more about the patient than a department rule, which says more than a
        # disposition rule; priority breaks ties among equally specific plans, then the older plan wins.
        return (
            bool(self.prefixes),
            self.plan.department_id is not None,
            bool(self.dispositions),
            self.plan.priority,
            -self.plan.pk,
        )


class _PlanBook:
    """The active plans with their steps, loaded once for a batch of discharges."""

    def __init__(self) -> None:
        rules = []
        for plan in FollowUpPlan.objects.filter(is_active=True).prefetch_related("steps"):
            rules.append(
                _Rule(
                    plan=plan,
                    steps=tuple(sorted(plan.steps.all(), key=lambda s: s.position)),
                    prefixes=tuple(_normalize_code(str(p)) for p in plan.diagnosis_prefixes if str(p).strip()),
                    dispositions=frozenset(str(d) for d in plan.dispositions if str(d).strip()),
                )
            )
        self._rules = sorted(rules, key=lambda r: r.specificity, reverse=True)

    def match(self, discharge: Discharge) -> _Rule | None:
        codes = [_normalize_code(code) for code in discharge.diagnosis_codes]
        for rule in self._rules:
            if rule.matches(department_id=discharge.department_id, codes=codes, disposition=discharge.disposition):
                return rule
        return None


def match_plan(discharge: Discharge) -> FollowUpPlan | None:
    """The most specific active plan for this discharge: diagnosis prefix > department > disposition > any."""
    rule = _PlanBook().match(discharge)
    return rule.plan if rule else None


# --- who can be surveyed by SMS --------------------------------------------------------------------


@dataclass(frozen=True)
class _Reach:
    has_mobile: bool
    sms_opted_out: bool


def _is_mobile(e164: str) -> bool:
    try:
        number = phonenumbers.parse(e164)
    except phonenumbers.NumberParseException:
        return False
    # Many regions (the US among them) cannot tell mobile from fixed line by the number alone; give those
    # the benefit of the doubt — the survey falls back to a call if the SMS cannot be delivered.
    return phonenumbers.number_type(number) in (
        phonenumbers.PhoneNumberType.MOBILE,
        phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE,
    )


def _reach_for(patient_ids: Iterable[int]) -> dict[int, _Reach]:
    """Two queries for the whole batch: mobile numbers and opt-outs."""
    ids = list(set(patient_ids))
    mobile: set[int] = set()
    opted_out: set[int] = set()
    for start in range(0, len(ids), 5000):
        chunk = ids[start : start + 5000]
        for patient_id, value in PatientIdentity.objects.filter(
            patient_id__in=chunk, kind=IdentityKind.PHONE
        ).values_list("patient_id", "value"):
            if patient_id not in mobile and _is_mobile(value):
                mobile.add(patient_id)
        # STOP / 退订 is recorded against marketing, but a satisfaction survey is not something the patient
        # asked for, and carriers block every SMS after STOP: any opt-out means no SMS survey.
        opted_out.update(
            Consent.objects.filter(patient_id__in=chunk, status=ConsentStatus.OPTED_OUT).values_list(
                "patient_id", flat=True
            )
        )
    return {pid: _Reach(has_mobile=pid in mobile, sms_opted_out=pid in opted_out) for pid in ids}


# --- when each step is due -------------------------------------------------------------------------


def due_window(*, discharged_at: dt.datetime, step: PlanStep, kind: str) -> tuple[dt.datetime, dt.datetime]:
    """(due_at, deadline_at) for one step: due at the start of calling hours on the step's day.

    Calls land on business days; an SMS may go out on a weekend (it waits in the patient's phone, not on a
    nurse's desk). The deadline is the end of the day ``deadline_days`` business days after the due day.
    """
    start, end = calling_hours()
    discharge_day = local_date(discharged_at)
    if step.business_days:
        day = add_business_days(discharge_day, step.offset_days)
    else:
        day = discharge_day + dt.timedelta(days=step.offset_days)
    is_call = kind == TaskKind.CALL
    if is_call:
        day = next_business_day(day)
    due = local_at(day, start)
    if due < discharged_at:
        # A same-day step for a discharge that arrived after calling hours began: due now, or tomorrow's window.
        if discharged_at < local_at(day, end):
            due = discharged_at
        else:
            day = add_business_days(day, 1) if is_call else day + dt.timedelta(days=1)
            due = local_at(day, start)
    deadline = local_end_of(add_business_days(local_date(due), step.deadline_days))
    return due, deadline


def _planned_tasks(discharge: Discharge, rule: _Rule, reach: _Reach, now: dt.datetime) -> list[CallbackTask]:
    """Unsaved tasks, one per step, with exclusions applied.

    A step whose contact deadline has already passed (a late or back-filled discharge) is planned as
    expired: a satisfaction SMS months after the stay helps nobody, and the worklist says why.
    """
    tasks = []
    for step in rule.steps:
        kind = TaskKind.SMS_SURVEY if step.kind == StepKind.SMS_SURVEY else TaskKind.CALL
        status = TaskStatus.SCHEDULED
        note = ""
        if discharge.disposition == Disposition.EXPIRED:
            status, note = TaskStatus.EXCLUDED, NOTE_EXPIRED
        elif kind == TaskKind.SMS_SURVEY:
            if discharge.disposition == Disposition.TRANSFERRED:
                status, note = TaskStatus.EXCLUDED, NOTE_TRANSFERRED
            elif reach.sms_opted_out:
                kind, note = TaskKind.CALL, NOTE_OPTED_OUT
            elif discharge.phone_needs_review:
                # The number the HIS sent for this stay could not be read: a nurse checks it on the call.
                kind, note = TaskKind.CALL, NOTE_PHONE_REVIEW
            elif not reach.has_mobile:
                kind, note = TaskKind.CALL, NOTE_NO_MOBILE
        due_at, deadline_at = due_window(discharged_at=discharge.discharged_at, step=step, kind=kind)
        if status == TaskStatus.SCHEDULED and deadline_at <= now:
            status, note = TaskStatus.EXPIRED, NOTE_DEADLINE_PASSED
        tasks.append(
            CallbackTask(
                discharge=discharge,
                patient_id=discharge.patient_id,
                department_id=discharge.department_id,
                step=step,
                kind=kind,
                status=status,
                plan_note=note,
                due_at=due_at,
                deadline_at=deadline_at,
                # The dispatcher opens a scheduled task at its due time; an excluded one is never touched.
                next_action_at=due_at if status == TaskStatus.SCHEDULED else None,
                max_attempts=step.max_attempts,
                retry_interval_hours=step.retry_interval_hours,
            )
        )
    return tasks


# --- the actions -----------------------------------------------------------------------------------


def schedule_follow_up(discharge: Discharge, *, now: dt.datetime | None = None) -> list[CallbackTask]:
    """Create the discharge's callback tasks from its plan; steps that already have a task are skipped.

    `now` (default: now) decides which steps are already past their contact deadline.
    """
    if discharge.status == DischargeStatus.CANCELLED:
        return []
    now = now or timezone.now()
    with transaction.atomic():
        # Serialises two intake paths planning the same discharge; the caller usually holds this lock already.
        Discharge.objects.select_for_update(of=("self",)).filter(pk=discharge.pk).first()
        rule = _PlanBook().match(discharge)
        if rule is None:
            logger.warning("discharge %s matched no active follow-up plan", discharge.pk)
            return []
        planned_steps = set(
            CallbackTask.objects.filter(discharge=discharge, step__isnull=False)
            .exclude(status=TaskStatus.CANCELLED)
            .values_list("step_id", flat=True)
        )
        reach = _reach_for([discharge.patient_id])[discharge.patient_id]
        tasks = [t for t in _planned_tasks(discharge, rule, reach, now) if t.step_id not in planned_steps]
        created = CallbackTask.objects.bulk_create(tasks)
    if created:
        logger.info("discharge %s: %d follow-up task(s) from plan %s", discharge.pk, len(created), rule.plan.pk)
    return created


def schedule_follow_up_bulk(discharges: Iterable[Discharge], *, now: dt.datetime | None = None) -> int:
    """schedule_follow_up for many discharges at once (CSV imports, backfills, the benchmark).

    Same rules and the same idempotency, with the plans, the calendar, the patients' reachability and the
    existing tasks read once per chunk instead of once per discharge. Returns how many tasks were created.
    """
    book = _PlanBook()
    now = now or timezone.now()
    created = 0
    batch: list[Discharge] = []
    for discharge in discharges:
        if discharge.status == DischargeStatus.CANCELLED:
            continue
        batch.append(discharge)
        if len(batch) >= _BULK_CHUNK:
            created += _schedule_chunk(book, batch, now)
            batch = []
    if batch:
        created += _schedule_chunk(book, batch, now)
    return created


def _schedule_chunk(book: _PlanBook, discharges: list[Discharge], now: dt.datetime) -> int:
    with transaction.atomic():
        existing = set(
            CallbackTask.objects.filter(discharge_id__in=[d.pk for d in discharges], step__isnull=False)
            .exclude(status=TaskStatus.CANCELLED)
            .values_list("discharge_id", "step_id")
        )
        reach = _reach_for(d.patient_id for d in discharges)
        tasks: list[CallbackTask] = []
        for discharge in discharges:
            rule = book.match(discharge)
            if rule is None:
                continue
            tasks.extend(
                t
                for t in _planned_tasks(discharge, rule, reach[discharge.patient_id], now)
                if (discharge.pk, t.step_id) not in existing
            )
        CallbackTask.objects.bulk_create(tasks, batch_size=1000)
    return len(tasks)


def reschedule_follow_up(discharge: Discharge, *, now: dt.datetime | None = None) -> list[CallbackTask]:
    """Re-plan after the HIS corrected a discharge (department, diagnoses, disposition, time, or a revival).

    Tasks nobody has opened yet follow the new plan and dates; opened, worked and finished tasks stay as they
    are. Returns the tasks created or changed.
    """
    if discharge.status == DischargeStatus.CANCELLED:
        cancel_follow_up(discharge)
        return []
    now = now or timezone.now()
    with transaction.atomic():
        Discharge.objects.select_for_update(of=("self",)).filter(pk=discharge.pk).first()
        rule = _PlanBook().match(discharge)
        current = list(
            CallbackTask.objects.select_for_update(of=("self",))
            .filter(discharge=discharge)
            .exclude(status=TaskStatus.CANCELLED)
        )
        untouched = {t.pk for t in current if t.status in _REPLANNABLE and t.opened_at is None and not t.attempt_count}
        by_step: dict[int | None, CallbackTask] = {t.step_id: t for t in current if t.step_id is not None}
        planned = (
            _planned_tasks(discharge, rule, _reach_for([discharge.patient_id])[discharge.patient_id], now)
            if rule
            else []
        )
        wanted_steps = {t.step_id for t in planned}

        stale = [t.pk for t in current if t.pk in untouched and t.step_id not in wanted_steps]
        if stale:
            CallbackTask.objects.filter(pk__in=stale).delete()
        changed: list[CallbackTask] = []
        new: list[CallbackTask] = []
        for task in planned:
            existing = by_step.get(task.step_id)
            if existing is None:
                new.append(task)
            elif existing.pk in untouched:
                diffs = [f for f in _PLANNED_FIELDS if getattr(existing, f) != getattr(task, f)]
                if diffs:
                    for name in diffs:
                        setattr(existing, name, getattr(task, name))
                    existing.save(update_fields=[f.removesuffix("_id") for f in diffs])
                    changed.append(existing)
        created = CallbackTask.objects.bulk_create(new)
    if stale or changed or created:
        logger.info(
            "discharge %s re-planned: %d dropped, %d moved, %d added",
            discharge.pk,
            len(stale),
            len(changed),
            len(created),
        )
    return [*changed, *created]


def cancel_follow_up(discharge: Discharge) -> int:
    """The stay was cancelled (A11/A13): every task not yet finished is cancelled and leaves the dispatcher."""
    return CallbackTask.objects.filter(discharge=discharge, status__in=OPEN_STATUSES).update(
        status=TaskStatus.CANCELLED, next_action_at=None
    )


# --- retries (called by the worklist after a failed attempt) ---------------------------------------


def schedule_retry(task: CallbackTask, now: dt.datetime) -> dt.datetime | None:
    """When to try this call again: retry_interval_hours from now, inside calling hours on a business day.

    None when the task has used its attempts (the caller marks it unreachable). The worklist's
    record_attempt counts the attempt first, then stores ``task.retry_at`` and
    ``task.next_action_at = retry_next_action(task, retry_at)``.
    """
    if task.attempt_count >= task.max_attempts:
        return None
    return next_calling_time(now + dt.timedelta(hours=task.retry_interval_hours))


def retry_next_action(task: CallbackTask, retry_at: dt.datetime) -> dt.datetime:
    """The next_action_at of a task waiting for a retry: the retry time, or the deadline if that comes first.

    The dispatcher escalates at the deadline and then points next_action_at at retry_at again, so neither
    moment is lost.
    """
    if task.escalated_at is None and task.deadline_at < retry_at:
        return task.deadline_at
    return retry_at

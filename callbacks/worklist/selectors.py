"""Reads for the nurse worklist: who may see which call task, the tabs, and the small facts rows show."""

from __future__ import annotations

import datetime as dt
from typing import Any

import phonenumbers
from django.db.models import Count, Prefetch, Q, QuerySet
from django.utils import timezone

from callbacks import business_calendar
from callbacks.models import OPEN_STATUSES, CallbackTask, TaskKind, TaskStatus
from contactcenter import access
from contactcenter.models import IdentityKind, PatientIdentity, Role

WORKLIST_ROLES = frozenset({Role.NURSE, Role.SUPERVISOR, Role.ADMIN})
VIEWS = ("due", "overdue", "mine", "upcoming", "escalated", "done")
ACTIVE = (TaskStatus.OPEN, TaskStatus.IN_PROGRESS)
# Expired: never started, its contact deadline passed (plan_note says why); listed with the finished ones.
DONE = (TaskStatus.COMPLETED, TaskStatus.UNREACHABLE, TaskStatus.CANCELLED, TaskStatus.EXPIRED)
# A deadline further out than this is shown as a date, not a count of business days.
_MAX_COUNTED_DAYS = 90


def can_use_worklist(user: access.StaffUser | None) -> bool:
    """Nurses work the list; supervisors and admins oversee it. Agents and marketers have no access."""
    return access.role_of(user) in WORKLIST_ROLES


def can_work_task(user: access.StaffUser | None, task: CallbackTask) -> bool:
    if not can_use_worklist(user) or task.kind != TaskKind.CALL:
        return False
    return access.sees_everything(user) or task.department_id in access.team_ids_of(user)


def sees_diagnoses(user: access.StaffUser | None, task: CallbackTask) -> bool:
    """Diagnoses are clinical detail: only the department's own nurses see them on the worklist."""
    return access.role_of(user) == Role.NURSE and task.department_id in access.team_ids_of(user)


def tasks_visible_to(user: access.StaffUser | None) -> QuerySet[CallbackTask]:
    """Call tasks: nurses see their teams' departments, supervisors and admins every department."""
    if not can_use_worklist(user):
        return CallbackTask.objects.none()
    calls = CallbackTask.objects.filter(kind=TaskKind.CALL)
    if access.sees_everything(user):
        return calls
    return calls.filter(department_id__in=access.team_ids_of(user))


def _waiting_for_retry(now: dt.datetime) -> Q:
    # After a no-answer the task is open again but waits for its retry time on Upcoming, so nobody rings
    # the patient back ten minutes later.
    return Q(status=TaskStatus.OPEN, retry_at__gt=now)


def view_filter(view: str, *, user: Any, now: dt.datetime) -> Q:
    waiting = _waiting_for_retry(now)
    workable = Q(status__in=ACTIVE) & ~waiting
    if view == "due":
        return workable & Q(deadline_at__gt=now)
    if view == "overdue":
        return workable & Q(deadline_at__lte=now)
    if view == "mine":
        return Q(status=TaskStatus.IN_PROGRESS, assignee_id=user.pk)
    if view == "upcoming":
        return Q(status=TaskStatus.SCHEDULED) | waiting
    if view == "escalated":
        return Q(status__in=OPEN_STATUSES, escalated_at__isnull=False)
    if view == "done":
        return Q(status__in=DONE)
    raise ValueError(f"unknown worklist view {view!r}")


def _with_related(qs: QuerySet[CallbackTask]) -> QuerySet[CallbackTask]:
    # Newest first: the number a nurse corrected, or the HIS sent last, is the one to call (as surveys do).
    phones = PatientIdentity.objects.filter(kind=IdentityKind.PHONE).order_by("-id")
    return qs.select_related("patient", "department", "discharge", "step", "assignee__agent_profile").prefetch_related(
        Prefetch("patient__identities", queryset=phones, to_attr="phone_identities")
    )


def worklist(
    *, user: Any, view: str, department_id: int | None = None, now: dt.datetime | None = None
) -> QuerySet[CallbackTask]:
    now = now or timezone.now()
    qs = tasks_visible_to(user).filter(view_filter(view, user=user, now=now))
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    # Done reads newest first; every working view puts the nearest contact deadline on top.
    order = ["-deadline_at", "-id"] if view == "done" else ["deadline_at", "id"]
    return _with_related(qs).order_by(*order)


def worklist_counts(*, user: Any, department_id: int | None = None, now: dt.datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    qs = tasks_visible_to(user)
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    aggregates = {view: Count("id", filter=view_filter(view, user=user, now=now)) for view in VIEWS}
    return {view: int(n or 0) for view, n in qs.aggregate(**aggregates).items()}


def task_for(*, user: Any, task_id: int) -> CallbackTask | None:
    """One call task the user may see (else None: the API answers 404, not 403, and reveals nothing)."""
    return (
        _with_related(tasks_visible_to(user))
        .select_related("step__call_script", "discharge__department")
        .filter(pk=task_id)
        .first()
    )


def task_after_change(task_id: int) -> CallbackTask:
    """A task the caller just changed, with what its row shows, whatever it became (a corrected phone can
    turn a call back into an SMS survey, which the worklist no longer lists)."""
    return _with_related(CallbackTask.objects.all()).get(pk=task_id)


def script_questions(task: CallbackTask) -> list[dict[str, Any]]:
    """The step's call-script questions; a task without a script (or a malformed one) asks nothing."""
    step = task.step
    script = step.call_script if step is not None else None
    if script is None or not isinstance(script.questions, list):
        return []
    return [q for q in script.questions if isinstance(q, dict) and q.get("key")]


def choice_values(question: dict[str, Any]) -> list[str]:
    """A choice question lists plain strings or {"value": …, "label_en": …, "label_zh": …}."""
    values = []
    for item in question.get("choices") or []:
        if isinstance(item, dict):
            if item.get("value") is not None:
                values.append(str(item["value"]))
        else:
            values.append(str(item))
    return values


# --- Small facts for rows -------------------------------------------------------------------------------


def phone_of(task: CallbackTask) -> str:
    phones = getattr(task.patient, "phone_identities", None)
    if phones is None:
        phones = list(task.patient.identities.filter(kind=IdentityKind.PHONE).order_by("-id"))
    return phones[0].value if phones else ""


def mask_phone(e164: str) -> str:
    """+8613800138000 → 138****8000: enough to tell patients apart on a shared screen, not to dial."""
    if not e164:
        return ""
    try:
        national = str(phonenumbers.parse(e164, None).national_number)
    except phonenumbers.NumberParseException:
        national = "".join(ch for ch in e164 if ch.isdigit())
    if len(national) <= 4:
        return "*" * len(national)
    keep_head = 3 if len(national) >= 10 else max(0, len(national) - 7)
    return national[:keep_head] + "****" + national[-4:]


def business_days_until(deadline: dt.datetime, now: dt.datetime) -> int | None:
    """Business days from today to the deadline's day (0: due today; negative when the day has passed).

    None when the deadline is further away than is worth counting.
    """
    today = business_calendar.local_date(now)
    day = business_calendar.local_date(deadline)
    if day == today:
        return 0
    step = 1 if day > today else -1
    if abs((day - today).days) > _MAX_COUNTED_DAYS:
        return None
    count = 0
    current = today
    while current != day:
        current += dt.timedelta(days=step)
        if business_calendar.is_business_day(current):
            count += step
    return count


def waiting_for_retry(task: CallbackTask, now: dt.datetime) -> bool:
    return task.status == TaskStatus.OPEN and task.retry_at is not None and task.retry_at > now

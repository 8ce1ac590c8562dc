"""Service recovery (服务补救): opening a case, the 四落实 transitions, and SLA escalation.

A case moves received → verified → improved → closed, one step at a time, and every change leaves a
CaseEvent (who, from, to, note). Each transition locks the case row first, so two staff pressing
"Verify" at once produce one transition and one clear error, never two events.

Who may act (enforced by the API in callbacks/cases/api.py, through callbacks/cases/selectors.py):
- admins and supervisors are the patient-relations team: they see every case and may do everything
  (create, assign, verify, record improvement, close, reopen, record first contact, add notes);
- nurses see the cases of their teams' departments and may record the first contact, add notes and
  record a case they heard on a call for one of those departments; verifying, improving, closing,
  assigning and reopening stay with patient relations;
- agents and marketers have no access; a case outside a nurse's departments does not exist for her.
These functions themselves trust their caller on permissions and check only the case's state.
"""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from callbacks.models import (
    Accountability,
    CallbackTask,
    CaseCategory,
    CaseEvent,
    CaseStatus,
    Discharge,
    ServiceCase,
    SurveySession,
)
from contactcenter.dispatch import skip_locked
from contactcenter.models import Patient, Team

logger = logging.getLogger(__name__)

NOTE_MAX = 4000
STAFF_NAME_MAX = 120


@transaction.atomic
def open_case(
    *,
    patient: Patient,
    source: str,
    summary: str,
    discharge: Discharge | None = None,
    survey_session: SurveySession | None = None,
    task: CallbackTask | None = None,
    actor: User | None = None,
    now: dt.datetime | None = None,
) -> ServiceCase:
    """Open a case for patient relations with its first-contact SLA; one per survey session."""
    now = now or timezone.now()
    if survey_session is not None:
        existing = ServiceCase.objects.filter(survey_session=survey_session).first()
        if existing is not None:
            return existing
    case = ServiceCase.objects.create(
        patient=patient,
        source=source,
        summary=summary[:2000],
        discharge=discharge,
        survey_session=survey_session,
        task=task,
        department_id=discharge.department_id if discharge else None,
        first_contact_due_at=now + dt.timedelta(hours=settings.SERVICE_CASE_FIRST_CONTACT_HOURS),
        created_at=now,
    )
    CaseEvent.objects.create(case=case, actor=actor, kind="opened", to_status=case.status, at=now)
    logger.info("service case %s opened from %s for patient %s", case.pk, source, patient.pk)
    return case


@transaction.atomic
def open_manual_case(
    *,
    patient: Patient,
    summary: str,
    category: str,
    actor: User,
    department: Team | None = None,
    discharge: Discharge | None = None,
    now: dt.datetime | None = None,
) -> ServiceCase:
    """A complaint staff heard directly (phone, ward visit): a case like any other, already classified."""
    errors: dict[str, list[str]] = {}
    summary = (summary or "").strip()
    if not summary:
        errors["summary"] = ["Describe what the patient is unhappy about."]
    if category not in CaseCategory.values:
        errors["category"] = [f"Choose one of: {', '.join(CaseCategory.values)}."]
    if discharge is not None and discharge.patient_id != patient.pk:
        errors["discharge_id"] = ["This discharge belongs to another patient."]
    if errors:
        raise ValidationError(errors)
    case = open_case(patient=patient, source="manual", summary=summary, discharge=discharge, actor=actor, now=now)
    changed = []
    if category != case.category:
        case.category = category
        changed.append("category")
    if department is not None and case.department_id != department.pk:
        case.department = department
        changed.append("department")
    if changed:
        case.save(update_fields=changed)
    return case


# --- Transitions ----------------------------------------------------------------------------------


def _locked(case: ServiceCase) -> ServiceCase:
    # of=("self",): lock the case row only, not the patient or team rows the query may join.
    return ServiceCase.objects.select_for_update(of=("self",)).get(pk=case.pk)


def _require_status(case: ServiceCase, allowed: tuple[str, ...], message: str) -> None:
    if case.status not in allowed:
        raise ValidationError({"status": [message]})


def _require_open(case: ServiceCase, message: str = "This case is closed. Reopen it first.") -> None:
    _require_status(case, (CaseStatus.RECEIVED, CaseStatus.VERIFIED, CaseStatus.IMPROVED), message)


def _text(value: str | None, field: str, *, required: str | None = None, limit: int = NOTE_MAX) -> str:
    """Trimmed free text; a blank required field or an over-long one is a field error."""
    text = (value or "").strip()
    if required and not text:
        raise ValidationError({field: [required]})
    if len(text) > limit:
        raise ValidationError({field: [f"Keep this under {limit} characters."]})
    if "\x00" in text:
        raise ValidationError({field: ["Null characters are not allowed."]})
    return text


def _move(
    case: ServiceCase, actor: User | None, to_status: str, note: str, now: dt.datetime, fields: list[str]
) -> ServiceCase:
    from_status = case.status
    case.status = to_status
    case.save(update_fields=[*fields, "status"])
    CaseEvent.objects.create(
        case=case, actor=actor, kind="status", from_status=from_status, to_status=to_status, note=note, at=now
    )
    logger.info("service case %s %s → %s", case.pk, from_status, to_status)
    return case


@transaction.atomic
def verify_case(
    *,
    case: ServiceCase,
    actor: User,
    cause: str,
    category: str,
    accountable_department: Team | None = None,
    accountable_staff: str = "",
    now: dt.datetime | None = None,
) -> ServiceCase:
    """核实: the complaint is checked; the cause and who was accountable are written down."""
    now = now or timezone.now()
    errors: dict[str, list[str]] = {}
    try:
        cause = _text(cause, "cause", required="Write down what caused the complaint.")
    except ValidationError as error:
        errors.update(error.message_dict)
    if category not in CaseCategory.values or category == CaseCategory.UNCLASSIFIED:
        choices = [c for c in CaseCategory.values if c != CaseCategory.UNCLASSIFIED]
        errors["category"] = [f"Choose a category: {', '.join(choices)}."]
    try:
        accountable_staff = _text(accountable_staff, "accountable_staff", limit=STAFF_NAME_MAX)
    except ValidationError as error:
        errors.update(error.message_dict)
    if errors:
        raise ValidationError(errors)
    case = _locked(case)
    _require_status(case, (CaseStatus.RECEIVED,), _already_past(case, "verified"))
    case.cause = cause
    case.category = category
    case.accountable_department = accountable_department
    case.accountable_staff = accountable_staff
    return _move(
        case,
        actor,
        CaseStatus.VERIFIED,
        cause,
        now,
        ["cause", "category", "accountable_department", "accountable_staff"],
    )


@transaction.atomic
def record_improvement(
    *, case: ServiceCase, actor: User, action_taken: str, now: dt.datetime | None = None
) -> ServiceCase:
    """整改: what was done about it (apology, process change, refund…)."""
    now = now or timezone.now()
    action_taken = _text(action_taken, "action_taken", required="Describe the action taken.")
    case = _locked(case)
    if case.status == CaseStatus.RECEIVED:
        raise ValidationError({"status": ["A case must be verified before improvement is recorded."]})
    _require_status(case, (CaseStatus.VERIFIED,), _already_past(case, "improved"))
    case.action_taken = action_taken
    return _move(case, actor, CaseStatus.IMPROVED, action_taken, now, ["action_taken"])


@transaction.atomic
def close_case(
    *, case: ServiceCase, actor: User, accountability: str, note: str = "", now: dt.datetime | None = None
) -> ServiceCase:
    """奖惩: the case ends with reward, discipline, training or nothing decided for the staff involved."""
    now = now or timezone.now()
    if accountability not in Accountability.values:
        raise ValidationError(
            {"accountability": [f"Choose the outcome for staff: {', '.join(Accountability.values)}."]}
        )
    note = _text(note, "note")
    case = _locked(case)
    if case.status in (CaseStatus.RECEIVED, CaseStatus.VERIFIED):
        raise ValidationError({"status": ["Record the improvement before closing the case."]})
    _require_status(case, (CaseStatus.IMPROVED,), "This case is already closed.")
    case.accountability = accountability
    case.closed_at = now
    return _move(case, actor, CaseStatus.CLOSED, note, now, ["accountability", "closed_at"])


@transaction.atomic
def reopen_case(*, case: ServiceCase, actor: User, note: str, now: dt.datetime | None = None) -> ServiceCase:
    """The patient is still unhappy: back to received. Cause and action stay in the history."""
    now = now or timezone.now()
    note = _text(note, "note", required="Say why the case is reopened.")
    case = _locked(case)
    _require_status(case, (CaseStatus.CLOSED,), "Only a closed case can be reopened.")
    case.accountability = ""
    case.closed_at = None
    return _move(case, actor, CaseStatus.RECEIVED, note, now, ["accountability", "closed_at"])


def _already_past(case: ServiceCase, step: str) -> str:
    if case.status == CaseStatus.CLOSED:
        return "This case is closed. Reopen it first."
    return f"This case is {case.get_status_display().lower()}; it cannot be {step} again."


@transaction.atomic
def record_first_contact(
    *, case: ServiceCase, actor: User, note: str = "", now: dt.datetime | None = None
) -> ServiceCase:
    """Someone spoke to the patient: the first-contact SLA clock stops (escalation no longer applies)."""
    now = now or timezone.now()
    note = _text(note, "note")
    case = _locked(case)
    _require_open(case)
    if case.first_contacted_at is not None:
        raise ValidationError({"first_contacted_at": ["First contact is already recorded for this case."]})
    case.first_contacted_at = now
    case.save(update_fields=["first_contacted_at"])
    CaseEvent.objects.create(case=case, actor=actor, kind="contacted", note=note, at=now)
    logger.info("service case %s first contact recorded", case.pk)
    return case


@transaction.atomic
def assign_case(
    *, case: ServiceCase, assignee: User | None, actor: User, now: dt.datetime | None = None
) -> ServiceCase:
    """Hand the case to one member of patient relations (or back to the team with None)."""
    now = now or timezone.now()
    case = _locked(case)
    _require_open(case)
    if case.assignee_id == (assignee.pk if assignee else None):
        return case
    case.assignee = assignee
    case.save(update_fields=["assignee"])
    # The history keeps the name as it was then; an empty note means "back to the team".
    CaseEvent.objects.create(case=case, actor=actor, kind="assigned", note=_display_name(assignee), at=now)
    return case


def _display_name(user: User | None) -> str:
    if user is None:
        return ""
    profile = getattr(user, "agent_profile", None)
    return (profile.display_name if profile else "") or user.get_username()


@transaction.atomic
def add_case_note(*, case: ServiceCase, actor: User, note: str, now: dt.datetime | None = None) -> CaseEvent:
    now = now or timezone.now()
    note = _text(note, "note", required="Write something first.")
    case = _locked(case)
    return CaseEvent.objects.create(case=case, actor=actor, kind="note", note=note, at=now)


# --- SLA ------------------------------------------------------------------------------------------


def escalate_overdue_cases(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Mark cases nobody contacted within the SLA as escalated, once each; returns how many.

    Run by the periodic due-work job. On PostgreSQL two dispatchers skip each other's claimed rows;
    SQLite (the embedded demo) has one writer at a time and no row locks, so a plain select is safe.
    Supervisors see escalated cases through the "Escalated" filter and badge on the cases page.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = (
            ServiceCase.objects.filter(
                first_contacted_at__isnull=True, escalated_at__isnull=True, first_contact_due_at__lte=now
            )
            .exclude(status=CaseStatus.CLOSED)
            .order_by("first_contact_due_at", "id")
        )
        due = skip_locked(due)
        ids = list(due.values_list("id", flat=True)[:limit])
        if not ids:
            return 0
        ServiceCase.objects.filter(pk__in=ids).update(escalated_at=now)
        CaseEvent.objects.bulk_create([CaseEvent(case_id=case_id, kind="escalated", at=now) for case_id in ids])
    logger.warning("escalated %d service case(s) past their first-contact deadline", len(ids))
    return len(ids)

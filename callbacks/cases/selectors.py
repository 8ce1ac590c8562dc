"""Reads for the service-recovery pages and API, and who may see or work a case.

The policy is described in callbacks/actions/recovery.py: admins and supervisors (patient relations)
see and work every case; nurses see their teams' departments' cases and may record first contact,
add notes and record a new case; nobody else sees cases.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import Count, F, Q, QuerySet
from django.utils import timezone

from callbacks.models import CaseStatus, QuestionKind, ServiceCase, SurveyAnswer
from contactcenter import access
from contactcenter.access import StaffUser
from contactcenter.api.shapes import staff_name
from contactcenter.models import Role, Team

CASE_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.NURSE})
OPEN_CASE_STATUSES = (CaseStatus.RECEIVED, CaseStatus.VERIFIED, CaseStatus.IMPROVED)
# What a nurse may do on a case she can see; patient relations may do everything.
NURSE_STEPS = frozenset({"contact", "note"})
ALL_STEPS = ("verify", "improve", "close", "reopen", "contact", "assign", "note")


def can_use_cases(user: StaffUser | None) -> bool:
    return access.role_of(user) in CASE_ROLES


def manages_cases(user: StaffUser | None) -> bool:
    """Patient relations: admins and supervisors."""
    return access.sees_everything(user)


def cases_visible_to(user: StaffUser | None) -> QuerySet[ServiceCase]:
    if not can_use_cases(user):
        return ServiceCase.objects.none()
    if manages_cases(user):
        return ServiceCase.objects.all()
    return ServiceCase.objects.filter(department_id__in=access.team_ids_of(user))


def case_for(*, user: StaffUser | None, case_id: int) -> ServiceCase | None:
    return (
        cases_visible_to(user)
        .select_related("patient", "department", "assignee__agent_profile", "discharge__department")
        .filter(pk=case_id)
        .first()
    )


def departments_for_new_case(user: StaffUser | None) -> QuerySet[Team]:
    if manages_cases(user):
        return Team.objects.all()
    return Team.objects.filter(id__in=access.team_ids_of(user))


def allowed_steps(user: StaffUser | None, case: ServiceCase) -> dict[str, bool]:
    """Which buttons to offer; the actions still check the case's state when pressed."""
    is_open = case.status in OPEN_CASE_STATUSES
    by_state = {
        "verify": case.status == CaseStatus.RECEIVED,
        "improve": case.status == CaseStatus.VERIFIED,
        "close": case.status == CaseStatus.IMPROVED,
        "reopen": case.status == CaseStatus.CLOSED,
        "contact": is_open and case.first_contacted_at is None,
        "assign": is_open,
        "note": True,
    }
    manager = manages_cases(user)
    return {step: ok and (manager or step in NURSE_STEPS) for step, ok in by_state.items()}


def may(user: StaffUser | None, step: str) -> bool:
    return manages_cases(user) or (can_use_cases(user) and step in NURSE_STEPS)


def case_list(
    *,
    user: StaffUser | None,
    status: str = "",
    category: str = "",
    department_id: int | None = None,
    escalated: bool | None = None,
    overdue: bool | None = None,
    assignee_id: int | None = None,
    patient_id: int | None = None,
    now: dt.datetime | None = None,
) -> QuerySet[ServiceCase]:
    now = now or timezone.now()
    qs = cases_visible_to(user).select_related("patient", "department", "assignee__agent_profile")
    if status == "open":
        qs = qs.filter(status__in=OPEN_CASE_STATUSES)
    elif status:
        qs = qs.filter(status=status)
    if category:
        qs = qs.filter(category=category)
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    if escalated is not None:
        qs = qs.filter(escalated_at__isnull=not escalated)
    if overdue is not None:
        breached = _breached(now)
        qs = qs.filter(breached) if overdue else qs.exclude(breached)
    if assignee_id is not None:
        qs = qs.filter(assignee_id=assignee_id)
    if patient_id is not None:
        qs = qs.filter(patient_id=patient_id)
    # Open cases first; among them the ones nobody has contacted yet, soonest (or most overdue) first.
    return qs.order_by(
        F("closed_at").desc(nulls_first=True),
        F("first_contacted_at").asc(nulls_first=True),
        "first_contact_due_at",
        "-id",
    )


def _breached(now: dt.datetime) -> Q:
    return Q(first_contacted_at__isnull=True, first_contact_due_at__lte=now, status__in=OPEN_CASE_STATUSES)


def case_counts(*, user: StaffUser | None, now: dt.datetime | None = None) -> dict[str, int]:
    now = now or timezone.now()
    qs = cases_visible_to(user)
    counts = qs.aggregate(
        open=Count("id", filter=Q(status__in=OPEN_CASE_STATUSES)),
        received=Count("id", filter=Q(status=CaseStatus.RECEIVED)),
        verified=Count("id", filter=Q(status=CaseStatus.VERIFIED)),
        improved=Count("id", filter=Q(status=CaseStatus.IMPROVED)),
        closed=Count("id", filter=Q(status=CaseStatus.CLOSED)),
        escalated=Count("id", filter=Q(escalated_at__isnull=False, status__in=OPEN_CASE_STATUSES)),
        overdue=Count("id", filter=_breached(now)),
        all=Count("id"),
    )
    return {key: int(value or 0) for key, value in counts.items()}


# --- Shapes (documented in callbacks/cases/shapes.py) ---------------------------------------------


def _team(team: Team | None) -> dict[str, Any] | None:
    if team is None:
        return None
    return {"id": team.pk, "code": team.code, "name": team.name, "name_zh": team.name_zh}


def _staff(user: Any) -> dict[str, Any] | None:
    return None if user is None else {"id": user.pk, "name": staff_name(user)}


def case_summary(case: ServiceCase, *, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    is_open = case.status in OPEN_CASE_STATUSES
    return {
        "id": case.pk,
        "status": case.status,
        "category": case.category,
        "source": case.source,
        "summary": case.summary,
        "patient": {"id": case.patient_id, "name": case.patient.name},
        "department": _team(case.department),
        "assignee": _staff(case.assignee),
        "created_at": case.created_at,
        "first_contact_due_at": case.first_contact_due_at,
        "first_contacted_at": case.first_contacted_at,
        "escalated_at": case.escalated_at,
        "overdue": is_open and case.first_contacted_at is None and case.first_contact_due_at <= now,
        "closed_at": case.closed_at,
    }


def _flagged(answer: SurveyAnswer) -> bool:
    """The answers that read as dissatisfaction; a display hint, the survey flow decides what opens a case."""
    kind = answer.question.kind
    if kind == QuestionKind.FREE_TEXT:
        return answer.negative
    if answer.value is None:
        return False
    if kind == QuestionKind.RATING:
        return answer.value <= answer.session.survey.low_score_threshold
    if kind == QuestionKind.NPS:
        return answer.value <= 6
    if kind == QuestionKind.YES_NO:
        return answer.value == 0
    return False


def _trigger(case: ServiceCase) -> dict[str, Any] | None:
    session = case.survey_session
    if session is None:
        return None
    answers = (
        SurveyAnswer.objects.filter(session=session)
        .select_related("question", "session__survey")
        .order_by("question__position")
    )
    return {
        "survey": session.survey.name,
        "survey_zh": session.survey.name_zh,
        "session_id": session.pk,
        "answers": [
            {
                "question_key": a.question.key,
                "question_kind": a.question.kind,
                "prompt_en": a.question.prompt_en,
                "prompt_zh": a.question.prompt_zh,
                "value": a.value,
                "raw_text": a.raw_text,
                "text": a.text,
                "negative": a.negative,
                "flagged": _flagged(a),
                "answered_at": a.answered_at,
            }
            for a in answers
        ],
    }


def case_detail(case: ServiceCase, *, user: StaffUser | None, now: dt.datetime | None = None) -> dict[str, Any]:
    now = now or timezone.now()
    discharge = case.discharge
    history = case.history.select_related("actor__agent_profile").order_by("at", "id")
    task = case.task
    return {
        **case_summary(case, now=now),
        "cause": case.cause,
        "action_taken": case.action_taken,
        "accountable_department": _team(case.accountable_department),
        "accountable_staff": case.accountable_staff,
        "accountability": case.accountability,
        "discharge": None
        if discharge is None
        else {
            "id": discharge.pk,
            "visit_number": discharge.visit_number,
            "department": _team(discharge.department),
            "ward": discharge.ward,
            "attending_doctor": discharge.attending_doctor,
            "primary_nurse": discharge.primary_nurse,
            "disposition": discharge.disposition,
            "discharged_at": discharge.discharged_at,
        },
        "task": None
        if task is None
        else {"id": task.pk, "kind": task.kind, "status": task.status, "outcome": task.outcome},
        "trigger": _trigger(case),
        "history": [
            {
                "id": e.pk,
                "kind": e.kind,
                "actor": _staff(e.actor),
                "from_status": e.from_status,
                "to_status": e.to_status,
                "note": e.note,
                "at": e.at,
            }
            for e in history
        ],
        "allowed": allowed_steps(user, case),
    }

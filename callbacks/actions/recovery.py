"""Service recovery (服务补救): opening a case. The cases helper adds transitions and escalation here."""

from __future__ import annotations

import datetime as dt
import logging

from django.conf import settings
from django.contrib.auth.models import User
from django.db import transaction
from django.utils import timezone

from callbacks.models import CallbackTask, CaseEvent, Discharge, ServiceCase, SurveySession
from contactcenter.models import Patient

logger = logging.getLogger(__name__)


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


def escalate_overdue_cases(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """PLACEHOLDER owned by the cases helper."""
    return 0

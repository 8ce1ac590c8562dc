"""Discharge intake: every HIS path (REST, HL7, CSV, FHIR) ends in record_discharge, idempotent on the visit number."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from callbacks import plans
from callbacks.models import Discharge, DischargeStatus, Disposition, IntakeMessage, IntakeSource, SurveySession
from callbacks.models.surveys import SessionStatus
from contactcenter.actions.patients import find_patient_by_identity, resolve_patient
from contactcenter.actions.visits import record_visit
from contactcenter.identities import normalize_mrn, normalize_phone
from contactcenter.models import Gender, IdentityKind, Patient, PatientIdentity, Team, VisitKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demographics:
    """What the HIS says about the person; empty values leave what we have alone."""

    mrn: str
    name: str = ""
    birth_date: dt.date | None = None
    gender: str = ""  # a Gender value
    phone: str = ""  # as the HIS wrote it; normalized here


@dataclass(frozen=True)
class DischargeRecord:
    """One discharge, the same shape whichever path it came in by."""

    visit_number: str
    demographics: Demographics
    department_code: str
    discharged_at: dt.datetime
    source: str  # an IntakeSource value
    department_name: str = ""
    ward: str = ""
    attending_doctor: str = ""
    primary_nurse: str = ""
    disposition: str = Disposition.HOME
    disposition_code: str = ""
    admitted_at: dt.datetime | None = None
    diagnoses: list[dict[str, str]] = field(default_factory=list)


@dataclass(frozen=True)
class DischargeResult:
    discharge: Discharge
    created: bool
    # Fields whose values changed on a resend; empty for a new or identical discharge.
    changed: list[str]


_PLAN_FIELDS = ("department_id", "disposition", "diagnoses", "discharged_at")


def check_record(record: DischargeRecord) -> dict[str, list[str]]:
    """Field errors a person can act on, before anything is written. Empty when the record is good."""
    errors: dict[str, list[str]] = {}
    if not record.visit_number.strip():
        errors["visit_number"] = [_("The visit number is required.")]
    elif len(record.visit_number.strip()) > 60:
        errors["visit_number"] = [_("The visit number can be at most 60 characters.")]
    try:
        normalize_mrn(record.demographics.mrn)
    except ValidationError as exc:
        errors["mrn"] = exc.messages
    if record.demographics.phone:
        try:
            normalize_phone(record.demographics.phone)
        except ValidationError as exc:
            errors["phone"] = exc.messages
    if record.demographics.gender and record.demographics.gender not in Gender.values:
        errors["gender"] = [_("Unknown sex “%(value)s”.") % {"value": record.demographics.gender[:20]}]
    if not record.department_code.strip():
        errors["department"] = [_("The department is required.")]
    if timezone.is_naive(record.discharged_at):
        errors["discharged_at"] = [_("The discharge time needs a time zone.")]
    elif record.discharged_at > timezone.now() + dt.timedelta(days=1):
        errors["discharged_at"] = [_("The discharge time is in the future.")]
    if record.disposition not in Disposition.values:
        errors["disposition"] = [_("Unknown disposition “%(value)s”.") % {"value": record.disposition[:20]}]
    if record.source not in IntakeSource.values:
        errors["source"] = [_("Unknown source.")]
    return errors


def department_for(code: str, name: str = "") -> Team:
    """The HIS is the source of truth for departments: a new service code becomes a new team."""
    slug = code.strip().lower()[:40]
    team, _created = Team.objects.get_or_create(code=slug, defaults={"name": (name or code).strip()[:120]})
    return team


def _patient_for(demographics: Demographics) -> Patient:
    mrn = normalize_mrn(demographics.mrn)
    also: tuple[tuple[str, str], ...] = ()
    if demographics.phone:
        also = ((IdentityKind.PHONE, normalize_phone(demographics.phone)),)
    patient = resolve_patient(kind=IdentityKind.MRN, value=mrn, name=demographics.name, also_known_as=also).patient
    _apply_demographics(patient, demographics)
    return patient


def _apply_demographics(patient: Patient, demographics: Demographics) -> list[str]:
    changed = []
    for name, value in (
        ("name", demographics.name[:200]),
        ("birth_date", demographics.birth_date),
        ("gender", demographics.gender),
    ):
        if value and getattr(patient, name) != value:
            setattr(patient, name, value)
            changed.append(name)
    if changed:
        patient.save(update_fields=[*changed, "updated_at"])
    if demographics.phone:
        phone = normalize_phone(demographics.phone)
        # A number already on someone else's record stays theirs: a phone never moves a person.
        if not PatientIdentity.objects.filter(kind=IdentityKind.PHONE, value=phone).exists():
            try:
                with transaction.atomic():
                    PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=phone)
                    changed.append("phone")
            except IntegrityError:
                pass
    return changed


def record_discharge(record: DischargeRecord) -> DischargeResult:
    """Store or update a discharge and (re)plan its follow-up. Raises ValidationError, storing nothing."""
    errors = check_record(record)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            return _record(record)
    except IntegrityError:
        # Two deliveries of the same new discharge raced on the visit number; the winner's row is
        # committed now, so this one becomes an update of it.
        with transaction.atomic():
            return _record(record)


def _record(record: DischargeRecord) -> DischargeResult:
    visit_number = record.visit_number.strip()
    patient = _patient_for(record.demographics)
    department = department_for(record.department_code, record.department_name)
    visit = record_visit(
        patient=patient,
        visit_number=visit_number,
        department=department,
        kind=VisitKind.INPATIENT,
        admitted_at=record.admitted_at or record.discharged_at,
        discharged_at=record.discharged_at,
        doctor=record.attending_doctor[:120],
        nurse=record.primary_nurse[:120],
        ward=record.ward[:60],
    )
    values: dict[str, Any] = {
        "patient_id": patient.pk,
        "department_id": department.pk,
        "ward": record.ward[:60],
        "attending_doctor": record.attending_doctor[:120],
        "primary_nurse": record.primary_nurse[:120],
        "disposition": record.disposition,
        "disposition_code": record.disposition_code[:40],
        "discharged_at": record.discharged_at,
        "diagnoses": record.diagnoses,
    }
    discharge = Discharge.objects.select_for_update(of=("self",)).filter(visit_number=visit_number).first()
    if discharge is None:
        discharge = Discharge.objects.create(visit=visit, visit_number=visit_number, source=record.source, **values)
        plans.schedule_follow_up(discharge)
        logger.info("discharge %s recorded from %s for patient %s", discharge.pk, record.source, patient.pk)
        return DischargeResult(discharge, created=True, changed=[])
    changed = [name for name, value in values.items() if getattr(discharge, name) != value]
    revived = discharge.status == DischargeStatus.CANCELLED
    for name in changed:
        setattr(discharge, name, values[name])
    if revived:
        # A discharge sent again after a cancel (A13 then a corrected A03) is live again.
        discharge.status = DischargeStatus.ACTIVE
        discharge.cancelled_at = None
        discharge.cancel_reason = ""
        changed.append("status")
    if changed:
        discharge.save()
    if revived or any(name in _PLAN_FIELDS for name in changed):
        plans.reschedule_follow_up(discharge)
    logger.info("discharge %s resent from %s, changed %s", discharge.pk, record.source, ",".join(changed) or "nothing")
    return DischargeResult(discharge, created=False, changed=changed)


def update_demographics(demographics: Demographics) -> Patient | None:
    """ADT^A08: refresh name, birth date, sex and phone of a patient we know by MRN; None if we don't."""
    mrn = normalize_mrn(demographics.mrn)
    if demographics.phone:
        normalize_phone(demographics.phone)
    with transaction.atomic():
        patient = find_patient_by_identity(kind=IdentityKind.MRN, value=mrn)
        if patient is None:
            return None
        _apply_demographics(patient, demographics)
        return patient


@transaction.atomic
def cancel_discharge(*, visit_number: str, reason: str) -> Discharge | None:
    """ADT^A11/A13: the stay is cancelled, so every follow-up not yet done is cancelled. None if unknown."""
    discharge = Discharge.objects.select_for_update(of=("self",)).filter(visit_number=visit_number.strip()).first()
    if discharge is None:
        return None
    if discharge.status != DischargeStatus.CANCELLED:
        discharge.status = DischargeStatus.CANCELLED
        discharge.cancelled_at = timezone.now()
        discharge.cancel_reason = reason[:200]
        discharge.save(update_fields=["status", "cancelled_at", "cancel_reason", "updated_at"])
    plans.cancel_follow_up(discharge)
    SurveySession.objects.filter(discharge=discharge, status=SessionStatus.ACTIVE).update(
        status=SessionStatus.CANCELLED, closed_at=timezone.now(), next_action_at=None
    )
    logger.info("discharge %s cancelled", discharge.pk)
    return discharge


def record_intake_message(
    *,
    source: str,
    message_type: str,
    outcome: str,
    control_id: str = "",
    visit_number: str = "",
    error: str = "",
    raw: str = "",
    discharge: Discharge | None = None,
) -> IntakeMessage:
    """Keep what the HIS sent and what we answered; the trail IT reads when a discharge seems missing."""

    def text(value: str, limit: int | None = None) -> str:
        # PostgreSQL text cannot hold NUL; a malformed message is still worth keeping.
        return value.replace("\x00", "\ufffd")[:limit]

    return IntakeMessage.objects.create(
        source=source,
        control_id=text(control_id, 100),
        message_type=text(message_type, 20),
        visit_number=text(visit_number, 60),
        outcome=outcome,
        error=text(error),
        raw=text(raw),
        discharge=discharge,
    )

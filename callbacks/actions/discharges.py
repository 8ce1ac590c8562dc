"""Discharge intake: every HIS path (REST, HL7, CSV, FHIR) ends in record_discharge, idempotent on the visit number."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from callbacks import plans
from callbacks.actions.departments import department_for_code, unmapped_department
from callbacks.models import Discharge, DischargeStatus, Disposition, IntakeMessage, IntakeSource, SurveySession
from callbacks.models.surveys import SessionStatus
from callbacks.phones import read_phone
from contactcenter.actions.patients import find_patient_by_identity, resolve_patient
from contactcenter.actions.visits import record_visit
from contactcenter.boundary import clean_text
from contactcenter.identities import normalize_mrn
from contactcenter.models import Gender, IdentityKind, Patient, PatientIdentity, Team, VisitKind

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Demographics:
    """What the HIS says about the person; empty values leave what we have alone."""

    mrn: str
    name: str = ""
    birth_date: dt.date | None = None
    gender: str = ""  # a Gender value
    phone: str = ""  # as the HIS wrote it; read here (callbacks.phones), never a reason to refuse a discharge
    # ISO 3166-1 alpha-2 of the patient's address: where a number written without its country code is read.
    phone_region: str = ""


@dataclass(frozen=True)
class DischargeRecord:
    """One discharge, the same shape whichever path it came in by.

    None means the message did not carry the field: a new discharge takes the default, a known one keeps
    what it has (a FHIR Encounter without diagnoses must not wipe the ones the REST call sent). An empty
    string or list is a value: the HIS cleared it.
    """

    visit_number: str
    demographics: Demographics
    discharged_at: dt.datetime
    source: str  # an IntakeSource value
    # The HIS's own code and code system (callbacks.actions.departments reads it); None: not sent.
    department_code: str | None = None
    department_system: str = ""
    department_name: str | None = None
    ward: str | None = None
    attending_doctor: str | None = None
    primary_nurse: str | None = None
    disposition: str | None = None  # a Disposition value
    disposition_code: str | None = None
    admitted_at: dt.datetime | None = None
    diagnoses: list[dict[str, str]] | None = None


@dataclass(frozen=True)
class DischargeResult:
    discharge: Discharge
    created: bool
    # Fields whose values changed on a resend; empty for a new or identical discharge.
    changed: list[str]


_PLAN_FIELDS = ("department_id", "disposition", "diagnoses", "discharged_at", "phone_needs_review")
# Column widths of the free text a discharge keeps; longer text from the HIS is cut, never refused.
WARD_MAX = 60
PERSON_MAX = 120
DEPARTMENT_NAME_MAX = 120
PHONE_AS_SENT_MAX = 80


def check_record(record: DischargeRecord) -> dict[str, list[str]]:
    """Field errors a person can act on, before anything is written. Empty when the record is good.

    A phone number is never one: a discharge whose number cannot be read is stored and its number flagged.
    """
    errors: dict[str, list[str]] = {}
    if not record.visit_number.strip():
        errors["visit_number"] = [_("The visit number is required.")]
    elif len(record.visit_number.strip()) > 60:
        errors["visit_number"] = [_("The visit number can be at most 60 characters.")]
    try:
        normalize_mrn(record.demographics.mrn)
    except ValidationError as exc:
        errors["mrn"] = exc.messages
    if record.demographics.gender and record.demographics.gender not in Gender.values:
        errors["gender"] = [_("Unknown sex “%(value)s”.") % {"value": record.demographics.gender[:20]}]
    if record.department_code is not None and len(record.department_code.strip()) > 40:
        errors["department"] = [_("The department code can be at most 40 characters.")]
    if timezone.is_naive(record.discharged_at):
        errors["discharged_at"] = [_("The discharge time needs a time zone.")]
    elif record.discharged_at > timezone.now() + dt.timedelta(days=1):
        errors["discharged_at"] = [_("The discharge time is in the future.")]
    if record.disposition is not None and record.disposition not in Disposition.values:
        errors["disposition"] = [_("Unknown disposition “%(value)s”.") % {"value": record.disposition[:20]}]
    if record.source not in IntakeSource.values:
        errors["source"] = [_("Unknown source.")]
    return errors


def _patient_for(demographics: Demographics, phone: str | None) -> Patient:
    mrn = normalize_mrn(demographics.mrn)
    also: tuple[tuple[str, str], ...] = ((IdentityKind.PHONE, phone),) if phone else ()
    patient = resolve_patient(kind=IdentityKind.MRN, value=mrn, name=demographics.name, also_known_as=also).patient
    _apply_demographics(patient, demographics, phone)
    return patient


def _apply_demographics(patient: Patient, demographics: Demographics, phone: str | None) -> list[str]:
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
    if phone and attach_phone(patient, phone):
        changed.append("phone")
    return changed


def attach_phone(patient: Patient, phone: str) -> bool:
    """Give the patient this E.164 number unless it is already someone's; True if it was added."""
    # A number already on someone else's record stays theirs: a phone never moves a person.
    if PatientIdentity.objects.filter(kind=IdentityKind.PHONE, value=phone).exists():
        return False
    try:
        with transaction.atomic():
            PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=phone)
    except IntegrityError:
        return False
    return True


def record_discharge(record: DischargeRecord, *, now: dt.datetime | None = None) -> DischargeResult:
    """Store or update a discharge and (re)plan its follow-up. Raises ValidationError, storing nothing.

    `now` is when the follow-up is planned from (a step whose contact deadline is already past is
    planned as expired); an import of past history passes the time the discharge would have arrived.
    """
    errors = check_record(record)
    if errors:
        raise ValidationError(errors)
    try:
        with transaction.atomic():
            return _record(record, now=now)
    except IntegrityError:
        # Two deliveries of the same new discharge raced on the visit number; the winner's row is
        # committed now, so this one becomes an update of it.
        with transaction.atomic():
            return _record(record, now=now)


def _department(record: DischargeRecord, discharge: Discharge | None) -> tuple[Team, dict[str, Any]]:
    """The department for the record and the HIS's department fields to store with it."""
    if record.department_code is None:
        if discharge is not None:
            return discharge.department, {}
        return unmapped_department(), {}
    code = record.department_code.strip()
    department = department_for_code(code, record.department_system) or unmapped_department()
    his: dict[str, Any] = {"his_department_code": code, "his_department_system": record.department_system}
    if record.department_name is not None:
        his["his_department_name"] = record.department_name[:DEPARTMENT_NAME_MAX]
    return department, his


def _optional_values(record: DischargeRecord) -> dict[str, Any]:
    """The fields the record carries; the ones it does not carry are left out, so they stay as they are."""
    values: dict[str, Any] = {}
    if record.ward is not None:
        values["ward"] = record.ward[:WARD_MAX]
    if record.attending_doctor is not None:
        values["attending_doctor"] = record.attending_doctor[:PERSON_MAX]
    if record.primary_nurse is not None:
        values["primary_nurse"] = record.primary_nurse[:PERSON_MAX]
    if record.disposition is not None:
        values["disposition"] = record.disposition
    if record.disposition_code is not None:
        values["disposition_code"] = record.disposition_code[:40]
    if record.diagnoses is not None:
        values["diagnoses"] = record.diagnoses
    return values


def _phone_values(demographics: Demographics, phone: str | None) -> dict[str, Any]:
    text = clean_text(demographics.phone.strip(), field="phone", max_length=PHONE_AS_SENT_MAX, truncate=True)
    if not text:
        return {}
    return {
        "phone_as_sent": text,
        "phone_region": demographics.phone_region[:2],
        "phone_needs_review": phone is None,
    }


def _record(record: DischargeRecord, *, now: dt.datetime | None) -> DischargeResult:
    visit_number = record.visit_number.strip()
    discharge = (
        Discharge.objects.select_for_update(of=("self",))
        .select_related("visit", "department")
        .filter(visit_number=visit_number)
        .first()
    )
    phone = read_phone(record.demographics.phone, record.demographics.phone_region)
    patient = _patient_for(record.demographics, phone)
    department, his_department = _department(record, discharge)
    values: dict[str, Any] = {
        "patient_id": patient.pk,
        "department_id": department.pk,
        "discharged_at": record.discharged_at,
        **his_department,
        **_optional_values(record),
        **_phone_values(record.demographics, phone),
    }
    if discharge is None:
        visit = record_visit(
            patient=patient,
            visit_number=visit_number,
            department=department,
            kind=VisitKind.INPATIENT,
            admitted_at=record.admitted_at or record.discharged_at,
            discharged_at=record.discharged_at,
            doctor=values.get("attending_doctor", ""),
            nurse=values.get("primary_nurse", ""),
            ward=values.get("ward", ""),
        )
        discharge = Discharge.objects.create(visit=visit, visit_number=visit_number, source=record.source, **values)
        plans.schedule_follow_up(discharge, now=now)
        if discharge.phone_needs_review:
            logger.info("discharge %s: the phone from %s could not be read; flagged", discharge.pk, record.source)
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
    visit = discharge.visit
    record_visit(
        patient=patient,
        visit_number=visit_number,
        department=department,
        kind=VisitKind.INPATIENT,
        admitted_at=record.admitted_at or visit.admitted_at,
        discharged_at=record.discharged_at,
        doctor=discharge.attending_doctor,
        nurse=discharge.primary_nurse,
        ward=discharge.ward,
        package=visit.package,
        amount=visit.amount,
    )
    if changed:
        discharge.save()
    if revived or any(name in _PLAN_FIELDS for name in changed):
        plans.reschedule_follow_up(discharge, now=now)
    logger.info("discharge %s resent from %s, changed %s", discharge.pk, record.source, ",".join(changed) or "nothing")
    return DischargeResult(discharge, created=False, changed=changed)


def update_demographics(demographics: Demographics) -> Patient | None:
    """ADT^A08: refresh name, birth date, sex and phone of a patient we know by MRN; None if we don't.

    Unlike a discharge, a demographics update carries nothing else worth keeping when its phone cannot be
    read, so that is refused (ValidationError on "phone") for the HIS to correct and resend.
    """
    mrn = normalize_mrn(demographics.mrn)
    phone = read_phone(demographics.phone, demographics.phone_region)
    if demographics.phone.strip() and phone is None:
        raise ValidationError(
            {"phone": [_("“%(value)s” is not a phone number.") % {"value": demographics.phone.strip()[:40]}]}
        )
    with transaction.atomic():
        patient = find_patient_by_identity(kind=IdentityKind.MRN, value=mrn)
        if patient is None:
            return None
        _apply_demographics(patient, demographics, phone)
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

    # A malformed message is still worth keeping: what PostgreSQL cannot store (NUL, lone surrogates) is
    # replaced and over-long ids are cut here, in the trail only. Whether a value was acceptable was the
    # entry point's decision, already taken.
    return IntakeMessage.objects.create(
        source=source,
        control_id=clean_text(control_id, field="control_id", max_length=100, truncate=True),
        message_type=clean_text(message_type, field="message_type", max_length=20, truncate=True),
        visit_number=clean_text(visit_number, field="visit_number", max_length=60, truncate=True),
        outcome=outcome,
        error=clean_text(error, field="error"),
        raw=clean_text(raw, field="raw"),
        discharge=discharge,
    )

"""HL7 v2 ADT intake: one message in, one ACK out, the change and its trail committed together."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.utils import translation

from callbacks.actions.discharges import (
    cancel_discharge,
    record_discharge,
    record_intake_message,
    update_demographics,
)
from callbacks.intake.hl7 import (
    APPLICATION_INTERNAL_ERROR,
    DATA_TYPE_ERROR,
    CancelIntake,
    DemographicsIntake,
    DischargeIntake,
    Header,
    HL7Rejection,
    Intake,
    build_ack,
    check_header,
    declared_charset,
    decode,
    encode_ack,
    interpret,
    parse_message,
    read_header,
    salvage_header,
    visit_number_of,
)
from callbacks.models import Discharge, IntakeMessage, IntakeOutcome, IntakeSource
from contactcenter.boundary import clean_text

logger = logging.getLogger(__name__)

# Where record_discharge's field errors came from, so the HIS's interface team can find the field.
_FIELD_LOCATIONS = {
    "mrn": "PID-3",
    "phone": "PID-13",
    "gender": "PID-8",
    "visit_number": "PV1-19",
    "department": "PV1-10",
    "disposition": "PV1-36",
    "discharged_at": "PV1-45",
}

# Namespace for pg_advisory_xact_lock(int, int), so our keys cannot collide with another feature's.
_CONTROL_ID_LOCK_NAMESPACE = 7_002_575


@dataclass(frozen=True)
class _Outcome:
    code: str
    reason: str = ""
    location: str = ""
    error_code: str = ""
    discharge: Discharge | None = None


def accept_hl7(raw: bytes) -> bytes:
    """Apply one HL7 message and return its ACK. Never raises: the sender always gets an answer.

    AA: applied (or already applied under the same MSH-10). AE/AR: nothing applied, the reason in MSA-3;
    the message itself is kept as an IntakeMessage row so nothing the HIS sent is lost. The ACK is in the
    character set the message's MSH-18 declares (ASCII when it declares none we read).
    """
    # ACK texts are for interface engines and their logs, whatever language the staff UI speaks.
    with translation.override("en"):
        try:
            header, ack = _accept(raw)
            return encode_ack(ack, header.charset)
        except Exception:
            header = salvage_header(raw)
            logger.exception(
                "HL7 message %r (%s) failed unexpectedly",
                clean_text(header.control_id[:40], field="MSH-10"),
                header.message_type,
            )
            ack = build_ack(header, "AE", "internal error", error_code=APPLICATION_INTERNAL_ERROR)
            return encode_ack(ack, header.charset)


def _accept(raw: bytes) -> tuple[Header, str]:
    text = _legible(raw)
    header: Header | None = None
    try:
        message = parse_message(raw)
        header = read_header(message)
        check_header(header)
    except HL7Rejection as rejection:
        header = header or salvage_header(raw)
        outcome = _Outcome(rejection.code, rejection.reason, rejection.location, rejection.error_code)
        _store(header, outcome, text, visit_number="")
        return header, _ack(header, outcome)
    intake: Intake | None = None
    outcome = _Outcome(IntakeOutcome.ACCEPTED)
    try:
        intake = interpret(message, header)
    except HL7Rejection as rejection:
        outcome = _Outcome(rejection.code, rejection.reason, rejection.location, rejection.error_code)
    visit_number = visit_number_of(message)
    with transaction.atomic():
        if header.control_id:
            _lock_control_id(header.control_id)
            if _already_accepted(header.control_id):
                logger.info("HL7 %s %s already accepted; acknowledged again", header.message_type, header.control_id)
                return header, _ack(header, _Outcome(IntakeOutcome.ACCEPTED))
        if intake is not None:
            outcome = _apply(intake)
        _store(header, outcome, text, visit_number=visit_number)
    return header, _ack(header, outcome)


def _apply(intake: Intake) -> _Outcome:
    """Apply inside a savepoint, so a refusal leaves nothing behind but the trail row."""
    try:
        with transaction.atomic():
            if isinstance(intake, DischargeIntake):
                result = record_discharge(intake.record)
                return _Outcome(IntakeOutcome.ACCEPTED, discharge=result.discharge)
            if isinstance(intake, DemographicsIntake):
                patient = update_demographics(intake.demographics)
                return _Outcome(IntakeOutcome.ACCEPTED, "" if patient else "unknown MRN; nothing to update")
            assert isinstance(intake, CancelIntake)
            discharge = cancel_discharge(visit_number=intake.visit_number, reason=intake.reason)
            return _Outcome(
                IntakeOutcome.ACCEPTED,
                "" if discharge else "unknown visit number; nothing to cancel",
                discharge=discharge,
            )
    except ValidationError as exc:
        return _validation_outcome(exc)


def _validation_outcome(exc: ValidationError) -> _Outcome:
    if not hasattr(exc, "error_dict"):
        return _Outcome(IntakeOutcome.ERROR, "; ".join(exc.messages), error_code=DATA_TYPE_ERROR)
    parts = []
    location = ""
    for name, messages in exc.message_dict.items():
        where = _FIELD_LOCATIONS.get(name, name)
        location = location or _FIELD_LOCATIONS.get(name, "")
        parts.append(f"{where} {name}: {' '.join(messages)}")
    return _Outcome(IntakeOutcome.ERROR, "; ".join(parts), location=location, error_code=DATA_TYPE_ERROR)


def _lock_control_id(control_id: str) -> None:
    # Two connections resending the same message at once (an interface engine retrying after a timeout
    # while the first attempt still runs) must not both apply it. SQLite serializes writers already.
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s, hashtext(%s))", [_CONTROL_ID_LOCK_NAMESPACE, control_id])


def _already_accepted(control_id: str) -> bool:
    return IntakeMessage.objects.filter(
        source=IntakeSource.HL7, control_id=control_id[:100], outcome=IntakeOutcome.ACCEPTED
    ).exists()


def _store(header: Header, outcome: _Outcome, text: str, *, visit_number: str) -> None:
    row = record_intake_message(
        source=IntakeSource.HL7,
        control_id=header.control_id,
        message_type=header.message_type,
        visit_number=visit_number,
        outcome=outcome.code,
        error=outcome.reason,
        # Garbage (a NUL, an unreadable byte) is still worth keeping: the trail makes it storable.
        raw=text,
        discharge=outcome.discharge,
    )
    logger.info(
        "HL7 %s %s → %s (intake message %s, discharge %s)",
        row.message_type,
        row.control_id[:40],
        outcome.code,
        row.pk,
        outcome.discharge.pk if outcome.discharge else "-",
    )


def _legible(raw: bytes) -> str:
    """The message as the sender wrote it (separators untouched), decoded as the parser decodes it."""
    try:
        return decode(raw, declared_charset(raw))
    except HL7Rejection:
        return raw.decode("utf-8", "replace")


def _ack(header: Header, outcome: _Outcome) -> str:
    # Informational notes on an AA ("nothing to update") stay in the trail; the ACK says only "accepted".
    reason = outcome.reason if outcome.code != IntakeOutcome.ACCEPTED else ""
    return build_ack(header, outcome.code, reason, location=outcome.location, error_code=outcome.error_code)

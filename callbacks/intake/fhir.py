"""FHIR R4 Encounter in: a finished encounter is a discharge; a cancelled one cancels it.

We read the few elements a discharge needs and keep it simple: the patient is a `contained` Patient
referenced by subject.reference "#id", or just subject.identifier (the MRN); diagnoses are contained
Conditions. Errors are answered as OperationOutcome, the way FHIR clients expect to read them.

An element the Encounter leaves out is not sent: an Encounter for a visit the REST API already reported
updates what it carries and leaves the rest (diagnoses, ward, disposition) as it was. serviceType is
optional in R4: without it the discharge waits, unmapped, for its department. Identifiers and codes that
cannot be valid (control characters, lone surrogates, longer than we store) are refused with a 400
OperationOutcome naming the element; free text is kept, made storable, and cut to its column.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.dateparse import parse_date, parse_datetime
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiResponse, extend_schema
from rest_framework import exceptions, status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from callbacks.actions.discharges import (
    DEPARTMENT_NAME_MAX,
    PERSON_MAX,
    PHONE_AS_SENT_MAX,
    WARD_MAX,
    Demographics,
    DischargeRecord,
    cancel_discharge,
    record_discharge,
    record_intake_message,
)
from callbacks.intake.api import HisApiView, HisJSONParser, raw_json
from callbacks.models import Discharge, DischargeStatus, Disposition, IntakeOutcome, IntakeSource
from callbacks.phones import region_for_country
from contactcenter.boundary import BoundaryError, clean_identifier, clean_text, storable
from contactcenter.models import Gender

# http://hl7.org/fhir/R4/valueset-encounter-discharge-disposition.html
DISCHARGE_DISPOSITIONS = {
    "home": Disposition.HOME,
    "alt-home": Disposition.HOME,
    "other-hcf": Disposition.TRANSFERRED,
    "hosp": Disposition.TRANSFERRED,  # hospice
    "long": Disposition.TRANSFERRED,
    "aadvice": Disposition.AGAINST_ADVICE,
    "exp": Disposition.EXPIRED,
    "psy": Disposition.TRANSFERRED,
    "rehab": Disposition.TRANSFERRED,
    "snf": Disposition.TRANSFERRED,
    "oth": Disposition.OTHER,
}
CANCEL_STATUSES = {"cancelled", "entered-in-error"}
_ICD10_SYSTEMS = {
    "http://hl7.org/fhir/sid/icd-10": "I10",
    "http://hl7.org/fhir/sid/icd-10-cn": "I10",
    "http://hl7.org/fhir/sid/icd-10-cm": "I10",
    "urn:oid:2.16.840.1.113883.6.3": "I10",
}
# Where each field of the action's errors lives in the Encounter the caller sent.
_EXPRESSIONS = {
    "visit_number": "Encounter.identifier",
    "mrn": "Encounter.subject",
    "phone": "Patient.telecom",
    "gender": "Patient.gender",
    "department": "Encounter.serviceType",
    "discharged_at": "Encounter.period.end",
    "disposition": "Encounter.hospitalization.dischargeDisposition",
}


@dataclass(frozen=True)
class Issue:
    code: str  # FHIR IssueType: invalid, required, structure, business-rule, not-found, ...
    diagnostics: str
    expression: str = ""
    # A value that cannot be stored at all (a malformed request, 400) rather than one we cannot use (422).
    malformed: bool = False


class EncounterProblem(Exception):
    def __init__(self, issues: list[Issue], http_status: int = status.HTTP_422_UNPROCESSABLE_ENTITY) -> None:
        super().__init__("; ".join(i.diagnostics for i in issues))
        self.issues = issues
        self.http_status = http_status


def operation_outcome(issues: list[Issue], severity: str = "error") -> dict[str, Any]:
    return {
        "resourceType": "OperationOutcome",
        "issue": [
            {
                "severity": severity,
                "code": issue.code,
                "diagnostics": issue.diagnostics,
                **({"expression": [issue.expression]} if issue.expression else {}),
            }
            for issue in issues
        ],
    }


def _obj(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else []


def _text(value: Any) -> str:
    return value.strip() if isinstance(value, str) else ""


def _free(value: Any, max_length: int) -> str:
    """Free text (a name, a ward, a display): kept, made storable, cut to its column."""
    return clean_text(_text(value), field="", max_length=max_length, truncate=True)


def _ident(value: Any, expression: str, max_length: int, issues: list[Issue]) -> str:
    """An identifier or code, or "" with an issue naming the element when it cannot be one."""
    try:
        return clean_identifier(_text(value), field=expression, max_length=max_length)
    except BoundaryError as exc:
        issues.append(Issue("invalid", f"{expression} {exc.message}.", expression, malformed=True))
        return ""


def _first_coding(concept: Any) -> dict[str, Any]:
    codings = _list(_obj(concept).get("coding"))
    return _obj(codings[0]) if codings else {}


def _contained(resource: dict[str, Any], reference: str, resource_type: str) -> dict[str, Any] | None:
    if not reference.startswith("#"):
        return None
    for item in _list(resource.get("contained")):
        item = _obj(item)
        if item.get("resourceType") == resource_type and item.get("id") == reference[1:]:
            return item
    return None


def _fhir_time(value: Any, expression: str, issues: list[Issue], *, required: bool) -> dt.datetime | None:
    text = _text(value)
    if not text:
        if required:
            issues.append(Issue("required", f"{expression} is required: the discharge time.", expression))
        return None
    try:
        parsed = parse_datetime(text)
    except ValueError:
        parsed = None
    if parsed is None or parsed.tzinfo is None:
        issues.append(
            Issue(
                "invalid",
                f"{expression} “{storable(text[:40])}” must be a dateTime with time and offset, "
                "e.g. 2026-11-20T14:30:00+08:00.",
                expression,
            )
        )
        return None
    return parsed


def _visit_number(encounter: dict[str, Any]) -> str:
    """The visit number as sent (unchecked: `_checked_visit_number` refuses what cannot be one)."""
    identifiers = [_obj(i) for i in _list(encounter.get("identifier"))]
    official = [i for i in identifiers if i.get("use") == "official" and _text(i.get("value"))]
    chosen = official or [i for i in identifiers if _text(i.get("value"))]
    return _text(chosen[0].get("value")) if chosen else ""


def _checked_visit_number(encounter: dict[str, Any], issues: list[Issue]) -> str:
    return _ident(_visit_number(encounter), "Encounter.identifier", 60, issues)


def _patient_name(patient: dict[str, Any]) -> str:
    names = [_obj(n) for n in _list(patient.get("name"))]
    if not names:
        return ""
    name = next((n for n in names if n.get("use") == "official"), names[0])
    if _text(name.get("text")):
        return _text(name.get("text"))
    family = _text(name.get("family"))
    given = " ".join(_text(g) for g in _list(name.get("given")) if _text(g))
    # Chinese names are family name first with no space (王芳); Western ones given name first.
    if family and given and not family.isascii():
        return family + given.replace(" ", "")
    return " ".join(part for part in (given, family) if part)


def _patient_phone(patient: dict[str, Any]) -> str:
    phones = [_obj(t) for t in _list(patient.get("telecom")) if _obj(t).get("system") in ("phone", "sms")]
    phones.sort(key=lambda t: t.get("use") != "mobile")
    return _free(phones[0].get("value"), PHONE_AS_SENT_MAX) if phones else ""


def _patient_region(patient: dict[str, Any]) -> str:
    """ISO 3166 alpha-2 of the patient's address country (the home address first): where a phone number
    written without its country code is read."""
    addresses = [_obj(a) for a in _list(patient.get("address"))]
    addresses.sort(key=lambda a: a.get("use") != "home")
    for address in addresses:
        region = region_for_country(_free(address.get("country"), 80))
        if region:
            return region
    return ""


def _patient_mrn(patient: dict[str, Any]) -> str:
    identifiers = [_obj(i) for i in _list(patient.get("identifier"))]
    for identifier in identifiers:
        codes = {_text(_obj(c).get("code")) for c in _list(_obj(identifier.get("type")).get("coding"))}
        if "MR" in codes and _text(identifier.get("value")):
            return _text(identifier.get("value"))
    return next((_text(i.get("value")) for i in identifiers if _text(i.get("value"))), "")


def _demographics(encounter: dict[str, Any], issues: list[Issue]) -> Demographics:
    subject = _obj(encounter.get("subject"))
    patient = _contained(encounter, _text(subject.get("reference")), "Patient") or {}
    mrn = _ident(
        _text(_obj(subject.get("identifier")).get("value")) or _patient_mrn(patient), "Encounter.subject", 60, issues
    )
    if not mrn and not any(issue.expression == "Encounter.subject" for issue in issues):
        issues.append(
            Issue(
                "required",
                "The patient's MRN is required: subject.identifier, or a contained Patient (subject.reference "
                "“#id”) with an identifier.",
                "Encounter.subject",
            )
        )
    gender = _text(patient.get("gender"))
    if gender and gender not in Gender.values:
        issues.append(
            Issue("invalid", f"Patient.gender “{storable(gender[:20])}” is not a FHIR gender.", "Patient.gender")
        )
        gender = ""
    birth_date = None
    if _text(patient.get("birthDate")):
        try:
            birth_date = parse_date(_text(patient.get("birthDate")))
        except ValueError:
            birth_date = None
        if birth_date is None:
            issues.append(Issue("invalid", "Patient.birthDate must be a date such as 1960-05-01.", "Patient.birthDate"))
    return Demographics(
        mrn=mrn,
        name=_free(_patient_name(patient) or _text(subject.get("display")), 200),
        birth_date=birth_date,
        gender=gender,
        phone=_patient_phone(patient),
        phone_region=_patient_region(patient),
    )


def _diagnoses(encounter: dict[str, Any], issues: list[Issue]) -> list[dict[str, str]] | None:
    """Coded diagnoses of contained Conditions; None when the Encounter carries none we can read (a
    Condition referenced by id on the HIS's server, or no diagnosis at all): that leaves ours alone."""
    diagnoses = []
    for entry in _list(encounter.get("diagnosis")):
        condition = _obj(_obj(entry).get("condition"))
        resource = _contained(encounter, _text(condition.get("reference")), "Condition")
        coding = _first_coding(resource.get("code")) if resource else {}
        code = _ident(coding.get("code"), "Condition.code", 20, issues)
        if not code:
            continue
        # Any URI is a valid system; we keep ICD-10's short name or the first 40 characters.
        system = _ident(coding.get("system"), "Condition.code", 200, issues)
        diagnoses.append(
            {
                "code": code,
                "text": _free(
                    _text(coding.get("display")) or _text(_obj(resource and resource.get("code")).get("text")), 200
                ),
                "system": _ICD10_SYSTEMS.get(system, system[:40]),
            }
        )
    return diagnoses or None


def _attending(encounter: dict[str, Any]) -> str | None:
    """The ATND participant's name; None when the Encounter names no attending (ours is kept)."""
    for participant in _list(encounter.get("participant")):
        participant = _obj(participant)
        codes = {
            _text(_obj(c).get("code")) for t in _list(participant.get("type")) for c in _list(_obj(t).get("coding"))
        }
        if "ATND" in codes:
            return _free(_obj(participant.get("individual")).get("display"), PERSON_MAX)
    return None


def _ward(encounter: dict[str, Any]) -> str | None:
    for location in _list(encounter.get("location")):
        display = _free(_obj(_obj(location).get("location")).get("display"), WARD_MAX)
        if display:
            return display
    return None


def _department(encounter: dict[str, Any], issues: list[Issue]) -> tuple[str | None, str, str]:
    """(code, system, name) of serviceType, else serviceProvider; code None when neither is sent."""
    service = _obj(encounter.get("serviceType"))
    coding = _first_coding(service)
    code = _ident(coding.get("code"), "Encounter.serviceType", 40, issues)
    system = _ident(coding.get("system"), "Encounter.serviceType", 200, issues) if code else ""
    name = _free(_text(coding.get("display")) or _text(service.get("text")), DEPARTMENT_NAME_MAX)
    if not code:
        provider = _obj(encounter.get("serviceProvider"))
        code = _ident(
            _text(_obj(provider.get("identifier")).get("value")) or _text(provider.get("display")),
            "Encounter.serviceProvider",
            40,
            issues,
        )
        name = name or _free(provider.get("display"), DEPARTMENT_NAME_MAX)
    return code or None, system, name


def discharge_record(encounter: dict[str, Any]) -> DischargeRecord:
    """The discharge a finished Encounter describes; EncounterProblem lists everything wrong at once."""
    issues: list[Issue] = []
    visit_number = _checked_visit_number(encounter, issues)
    if not visit_number and not issues:
        issues.append(Issue("required", "An identifier with the visit number is required.", "Encounter.identifier"))
    demographics = _demographics(encounter, issues)
    period = _obj(encounter.get("period"))
    discharged_at = _fhir_time(period.get("end"), "Encounter.period.end", issues, required=True)
    admitted_at = _fhir_time(period.get("start"), "Encounter.period.start", issues, required=False)
    department_code, department_system, department_name = _department(encounter, issues)
    hospitalization = _obj(encounter.get("hospitalization"))
    disposition_code: str | None = _ident(
        _first_coding(hospitalization.get("dischargeDisposition")).get("code"),
        "Encounter.hospitalization.dischargeDisposition",
        40,
        issues,
    )
    disposition: str | None = None
    if disposition_code:
        if disposition_code not in DISCHARGE_DISPOSITIONS:
            issues.append(
                Issue(
                    "invalid",
                    f"dischargeDisposition “{disposition_code[:20]}” is not a code of "
                    "http://terminology.hl7.org/CodeSystem/discharge-disposition.",
                    "Encounter.hospitalization.dischargeDisposition",
                )
            )
        else:
            disposition = DISCHARGE_DISPOSITIONS[disposition_code]
    else:
        disposition_code = None
    diagnoses = _diagnoses(encounter, issues)
    if issues:
        malformed = any(issue.malformed for issue in issues)
        raise EncounterProblem(
            issues, status.HTTP_400_BAD_REQUEST if malformed else status.HTTP_422_UNPROCESSABLE_ENTITY
        )
    assert discharged_at is not None
    return DischargeRecord(
        visit_number=visit_number,
        demographics=demographics,
        department_code=department_code,
        department_system=department_system,
        department_name=department_name,
        discharged_at=discharged_at,
        admitted_at=admitted_at,
        source=IntakeSource.FHIR,
        ward=_ward(encounter),
        attending_doctor=_attending(encounter),
        disposition=disposition,
        disposition_code=disposition_code,
        diagnoses=diagnoses,
    )


# --- The endpoint ---------------------------------------------------------------------------------


class FhirJSONParser(HisJSONParser):
    media_type = "application/fhir+json"


class FhirJSONRenderer(JSONRenderer):
    media_type = "application/fhir+json"
    charset = "utf-8"


class FhirView(HisApiView):
    parser_classes = [FhirJSONParser, HisJSONParser]
    renderer_classes = [FhirJSONRenderer, JSONRenderer]

    def handle_exception(self, exc: Exception) -> Response:
        """Every refusal, including authentication and parse errors, as an OperationOutcome."""
        response = super().handle_exception(exc)
        if isinstance(exc, exceptions.APIException):
            code = {
                401: "login",
                403: "forbidden",
                404: "not-found",
                405: "not-supported",
                413: "too-costly",
                415: "not-supported",
                503: "transient",
            }.get(response.status_code, "structure" if isinstance(exc, exceptions.ParseError) else "invalid")
            response.data = operation_outcome([Issue(code, _flat(exc.detail))])
        return response


class EncounterView(FhirView):
    @extend_schema(
        operation_id="his_fhir_encounter",
        summary="FHIR R4 Encounter: a finished encounter records a discharge; cancelled cancels it",
        request={"application/fhir+json": OpenApiTypes.OBJECT, "application/json": OpenApiTypes.OBJECT},
        responses={
            201: OpenApiResponse(OpenApiTypes.OBJECT, description="The Encounter as stored, with our id."),
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="An update of a known discharge, or a cancel."),
            400: OpenApiResponse(OpenApiTypes.OBJECT, description="OperationOutcome: not an Encounter."),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="OperationOutcome: cancel of an unknown visit."),
            422: OpenApiResponse(OpenApiTypes.OBJECT, description="OperationOutcome: what to fix."),
        },
    )
    def post(self, request: Request) -> Response:
        control_id = self.control_id(request)
        encounter = request.data
        try:
            response = self._encounter(encounter, control_id)
        except EncounterProblem as problem:
            record_intake_message(
                source=IntakeSource.FHIR,
                message_type="Encounter",
                outcome=IntakeOutcome.ERROR,
                control_id=control_id,
                visit_number=_visit_number(encounter) if isinstance(encounter, dict) else "",
                error=str(problem),
                raw=raw_json(encounter),
            )
            return Response(operation_outcome(problem.issues), status=problem.http_status)
        return response

    def _encounter(self, encounter: Any, control_id: str) -> Response:
        if not isinstance(encounter, dict) or encounter.get("resourceType") != "Encounter":
            raise EncounterProblem(
                [Issue("structure", "The body must be one FHIR R4 resource with resourceType “Encounter”.")],
                status.HTTP_400_BAD_REQUEST,
            )
        state = _text(encounter.get("status"))
        if state in CANCEL_STATUSES:
            return self._cancel(encounter, state, control_id)
        if state != "finished":
            raise EncounterProblem(
                [
                    Issue(
                        "business-rule",
                        f"Encounter.status is “{storable(state[:30])}”; only a finished encounter is a discharge "
                        "(cancelled or entered-in-error cancel one).",
                        "Encounter.status",
                    )
                ]
            )
        record = discharge_record(encounter)
        try:
            result = record_discharge(record)
        except DjangoValidationError as exc:
            raise EncounterProblem(
                [
                    Issue("invalid", " ".join(messages), _EXPRESSIONS.get(name, ""))
                    for name, messages in getattr(exc, "message_dict", {"": exc.messages}).items()
                ]
            ) from None
        record_intake_message(
            source=IntakeSource.FHIR,
            message_type="Encounter",
            outcome=IntakeOutcome.ACCEPTED,
            control_id=control_id,
            visit_number=result.discharge.visit_number,
            raw=raw_json(encounter),
            discharge=result.discharge,
        )
        stored = {
            **encounter,
            "id": str(result.discharge.pk),
            "meta": {"lastUpdated": result.discharge.updated_at.isoformat()},
        }
        return Response(
            stored,
            status=status.HTTP_201_CREATED if result.created else status.HTTP_200_OK,
            headers={"Location": f"{self.request.build_absolute_uri(self.request.path)}/{result.discharge.pk}"},
        )

    def _cancel(self, encounter: dict[str, Any], state: str, control_id: str) -> Response:
        issues: list[Issue] = []
        visit_number = _checked_visit_number(encounter, issues)
        if issues:
            raise EncounterProblem(issues, status.HTTP_400_BAD_REQUEST)
        if not visit_number:
            raise EncounterProblem(
                [Issue("required", "An identifier with the visit number is required.", "Encounter.identifier")]
            )
        discharge = cancel_discharge(visit_number=visit_number, reason=f"FHIR Encounter {state}")
        if discharge is None:
            raise EncounterProblem(
                [
                    Issue(
                        "not-found",
                        f"No discharge with visit number “{visit_number[:60]}” is known here; nothing to cancel.",
                        "Encounter.identifier",
                    )
                ],
                status.HTTP_404_NOT_FOUND,
            )
        record_intake_message(
            source=IntakeSource.FHIR,
            message_type="Encounter",
            outcome=IntakeOutcome.ACCEPTED,
            control_id=control_id,
            visit_number=discharge.visit_number,
            raw=raw_json(encounter),
            discharge=discharge,
        )
        return Response({**encounter, "id": str(discharge.pk)}, status=status.HTTP_200_OK)


class EncounterReadView(FhirView):
    """What the Location header of a create points at: the discharge as a minimal Encounter, no names."""

    @extend_schema(
        operation_id="his_fhir_encounter_read",
        summary="Read back a discharge as a FHIR R4 Encounter (identifiers and codes only)",
        responses={
            200: OpenApiResponse(OpenApiTypes.OBJECT, description="Encounter"),
            404: OpenApiResponse(OpenApiTypes.OBJECT, description="OperationOutcome: no such Encounter."),
        },
    )
    def get(self, request: Request, encounter_id: int) -> Response:
        discharge = Discharge.objects.select_related("department").filter(pk=encounter_id).first()
        if discharge is None:
            raise exceptions.NotFound(f"No Encounter {encounter_id}.")
        return Response(
            {
                "resourceType": "Encounter",
                "id": str(discharge.pk),
                "meta": {"lastUpdated": discharge.updated_at.isoformat()},
                "status": "cancelled" if discharge.status == DischargeStatus.CANCELLED else "finished",
                "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "IMP"},
                "identifier": [{"use": "official", "value": discharge.visit_number}],
                "period": {"end": discharge.discharged_at.isoformat()},
                "serviceType": {"coding": [{"code": discharge.department.code}]},
                "hospitalization": {
                    "dischargeDisposition": {"coding": [{"code": discharge.disposition_code or discharge.disposition}]}
                },
            }
        )


def _flat(detail: Any) -> str:
    if isinstance(detail, dict):
        return "; ".join(f"{k}: {_flat(v)}" for k, v in detail.items())
    if isinstance(detail, list):
        return " ".join(_flat(v) for v in detail)
    return str(detail)

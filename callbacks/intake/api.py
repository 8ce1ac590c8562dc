"""REST API for the HIS: discharges in (one or a batch), cancellations, demographics.

The HIS authenticates with one shared bearer token (settings.HIS_API_TOKEN), not as a staff user: these
endpoints write what the hospital's system of record says and read nothing back beyond our own ids.
Every call that gets past authentication is kept as an IntakeMessage with our answer.
"""

from __future__ import annotations

import codecs
import hmac
import json
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from drf_spectacular.extensions import OpenApiAuthenticationExtension
from drf_spectacular.types import OpenApiTypes
from drf_spectacular.utils import OpenApiParameter, OpenApiResponse, PolymorphicProxySerializer, extend_schema
from rest_framework import exceptions, permissions, serializers, status
from rest_framework.authentication import BaseAuthentication
from rest_framework.parsers import JSONParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from callbacks.actions.discharges import (
    Demographics,
    DischargeRecord,
    DischargeResult,
    cancel_discharge,
    record_discharge,
    record_intake_message,
    update_demographics,
)
from callbacks.intake.forms import disposition_from_code, sex_value
from callbacks.models import UNMAPPED_DEPARTMENT_CODE, CallbackTask, Disposition, IntakeOutcome, IntakeSource
from callbacks.phones import read_phone, region_for_country
from contactcenter.boundary import BoundaryError, clean_identifier, clean_json, clean_text, storable
from contactcenter.identities import normalize_mrn

MAX_BATCH = 500
# A 500-item batch is ~300 kB; anything far beyond that is a mistake, not a discharge list.
MAX_BODY_BYTES = 5 * 1024 * 1024

# The action names its fields after the model; the HIS named them in the request.
_ACTION_FIELDS = {"gender": "sex", "department": "department_code"}


# --- Who is calling -------------------------------------------------------------------------------


@dataclass(frozen=True)
class HisCaller:
    """request.auth for a call carrying the HIS token; there is no staff user behind it."""

    name: str = "his"


class HisNotConfigured(exceptions.APIException):
    status_code = status.HTTP_503_SERVICE_UNAVAILABLE
    default_detail = "HIS API not configured: set HIS_API_TOKEN in the environment."
    default_code = "his_not_configured"


class HisBearerAuthentication(BaseAuthentication):
    def authenticate(self, request: Request) -> tuple[AnonymousUser, HisCaller] | None:
        expected = settings.HIS_API_TOKEN
        if not expected:
            raise HisNotConfigured()
        header = request.META.get("HTTP_AUTHORIZATION", "")
        scheme, _sep, token = header.partition(" ")
        if not header:
            return None
        if scheme.lower() != "bearer" or not token.strip():
            raise exceptions.AuthenticationFailed("Send the HIS token as “Authorization: Bearer <token>”.")
        # Constant-time: the comparison must not tell a caller how much of a guess was right.
        if not hmac.compare_digest(token.strip().encode(), expected.encode()):
            raise exceptions.AuthenticationFailed("The HIS token is not valid.")
        return AnonymousUser(), HisCaller()

    def authenticate_header(self, request: Request) -> str:
        return 'Bearer realm="his"'


class IsHisCaller(permissions.BasePermission):
    message = "Send the HIS token as “Authorization: Bearer <token>”."

    def has_permission(self, request: Request, view: Any) -> bool:
        return isinstance(request.auth, HisCaller)


class HisBearerScheme(OpenApiAuthenticationExtension):
    target_class = "callbacks.intake.api.HisBearerAuthentication"
    name = "hisBearer"

    def get_security_definition(self, auto_schema: Any) -> dict[str, str]:
        return {"type": "http", "scheme": "bearer", "description": "The HIS_API_TOKEN shared with hospital IT."}


class HisJSONParser(JSONParser):
    """JSON from the HIS. Unlike the staff API's parser, a lone surrogate is not refused for the whole body:
    the field it is in decides (free text keeps the rest of it, an id is refused naming the field), so one
    garbled character in a doctor's name does not cost the patient their follow-up."""

    def parse(self, stream: Any, media_type: str | None = None, parser_context: Any = None) -> Any:
        encoding = str((parser_context or {}).get("encoding") or settings.DEFAULT_CHARSET)
        try:
            # Python's codec registry also holds transforms (rot13, zlib) that would fail as a TypeError.
            is_text = getattr(codecs.lookup(encoding), "_is_text_encoding", True)
        except LookupError:
            is_text = False
        if not is_text:
            raise exceptions.ParseError(f"The charset {storable(encoding[:40])!r} is not a text encoding.")
        try:
            return super().parse(stream, media_type, parser_context)
        except RecursionError:
            raise exceptions.ParseError("JSON parse error - the document is nested too deeply.") from None


class HisApiView(APIView):
    authentication_classes = [HisBearerAuthentication]
    permission_classes = [IsHisCaller]
    parser_classes = [HisJSONParser]

    def control_id(self, request: Request) -> str:
        key = request.META.get("HTTP_IDEMPOTENCY_KEY", "").strip()
        try:
            return clean_identifier(key, field="Idempotency-Key", max_length=100)
        except BoundaryError as exc:
            raise serializers.ValidationError(
                {"Idempotency-Key": [_("The Idempotency-Key %(problem)s.") % {"problem": exc.message}]}
            ) from None

    def finalize_response(self, request: Request, response: Any, *args: Any, **kwargs: Any) -> Any:
        # A caller's values come back in responses (an echoed value in an error, a FHIR resource returned as
        # stored); a lone surrogate among them would fail to encode as UTF-8 and turn an answer into a 500.
        if isinstance(response, Response) and response.data is not None:
            response.data = clean_json(response.data)
        return super().finalize_response(request, response, *args, **kwargs)

    def initial(self, request: Request, *args: Any, **kwargs: Any) -> None:
        super().initial(request, *args, **kwargs)
        try:
            length = int(request.META.get("CONTENT_LENGTH") or 0)
        except ValueError:
            length = 0
        if length > MAX_BODY_BYTES:
            raise RequestTooLarge()


class RequestTooLarge(exceptions.APIException):
    status_code = status.HTTP_413_REQUEST_ENTITY_TOO_LARGE
    default_detail = f"The body is larger than {MAX_BODY_BYTES // 1024 // 1024} MB; send smaller batches."
    default_code = "too_large"


# --- Input ----------------------------------------------------------------------------------------


class OffsetDateTimeField(serializers.DateTimeField):
    """ISO 8601 with its UTC offset: the HIS and we may not share a clock, so a bare time is refused."""

    def to_internal_value(self, value: Any) -> Any:
        if isinstance(value, str):
            try:
                parsed = parse_datetime(value.strip())
            except ValueError:
                parsed = None
            if parsed is not None and parsed.tzinfo is None:
                raise serializers.ValidationError(
                    _("Give the time with its UTC offset, e.g. 2026-11-20T14:30:00+08:00.")
                )
        return super().to_internal_value(value)


class IdentifierField(serializers.CharField):
    """An id or code from the HIS: control characters, lone surrogates or more than `max_length` characters
    cannot be one, so they are refused naming the field (contactcenter.boundary.clean_identifier)."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        self.identifier_max = max_length
        super().__init__(max_length=max_length, **kwargs)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        try:
            return clean_identifier(text, field=self.field_name or "", max_length=self.identifier_max)
        except BoundaryError as exc:
            raise serializers.ValidationError(_("This value %(problem)s.") % {"problem": exc.message}) from None


class FreeTextField(serializers.CharField):
    """Text a person wrote (a name, a ward, a doctor): never a reason to refuse a discharge. What PostgreSQL
    cannot store becomes U+FFFD and text longer than `max_length` is cut, as documented in the schema."""

    def __init__(self, *, max_length: int, **kwargs: Any) -> None:
        self.text_max = max_length
        kwargs.setdefault("help_text", f"Longer than {max_length} characters is cut.")
        super().__init__(**kwargs)

    def to_internal_value(self, data: Any) -> str:
        if isinstance(data, str):
            # Before the parent's validators, which would refuse NUL and lone surrogates outright.
            data = clean_text(data, field=self.field_name or "", max_length=self.text_max, truncate=True)
        return str(super().to_internal_value(data))


class DiagnosisInput(serializers.Serializer[Any]):
    code = IdentifierField(max_length=20)
    text = FreeTextField(max_length=200, required=False, allow_blank=True, default="")
    system = IdentifierField(max_length=40, required=False, allow_blank=True, default="I10")


class SexField(serializers.CharField):
    """male/female/other/unknown, also M/F/U and 男/女 as HIS exports write them."""

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(max_length=20, required=False, allow_blank=True, default="", **kwargs)

    def to_internal_value(self, data: Any) -> str:
        text = super().to_internal_value(data)
        value = sex_value(text)
        if value is None:
            raise serializers.ValidationError(
                _("Unknown sex “%(value)s”; use male, female, other or unknown.") % {"value": storable(text[:20])}
            )
        return value


class DemographicsInput(serializers.Serializer[Any]):
    mrn = serializers.CharField(max_length=60, help_text="The hospital's medical record number (病案号).")
    name = FreeTextField(max_length=200, required=False, allow_blank=True, default="")
    birth_date = serializers.DateField(required=False, allow_null=True, default=None)
    sex = SexField()
    phone = FreeTextField(
        max_length=80,
        required=False,
        allow_blank=True,
        default="",
        help_text="As the HIS holds it; read in the country of `country`, else the hospital's.",
    )
    country = FreeTextField(
        max_length=80,
        required=False,
        allow_blank=True,
        default="",
        help_text="The country of the patient's address (ISO 3166 code or name: US, USA, CN, China): where a "
        "phone number written without its country code is read.",
    )
    # A demographics update is refused when its phone cannot be read; a discharge never is (its phone is
    # flagged for a nurse to check instead).
    refuse_unreadable_phone = True

    def validate_mrn(self, value: str) -> str:
        try:
            return normalize_mrn(value)
        except DjangoValidationError as exc:
            raise serializers.ValidationError(exc.messages) from None

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        phone = attrs.get("phone", "").strip()
        region = region_for_country(attrs.get("country", ""))
        if self.refuse_unreadable_phone and phone and read_phone(phone, region) is None:
            raise serializers.ValidationError(
                {"phone": [_("“%(value)s” is not a phone number.") % {"value": phone[:40]}]}
            )
        return attrs

    def demographics(self) -> Demographics:
        data = self.validated_data
        return Demographics(
            mrn=data["mrn"],
            name=data["name"],
            birth_date=data["birth_date"],
            gender=data["sex"],
            phone=data["phone"],
            phone_region=region_for_country(data["country"]),
        )


class DischargeInput(DemographicsInput):
    """One discharge. Optional fields left out of a resend keep what we have; sent empty, they are cleared."""

    refuse_unreadable_phone = False

    visit_number = IdentifierField(max_length=60, help_text="The HIS visit number; resending it updates.")
    department_code = IdentifierField(
        max_length=40, help_text="The HIS's department code; mapped to ours by the admins (unknown codes wait)."
    )
    department_name = FreeTextField(max_length=120, required=False, allow_blank=True)
    ward = FreeTextField(max_length=60, required=False, allow_blank=True)
    attending_doctor = FreeTextField(max_length=120, required=False, allow_blank=True)
    primary_nurse = FreeTextField(max_length=120, required=False, allow_blank=True)
    disposition = serializers.ChoiceField(choices=Disposition.choices, required=False)
    disposition_code = IdentifierField(
        max_length=40,
        required=False,
        allow_blank=True,
        help_text="The HIS's own code (e.g. PV1-36 “01”); used when disposition is not given.",
    )
    admitted_at = OffsetDateTimeField(required=False, allow_null=True)
    discharged_at = OffsetDateTimeField()
    diagnoses = DiagnosisInput(many=True, required=False)

    def validate_diagnoses(self, value: list[dict[str, str]]) -> list[dict[str, str]]:
        if len(value) > 50:
            raise serializers.ValidationError(_("At most 50 diagnoses per discharge."))
        return value

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        attrs = super().validate(attrs)
        if "disposition" not in attrs and "disposition_code" in attrs:
            code = attrs["disposition_code"]
            attrs["disposition"] = disposition_from_code(code) if code.strip() else Disposition.HOME
        return attrs

    def record(self, *, source: str) -> DischargeRecord:
        data = self.validated_data
        diagnoses = data.get("diagnoses")
        return DischargeRecord(
            visit_number=data["visit_number"],
            demographics=self.demographics(),
            department_code=data["department_code"],
            department_name=data.get("department_name"),
            discharged_at=data["discharged_at"],
            admitted_at=data.get("admitted_at"),
            source=source,
            ward=data.get("ward"),
            attending_doctor=data.get("attending_doctor"),
            primary_nurse=data.get("primary_nurse"),
            disposition=data.get("disposition"),
            disposition_code=data.get("disposition_code"),
            diagnoses=None if diagnoses is None else [dict(d) for d in diagnoses],
        )


class CancelInput(serializers.Serializer[Any]):
    reason = FreeTextField(max_length=200, required=False, allow_blank=True, default="")


def action_errors(exc: DjangoValidationError) -> dict[str, list[str]]:
    """The action's field errors under the names the caller used."""
    if hasattr(exc, "error_dict"):
        return {_ACTION_FIELDS.get(name, name): messages for name, messages in exc.message_dict.items()}
    return {"non_field_errors": exc.messages}


def flat_errors(errors: Any) -> str:
    """Field errors as one line for the intake trail."""
    if isinstance(errors, dict):
        return "; ".join(f"{name}: {flat_errors(value)}" for name, value in errors.items())
    if isinstance(errors, list):
        return " ".join(flat_errors(item) for item in errors)
    return str(errors)


def raw_json(data: Any) -> str:
    """The body for the intake trail (record_intake_message makes it storable)."""
    return json.dumps(data, ensure_ascii=False, default=str)


def _echo(value: Any) -> str:
    """A value of the caller's, said back in a response: it must encode as UTF-8 whatever was sent."""
    return storable(str(value))[:60]


# --- Output shapes --------------------------------------------------------------------------------


class TaskShape(serializers.ModelSerializer[CallbackTask]):
    class Meta:
        model = CallbackTask
        fields = ["id", "kind", "status", "due_at", "deadline_at"]
        read_only_fields = fields


class DischargeOutcomeShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    visit_number = serializers.CharField()
    created = serializers.BooleanField()
    changed = serializers.ListField(child=serializers.CharField())
    status = serializers.CharField()
    department_mapped = serializers.BooleanField(
        help_text="False: no department here has this code yet; the discharge waits for an admin to map it."
    )
    phone_needs_review = serializers.BooleanField(
        help_text="True: the phone could not be read; the follow-up is by call and a nurse checks the number."
    )
    tasks = TaskShape(many=True)


class BatchItemShape(serializers.Serializer[Any]):
    index = serializers.IntegerField()
    status = serializers.ChoiceField(choices=["created", "updated", "rejected"])
    visit_number = serializers.CharField(allow_blank=True)
    id = serializers.IntegerField(required=False)
    changed = serializers.ListField(child=serializers.CharField(), required=False)
    # Shadows Serializer.errors; harmless because this shape only describes the response in the schema.
    errors = serializers.DictField(  # type: ignore[assignment]
        child=serializers.ListField(child=serializers.CharField()), required=False
    )


class BatchOutcomeShape(serializers.Serializer[Any]):
    received = serializers.IntegerField()
    created = serializers.IntegerField()
    updated = serializers.IntegerField()
    rejected = serializers.IntegerField()
    results = BatchItemShape(many=True)


class CancelOutcomeShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    visit_number = serializers.CharField()
    status = serializers.CharField()
    cancelled_at = serializers.DateTimeField(allow_null=True)


class DemographicsOutcomeShape(serializers.Serializer[Any]):
    patient_id = serializers.IntegerField()
    mrn = serializers.CharField()


def outcome_of(result: DischargeResult) -> dict[str, Any]:
    discharge = result.discharge
    tasks = CallbackTask.objects.filter(discharge=discharge).order_by("due_at", "id")
    return {
        "id": discharge.pk,
        "visit_number": discharge.visit_number,
        "created": result.created,
        "changed": result.changed,
        "status": discharge.status,
        "department_mapped": discharge.department.code != UNMAPPED_DEPARTMENT_CODE,
        "phone_needs_review": discharge.phone_needs_review,
        "tasks": TaskShape(tasks, many=True).data,
    }


_ERRORS = {
    400: OpenApiResponse(OpenApiTypes.OBJECT, description="Field errors: {field: [messages]}; nothing stored."),
    401: OpenApiResponse(OpenApiTypes.OBJECT, description="No or a wrong HIS token; nothing stored."),
    503: OpenApiResponse(OpenApiTypes.OBJECT, description="HIS_API_TOKEN is not set on this server."),
}
_IDEMPOTENCY_KEY = OpenApiParameter(
    "Idempotency-Key",
    OpenApiTypes.STR,
    OpenApiParameter.HEADER,
    description="The HIS's message id, kept with our answer in the intake trail.",
)


# --- Views ----------------------------------------------------------------------------------------


class DischargeIntakeView(HisApiView):
    @extend_schema(
        operation_id="his_discharge_create",
        summary="Record one discharge, or a batch of up to 500",
        description=(
            "Idempotent on visit_number: 201 when new, 200 when it updates a known discharge. "
            "A JSON array is a batch, answered 200 with one result per item: good items are stored, "
            "bad ones are listed with their index and field errors."
        ),
        request=PolymorphicProxySerializer(
            component_name="DischargeOrBatch",
            serializers=[DischargeInput(), DischargeInput(many=True)],
            resource_type_field_name=None,
            many=False,
        ),
        parameters=[_IDEMPOTENCY_KEY],
        responses={
            201: DischargeOutcomeShape,
            200: PolymorphicProxySerializer(
                component_name="DischargeOrBatchOutcome",
                serializers=[DischargeOutcomeShape, BatchOutcomeShape],
                resource_type_field_name=None,
            ),
            **_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        control_id = self.control_id(request)
        data = request.data
        if isinstance(data, list):
            return self._batch(data, control_id)
        if not isinstance(data, dict):
            raise serializers.ValidationError(
                {"non_field_errors": [_("Send one discharge as a JSON object, or up to 500 as an array.")]}
            )
        outcome, errors = self._one(data, control_id)
        if errors is not None:
            return Response(errors, status=status.HTTP_400_BAD_REQUEST)
        assert outcome is not None
        return Response(outcome, status=status.HTTP_201_CREATED if outcome["created"] else status.HTTP_200_OK)

    def _one(self, data: Any, control_id: str) -> tuple[dict[str, Any] | None, dict[str, Any] | None]:
        visit_number = _echo(data.get("visit_number", "")) if isinstance(data, dict) else ""
        serializer = DischargeInput(data=data)
        if serializer.is_valid():
            try:
                result = record_discharge(serializer.record(source=IntakeSource.REST))
            except DjangoValidationError as exc:
                errors: dict[str, Any] = action_errors(exc)
            else:
                record_intake_message(
                    source=IntakeSource.REST,
                    message_type="discharge",
                    outcome=IntakeOutcome.ACCEPTED,
                    control_id=control_id,
                    visit_number=result.discharge.visit_number,
                    raw=raw_json(data),
                    discharge=result.discharge,
                )
                return outcome_of(result), None
        else:
            errors = dict(serializer.errors)
        record_intake_message(
            source=IntakeSource.REST,
            message_type="discharge",
            outcome=IntakeOutcome.ERROR,
            control_id=control_id,
            visit_number=visit_number,
            error=flat_errors(errors),
            raw=raw_json(data),
        )
        return None, errors

    def _batch(self, items: list[Any], control_id: str) -> Response:
        if not items:
            raise serializers.ValidationError({"non_field_errors": [_("The batch is empty.")]})
        if len(items) > MAX_BATCH:
            raise serializers.ValidationError(
                {
                    "non_field_errors": [
                        _("A batch holds at most %(max)s discharges; this one has %(count)s. Split it.")
                        % {"max": MAX_BATCH, "count": len(items)}
                    ]
                }
            )
        results: list[dict[str, Any]] = []
        counts = {"created": 0, "updated": 0, "rejected": 0}
        for index, item in enumerate(items):
            item_control_id = f"{control_id[:90]}#{index}" if control_id else ""
            if not isinstance(item, dict):
                outcome = None
                errors: dict[str, Any] | None = {"non_field_errors": [_("Each item must be a JSON object.")]}
            else:
                outcome, errors = self._one(item, item_control_id)
            if errors is not None:
                counts["rejected"] += 1
                visit_number = item.get("visit_number", "") if isinstance(item, dict) else ""
                results.append(
                    {
                        "index": index,
                        "status": "rejected",
                        "visit_number": _echo(visit_number),
                        "errors": errors,
                    }
                )
                continue
            assert outcome is not None
            state = "created" if outcome["created"] else "updated"
            counts[state] += 1
            results.append(
                {
                    "index": index,
                    "status": state,
                    "visit_number": outcome["visit_number"],
                    "id": outcome["id"],
                    "changed": outcome["changed"],
                }
            )
        return Response({"received": len(items), **counts, "results": results}, status=status.HTTP_200_OK)


class DischargeCancelView(HisApiView):
    @extend_schema(
        operation_id="his_discharge_cancel",
        summary="Cancel a discharge (the stay was cancelled): every follow-up not yet done is cancelled",
        request=CancelInput,
        parameters=[_IDEMPOTENCY_KEY],
        responses={
            200: CancelOutcomeShape,
            404: OpenApiResponse(description="No discharge with this visit number."),
            **_ERRORS,
        },
    )
    def post(self, request: Request, visit_number: str) -> Response:
        control_id = self.control_id(request)
        serializer = CancelInput(data=request.data if isinstance(request.data, dict) else {})
        serializer.is_valid(raise_exception=True)
        try:
            visit_number = clean_identifier(visit_number.strip(), field="visit_number", max_length=60, required=True)
        except BoundaryError as exc:
            raise serializers.ValidationError(
                {"visit_number": [_("This value %(problem)s.") % {"problem": exc.message}]}
            ) from None
        discharge = cancel_discharge(visit_number=visit_number, reason=serializer.validated_data["reason"])
        if discharge is None:
            message = _("No discharge with visit number “%(number)s” is known here.") % {"number": visit_number[:60]}
            record_intake_message(
                source=IntakeSource.REST,
                message_type="cancel",
                outcome=IntakeOutcome.ERROR,
                control_id=control_id,
                visit_number=visit_number,
                error=message,
                raw=raw_json(request.data),
            )
            raise exceptions.NotFound(message)
        record_intake_message(
            source=IntakeSource.REST,
            message_type="cancel",
            outcome=IntakeOutcome.ACCEPTED,
            control_id=control_id,
            visit_number=discharge.visit_number,
            raw=raw_json(request.data),
            discharge=discharge,
        )
        return Response(
            {
                "id": discharge.pk,
                "visit_number": discharge.visit_number,
                "status": discharge.status,
                "cancelled_at": discharge.cancelled_at,
            }
        )


class DemographicsView(HisApiView):
    @extend_schema(
        operation_id="his_patient_demographics",
        summary="Update a known patient's name, birth date, sex and phone (like ADT^A08)",
        request=DemographicsInput,
        parameters=[_IDEMPOTENCY_KEY],
        responses={
            200: DemographicsOutcomeShape,
            404: OpenApiResponse(description="No patient with this MRN."),
            **_ERRORS,
        },
    )
    def post(self, request: Request) -> Response:
        control_id = self.control_id(request)
        serializer = DemographicsInput(data=request.data)
        if not serializer.is_valid():
            record_intake_message(
                source=IntakeSource.REST,
                message_type="demographics",
                outcome=IntakeOutcome.ERROR,
                control_id=control_id,
                error=flat_errors(serializer.errors),
                raw=raw_json(request.data),
            )
            return Response(serializer.errors, status=status.HTTP_400_BAD_REQUEST)
        demographics = serializer.demographics()
        patient = update_demographics(demographics)
        if patient is None:
            message = _("No patient with MRN “%(mrn)s” is known here; send their discharge first.") % {
                "mrn": demographics.mrn
            }
            record_intake_message(
                source=IntakeSource.REST,
                message_type="demographics",
                outcome=IntakeOutcome.ERROR,
                control_id=control_id,
                error=message,
                raw=raw_json(request.data),
            )
            raise exceptions.NotFound(message)
        record_intake_message(
            source=IntakeSource.REST,
            message_type="demographics",
            outcome=IntakeOutcome.ACCEPTED,
            control_id=control_id,
            raw=raw_json(request.data),
        )
        return Response({"patient_id": patient.pk, "mrn": demographics.mrn})

"""Input validation for the API. Parsing only: the actions decide and write."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.core.exceptions import ValidationError as DjangoValidationError
from django.utils import timezone
from rest_framework import serializers

from contactcenter.identities import normalize_identity
from contactcenter.models import ConversationStatus, Gender, IdentityKind, Priority, VipTier


def _has_nul(value: Any) -> bool:
    if isinstance(value, str):
        return "\x00" in value
    if isinstance(value, dict):
        return any(_has_nul(k) or _has_nul(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_has_nul(v) for v in value)
    return False


class IdentityInput(serializers.Serializer[Any]):
    kind = serializers.ChoiceField(choices=IdentityKind.choices)
    value = serializers.CharField(max_length=255)

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        try:
            attrs["value"] = normalize_identity(attrs["kind"], attrs["value"])
        except DjangoValidationError as exc:
            raise serializers.ValidationError({"value": exc.messages}) from None
        return attrs


class PatientFieldsInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=200, required=False, allow_blank=True)
    given_name = serializers.CharField(max_length=100, required=False, allow_blank=True)
    gender = serializers.ChoiceField(choices=Gender.choices, required=False)
    birth_date = serializers.DateField(required=False, allow_null=True)
    region = serializers.CharField(max_length=100, required=False, allow_blank=True)
    city = serializers.CharField(max_length=100, required=False, allow_blank=True)
    language = serializers.ChoiceField(choices=[("en", "English"), ("zh-hans", "简体中文")], required=False)
    time_zone = serializers.CharField(max_length=60, required=False)
    vip_tier = serializers.ChoiceField(choices=VipTier.choices, required=False)
    custom_attributes = serializers.DictField(required=False)

    def validate_birth_date(self, value: dt.date | None) -> dt.date | None:
        if value is not None and value > timezone.localdate():
            raise serializers.ValidationError("A birth date cannot be in the future.")
        return value

    def validate_custom_attributes(self, value: dict[str, Any]) -> dict[str, Any]:
        # PostgreSQL's jsonb cannot store U+0000; refuse it here instead of failing at save with a 500.
        if _has_nul(value):
            raise serializers.ValidationError("Null characters are not allowed.")
        return value

    def validate_time_zone(self, value: str) -> str:
        import zoneinfo

        try:
            zoneinfo.ZoneInfo(value)
        except (zoneinfo.ZoneInfoNotFoundError, ValueError):
            raise serializers.ValidationError("Not an IANA time zone such as Asia/Shanghai.") from None
        return value


class PatientCreateInput(PatientFieldsInput):
    identities = IdentityInput(many=True, required=False)
    tags = serializers.ListField(child=serializers.CharField(max_length=60), required=False)


class PatientUpdateInput(PatientFieldsInput):
    tags = serializers.ListField(child=serializers.CharField(max_length=60), required=False)


class MergeInput(serializers.Serializer[Any]):
    drop_id = serializers.IntegerField(min_value=1)


class MessageInput(serializers.Serializer[Any]):
    body = serializers.CharField(max_length=4000, allow_blank=False, trim_whitespace=True)
    # The browser's key for this attempt (a UUID): sending again with it returns the message already written.
    client_key = serializers.RegexField(r"^[A-Za-z0-9_-]{8,64}$", required=False, max_length=64)


class MessagePageInput(serializers.Serializer[Any]):
    before = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)
    limit = serializers.IntegerField(required=False, min_value=1, max_value=500, default=100)


class NoteInput(serializers.Serializer[Any]):
    body = serializers.CharField(max_length=10000, allow_blank=False, trim_whitespace=True)


class AssignInput(serializers.Serializer[Any]):
    assignee_id = serializers.IntegerField(allow_null=True, min_value=1)


class InRangeDateTimeField(serializers.DateTimeField):
    """DRF's DateTimeField, but a naive time at the edge of the calendar ("0001-01-01T00:00") is a 400: DRF
    checks the aware value by converting it to UTC outside its overflow guard, so that raised a 500."""

    def enforce_timezone(self, value: dt.datetime) -> dt.datetime:
        try:
            return super().enforce_timezone(value)
        except OverflowError:
            self.fail("overflow")


class SnoozeInput(serializers.Serializer[Any]):
    until = InRangeDateTimeField()


class LabelsInput(serializers.Serializer[Any]):
    labels = serializers.ListField(child=serializers.CharField(max_length=60), max_length=20)


class PriorityInput(serializers.Serializer[Any]):
    priority = serializers.ChoiceField(choices=Priority.choices)


class StatusInput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=ConversationStatus.choices)


class ConversationFilterInput(serializers.Serializer[Any]):
    view = serializers.ChoiceField(choices=["mine", "unassigned", "all"], required=False, default="all")
    status = serializers.ChoiceField(choices=[*ConversationStatus.values, "any"], required=False, default="open")
    inbox = serializers.IntegerField(required=False, min_value=1)
    label = serializers.CharField(required=False, max_length=60)  # type: ignore[assignment]
    patient = serializers.IntegerField(required=False, min_value=1)

"""JSON API for campaigns under /api/v1/campaigns/. Views parse, call the actions, answer.

Marketers, supervisors and admins only. Nothing here reads a patient's profile for the caller: the
preview masks names and the estimate and progress are numbers, so no audit entry is written.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.db.models import QuerySet
from django.utils import timezone
from django.utils.translation import gettext as _
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns import estimate as estimates
from campaigns.actions import campaigns as actions
from campaigns.lint import lint_template
from campaigns.models import Campaign, MissingValueRule, Segment
from campaigns.sending import progress
from campaigns.templating import MAX_BODY_CHARS, MAX_FALLBACK_CHARS, parse, template_problems
from campaigns.ui import shapes
from contactcenter import access
from contactcenter.api.common import staff_of, valid_input
from contactcenter.models import Inbox, Role

CAMPAIGN_ROLES = frozenset({Role.MARKETER, Role.ADMIN, Role.SUPERVISOR})
MAX_ID = 2**63 - 1


class CampaignStaff(permissions.BasePermission):
    message = "Only marketers, supervisors and admins work with campaigns."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.role_of(request.user) in CAMPAIGN_ROLES


# --- Inputs --------------------------------------------------------------------------------------------


class CampaignInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=120)
    segment_id = serializers.IntegerField(min_value=1, max_value=MAX_ID)
    inbox_id = serializers.IntegerField(min_value=1, max_value=MAX_ID, help_text="An active SMS inbox.")
    body = serializers.CharField(max_length=MAX_BODY_CHARS, trim_whitespace=False)
    fallbacks = serializers.DictField(
        child=serializers.CharField(max_length=MAX_FALLBACK_CHARS, allow_blank=True),
        required=False,
        help_text='Per placeholder, e.g. {"first_name": "患者"}.',
    )
    missing_value_rule = serializers.ChoiceField(choices=MissingValueRule.choices, required=False)
    signature = serializers.CharField(max_length=30, required=False, allow_blank=True)
    opt_out_tail = serializers.CharField(max_length=60, required=False, allow_blank=True)
    messages_per_second = serializers.IntegerField(
        min_value=1, max_value=actions.MAX_MESSAGES_PER_SECOND, required=False
    )
    quiet_hours_start = serializers.TimeField(required=False)
    quiet_hours_end = serializers.TimeField(required=False)
    conversion_window_days = serializers.IntegerField(
        min_value=1, max_value=actions.MAX_CONVERSION_WINDOW_DAYS, required=False
    )


class CampaignChangeInput(CampaignInput):
    """The same fields, each optional: a draft is saved as the marketer types."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        for field in self.fields.values():
            field.required = False


class LintInput(serializers.Serializer[Any]):
    body = serializers.CharField(max_length=MAX_BODY_CHARS, allow_blank=True, trim_whitespace=False)
    fallbacks = serializers.DictField(
        child=serializers.CharField(max_length=MAX_FALLBACK_CHARS, allow_blank=True), required=False
    )
    signature = serializers.CharField(max_length=30, required=False, allow_blank=True)
    opt_out_tail = serializers.CharField(max_length=60, required=False, allow_blank=True)


class CampaignPreviewInput(serializers.Serializer[Any]):
    body = serializers.CharField(
        max_length=MAX_BODY_CHARS, required=False, trim_whitespace=False, help_text="Unsaved text to preview."
    )
    count = serializers.IntegerField(min_value=1, max_value=estimates.MAX_PREVIEW, required=False, default=3)


class AwareDateTimeField(serializers.DateTimeField):
    """A date-time that must say its time zone: "09:00" alone is not read in the server's zone and sent at
    a time the marketer did not mean."""

    def enforce_timezone(self, value: dt.datetime) -> dt.datetime:
        if timezone.is_naive(value):
            raise serializers.ValidationError(_("Give the time with its time zone, e.g. 2026-05-01T09:00:00+08:00."))
        return super().enforce_timezone(value)


class ScheduleInput(serializers.Serializer[Any]):
    at = AwareDateTimeField(required=False, help_text="When to send, with its time zone; within a year.")
    now = serializers.BooleanField(required=False, default=False, help_text="Send at once instead.")

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if attrs.get("now") == ("at" in attrs):
            raise serializers.ValidationError({"at": ["Give either a time (at) or now: true."]})
        return attrs


# --- Helpers -------------------------------------------------------------------------------------------


def _campaigns() -> QuerySet[Campaign]:
    return Campaign.objects.select_related("segment", "inbox", "created_by__agent_profile")


def _campaign(campaign_id: int) -> Campaign:
    campaign = _campaigns().filter(pk=campaign_id).first()
    if campaign is None:
        raise NotFound("No such campaign.")
    return campaign


def _references(data: dict[str, Any]) -> dict[str, Any]:
    """segment_id / inbox_id → the rows, as field errors when they do not exist."""
    values = {k: v for k, v in data.items() if k not in ("segment_id", "inbox_id")}
    errors: dict[str, list[str]] = {}
    if "segment_id" in data:
        segment = Segment.objects.filter(pk=data["segment_id"]).first()
        if segment is None:
            errors["segment_id"] = ["No such segment."]
        values["segment"] = segment
    if "inbox_id" in data:
        inbox = Inbox.objects.filter(pk=data["inbox_id"]).first()
        if inbox is None:
            errors["inbox_id"] = ["No such inbox."]
        values["inbox"] = inbox
    if errors:
        raise serializers.ValidationError(errors)
    return values


def _answer(campaign_id: int, code: int = status.HTTP_200_OK) -> Response:
    return Response(shapes.campaign_data(_campaign(campaign_id)), status=code)


# --- Views ---------------------------------------------------------------------------------------------


class CampaignListView(generics.GenericAPIView[Campaign]):
    permission_classes = [CampaignStaff]
    serializer_class = shapes.CampaignShape

    @extend_schema(responses=shapes.CampaignShape(many=True))
    def get(self, request: Request) -> Response:
        """Campaigns, newest first, each with its recipients per state."""
        page = self.paginate_queryset(_campaigns().order_by("-created_at", "-id")) or []
        counts = shapes.recipient_counts(c.pk for c in page)
        return self.get_paginated_response([shapes.campaign_data(c, counts=counts[c.pk]) for c in page])

    @extend_schema(request=CampaignInput, responses={201: shapes.CampaignShape})
    def post(self, request: Request) -> Response:
        """A new draft. Clinical detail does not stop a draft: it comes back in `problems`."""
        values = _references(valid_input(CampaignInput, request.data))
        campaign = actions.create_campaign(actor=staff_of(request), **values)
        return _answer(campaign.pk, status.HTTP_201_CREATED)


class CampaignDetailView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(responses=shapes.CampaignShape, operation_id="campaign_detail")
    def get(self, request: Request, campaign_id: int) -> Response:
        return _answer(_campaign(campaign_id).pk)

    @extend_schema(request=CampaignChangeInput, responses=shapes.CampaignShape, operation_id="campaign_update")
    def put(self, request: Request, campaign_id: int) -> Response:
        """Change a draft; any subset of the fields."""
        campaign = _campaign(campaign_id)
        changes = _references(valid_input(CampaignChangeInput, request.data))
        actions.update_campaign(campaign, actor=staff_of(request), changes=changes)
        return _answer(campaign.pk)

    @extend_schema(request=CampaignChangeInput, responses=shapes.CampaignShape, operation_id="campaign_partial_update")
    def patch(self, request: Request, campaign_id: int) -> Response:
        return self.put(request, campaign_id)


class CampaignLintView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=LintInput, responses=shapes.LintResultShape)
    def post(self, request: Request) -> Response:
        """The composer's live lint: clinical detail in any part, and template mistakes in the body."""
        data = valid_input(LintInput, request.data)
        parts = {
            "body": data["body"],
            "fallbacks": " / ".join((data.get("fallbacks") or {}).values()),
            "signature": data.get("signature", ""),
            "opt_out_tail": data.get("opt_out_tail", ""),
        }
        problems = [{"part": part, **p.as_dict()} for part, text in parts.items() for p in lint_template(text)]
        return Response(
            {
                "problems": problems,
                "template_errors": template_problems(data["body"]),
                "placeholders": sorted(parse(data["body"]).placeholders),
            }
        )


class CampaignPreviewView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=CampaignPreviewInput, responses=shapes.CampaignPreviewShape)
    def post(self, request: Request, campaign_id: int) -> Response:
        """The message for the first few recipients, names masked (see campaigns.estimate)."""
        campaign = _campaign(campaign_id)
        data = valid_input(CampaignPreviewInput, request.data)
        body = data.get("body")
        if body is not None and (errors := template_problems(body)):
            raise serializers.ValidationError({"body": errors})
        return Response({"samples": estimates.preview(campaign, body=body, count=data["count"])})


class CampaignEstimateView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(responses=shapes.EstimateShape)
    def get(self, request: Request, campaign_id: int) -> Response:
        """Recipients, SMS segments and cost at the configured price per segment."""
        return Response(shapes.EstimateShape(estimates.estimate(_campaign(campaign_id))).data)


class CampaignScheduleView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=ScheduleInput, responses=shapes.CampaignShape)
    def post(self, request: Request, campaign_id: int) -> Response:
        """Send at a time, or now (the recipients are snapshotted before this answers)."""
        campaign = _campaign(campaign_id)
        data = valid_input(ScheduleInput, request.data)
        if data["now"]:
            actions.send_now(campaign, staff_of(request))
        else:
            actions.schedule_campaign(campaign, data["at"], staff_of(request))
        return _answer(campaign.pk)


class CampaignPauseView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=None, responses=shapes.CampaignShape)
    def post(self, request: Request, campaign_id: int) -> Response:
        actions.pause_campaign(_campaign(campaign_id), staff_of(request))
        return _answer(campaign_id)


class CampaignResumeView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=None, responses=shapes.CampaignShape)
    def post(self, request: Request, campaign_id: int) -> Response:
        actions.resume_campaign(_campaign(campaign_id), staff_of(request))
        return _answer(campaign_id)


class CampaignCancelView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(request=None, responses=shapes.CampaignShape)
    def post(self, request: Request, campaign_id: int) -> Response:
        """Stop for good: recipients not yet sent are cancelled."""
        actions.cancel_campaign(_campaign(campaign_id), staff_of(request))
        return _answer(campaign_id)


class CampaignProgressView(APIView):
    permission_classes = [CampaignStaff]

    @extend_schema(responses=shapes.ProgressShape)
    def get(self, request: Request, campaign_id: int) -> Response:
        """Recipients per state: what the progress bar's websocket carries, read afresh."""
        data = progress.snapshot(campaign_id)
        if data is None:
            raise NotFound("No such campaign.")
        return Response(data)

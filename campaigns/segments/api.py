"""JSON API for segments under /api/v1/campaigns/segments/. Views parse, call the actions, answer.

Marketers build audiences here but never see who is in them: previews and details give counts only.
"""

from __future__ import annotations

from typing import Any

from django.db.models import Count, QuerySet
from django.shortcuts import get_object_or_404
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.parsers import FormParser, MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.actions import segments as actions
from campaigns.models import Segment, SegmentKind
from campaigns.segments.catalog import field_catalog
from campaigns.segments.compiler import patients_matching, segment_patients
from campaigns.segments.rules import check_references, parse_rules
from contactcenter import access
from contactcenter.actions.consent import marketing_permitted
from contactcenter.api.common import valid_input
from contactcenter.models import Patient, Role

SEGMENT_ROLES = frozenset({Role.MARKETER, Role.ADMIN, Role.SUPERVISOR})


class SegmentStaff(permissions.BasePermission):
    message = "Only marketers, supervisors and admins work with segments."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.role_of(request.user) in SEGMENT_ROLES


# --- Shapes ------------------------------------------------------------------------------------------------


class CampaignSegmentShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    description = serializers.CharField()
    kind = serializers.ChoiceField(choices=SegmentKind.choices)
    rules = serializers.JSONField()
    member_count = serializers.IntegerField(allow_null=True, help_text="Static lists: members uploaded.")
    created_at = serializers.DateTimeField()
    updated_at = serializers.DateTimeField()


class CampaignSegmentDetailShape(CampaignSegmentShape):
    count = serializers.IntegerField(help_text="Patients in the segment now (merged records excluded).")
    marketing_allowed = serializers.IntegerField(
        help_text="Of those, the patients marketing may go to under the consent policy."
    )
    excluded_for_consent = serializers.IntegerField(help_text="count - marketing_allowed: opted out or no consent.")


class CampaignSegmentInput(serializers.Serializer[Any]):
    name = serializers.CharField(max_length=120)
    description = serializers.CharField(max_length=300, required=False, allow_blank=True, default="")
    kind = serializers.ChoiceField(choices=SegmentKind.choices, required=False, default=SegmentKind.RULES)
    rules = serializers.JSONField(required=False, default=dict)


class SegmentPreviewInput(serializers.Serializer[Any]):
    rules = serializers.JSONField()


class SegmentPreviewShape(serializers.Serializer[Any]):
    count = serializers.IntegerField()
    marketing_allowed = serializers.IntegerField()
    excluded_for_consent = serializers.IntegerField()


class SegmentMembersInput(serializers.Serializer[Any]):
    file = serializers.FileField(help_text="CSV with a header: phone (手机) or mrn (病案号); UTF-8 or GB18030.")
    replace = serializers.BooleanField(required=False, default=False, help_text="Replace the list instead of adding.")


class SegmentRejectedRowShape(serializers.Serializer[Any]):
    row = serializers.IntegerField()
    value = serializers.CharField()
    reason = serializers.CharField()


class SegmentMembersReportShape(serializers.Serializer[Any]):
    rows = serializers.IntegerField()
    added = serializers.IntegerField()
    already_listed = serializers.IntegerField()
    rejected = SegmentRejectedRowShape(many=True)
    encoding = serializers.CharField()
    member_count = serializers.IntegerField()


class SegmentChoiceShape(serializers.Serializer[Any]):
    value = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes it as a field


class SegmentOperatorShape(serializers.Serializer[Any]):
    operator = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes it as a field
    kind = serializers.CharField(help_text="choices, texts, choice, date, days, months, integer, … or none")


class SegmentFieldShape(serializers.Serializer[Any]):
    field = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes it as a field
    operators = SegmentOperatorShape(many=True)
    choices = SegmentChoiceShape(many=True)
    open = serializers.BooleanField(help_text="Values other than the offered choices are accepted.")


class SegmentFieldCatalogShape(serializers.Serializer[Any]):
    max_depth = serializers.IntegerField()
    max_rules = serializers.IntegerField()
    fields = SegmentFieldShape(many=True)  # type: ignore[assignment]  # the metaclass takes it as a field


def _segments() -> QuerySet[Segment]:
    return Segment.objects.annotate(n_members=Count("members"))


def _shape(segment: Segment) -> dict[str, Any]:
    members = getattr(segment, "n_members", None)
    if members is None:
        members = segment.members.count()
    return {
        "id": segment.pk,
        "name": segment.name,
        "description": segment.description,
        "kind": segment.kind,
        "rules": segment.rules,
        "member_count": members if segment.kind == SegmentKind.STATIC else None,
        "created_at": segment.created_at,
        "updated_at": segment.updated_at,
    }


def consent_counts(patients: QuerySet[Patient]) -> dict[str, int]:
    """How many patients there are, and how many of them the consent registry lets marketing reach
    (marketing_permitted, the rule launch and the sender apply)."""
    count = patients.count()
    allowed = patients.filter(marketing_permitted()).count()
    return {"count": count, "marketing_allowed": allowed, "excluded_for_consent": count - allowed}


def _detail(segment: Segment) -> dict[str, Any]:
    return {**_shape(segment), **consent_counts(segment_patients(segment))}


# --- Views -------------------------------------------------------------------------------------------------


class SegmentListView(generics.GenericAPIView[Segment]):
    permission_classes = [SegmentStaff]
    serializer_class = CampaignSegmentShape

    def get_queryset(self) -> QuerySet[Segment]:
        return _segments().order_by("name", "id")

    @extend_schema(responses=CampaignSegmentShape(many=True))
    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        return self.get_paginated_response([_shape(s) for s in page or []])

    @extend_schema(request=CampaignSegmentInput, responses={201: CampaignSegmentDetailShape})
    def post(self, request: Request) -> Response:
        """Save a new segment; rule errors come back as {"rules": ["rules[1].value: …"]}."""
        data = valid_input(CampaignSegmentInput, request.data)
        segment = actions.save_segment(segment=None, actor=request.user, **data)
        return Response(_detail(segment), status=status.HTTP_201_CREATED)


class SegmentDetailView(APIView):
    permission_classes = [SegmentStaff]

    @extend_schema(responses=CampaignSegmentDetailShape)
    def get(self, request: Request, segment_id: int) -> Response:
        return Response(_detail(get_object_or_404(_segments(), pk=segment_id)))

    @extend_schema(request=CampaignSegmentInput, responses=CampaignSegmentDetailShape)
    def put(self, request: Request, segment_id: int) -> Response:
        segment = get_object_or_404(Segment, pk=segment_id)
        data = valid_input(CampaignSegmentInput, request.data)
        if "kind" not in request.data:
            data["kind"] = segment.kind
        segment = actions.save_segment(segment=segment, actor=request.user, **data)
        return Response(_detail(segment))

    @extend_schema(responses={204: None})
    def delete(self, request: Request, segment_id: int) -> Response:
        actions.delete_segment(segment=get_object_or_404(Segment, pk=segment_id))
        return Response(status=status.HTTP_204_NO_CONTENT)


class SegmentPreviewView(APIView):
    permission_classes = [SegmentStaff]

    @extend_schema(request=SegmentPreviewInput, responses=SegmentPreviewShape)
    def post(self, request: Request) -> Response:
        """How many patients the rules select now, and how many of them may be sent marketing under the
        consent policy: the rule builder's live count. Counts only."""
        data = valid_input(SegmentPreviewInput, request.data)
        tree = parse_rules(data["rules"])
        check_references(tree)
        return Response(consent_counts(patients_matching(tree.to_json())))


class SegmentMembersView(APIView):
    permission_classes = [SegmentStaff]
    parser_classes = [MultiPartParser, FormParser]

    @extend_schema(request={"multipart/form-data": SegmentMembersInput}, responses=SegmentMembersReportShape)
    def post(self, request: Request, segment_id: int) -> Response:
        """Add a static list's members from a CSV of phones or MRNs; the report lists rows not added and why."""
        segment = get_object_or_404(Segment, pk=segment_id)
        data = valid_input(SegmentMembersInput, request.data)
        report = actions.import_static_list(segment=segment, data=data["file"].read(), replace=data["replace"])
        return Response({**report.as_dict(), "member_count": segment.members.count()})


class FieldCatalogView(APIView):
    permission_classes = [SegmentStaff]

    @extend_schema(responses=SegmentFieldCatalogShape)
    def get(self, request: Request) -> Response:
        """The fields a rule can test, their operators and value choices, labelled in the user's language."""
        return Response(field_catalog())

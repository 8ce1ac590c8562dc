"""Campaign analytics API under /api/v1/campaigns/analytics/: aggregates only, read-only.

Marketers, supervisors and admins. The answers hold counts, campaign and segment names and provider
error codes, never a patient, so reading them is not an audit event (exporting a file is: see views.py).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import permissions, serializers
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from campaigns.analytics import selectors, shapes
from campaigns.analytics.filters import FilterError, may_read_analytics, parse_bucket, parse_period
from campaigns.models import Campaign, Segment


class AnalyticsStaff(permissions.BasePermission):
    message = "Only marketers, supervisors and admins read campaign analytics."

    def has_permission(self, request: Request, view: Any) -> bool:
        return may_read_analytics(request.user)


def _bucket(request: Request) -> str | None:
    try:
        return parse_bucket(request.query_params)
    except FilterError as error:
        raise serializers.ValidationError({error.field: [str(error)]}) from None


class CampaignAnalyticsView(APIView):
    permission_classes = [AnalyticsStaff]

    @extend_schema(
        parameters=[shapes.AnalyticsQueryInput],
        responses=shapes.CampaignAnalyticsShape,
        operation_id="campaign_analytics",
    )
    def get(self, request: Request, campaign_id: int) -> Response:
        bucket = _bucket(request)
        campaign = Campaign.objects.select_related("segment").filter(pk=campaign_id).first()
        if campaign is None:
            raise NotFound("No such campaign.")
        return Response(selectors.campaign_analytics(campaign, bucket=bucket))


class SegmentAnalyticsView(APIView):
    permission_classes = [AnalyticsStaff]

    @extend_schema(
        parameters=[shapes.AnalyticsQueryInput],
        responses=shapes.SegmentAnalyticsShape,
        operation_id="campaign_segment_analytics",
    )
    def get(self, request: Request, segment_id: int) -> Response:
        bucket = _bucket(request)
        segment = Segment.objects.filter(pk=segment_id).first()
        if segment is None:
            raise NotFound("No such segment.")
        return Response(selectors.segment_analytics(segment, bucket=bucket))


class OverviewAnalyticsView(APIView):
    permission_classes = [AnalyticsStaff]

    @extend_schema(
        parameters=[shapes.AnalyticsPeriodInput],
        responses=shapes.AnalyticsOverviewShape,
        operation_id="campaign_analytics_overview",
    )
    def get(self, request: Request) -> Response:
        try:
            period = parse_period(request.query_params)
        except FilterError as error:
            raise serializers.ValidationError({error.field: [str(error)]}) from None
        return Response(selectors.overview(period))

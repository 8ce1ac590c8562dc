from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns.analytics import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("overview/", api.OverviewAnalyticsView.as_view(), name="api-campaigns-analytics-overview"),
    path("segments/<int:segment_id>/", api.SegmentAnalyticsView.as_view(), name="api-segment-analytics"),
    path("<int:campaign_id>/", api.CampaignAnalyticsView.as_view(), name="api-campaign-analytics"),
]

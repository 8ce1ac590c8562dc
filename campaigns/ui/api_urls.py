from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns.ui import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("", api.CampaignListView.as_view(), name="api-campaigns"),
    path("lint/", api.CampaignLintView.as_view(), name="api-campaign-lint"),
    path("<int:campaign_id>/", api.CampaignDetailView.as_view(), name="api-campaign"),
    path("<int:campaign_id>/preview/", api.CampaignPreviewView.as_view(), name="api-campaign-preview"),
    path("<int:campaign_id>/estimate/", api.CampaignEstimateView.as_view(), name="api-campaign-estimate"),
    path("<int:campaign_id>/schedule/", api.CampaignScheduleView.as_view(), name="api-campaign-schedule"),
    path("<int:campaign_id>/pause/", api.CampaignPauseView.as_view(), name="api-campaign-pause"),
    path("<int:campaign_id>/resume/", api.CampaignResumeView.as_view(), name="api-campaign-resume"),
    path("<int:campaign_id>/cancel/", api.CampaignCancelView.as_view(), name="api-campaign-cancel"),
    path("<int:campaign_id>/progress/", api.CampaignProgressView.as_view(), name="api-campaign-progress"),
]

"""Marketer pages under /campaigns/; the JSON API lives under /api/v1/campaigns/ (api_urls.py)."""

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("campaigns.ui.urls")),
    path("analytics/", include("campaigns.analytics.urls")),
    path("lifecycle/", include("campaigns.lifecycle_urls")),
]

from __future__ import annotations

from django.urls import include, path

urlpatterns = [
    path("", include("campaigns.ui.api_urls")),
    path("segments/", include("campaigns.segments.api_urls")),
    path("analytics/", include("campaigns.analytics.api_urls")),
]

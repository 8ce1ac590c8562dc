from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns.analytics import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.overview_page, name="campaigns-analytics"),
    path("export.csv", views.overview_export, name="campaigns-analytics-export"),
    path("<int:campaign_id>/", views.campaign_page, name="campaign-analytics"),
    path("<int:campaign_id>/export.csv", views.campaign_export, name="campaign-analytics-export"),
    path("segments/<int:segment_id>/", views.segment_page, name="segment-analytics"),
]

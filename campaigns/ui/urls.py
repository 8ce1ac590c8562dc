from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns.ui import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.campaign_list, name="campaigns"),
    path("new/", views.campaign_new, name="campaign-new"),
    path("<int:pk>/", views.campaign_detail, name="campaign-detail"),
    path("<int:pk>/edit/", views.campaign_edit, name="campaign-edit"),
    path("segments/", views.segment_list, name="campaign-segments"),
    path("segments/new/", views.segment_new, name="segment-new"),
    path("segments/<int:pk>/", views.segment_edit, name="segment-edit"),
]

from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from campaigns.segments import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("", api.SegmentListView.as_view(), name="api-campaign-segments"),
    path("preview/", api.SegmentPreviewView.as_view(), name="api-campaign-segment-preview"),
    path("fields/", api.FieldCatalogView.as_view(), name="api-campaign-segment-fields"),
    path("<int:segment_id>/", api.SegmentDetailView.as_view(), name="api-campaign-segment"),
    path("<int:segment_id>/members/", api.SegmentMembersView.as_view(), name="api-campaign-segment-members"),
]

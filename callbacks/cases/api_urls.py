from __future__ import annotations

from django.urls import URLPattern, URLResolver, path

from callbacks.cases import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("", api.CaseListView.as_view(), name="api-service-cases"),
    path("counts/", api.CaseCountsView.as_view(), name="api-service-case-counts"),
    path("<int:case_id>/", api.CaseDetailView.as_view(), name="api-service-case"),
    path("<int:case_id>/verify/", api.CaseVerifyView.as_view(), name="api-service-case-verify"),
    path("<int:case_id>/improve/", api.CaseImproveView.as_view(), name="api-service-case-improve"),
    path("<int:case_id>/close/", api.CaseCloseView.as_view(), name="api-service-case-close"),
    path("<int:case_id>/reopen/", api.CaseReopenView.as_view(), name="api-service-case-reopen"),
    path("<int:case_id>/contact/", api.CaseContactView.as_view(), name="api-service-case-contact"),
    path("<int:case_id>/assign/", api.CaseAssignView.as_view(), name="api-service-case-assign"),
    path("<int:case_id>/notes/", api.CaseNoteView.as_view(), name="api-service-case-notes"),
]

from __future__ import annotations

from csp.decorators import csp_update
from django.contrib.auth.decorators import login_required
from django.urls import path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

from channels_adapters.sms.api import SegmentCountView
from contactcenter.api import consent_views, views

# Both for signed-in staff only (SPECTACULAR_SETTINGS["SERVE_PERMISSIONS"]): the schema answers 401 to anonymous
# callers; the docs page sends a browser to sign in first. Swagger UI's page carries an inline <style> and its
# components set styles: inline styles are allowed there alone; its script is a separate file (the split view).
api_docs = login_required(
    csp_update({"style-src": ["'unsafe-inline'"]})(SpectacularSwaggerSplitView.as_view(url_name="api-schema"))
)

urlpatterns = [
    path("schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path("docs/", api_docs, name="api-docs"),
    path("me/", views.MeView.as_view(), name="api-me"),
    path("patients/", views.PatientListView.as_view(), name="api-patients"),
    path("patients/<int:patient_id>/", views.PatientDetailView.as_view(), name="api-patient"),
    path("patients/<int:patient_id>/identities/", views.PatientIdentityView.as_view(), name="api-patient-identities"),
    path("patients/<int:patient_id>/merge/", views.PatientMergeView.as_view(), name="api-patient-merge"),
    path("patients/<int:patient_id>/consent/", consent_views.PatientConsentView.as_view(), name="api-patient-consent"),
    path("sms/segments/", SegmentCountView.as_view(), name="api-sms-segments"),
    path("conversations/", views.ConversationListView.as_view(), name="api-conversations"),
    path("conversations/<int:conversation_id>/", views.ConversationDetailView.as_view(), name="api-conversation"),
    path("conversations/<int:conversation_id>/messages/", views.MessageListView.as_view(), name="api-messages"),
    path("conversations/<int:conversation_id>/notes/", views.NoteListView.as_view(), name="api-notes"),
    path("conversations/<int:conversation_id>/assignable/", views.AssignableStaffView.as_view(), name="api-assignable"),
    path(
        "conversations/<int:conversation_id>/<slug:action>/",
        views.ConversationActionView.as_view(),
        name="api-conversation-action",
    ),
    path("canned-responses/", views.CannedResponseListView.as_view(), name="api-canned"),
    path("labels/", views.LabelListView.as_view(), name="api-labels"),
    path("audit/", views.AuditLogView.as_view(), name="api-audit"),
]

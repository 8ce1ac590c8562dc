from __future__ import annotations

from django.contrib.auth import views as auth_views
from django.urls import path
from django.views.generic import RedirectView

from contactcenter import settings_views, views

urlpatterns = [
    path("", RedirectView.as_view(pattern_name="inbox", permanent=False)),
    path("login/", auth_views.LoginView.as_view(template_name="contactcenter/login.html"), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("inbox/", views.inbox, name="inbox"),
    path("audit/", views.audit_log, name="audit-log"),
    path("settings/inboxes/", settings_views.inbox_list, name="inbox-settings"),
    path("healthz", views.healthz, name="healthz"),
    path("readyz", views.readyz, name="readyz"),
    path("settings/status/", views.system_status, name="system-status"),
]

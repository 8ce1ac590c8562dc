from __future__ import annotations

from django.urls import path

from channels_adapters.sms import settings_views

urlpatterns = [
    path("new/", settings_views.edit_sms_inbox, name="sms-inbox-new"),
    path("<int:inbox_id>/", settings_views.edit_sms_inbox, name="sms-inbox-edit"),
]

from __future__ import annotations

from django.urls import path

from channels_adapters.sms import views

urlpatterns = [
    path("inbound/", views.inbound, name="twilio-sms-inbound"),
    path("status/", views.status_callback, name="twilio-sms-status"),
]

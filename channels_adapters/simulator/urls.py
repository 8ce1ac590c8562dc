from __future__ import annotations

from django.urls import path

from channels_adapters.simulator import views

urlpatterns = [
    path("", views.phone, name="simulator"),
    path("send/", views.patient_sends, name="simulator-send"),
    path("threads/", views.threads, name="simulator-threads"),
    path("phones/", views.phones, name="simulator-phones"),
    path("mailbox/", views.mailbox, name="simulator-mailbox"),
]

from __future__ import annotations

from django.urls import path

from channels_adapters.simulator import views
from channels_adapters.simulator.guard import loopback_only

# Every page and API of the simulator, loopback only (guard.py says why).
urlpatterns = [
    path("", loopback_only(views.phone), name="simulator"),
    path("send/", loopback_only(views.patient_sends), name="simulator-send"),
    path("threads/", loopback_only(views.threads), name="simulator-threads"),
    path("phones/", loopback_only(views.phones), name="simulator-phones"),
    path("mailbox/", loopback_only(views.mailbox), name="simulator-mailbox"),
]

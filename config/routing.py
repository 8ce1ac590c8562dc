from __future__ import annotations

from channels.auth import AuthMiddlewareStack
from channels.security.websocket import AllowedHostsOriginValidator
from django.urls import path

from campaigns.sending.consumer import CampaignProgressConsumer
from channels_adapters.webchat.consumer import WidgetConsumer
from contactcenter.consumers import AgentConsumer

websocket_urlpatterns = [
    # Staff: a session cookie, and only from the platform's own hosts.
    path("ws/agent/", AllowedHostsOriginValidator(AuthMiddlewareStack(AgentConsumer.as_asgi()))),
    path(
        "ws/campaigns/<int:campaign_id>/",
        AllowedHostsOriginValidator(AuthMiddlewareStack(CampaignProgressConsumer.as_asgi())),
    ),
    # Patients: the widget runs on the hospital's sites, so the consumer checks the inbox's own allowed
    # origins instead; no cookies or sessions are read.
    path("ws/webchat/<str:token>/", WidgetConsumer.as_asgi()),
]

"""HTTP and websockets in one ASGI application, served by Daphne."""

from __future__ import annotations

import asyncio
import os
from typing import Any

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")
django_asgi_app = get_asgi_application()

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402

from config.routing import websocket_urlpatterns  # noqa: E402
from contactcenter import taskrunner  # noqa: E402
from contactcenter.shedding import ShedWebhookOverload  # noqa: E402


class AttachLoop:
    """Tells the in-process task runner which event loop the server (and its channel layer) runs on."""

    def __init__(self, app: Any) -> None:
        self.app = app
        self.attached = False

    async def __call__(self, scope: Any, receive: Any, send: Any) -> Any:
        if not self.attached:
            taskrunner.attach_server_loop(asyncio.get_running_loop())
            self.attached = True
        return await self.app(scope, receive, send)


application = AttachLoop(
    ProtocolTypeRouter(
        {
            # Webhooks beyond what this process can start soon are refused with a retryable 503.
            "http": ShedWebhookOverload(django_asgi_app),
            # Each websocket route carries its own protection (see config/routing.py).
            "websocket": URLRouter(websocket_urlpatterns),
        }
    )
)

from __future__ import annotations

from django.apps import AppConfig


class WebchatConfig(AppConfig):
    name = "channels_adapters.webchat"
    label = "webchat"
    verbose_name = "Web chat"

    def ready(self) -> None:
        from channels_adapters.base import register
        from channels_adapters.webchat.adapter import WebchatAdapter

        register(WebchatAdapter.channel_type, WebchatAdapter)

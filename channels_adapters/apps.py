from __future__ import annotations

from django.apps import AppConfig


class ChannelAdaptersConfig(AppConfig):
    name = "channels_adapters"
    verbose_name = "Channel adapters"

    def ready(self) -> None:
        # Email has no app of its own (no webhooks yet): its adapter is registered here, so an email inbox's
        # messages (agents' replies, a web chat reply sent on by email) go out through the one delivery path.
        from channels_adapters.base import register
        from channels_adapters.email.adapter import EmailAdapter

        register(EmailAdapter.channel_type, EmailAdapter)

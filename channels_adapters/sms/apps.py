from __future__ import annotations

from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "channels_adapters.sms"
    label = "sms"
    verbose_name = "SMS (Twilio)"

    def ready(self) -> None:
        from channels_adapters.base import register
        from channels_adapters.sms.adapter import TwilioSmsAdapter

        register(TwilioSmsAdapter.channel_type, TwilioSmsAdapter)

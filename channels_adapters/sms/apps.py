from __future__ import annotations

from django.apps import AppConfig


class SmsConfig(AppConfig):
    name = "channels_adapters.sms"
    label = "sms"
    verbose_name = "SMS (Twilio)"

    def ready(self) -> None:
        from django.db.models.signals import post_delete, post_save

        from channels_adapters.base import register
        from channels_adapters.sms.adapter import TwilioSmsAdapter, forget_senders
        from channels_adapters.sms.models import TwilioSender
        from contactcenter.models import Inbox

        register(TwilioSmsAdapter.channel_type, TwilioSmsAdapter)
        # The webhooks' sender cache follows every change this process makes to senders and inboxes.
        for model in (TwilioSender, Inbox):
            post_save.connect(forget_senders, sender=model, dispatch_uid=f"sms-senders-{model.__name__}-saved")
            post_delete.connect(forget_senders, sender=model, dispatch_uid=f"sms-senders-{model.__name__}-deleted")

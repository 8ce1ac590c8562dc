from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _


class SenderKind(models.TextChoices):
    NUMBER = "number", _("Phone number")
    MESSAGING_SERVICE = "messaging_service", _("Messaging Service")


class TwilioSender(models.Model):
    """A Twilio number or Messaging Service owned by one SMS inbox; inbound webhooks route by these.

    One inbox may own a whole Messaging Service pool: its webhooks carry the MessagingServiceSid and
    any of the pool's numbers as To, so the service, not the number, decides the inbox.
    """

    inbox = models.ForeignKey("contactcenter.Inbox", on_delete=models.CASCADE, related_name="twilio_senders")
    kind = models.CharField(max_length=20, choices=SenderKind.choices)
    value = models.CharField(max_length=64, unique=True, help_text=_("E.164 number or MG… service SID"))

    class Meta:
        ordering = ["kind", "value"]

    def __str__(self) -> str:
        return self.value

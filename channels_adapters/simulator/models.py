from __future__ import annotations

from django.db import models
from django.utils import timezone


class SimulatedDelivery(models.Model):
    """What the simulated provider 'delivered' to a patient's device, shown on the simulator page."""

    inbox = models.ForeignKey("contactcenter.Inbox", on_delete=models.CASCADE, related_name="+")
    to = models.CharField(max_length=255)
    body = models.TextField()
    provider_message_id = models.CharField(max_length=60, unique=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class SimulatedEmail(models.Model):
    """An email the demo 'sent': the MIME message as it would have gone to the SMTP server, shown on the
    patient-mailbox page. Nothing leaves the machine."""

    inbox = models.ForeignKey("contactcenter.Inbox", on_delete=models.CASCADE, related_name="+")
    to = models.CharField(max_length=254)
    subject = models.CharField(max_length=500, blank=True)
    body = models.TextField()
    message_id = models.CharField(max_length=200, unique=True)
    raw = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]

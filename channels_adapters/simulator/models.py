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

from __future__ import annotations

from django.db import models
from django.db.models import Q

from contactcenter.models.conversations import Inbox


class InboundWebhook(models.Model):
    """An inbound message as its webhook delivered it: verified, validated, stored in one INSERT, then answered.

    The webhook's answer waits for nothing else, so a wave of replies is taken as fast as rows can be inserted;
    a worker turns the rows into messages, conversations and events in arrival order per inbox
    (contactcenter.actions.inbound_queue) and deletes each row in the transaction that stores its message.
    Unique on the provider's id, so a provider's retry while the row waits is stored once.
    """

    # No index of its own: the unique (inbox, provider id) index starts with it, and every index is written on
    # the hot path's one INSERT.
    inbox = models.ForeignKey(Inbox, on_delete=models.CASCADE, related_name="+", db_index=False)
    # As long as Message.provider_message_id: whatever the adapter accepts as an id must fit here too.
    provider_message_id = models.CharField(max_length=120)
    # The channel's normalized record (channels_adapters.base.InboundMessage), already cleaned by its parse().
    record = models.JSONField()
    received_at = models.DateTimeField()
    attempts = models.IntegerField(default=0)
    # The exception's class only: never the message (see contactcenter.actions.inbound_queue).
    last_error = models.CharField(max_length=300, blank=True)
    # Set after MAX_ATTEMPTS failed tries: out of the queue (so later messages are not held up), counted on the
    # status page until an admin retries it.
    parked_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["inbox", "provider_message_id"], name="inbound_webhook_once"),
        ]
        indexes = [
            models.Index(fields=["inbox", "id"], condition=Q(parked_at__isnull=True), name="inbound_webhook_queue"),
        ]

    def __str__(self) -> str:
        return f"inbound webhook {self.pk} (inbox {self.inbox_id})"

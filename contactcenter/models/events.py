from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone


class Event(models.Model):
    """A real-time event, stored so a reconnecting client can ask for everything after its last id.

    Ids are handed out in commit order (see contactcenter.events.record), which is what makes
    "everything after N" a complete answer.
    """

    id = models.BigAutoField(primary_key=True)
    type = models.CharField(max_length=40)
    op = models.CharField(max_length=20)
    payload = models.JSONField()
    # Audience: who may read this event. Null fields do not widen it.
    inbox = models.ForeignKey("contactcenter.Inbox", null=True, on_delete=models.CASCADE, related_name="+")
    team = models.ForeignKey("contactcenter.Team", null=True, on_delete=models.CASCADE, related_name="+")
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.CASCADE, related_name="+")
    conversation_id = models.BigIntegerField(null=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [
            models.Index(fields=["created_at"]),
            # A web chat widget reads its own conversation's events after its cursor (webchat.selectors).
            models.Index(
                fields=["conversation_id", "id"],
                name="event_conversation_idx",
                condition=models.Q(conversation_id__isnull=False),
            ),
        ]

from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class WebVisitor(models.Model):
    """One browser that started a web chat: its pre-chat details and the patient record it speaks for.

    The visitor id is also the patient's IdentityKind.VISITOR identity, so every message the widget sends
    resolves to this patient through the one inbound path. The contact details are kept here as given,
    because a phone typed into a form must never be attached to a patient who already owns it (only an
    identity HMAC from the hospital's portal may claim an existing record); the offline reply still
    needs them.
    """

    inbox = models.ForeignKey("contactcenter.Inbox", on_delete=models.CASCADE, related_name="web_visitors")
    visitor_id = models.CharField(max_length=64, unique=True)
    patient = models.ForeignKey("contactcenter.Patient", on_delete=models.PROTECT, related_name="+")
    name = models.CharField(max_length=200, blank=True)
    phone = models.CharField(max_length=32, blank=True, help_text=_("E.164, as given in the pre-chat form"))
    email = models.CharField(max_length=254, blank=True)
    # True when the hospital's portal vouched for the patient with an identity HMAC.
    verified = models.BooleanField(default=False)
    language = models.CharField(max_length=10, default="en")
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["inbox", "patient"])]

    def __str__(self) -> str:
        return f"Visitor {self.pk}"


class WebUpload(models.Model):
    """An image a visitor attached in the widget, stored as MEDIA_ROOT/webchat/<name> (a random name).

    Who may fetch it follows from its message: staff who may see the message's conversation, and visitors
    whose patient's threads include it. The file is never reachable from a public URL.
    """

    name = models.CharField(max_length=80, unique=True)
    visitor = models.ForeignKey(WebVisitor, on_delete=models.CASCADE, related_name="uploads")
    message = models.ForeignKey("contactcenter.Message", on_delete=models.CASCADE, related_name="+")
    content_type = models.CharField(max_length=40)
    size = models.PositiveIntegerField()
    width = models.PositiveIntegerField()
    height = models.PositiveIntegerField()
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return f"Upload {self.pk}"

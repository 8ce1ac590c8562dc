from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Inbox, Message, Patient


class CampaignStatus(models.TextChoices):
    DRAFT = "draft", _("Draft")
    SCHEDULED = "scheduled", _("Scheduled")
    RUNNING = "running", _("Sending")
    PAUSED = "paused", _("Paused")
    COMPLETED = "completed", _("Completed")
    CANCELLED = "cancelled", _("Cancelled")


class MissingValueRule(models.TextChoices):
    SKIP = "skip", _("Skip the recipient")
    FALLBACK = "fallback", _("Use the fallback text")


class Campaign(models.Model):
    name = models.CharField(max_length=120)
    segment = models.ForeignKey("campaigns.Segment", on_delete=models.PROTECT, related_name="campaigns")
    # The sending SMS inbox: its number or Messaging Service is what the throttle limits.
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="campaigns")
    body = models.TextField(help_text=_("Template: {{ first_name }}, {{ department }} …"))
    # Per placeholder fallbacks, e.g. {"first_name": "患者"}; used when missing_value_rule is fallback.
    fallbacks = models.JSONField(default=dict, blank=True)
    missing_value_rule = models.CharField(
        max_length=10, choices=MissingValueRule.choices, default=MissingValueRule.FALLBACK
    )
    signature = models.CharField(max_length=30, blank=True, help_text=_("e.g. 康华医院, sent as 【康华医院】"))
    opt_out_tail = models.CharField(max_length=60, blank=True, help_text=_("e.g. 拒收请回复R"))
    status = models.CharField(max_length=10, choices=CampaignStatus.choices, default=CampaignStatus.DRAFT)
    scheduled_at = models.DateTimeField(null=True, blank=True)
    messages_per_second = models.PositiveSmallIntegerField(default=10)
    quiet_hours_start = models.TimeField(default=dt.time(21, 0))
    quiet_hours_end = models.TimeField(default=dt.time(8, 0))
    conversion_window_days = models.PositiveSmallIntegerField(default=30)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    launched_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    # For the dispatcher: the next time this campaign has work (launch, deferred recipients, a batch).
    next_action_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [models.Index(fields=["status", "next_action_at"], name="campaign_due")]

    def __str__(self) -> str:
        return self.name


class RecipientState(models.TextChoices):
    PENDING = "pending", _("Pending")
    DEFERRED = "deferred", _("Deferred (quiet hours)")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    FAILED = "failed", _("Failed")
    SKIPPED_OPTED_OUT = "skipped_opted_out", _("Skipped: opted out")
    # Neither opted in nor covered by settings.MARKETING_CONSENT_POLICY (consent unknown).
    SKIPPED_NO_CONSENT = "skipped_no_consent", _("Skipped: no marketing consent")
    SKIPPED_INVALID = "skipped_invalid", _("Skipped: invalid number")
    SKIPPED_MISSING = "skipped_missing", _("Skipped: missing personalisation")
    CANCELLED = "cancelled", _("Cancelled")


class CampaignRecipient(models.Model):
    """One patient of a launched campaign, snapshotted at launch; the unit of exactly-once sending."""

    campaign = models.ForeignKey(Campaign, on_delete=models.CASCADE, related_name="recipients")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="+")
    phone = models.CharField(max_length=20, blank=True)
    time_zone = models.CharField(max_length=60, default="Asia/Shanghai")
    state = models.CharField(max_length=20, choices=RecipientState.choices, default=RecipientState.PENDING)
    deferred_until = models.DateTimeField(null=True, blank=True)
    # The one message sent to this recipient; set in the same transaction that leaves PENDING.
    message = models.OneToOneField(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    error_code = models.CharField(max_length=20, blank=True)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    replied_at = models.DateTimeField(null=True, blank=True)
    opted_out_at = models.DateTimeField(null=True, blank=True)
    converted_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["campaign", "patient"], name="campaign_recipient_once")]
        indexes = [models.Index(fields=["campaign", "state"], name="campaign_recipient_state")]

    def __str__(self) -> str:
        return f"{self.campaign_id}:{self.patient_id}"

from __future__ import annotations

import secrets

from django.conf import settings
from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models.patients import Patient
from contactcenter.models.staff import Team


def _public_token() -> str:
    return secrets.token_urlsafe(18)


class ChannelType(models.TextChoices):
    SMS = "sms", _("SMS")
    VOICE = "voice", _("Voice")
    EMAIL = "email", _("Email")
    WEBCHAT = "webchat", _("Web chat")
    SIMULATOR = "simulator", _("Simulator")


class Inbox(models.Model):
    """One configured channel endpoint: a Twilio number, a mailbox, a chat widget."""

    name = models.CharField(max_length=120)
    channel_type = models.CharField(max_length=20, choices=ChannelType.choices)
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="inboxes")
    # Non-secret channel settings only; secrets are named here and read from the environment.
    config = models.JSONField(default=dict, blank=True)
    public_token = models.CharField(max_length=40, unique=True, default=_public_token)
    auto_assign = models.BooleanField(default=True)
    # A resolved conversation is reopened by a new inbound message within this window, else a new one starts.
    reopen_window_hours = models.PositiveIntegerField(default=72)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["name"]
        verbose_name_plural = "inboxes"

    def __str__(self) -> str:
        return self.name


class Label(models.Model):
    name = models.CharField(max_length=60, unique=True)
    color = models.CharField(max_length=7, default="#6b7280")

    def __str__(self) -> str:
        return self.name


class ConversationStatus(models.TextChoices):
    OPEN = "open", _("Open")
    PENDING = "pending", _("Pending")
    SNOOZED = "snoozed", _("Snoozed")
    RESOLVED = "resolved", _("Resolved")


class Priority(models.IntegerChoices):
    NONE = 0, _("None")
    LOW = 1, _("Low")
    MEDIUM = 2, _("Medium")
    HIGH = 3, _("High")
    URGENT = 4, _("Urgent")


class Conversation(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="conversations")
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="conversations")
    team = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="conversations")
    status = models.CharField(max_length=10, choices=ConversationStatus.choices, default=ConversationStatus.OPEN)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="assigned_conversations",
    )
    labels = models.ManyToManyField(Label, blank=True, related_name="conversations")
    priority = models.PositiveSmallIntegerField(choices=Priority.choices, default=Priority.NONE)
    unread_count = models.PositiveIntegerField(default=0)
    subject = models.CharField(max_length=255, blank=True)
    snoozed_until = models.DateTimeField(null=True, blank=True)
    last_message_at = models.DateTimeField(default=timezone.now)
    last_message_preview = models.CharField(max_length=140, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    resolved_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-last_message_at"]
        constraints = [
            # At most one live thread per patient and inbox, so two concurrent inbound messages cannot
            # open two conversations; the loser of the race finds the winner's row.
            models.UniqueConstraint(
                fields=["patient", "inbox"],
                condition=~Q(status="resolved"),
                name="conversation_one_live_per_patient_inbox",
            )
        ]
        indexes = [
            # The inbox list (selectors.conversation_list_for) orders by priority, then last activity.
            # One index per filter it offers, in that order, so a page is the first rows of one index
            # range rather than a sort of every match (bench/inbox_queries.py measures these).
            models.Index(
                fields=["inbox", "status", "-priority", "-last_message_at", "-id"], name="conv_list_inbox_idx"
            ),
            # "mine"; also open_load_for through its leading columns.
            models.Index(
                fields=["assignee", "status", "-priority", "-last_message_at", "-id"], name="conv_list_assignee_idx"
            ),
            # "unassigned": PostgreSQL orders by an index only after equalities, and IS NULL is not one,
            # so these are partial. Per inbox the unassigned rows are few enough to read in order
            # whatever the status, which spares a sort that would join every patient first.
            models.Index(
                fields=["status", "-priority", "-last_message_at", "-id"],
                condition=Q(assignee__isnull=True),
                name="conv_list_unassigned_idx",
            ),
            models.Index(
                fields=["inbox", "-priority", "-last_message_at", "-id"],
                condition=Q(assignee__isnull=True),
                name="conv_list_unassigned_inbox_idx",
            ),
            models.Index(fields=["status", "-priority", "-last_message_at", "-id"], name="conv_list_status_idx"),
            models.Index(fields=["-priority", "-last_message_at", "-id"], name="conv_list_any_status_idx"),
            # Page totals and unread badges count everything an agent's teams may see (inbox team or
            # conversation team). Holding every column those counts read, these answer from the index
            # alone; few distinct keys deduplicate them to a fraction of the table.
            models.Index(fields=["status", "inbox", "team", "assignee"], name="conv_visibility_idx"),
            models.Index(
                fields=["status", "inbox", "team", "assignee"],
                condition=Q(unread_count__gt=0),
                name="conv_unread_idx",
            ),
            models.Index(fields=["status", "snoozed_until"]),
        ]

    def __str__(self) -> str:
        return f"Conversation {self.pk}"


class MessageDirection(models.TextChoices):
    INBOUND = "in", _("Inbound")
    OUTBOUND = "out", _("Outbound")


class SenderKind(models.TextChoices):
    PATIENT = "patient", _("Patient")
    AGENT = "agent", _("Agent")
    SYSTEM = "system", _("System")
    CAMPAIGN = "campaign", _("Campaign")
    SURVEY = "survey", _("Survey")


class MessageStatus(models.TextChoices):
    RECEIVED = "received", _("Received")
    QUEUED = "queued", _("Queued")
    SENDING = "sending", _("Sending")
    SENT = "sent", _("Sent")
    DELIVERED = "delivered", _("Delivered")
    UNDELIVERED = "undelivered", _("Undelivered")
    FAILED = "failed", _("Failed")
    READ = "read", _("Read")


class Message(models.Model):
    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="messages")
    # Denormalized from the conversation so provider ids can be unique per inbox.
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="+")
    direction = models.CharField(max_length=3, choices=MessageDirection.choices)
    sender_kind = models.CharField(max_length=10, choices=SenderKind.choices)
    author = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    body = models.TextField(blank=True)
    attachments = models.JSONField(default=list, blank=True)
    status = models.CharField(max_length=12, choices=MessageStatus.choices)
    provider_message_id = models.CharField(max_length=120, null=True, blank=True)
    error_code = models.CharField(max_length=40, blank=True)
    error_message = models.CharField(max_length=500, blank=True)
    # Hints for the agent, e.g. "likely_opt_out" for "please stop texting me".
    flags = models.JSONField(default=list, blank=True)
    # Everything the provider sent us, kept verbatim for support and audits.
    provider_payload = models.JSONField(default=dict, blank=True)
    # The sender's own key for one attempt to send (the agent's browser makes one per message): a retry after a
    # lost answer carries the same key and gets the same message back instead of texting the patient twice.
    client_key = models.CharField(max_length=64, null=True, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    sent_at = models.DateTimeField(null=True, blank=True)
    delivered_at = models.DateTimeField(null=True, blank=True)
    read_at = models.DateTimeField(null=True, blank=True)
    status_changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]
        constraints = [
            # The provider's id leads: a status callback finds its message by that id alone, before it knows
            # the inbox, and with the inbox first that lookup scanned the whole message table.
            models.UniqueConstraint(
                fields=["provider_message_id", "inbox"],
                condition=Q(provider_message_id__isnull=False),
                name="message_provider_id_unique",
            ),
            models.UniqueConstraint(
                fields=["conversation", "client_key"],
                condition=Q(client_key__isnull=False),
                name="message_client_key_unique",
            ),
        ]
        indexes = [
            models.Index(fields=["conversation", "created_at"]),
            # The few messages still waiting for their delivery: the stalled-delivery sweep reads only these.
            models.Index(fields=["status_changed_at"], condition=Q(status="queued"), name="message_queued_since"),
            # Handed to a provider with no answer saved: what reconcile_unconfirmed looks at.
            models.Index(
                fields=["status_changed_at"],
                condition=Q(status="sending", provider_message_id__isnull=True),
                name="message_unconfirmed_since",
            ),
            # Accepted by the provider, status not moved on since: what poll_unsettled_statuses looks at.
            models.Index(
                fields=["status_changed_at"],
                condition=Q(status="sending", provider_message_id__isnull=False),
                name="message_unsettled_since",
            ),
        ]

    def __str__(self) -> str:
        return f"Message {self.pk}"


class Note(models.Model):
    """A private note between staff on a conversation; never sent to the patient."""

    conversation = models.ForeignKey(Conversation, on_delete=models.CASCADE, related_name="notes")
    author = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    body = models.TextField()
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["created_at", "id"]


class CannedResponse(models.Model):
    short_code = models.SlugField(max_length=40)
    content = models.TextField()
    # Null team: available to everyone.
    team = models.ForeignKey(Team, null=True, blank=True, on_delete=models.CASCADE, related_name="canned_responses")

    class Meta:
        ordering = ["short_code"]
        constraints = [models.UniqueConstraint(fields=["team", "short_code"], name="canned_unique_code_per_team")]

    def __str__(self) -> str:
        return self.short_code

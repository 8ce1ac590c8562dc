"""Handing queued messages to their channel adapter and moving statuses forward only."""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.db import transaction
from django.utils import timezone

from channels_adapters.base import AdapterError, OutboundMessage, StatusUpdate, adapter_for
from contactcenter import events
from contactcenter.actions.conversations import audience_of
from contactcenter.models import Message, MessageStatus, PatientIdentity
from contactcenter.status_hooks import run_status_hooks

logger = logging.getLogger(__name__)

# Statuses only move up this ladder; failure states sit above "sent" so a late "sent" cannot undo
# them, and "read" is the end of the happy path.
STATUS_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.READ: 4,
}
SUCCESS = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ})
TIMESTAMP_FIELD: dict[str, str] = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
}


@dataclass(frozen=True)
class DeliveryOutcome:
    message_id: int
    status: str
    retry: bool = False
    error: str = ""


def deliver_message(*, message_id: int) -> DeliveryOutcome:
    """Send one queued message through its adapter. Safe to call twice: only a queued message is sent.

    The message is moved to "sending" in its own committed transaction before the provider is
    called, so a retried task finds it no longer queued and never sends twice.
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation__patient", "inbox")
            .get(pk=message_id)
        )
        if message.status != MessageStatus.QUEUED or message.provider_message_id:
            return DeliveryOutcome(message_id, message.status)
        inbox = message.inbox
        try:
            adapter = adapter_for(inbox)
        except AdapterError as exc:
            _fail(message, exc)
            return DeliveryOutcome(message_id, MessageStatus.FAILED, error=exc.message)
        address = (
            PatientIdentity.objects.filter(patient_id=message.conversation.patient_id, kind=adapter.address_kind)
            .order_by("-id")
            .values_list("value", flat=True)
            .first()
        )
        if address is None:
            missing = AdapterError(
                f"the patient has no {adapter.address_kind} to send to", permanent=True, code="no_address"
            )
            _fail(message, missing)
            return DeliveryOutcome(message_id, MessageStatus.FAILED, error=missing.message)
        _move(message, MessageStatus.SENDING)
    outbound = OutboundMessage(
        message_id=message.pk,
        inbox=inbox,
        to=address,
        body=message.body,
        attachments=message.attachments,
        subject=message.conversation.subject,
    )
    try:
        with transaction.atomic():
            result = adapter.send(outbound)
            message = Message.objects.select_for_update(of=("self",)).get(pk=message_id)
            message.provider_message_id = result.provider_message_id
            message.save(update_fields=["provider_message_id"])
            _move(message, result.status)
    except AdapterError as exc:
        with transaction.atomic():
            message = Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=message_id)
            if exc.permanent:
                _fail(message, exc)
                if exc.recipient_opted_out:
                    _record_provider_opt_out(message)
                return DeliveryOutcome(message_id, MessageStatus.FAILED, error=exc.message)
            if exc.ambiguous:
                # The provider may hold the message: stay "sending" and let its callback settle it.
                Message.objects.filter(pk=message_id).update(error_message=exc.message[:500])
                return DeliveryOutcome(message_id, MessageStatus.SENDING, error=exc.message)
            # Back to queued so the retry is allowed to send; nothing reached the provider. The agent
            # sees the reason while the retry waits.
            Message.objects.filter(pk=message_id).update(status=MessageStatus.QUEUED, error_message=exc.message[:500])
            events.record(
                events.MessageStatusChanged(
                    conversation_id=message.conversation_id,
                    message_id=message_id,
                    status=MessageStatus.QUEUED,
                    error_code="",
                    error_message=exc.message[:500],
                ),
                audience_of(message.conversation),
            )
        return DeliveryOutcome(message_id, MessageStatus.QUEUED, retry=True, error=exc.message)
    return DeliveryOutcome(message_id, result.status)


def _record_provider_opt_out(message: Message) -> None:
    from contactcenter.actions.consent import record_consent
    from contactcenter.models import ConsentPurpose, ConsentSource, ConsentStatus

    record_consent(
        patient=message.conversation.patient,
        purpose=ConsentPurpose.MARKETING,
        status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.PROVIDER,
        channel=message.inbox.channel_type,
        keyword=message.error_code,
        message=message,
    )


def _fail(message: Message, exc: AdapterError) -> None:
    message.error_code = exc.code[:40]
    message.error_message = exc.message[:500]
    message.save(update_fields=["error_code", "error_message"])
    _move(message, MessageStatus.FAILED)
    logger.warning("message %s failed permanently: %s", message.pk, exc.code or "adapter error")


def _move(message: Message, status: str) -> bool:
    """Move forward only; publish the change. Returns False when the status would go backwards."""
    if STATUS_RANK.get(status, -1) <= STATUS_RANK.get(message.status, -1) and status != message.status:
        return False
    if status == message.status:
        return False
    now = timezone.now()
    old = message.status
    message.status = status
    message.status_changed_at = now
    fields = ["status", "status_changed_at"]
    if status in SUCCESS and message.error_message and not message.error_code:
        # A transient error's text from an earlier attempt no longer describes this message.
        message.error_message = ""
        fields.append("error_message")
    stamp = TIMESTAMP_FIELD.get(status)
    if stamp and getattr(message, stamp) is None:
        setattr(message, stamp, now)
        fields.append(stamp)
    message.save(update_fields=fields)
    run_status_hooks(message=message, old=old, new=status)
    conversation = message.conversation
    events.record(
        events.MessageStatusChanged(
            conversation_id=conversation.pk,
            message_id=message.pk,
            status=status,
            error_code=message.error_code,
            error_message=message.error_message,
        ),
        audience_of(conversation),
    )
    return True


@transaction.atomic
def update_message_status(*, inbox_id: int, update: StatusUpdate, message_id: int | None = None) -> bool:
    """A provider's status callback. Late, duplicate or out-of-order callbacks change nothing.

    `message_id` (our id, carried on the callback URL) settles a send whose API answer was lost: the
    message has no provider id yet, so the callback's id is attached before the status moves.
    """
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(inbox_id=inbox_id, provider_message_id=update.provider_message_id)
        .first()
    )
    if message is None and message_id is not None:
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .filter(pk=message_id, inbox_id=inbox_id, provider_message_id__isnull=True)
            .first()
        )
        if message is not None:
            message.provider_message_id = update.provider_message_id
            message.save(update_fields=["provider_message_id"])
    if message is None:
        logger.info("status for unknown provider message on inbox %s ignored", inbox_id)
        return False
    if STATUS_RANK.get(update.status, -1) <= STATUS_RANK.get(message.status, -1):
        return False
    if update.error_code or update.error_message:
        message.error_code = update.error_code[:40]
        message.error_message = update.error_message[:500]
        message.save(update_fields=["error_code", "error_message"])
    return _move(message, update.status)


@transaction.atomic
def abandon_delivery(*, message_id: int, reason: str) -> None:
    """Transient errors that never cleared: fail the message so the agent sees it and can resend."""
    message = Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=message_id)
    if message.status == MessageStatus.QUEUED:
        _fail(message, AdapterError(f"gave up after repeated transient errors: {reason}", code="retries_exhausted"))

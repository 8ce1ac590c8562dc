"""The one inbound path: every channel hands its normalized record to receive_inbound."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.db import IntegrityError, transaction
from django.utils import timezone

from channels_adapters.base import InboundMessage
from contactcenter import events
from contactcenter.actions.consent import apply_inbound_keywords, keyword_reply
from contactcenter.actions.conversations import assign_round_robin, audience_of
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import resolve_patient
from contactcenter.api.shapes import conversation_data, message_data
from contactcenter.inbound_hooks import run_inbound_hooks
from contactcenter.models import (
    Conversation,
    ConversationStatus,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    SenderKind,
)

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class InboundResult:
    message: Message
    conversation: Conversation
    patient: Patient
    # False when the provider retried a message we already stored: nothing new was written.
    created: bool


def receive_inbound(record: InboundMessage, *, inbox: Inbox | None = None) -> InboundResult:
    """Identity resolution → conversation reopened or created → message → events on commit.

    Idempotent on (inbox, provider_message_id): a provider retry returns the stored message and
    publishes nothing. Concurrent duplicates race on the unique constraint; the loser's savepoint
    rolls back and it returns the winner's row. `inbox`, when the caller has it, saves reading it again.
    """
    if record.provider_message_id:
        existing = _stored(record)
        if existing is not None:
            return existing
    try:
        with transaction.atomic(), events.deferred():
            return receive_new(record, inbox=inbox)
    except IntegrityError:
        if record.provider_message_id:
            existing = _stored(record)
            if existing is not None:
                return existing
    # Lost the race to open (or reopen) this patient's live conversation in the inbox; the winner's
    # row is committed now, so one more attempt appends to it.
    with transaction.atomic(), events.deferred():
        return receive_new(record, inbox=inbox)


def _stored(record: InboundMessage) -> InboundResult | None:
    message = (
        Message.objects.select_related("conversation__patient")
        .filter(inbox_id=record.inbox_id, provider_message_id=record.provider_message_id)
        .first()
    )
    if message is None:
        return None
    return InboundResult(message, message.conversation, message.conversation.patient, created=False)


def receive_new(record: InboundMessage, *, inbox: Inbox | None = None) -> InboundResult:
    """receive_inbound's work for a message not stored yet, inside the caller's transaction (and, for its events
    to be written last, its events.deferred() block). A duplicate provider id raises IntegrityError."""
    if inbox is None:
        inbox = Inbox.objects.get(pk=record.inbox_id)
    resolved = resolve_patient(
        kind=record.sender.kind,
        value=record.sender.value,
        name=record.sender.name,
        also_known_as=record.sender.also_known_as,
    )
    patient = resolved.patient
    received_at = record.received_at or timezone.now()
    conversation, created_conversation, changed = _live_conversation(inbox=inbox, patient=patient, now=received_at)
    # Known already: the event payloads below need not read them again.
    conversation.inbox = inbox
    conversation.patient = patient

    message = Message.objects.create(
        conversation=conversation,
        inbox=inbox,
        direction=MessageDirection.INBOUND,
        sender_kind=SenderKind.PATIENT,
        body=record.body,
        attachments=record.attachments,
        status=MessageStatus.RECEIVED,
        provider_message_id=record.provider_message_id,
        provider_payload=dict(record.provider_payload),
        created_at=received_at,
        status_changed_at=received_at,
    )
    # Before the hooks, with the context they claim: "N" answering a survey's yes/no question is no opt-out.
    keyword = apply_inbound_keywords(
        message=message, conversation=conversation, patient=patient, channel=inbox.channel_type
    )
    # The row is locked (_live_conversation) or new, so the counters are computed here rather than re-read.
    conversation.unread_count += 1
    conversation.last_message_at = received_at
    # An image-only message still needs something in the list; the paperclip needs no translation.
    conversation.last_message_preview = record.body[:140] or ("📎" if record.attachments else "")
    conversation.save(update_fields=["unread_count", "last_message_at", "last_message_preview"])
    if inbox.auto_assign and conversation.assignee_id is None:
        assign_round_robin(conversation=conversation)
        if conversation.assignee_id is not None:
            changed.append("assignee")

    audience = audience_of(conversation)
    if created_conversation:
        events.record(events.ConversationAdded(conversation=conversation_data(conversation)), audience)
    else:
        events.record(
            events.ConversationUpdated(
                conversation=conversation_data(conversation), changed=[*changed, "last_message_at", "unread_count"]
            ),
            audience,
        )
    events.record(events.MessageAdded(message=message_data(message)), audience)
    # After the message's own events, so a survey's next question lands after the reply it answers.
    run_inbound_hooks(
        message=message, conversation=conversation, patient=patient, keyword=keyword.kind if keyword else None
    )
    reply = keyword_reply(keyword, patient=patient) if keyword is not None else None
    if reply is not None:
        # Carriers expect HELP answered and STOP/START confirmed; service messages, sent whatever the consent.
        send_outbound(conversation=conversation, body=reply, author=None, sender_kind=SenderKind.SYSTEM)
    logger.info(
        "inbound message %s inbox %s conversation %s patient %s", message.pk, inbox.pk, conversation.pk, patient.pk
    )
    return InboundResult(message, conversation, patient, created=True)


def _live_conversation(*, inbox: Inbox, patient: Patient, now: dt.datetime) -> tuple[Conversation, bool, list[str]]:
    """The patient's live thread in this inbox; else the last one reopened if recent; else a new one."""
    # NO KEY UPDATE: a concurrent delivery's deferred foreign-key check (FOR KEY SHARE on this row,
    # taken at its commit while it holds the event-order lock) must not wait behind us, or we deadlock.
    live = (
        # The assignee comes along for the event payload; only the conversation's row is locked.
        Conversation.objects.select_for_update(no_key=True, of=("self",))
        .select_related("assignee__agent_profile")
        .filter(inbox=inbox, patient=patient)
        .exclude(status=ConversationStatus.RESOLVED)
        .first()
    )
    if live is not None:
        if live.status in (ConversationStatus.SNOOZED, ConversationStatus.PENDING):
            # A patient writing back is exactly what snoozed and pending conversations wait for.
            live.status = ConversationStatus.OPEN
            live.snoozed_until = None
            live.save(update_fields=["status", "snoozed_until"])
            return live, False, ["status"]
        return live, False, []
    recent = (
        Conversation.objects.select_for_update(no_key=True)
        .filter(
            inbox=inbox,
            patient=patient,
            status=ConversationStatus.RESOLVED,
            resolved_at__gte=now - dt.timedelta(hours=inbox.reopen_window_hours),
        )
        .order_by("-resolved_at")
        .first()
    )
    if recent is not None:
        recent.status = ConversationStatus.OPEN
        recent.resolved_at = None
        recent.save(update_fields=["status", "resolved_at"])
        return recent, False, ["status"]
    conversation = Conversation.objects.create(
        inbox=inbox, patient=patient, team_id=inbox.team_id, last_message_at=now, created_at=now
    )
    return conversation, True, []

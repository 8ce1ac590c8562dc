"""The one outbound path: agents, campaigns, surveys and callbacks all send through send_outbound."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from contactcenter import events
from contactcenter.actions.consent import check_may_send, marketing_refusals
from contactcenter.actions.conversations import audience_of
from contactcenter.api.shapes import conversation_data, conversations_data, message_data, messages_data
from contactcenter.bulk_insert import insert_rows
from contactcenter.bulk_update import update_rows
from contactcenter.models import (
    ConsentPurpose,
    Conversation,
    ConversationStatus,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    SenderKind,
)
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

MAX_BODY_CHARS = 4000


def body_problem(body: str, *, has_attachments: bool) -> str | None:
    """What is wrong with a stripped body, as a code ("empty", "too_long"), or None: one rule for
    send_outbound and its batch twin."""
    if not body and not has_attachments:
        return "empty"
    if len(body) > MAX_BODY_CHARS:
        return "too_long"
    return None


@transaction.atomic
@events.written_last
def send_outbound(
    *,
    conversation: Conversation,
    body: str,
    author: User | None,
    sender_kind: str = SenderKind.AGENT,
    attachments: list[dict[str, Any]] | None = None,
    purpose: str = ConsentPurpose.SERVICE,
    flags: list[str] | None = None,
    client_key: str | None = None,
) -> Message:
    """Write the message as queued, publish it, and deliver it after commit.

    Marketing the consent registry does not allow (an opt-out, or no consent under the policy) is refused
    here, for every caller and channel. `flags`: hints shown with the message from its first event (a web
    chat reply that went by SMS says so). `client_key`: the sender's key for this attempt; sending again with
    the same key (a retry after a lost answer) returns the message already written and sends nothing more.
    """
    body = body.strip()
    problem = body_problem(body, has_attachments=bool(attachments))
    if problem == "empty":
        raise ValidationError({"body": ["A message cannot be empty."]})
    if problem == "too_long":
        raise ValidationError({"body": [f"A message can be at most {MAX_BODY_CHARS} characters."]})
    conversation = (
        Conversation.objects.select_for_update(of=("self",), no_key=True)
        .select_related("inbox", "patient")
        .get(pk=conversation.pk)
    )
    if client_key:
        # Under the conversation's lock, so two retries racing each other cannot both miss the first.
        sent = Message.objects.filter(conversation=conversation, client_key=client_key).first()
        if sent is not None:
            logger.info("outbound message %s sent again by its client; nothing new written", sent.pk)
            return sent
    check_may_send(patient=conversation.patient, purpose=purpose)
    now = timezone.now()
    message = Message.objects.create(
        client_key=client_key or None,
        conversation=conversation,
        inbox=conversation.inbox,
        direction=MessageDirection.OUTBOUND,
        sender_kind=sender_kind,
        author=author,
        body=body,
        attachments=attachments or [],
        status=MessageStatus.QUEUED,
        flags=list(flags or []),
        created_at=now,
        status_changed_at=now,
    )
    changed = ["last_message_at"]
    conversation.last_message_at = now
    conversation.last_message_preview = body[:140]
    if sender_kind == SenderKind.AGENT:
        # An agent answering has read the thread; a reply to a snoozed or pending thread makes it live.
        conversation.unread_count = 0
        changed.append("unread_count")
        if conversation.status in (ConversationStatus.SNOOZED, ConversationStatus.PENDING):
            conversation.status = ConversationStatus.OPEN
            conversation.snoozed_until = None
            changed.append("status")
        if conversation.assignee_id is None and author is not None:
            conversation.assignee = author
            changed.append("assignee")
    conversation.save()
    audience = audience_of(conversation)
    events.record(events.MessageAdded(message=message_data(message)), audience)
    events.record(events.ConversationUpdated(conversation=conversation_data(conversation), changed=changed), audience)
    message_id = message.pk
    transaction.on_commit(lambda: enqueue("contactcenter.tasks.deliver_message", message_id=message_id))
    logger.info("outbound message %s queued on conversation %s", message.pk, conversation.pk)
    return message


@dataclass(frozen=True)
class Draft:
    """One message of a batch: the caller's key (a campaign recipient's id) to match refusals and results."""

    key: int
    conversation_id: int
    body: str


@dataclass
class QueuedBatch:
    messages: dict[int, Message]
    # Messages announced only inside their new thread's ConversationAdded (see deliver_batch).
    unannounced: frozenset[int]
    # Drafts not written, with the reason's code: "empty", "too_long", "opted_out", "no_consent".
    refused: dict[int, str]


@transaction.atomic
@events.written_last
def queue_outbound_batch(
    *, drafts: list[Draft], sender_kind: str, purpose: str, new_conversations: frozenset[int] = frozenset()
) -> QueuedBatch:
    """send_outbound for many messages of the system's own (a campaign chunk), in a handful of statements.

    The same rules as send_outbound: bodies are checked (body_problem) and marketing the consent registry
    does not allow is refused (marketing_refusals, what check_may_send asks too); messages are written as
    queued with their events. Nothing is enqueued: the caller delivers the batch
    (contactcenter.actions.delivery.deliver_batch), which paces it to the provider's rate.
    Agents' messages go through send_outbound, which also handles assignment and read state.

    `new_conversations`: threads just opened for this batch (open_outbound_conversations), announced
    here once as added, already carrying their first message, rather than as added, message added and
    updated.
    """
    if sender_kind == SenderKind.AGENT:
        raise ValueError("agents' replies go through send_outbound")
    refused: dict[int, str] = {}
    bodies: dict[int, str] = {}
    for draft in drafts:
        body = draft.body.strip()
        problem = body_problem(body, has_attachments=False)
        if problem is not None:
            refused[draft.key] = problem
        else:
            bodies[draft.key] = body
    writable = [d for d in drafts if d.key in bodies]
    if not writable:
        return QueuedBatch(messages={}, unannounced=frozenset(), refused=refused)
    conversations = {
        c.pk: c
        for c in Conversation.objects.select_for_update(no_key=True).filter(
            pk__in=[d.conversation_id for d in writable]
        )
    }
    # A chunk's threads share an inbox or two: one instance each, rather than one per row from a join.
    inboxes = Inbox.objects.in_bulk({c.inbox_id for c in conversations.values()})
    for conversation in conversations.values():
        conversation.inbox = inboxes[conversation.inbox_id]
    if purpose == ConsentPurpose.MARKETING:
        # The same registry answer as send_outbound's check_may_send, for the whole batch at once.
        refusals = marketing_refusals(c.patient_id for c in conversations.values())
        for draft in writable:
            reason = refusals.get(conversations[draft.conversation_id].patient_id)
            if reason is not None:
                refused[draft.key] = reason
        writable = [d for d in writable if d.key not in refused]
    now = timezone.now()
    created = insert_rows(
        Message,
        [
            Message(
                conversation=conversations[d.conversation_id],
                inbox=conversations[d.conversation_id].inbox,
                direction=MessageDirection.OUTBOUND,
                sender_kind=sender_kind,
                author=None,
                body=bodies[d.key],
                attachments=[],
                status=MessageStatus.QUEUED,
                created_at=now,
                status_changed_at=now,
            )
            for d in writable
        ],
    )
    touched: dict[int, Conversation] = {}
    for message in created:
        conversation = message.conversation
        conversation.last_message_at = now
        conversation.last_message_preview = message.body[:140]
        touched[conversation.pk] = conversation
    update_rows(
        Conversation,
        ["last_message_at", "last_message_preview"],
        {c.pk: (c.last_message_at, c.last_message_preview) for c in touched.values()},
    )
    batch: list[tuple[events.BaseEvent, events.Audience]] = []
    shown = conversations_data([m.conversation for m in created])
    # A message announced inside its new thread's ConversationAdded needs no shape of its own.
    told = [m for m in created if m.conversation_id not in new_conversations]
    message_shapes = dict(zip((m.pk for m in told), messages_data(told), strict=True))
    for message, conversation_shape in zip(created, shown, strict=True):
        audience = audience_of(message.conversation)
        if message.conversation_id in new_conversations:
            # A thread nobody has seen yet is announced once, carrying its first message's preview; nobody
            # can have it open, and opening it reads the message from the API.
            batch.append((events.ConversationAdded(conversation=conversation_shape), audience))
        else:
            batch.append((events.MessageAdded(message=message_shapes[message.pk]), audience))
            changed = ["last_message_at"]
            batch.append((events.ConversationUpdated(conversation=conversation_shape, changed=changed), audience))
    events.record_many(batch)
    logger.info("%d outbound %s messages queued", len(created), sender_kind)
    return QueuedBatch(
        messages={d.key: m for d, m in zip(writable, created, strict=True)},
        unannounced=frozenset(m.pk for m in created if m.conversation_id in new_conversations),
        refused=refused,
    )

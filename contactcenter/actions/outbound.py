"""The one outbound path: agents, campaigns, surveys and callbacks all send through send_outbound."""

from __future__ import annotations

import logging
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone

from contactcenter import events
from contactcenter.actions.consent import check_may_send
from contactcenter.actions.conversations import audience_of
from contactcenter.api.shapes import conversation_data, message_data
from contactcenter.models import (
    ConsentPurpose,
    Conversation,
    ConversationStatus,
    Message,
    MessageDirection,
    MessageStatus,
    SenderKind,
)
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

MAX_BODY_CHARS = 4000


@transaction.atomic
def send_outbound(
    *,
    conversation: Conversation,
    body: str,
    author: User | None,
    sender_kind: str = SenderKind.AGENT,
    attachments: list[dict[str, Any]] | None = None,
    purpose: str = ConsentPurpose.SERVICE,
) -> Message:
    """Write the message as queued, publish it, and deliver it after commit.

    Marketing to a patient who opted out is refused here, for every caller and channel.
    """
    body = body.strip()
    if not body and not attachments:
        raise ValidationError({"body": ["A message cannot be empty."]})
    if len(body) > MAX_BODY_CHARS:
        raise ValidationError({"body": [f"A message can be at most {MAX_BODY_CHARS} characters."]})
    conversation = (
        Conversation.objects.select_for_update(of=("self",), no_key=True)
        .select_related("inbox", "patient")
        .get(pk=conversation.pk)
    )
    check_may_send(patient=conversation.patient, purpose=purpose)
    now = timezone.now()
    message = Message.objects.create(
        conversation=conversation,
        inbox=conversation.inbox,
        direction=MessageDirection.OUTBOUND,
        sender_kind=sender_kind,
        author=author,
        body=body,
        attachments=attachments or [],
        status=MessageStatus.QUEUED,
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

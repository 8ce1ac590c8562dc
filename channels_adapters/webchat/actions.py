"""The only writers for web chat: starting a visit, a visitor's message, a visitor's read receipt, and a
staff reply sent on by SMS or email when no widget is open.

Messages go through contactcenter's one inbound path (receive_inbound); read receipts through the
one status action (update_message_status), so statuses move forward only and agents see them live.
"""

from __future__ import annotations

import logging
import secrets
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db import models, transaction
from django.urls import reverse

from channels_adapters.base import InboundMessage, Sender, StatusUpdate
from channels_adapters.webchat.identity import PortalIdentity
from channels_adapters.webchat.images import CheckedImage
from channels_adapters.webchat.models import WebUpload, WebVisitor
from contactcenter import events
from contactcenter.actions.consent import record_consent
from contactcenter.actions.conversations import audience_of, open_outbound_conversation
from contactcenter.actions.delivery import update_message_status
from contactcenter.actions.inbound import InboundResult, receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import add_identity, resolve_patient
from contactcenter.api.shapes import message_data
from contactcenter.boundary import clean_text
from contactcenter.identities import normalize_email, normalize_phone
from contactcenter.models import (
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    SenderKind,
)

logger = logging.getLogger(__name__)

CLIENT_ID_MAX = 64


@dataclass(frozen=True)
class PreChat:
    name: str
    phone: str
    email: str
    consent: bool
    language: str


def check_pre_chat(raw: object) -> PreChat:
    """Validate the pre-chat form: a name, a phone or an email, and the consent box ticked.

    The name is the visitor's own words, kept (NUL or a lone surrogate from a JSON escape become U+FFFD,
    which PostgreSQL can store); the phone and email are normalized or refused."""
    if not isinstance(raw, dict):
        raise ValidationError({"form": ["The form is missing."]})
    errors: dict[str, list[str]] = {}
    name = clean_text(str(raw.get("name") or "").strip(), field="name", max_length=200, truncate=True)
    if not name:
        errors["name"] = ["Please give your name."]
    phone_raw = str(raw.get("phone") or "").strip()[:40]
    email_raw = str(raw.get("email") or "").strip()[:254]
    phone = email = ""
    if phone_raw:
        try:
            phone = normalize_phone(phone_raw)
        except ValidationError:
            errors["phone"] = ["This is not a phone number."]
    if email_raw:
        try:
            email = normalize_email(email_raw)
        except ValidationError:
            errors["email"] = ["This is not an email address."]
    if not phone_raw and not email_raw:
        errors["phone"] = ["Give a phone number or an email address."]
    if raw.get("consent") is not True:
        errors["consent"] = ["Please agree to the terms to start the chat."]
    language = "zh-hans" if str(raw.get("language") or "").lower().startswith("zh") else "en"
    if errors:
        raise ValidationError(errors)
    return PreChat(name=name, phone=phone, email=email, consent=True, language=language)


@transaction.atomic
def start_visit(*, inbox: Inbox, form: PreChat, portal: PortalIdentity | None) -> WebVisitor:
    """A new visitor: its patient record, its visitor identity, and the consent it gave.

    With a portal identity (already HMAC-verified) the visitor joins that patient's record. Without one
    it gets a record of its own; the phone and email it typed are attached only if no one owns them,
    so a visitor can never claim an existing patient by typing their number.
    """
    visitor_id = "wv_" + secrets.token_urlsafe(24)
    if portal is not None:
        patient = resolve_patient(kind=portal.kind, value=portal.value, name=form.name).patient
        add_identity(patient=patient, kind=IdentityKind.VISITOR, value=visitor_id)
    else:
        also: list[tuple[str, str]] = []
        if form.phone:
            also.append((IdentityKind.PHONE, form.phone))
        if form.email:
            also.append((IdentityKind.EMAIL, form.email))
        patient = resolve_patient(
            kind=IdentityKind.VISITOR, value=visitor_id, name=form.name, also_known_as=tuple(also)
        ).patient
    record_consent(
        patient=patient,
        purpose=ConsentPurpose.SERVICE,
        status=ConsentStatus.OPTED_IN,
        source=ConsentSource.WIDGET,
        channel=inbox.channel_type,
    )
    visitor = WebVisitor.objects.create(
        inbox=inbox,
        visitor_id=visitor_id,
        patient=patient,
        name=form.name,
        phone=form.phone,
        email=form.email,
        verified=portal is not None,
        language=form.language,
    )
    logger.info("web visitor %s started on inbox %s patient %s", visitor.pk, inbox.pk, patient.pk)
    return visitor


def check_client_id(raw: object) -> str:
    if not isinstance(raw, str) or not (1 <= len(raw) <= CLIENT_ID_MAX) or not raw.isascii() or not raw.isprintable():
        raise ValidationError("client_id must be 1-64 printable ASCII characters", code="bad_client_id")
    return raw


def check_body(raw: object) -> str:
    """The visitor's message, kept whatever it holds: NUL and lone surrogates become U+FFFD, so it is stored."""
    if not isinstance(raw, str):
        raise ValidationError("body must be text", code="bad_body")
    body = clean_text(raw.strip(), field="body")
    if not body:
        raise ValidationError("A message cannot be empty.", code="empty")
    if len(body) > settings.WEBCHAT_MAX_MESSAGE_CHARS:
        raise ValidationError(
            f"A message can be at most {settings.WEBCHAT_MAX_MESSAGE_CHARS} characters.", code="too_long"
        )
    return body


def visitor_sends(*, visitor: WebVisitor, body: str, client_id: str, inbox: Inbox | None = None) -> InboundResult:
    """A visitor's message, through the one inbound path. Idempotent on the widget's client id, so a
    message re-sent after a reconnect (its ack lost) is stored once. `inbox` (the visitor's, as the caller
    read it) saves receive_inbound reading it again."""
    if inbox is not None and inbox.pk != visitor.inbox_id:
        raise ValueError("the visitor belongs to another inbox")
    return receive_inbound(
        InboundMessage(
            inbox_id=visitor.inbox_id,
            sender=Sender(kind=IdentityKind.VISITOR, value=visitor.visitor_id, name=visitor.name),
            body=check_body(body),
            provider_message_id=f"wc-{visitor.pk}-{check_client_id(client_id)}",
            provider_payload={"channel": "webchat", "visitor": visitor.pk, "client_id": client_id},
        ),
        inbox=inbox,
    )


def upload_path(name: str) -> Path:
    return Path(settings.MEDIA_ROOT) / "webchat" / name


def visitor_sends_image(
    *, visitor: WebVisitor, image: CheckedImage, client_id: str, inbox: Inbox | None = None
) -> InboundResult:
    """A visitor's image (already checked and re-encoded), as a message through the one inbound path.

    The file gets a random name; the message's attachment points staff at the staff-only view. Idempotent
    on the client id like a text message: a retried upload stores neither a second message nor a file.
    `inbox` as for visitor_sends.
    """
    if inbox is not None and inbox.pk != visitor.inbox_id:
        raise ValueError("the visitor belongs to another inbox")
    checked_id = check_client_id(client_id)
    name = f"{secrets.token_urlsafe(24)}.{image.extension}"
    path = upload_path(name)
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("xb") as out:
        out.write(image.data)
    attachment = {
        "kind": "image",
        "file": name,
        "url": reverse("webchat-staff-file", args=[name]),
        "content_type": image.content_type,
        "size": len(image.data),
        "width": image.width,
        "height": image.height,
    }
    try:
        with transaction.atomic():
            result = receive_inbound(
                InboundMessage(
                    inbox_id=visitor.inbox_id,
                    sender=Sender(kind=IdentityKind.VISITOR, value=visitor.visitor_id, name=visitor.name),
                    body="",
                    attachments=[attachment],
                    provider_message_id=f"wc-{visitor.pk}-{checked_id}",
                    provider_payload={"channel": "webchat", "visitor": visitor.pk, "client_id": checked_id},
                ),
                inbox=inbox,
            )
            if result.created:
                WebUpload.objects.create(
                    name=name,
                    visitor=visitor,
                    message=result.message,
                    content_type=image.content_type,
                    size=len(image.data),
                    width=image.width,
                    height=image.height,
                )
    except BaseException:
        path.unlink(missing_ok=True)
        raise
    if not result.created:
        path.unlink(missing_ok=True)
    else:
        logger.info("web visitor %s sent image message %s", visitor.pk, result.message.pk)
    return result


def visitor_read(*, visitor: WebVisitor, up_to_message_id: int, conversation_ids: list[int]) -> int:
    """The visitor has seen the staff's messages up to this id: each moves to read (forward only)."""
    unread = list(
        Message.objects.filter(
            conversation_id__in=conversation_ids,
            direction=MessageDirection.OUTBOUND,
            id__lte=up_to_message_id,
            status__in=[MessageStatus.SENT, MessageStatus.DELIVERED],
            provider_message_id__isnull=False,
        )
        .order_by("-id")
        .values_list("provider_message_id", flat=True)[:100]
    )
    moved = 0
    for provider_id in unread:
        if provider_id and update_message_status(
            inbox_id=visitor.inbox_id, update=StatusUpdate(provider_message_id=provider_id, status=MessageStatus.READ)
        ):
            moved += 1
    return moved


class OfflineRoute(models.TextChoices):
    SMS = "sms", "SMS"
    EMAIL = "email", "Email"


# On the copy sent by SMS or email in place of a chat reply; the reply itself carries sent_by_<route>.
WEBCHAT_REPLY_FLAG = "webchat_reply"
# The copy's statuses the chat reply takes on: the copy's "sending" is the reply's already.
FOLLOWED_STATUSES = frozenset(
    {MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.UNDELIVERED, MessageStatus.FAILED}
)


def offline_link(copy_id: int) -> str:
    """The chat reply's provider id when a copy went on by SMS or email: it names the copy, so the copy's
    status hook finds the reply by the provider-id index."""
    return f"wc-via-{copy_id}"


@transaction.atomic
def send_offline_copy(
    *,
    chat_message_id: int,
    route: OfflineRoute,
    inbox: Inbox,
    patient: Patient,
    body: str,
    subject: str = "",
    attachments: list[dict[str, Any]] | None = None,
) -> Message:
    """Send a chat reply on to the patient by SMS or email, through the one outbound path.

    The copy goes on the patient's conversation in `inbox` (a pending one is opened if there is none), as a
    service message authored by the agent who wrote the reply, flagged as a web chat reply; the reply is
    flagged sent_by_<route>, with an event so open inboxes show it. Called by the web chat adapter inside
    the delivery action's transaction: the copy is delivered after that commits, and never if it rolls back.
    """
    reply = Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=chat_message_id)
    conversation = open_outbound_conversation(inbox=inbox, patient=patient)
    if subject and not conversation.subject:
        # An email's subject is its conversation's (delivery reads it from there).
        conversation.subject = subject[:255]
        conversation.save(update_fields=["subject"])
    copy = send_outbound(
        conversation=conversation,
        body=body,
        author=reply.author,
        sender_kind=SenderKind.SYSTEM,
        attachments=attachments,
        purpose=ConsentPurpose.SERVICE,
        flags=[WEBCHAT_REPLY_FLAG],
    )
    _flag_reply(reply, route)
    return copy


def _flag_reply(reply: Message, route: OfflineRoute) -> None:
    """Flag a staff reply as sent by SMS or email instead of the widget, so the inbox shows how it went."""
    flag = f"sent_by_{route.value}"
    if flag in reply.flags:
        return
    reply.flags = [*reply.flags, flag]
    reply.save(update_fields=["flags"])
    # A message.add for a message the client already has replaces its copy (the inbox and the widget both
    # upsert by id), so the flag shows live without an event type of its own.
    events.record(events.MessageAdded(message=message_data(reply)), audience_of(reply.conversation))


def follow_offline_copy(*, message: Message, old: str, new: str) -> None:
    """A status hook: the chat reply takes on its SMS or email copy's status (sent, delivered, undelivered,
    failed, with the provider's reason), through the one status action, forward only and announced."""
    if WEBCHAT_REPLY_FLAG not in message.flags:
        return
    link = offline_link(message.pk)
    inbox_id = Message.objects.filter(provider_message_id=link).values_list("inbox_id", flat=True).first()
    if inbox_id is None:
        logger.warning("offline copy %s has no chat reply to update", message.pk)
        return
    update_message_status(
        inbox_id=inbox_id,
        update=StatusUpdate(
            provider_message_id=link, status=new, error_code=message.error_code, error_message=message.error_message
        ),
    )

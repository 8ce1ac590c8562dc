"""Web chat delivery. The widget is its own transport: a staff message is an event on the visitor's
conversation, pushed to every open widget of that patient (and replayed on reconnect). This adapter
only decides what the message's status means, and when no widget is open, hands the reply to the
SMS inbox the web chat inbox names, so a patient who left the page still gets the answer.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from channels_adapters.base import AdapterError, OutboundMessage, SendResult, adapter_for
from channels_adapters.webchat import limits
from channels_adapters.webchat.models import WebVisitor
from contactcenter.models import IdentityKind, Inbox, Message, MessageStatus

logger = logging.getLogger(__name__)


class WebchatAdapter:
    channel_type: ClassVar[str] = "webchat"
    address_kind: ClassVar[str] = IdentityKind.VISITOR

    def send(self, message: OutboundMessage) -> SendResult:
        patient_id = Message.objects.filter(pk=message.message_id).values_list("conversation__patient_id", flat=True)[0]
        visitors = list(WebVisitor.objects.filter(inbox=message.inbox, patient_id=patient_id).order_by("-id")[:20])
        if any(limits.widget_open(v.visitor_id) for v in visitors):
            return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.DELIVERED)
        fallback = _offline_fallback(message, visitors)
        if fallback is not None:
            return fallback
        # Nobody to notify now: the reply waits in the conversation and the widget shows it next visit.
        return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.SENT)

    def map_status(self, provider_status: str) -> str:
        return provider_status


def _offline_fallback(message: OutboundMessage, visitors: list[WebVisitor]) -> SendResult | None:
    """The reply by SMS through the inbox named in config["offline_sms_inbox_id"], if the patient gave a phone.

    Email has no adapter yet; a patient who gave only an email sees the reply on their next visit.
    """
    sms_inbox_id = message.inbox.config.get("offline_sms_inbox_id")
    phone = next((v.phone for v in visitors if v.phone), "")
    if not sms_inbox_id or not phone:
        return None
    sms_inbox = Inbox.objects.filter(pk=sms_inbox_id, is_active=True).first()
    if sms_inbox is None or sms_inbox.channel_type == WebchatAdapter.channel_type:
        logger.warning("web chat inbox %s names no usable offline SMS inbox", message.inbox.pk)
        return None
    prefix = str(message.inbox.config.get("offline_sms_prefix") or "")
    result = adapter_for(sms_inbox).send(
        OutboundMessage(
            message_id=message.message_id,
            inbox=sms_inbox,
            to=phone,
            body=f"{prefix}{message.body}",
            attachments=message.attachments,
        )
    )
    logger.info("web chat message %s sent by SMS through inbox %s", message.message_id, sms_inbox.pk)
    # The SMS provider's later callbacks belong to the SMS inbox; here the reply counts as sent.
    if not result.provider_message_id:
        raise AdapterError("the SMS fallback returned no id", permanent=True)
    return SendResult(provider_message_id=result.provider_message_id, status=MessageStatus.SENT)

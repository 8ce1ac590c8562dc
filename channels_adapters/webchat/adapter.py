"""Web chat delivery. The widget is its own transport: a staff message is an event on the visitor's
conversation, pushed to every open widget of that patient (and replayed on reconnect). This adapter
only decides what the message's status means, and when no widget is open, sends the reply by SMS (through
the SMS inbox the web chat inbox names) or by email, so a patient who left the page still gets the answer.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from channels_adapters.base import AdapterError, OutboundMessage, SendResult, adapter_for
from channels_adapters.email.adapter import EmailAdapter, email_available
from channels_adapters.webchat import limits
from channels_adapters.webchat.actions import OfflineRoute, record_offline_route
from channels_adapters.webchat.models import WebVisitor
from contactcenter.actions.consent import consent_status
from contactcenter.models import (
    ConsentPurpose,
    ConsentStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Patient,
)

logger = logging.getLogger(__name__)


class WebchatAdapter:
    channel_type: ClassVar[str] = "webchat"
    address_kind: ClassVar[str] = IdentityKind.VISITOR

    def send(self, message: OutboundMessage) -> SendResult:
        patient_id = Message.objects.filter(pk=message.message_id).values_list("conversation__patient_id", flat=True)[0]
        visitors = list(WebVisitor.objects.filter(inbox=message.inbox, patient_id=patient_id).order_by("-id")[:20])
        if any(limits.widget_open(v.visitor_id) for v in visitors):
            return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.DELIVERED)
        fallback = _offline_fallback(message, visitors, patient_id)
        if fallback is not None:
            return fallback
        # Nobody to notify now: the reply waits in the conversation and the widget shows it next visit.
        return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.SENT)

    def map_status(self, provider_status: str) -> str:
        return provider_status


def _offline_fallback(message: OutboundMessage, visitors: list[WebVisitor], patient_id: int) -> SendResult | None:
    """The reply by SMS or email, whichever the patient gave: SMS first unless config["offline_prefer"] is
    "email". None when neither can be used, and the reply waits in the conversation."""
    patient = Patient.objects.get(pk=patient_id)
    # The widget's consent box is a service consent (check_may_send guards marketing only): a patient who
    # later withdrew it gets no SMS or email from a chat, only the answer on their next visit.
    if consent_status(patient=patient, purpose=ConsentPurpose.SERVICE) == ConsentStatus.OPTED_OUT:
        return None
    routes = (_by_email, _by_sms) if message.inbox.config.get("offline_prefer") == "email" else (_by_sms, _by_email)
    for route in routes:
        result = route(message, visitors)
        if result is not None:
            return result
    return None


def _by_sms(message: OutboundMessage, visitors: list[WebVisitor]) -> SendResult | None:
    """Through the SMS inbox named in config["offline_sms_inbox_id"], if the patient gave a phone."""
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
    record_offline_route(message_id=message.message_id, route=OfflineRoute.SMS)
    return SendResult(provider_message_id=result.provider_message_id, status=MessageStatus.SENT)


def _by_email(message: OutboundMessage, visitors: list[WebVisitor]) -> SendResult | None:
    """As a plain-text email, if the patient gave an address, email is set up and the inbox allows it
    (config["offline_email"], on by default)."""
    visitor = next((v for v in visitors if v.email), None)
    if visitor is None or not email_available() or message.inbox.config.get("offline_email") is False:
        return None
    config = message.inbox.config
    language = visitor.language if visitor.language in OFFLINE_EMAIL_TEXT else "en"
    text = OFFLINE_EMAIL_TEXT[language]
    title = _localized(config.get("title"), language) or message.inbox.name
    subject = _localized(config.get("offline_email_subject"), language) or text["subject"].format(title=title)
    body = message.body
    page_url = str(config.get("page_url") or "")
    if page_url.startswith(("https://", "http://")):
        body = f"{body}\n\n-- \n{text['footer'].format(url=page_url)}"
    result = EmailAdapter().send(
        OutboundMessage(
            message_id=message.message_id, inbox=message.inbox, to=visitor.email, body=body, subject=subject
        )
    )
    logger.info("web chat message %s sent by email", message.message_id)
    record_offline_route(message_id=message.message_id, route=OfflineRoute.EMAIL)
    return result


# What we add to an offline email: a subject naming the hospital and a link back to the chat. Nothing else,
# and never anything clinical: the body is the agent's reply as written.
OFFLINE_EMAIL_TEXT = {
    "en": {"subject": "Reply to your web chat with {title}", "footer": "Reply in the chat: {url}"},
    "zh-hans": {"subject": "{title}：咨询回复", "footer": "在线回复：{url}"},
}


def _localized(value: object, language: str) -> str:
    if isinstance(value, dict):
        return str(value.get(language) or value.get("en") or "").strip()
    return str(value or "").strip()

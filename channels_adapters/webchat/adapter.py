"""Web chat delivery. The widget is its own transport: a staff message is an event on the visitor's
conversation, pushed to every open widget of that patient (and replayed on reconnect). This adapter only
decides what the message's status means, and when no widget is open, hands the reply to the patient's SMS
conversation (in the SMS inbox the web chat inbox names) or email conversation, so a patient who left the
page still gets the answer.

The offline copy is an ordinary outbound message sent through send_outbound: it is checked, stored, shown
and delivered like any other, and its statuses (Twilio's signed callbacks) arrive on it. The chat reply is
linked to it (its provider id names the copy; each carries a flag) and follows its status through a status
hook (actions.follow_offline_copy), so the agent sees in the chat whether the answer reached the patient.
"""

from __future__ import annotations

import logging
from typing import ClassVar

from django.core.exceptions import ValidationError

from channels_adapters.base import OutboundMessage, SendResult, Unconfirmed
from channels_adapters.email.adapter import email_available
from channels_adapters.webchat import limits
from channels_adapters.webchat.actions import OfflineRoute, offline_link, send_offline_copy
from channels_adapters.webchat.models import WebVisitor
from contactcenter.actions.consent import consent_status
from contactcenter.models import (
    ChannelType,
    ConsentPurpose,
    ConsentStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Patient,
    PatientIdentity,
)

logger = logging.getLogger(__name__)

# Where an offline reply may go by SMS: a Twilio inbox, or the simulator that plays one in the demo.
SMS_CHANNELS = (ChannelType.SMS, ChannelType.SIMULATOR)


class WebchatAdapter:
    channel_type: ClassVar[str] = "webchat"
    address_kind: ClassVar[str] = IdentityKind.VISITOR
    # A send whose outcome was lost left nothing outside the platform: the widget reads committed events
    # only, and an offline copy commits with the reply's provider id or not at all. Sending again is safe.
    unconfirmed: ClassVar[str] = Unconfirmed.RESEND

    def send(self, message: OutboundMessage) -> SendResult:
        patient_id = Message.objects.filter(pk=message.message_id).values_list("conversation__patient_id", flat=True)[0]
        visitors = list(WebVisitor.objects.filter(inbox=message.inbox, patient_id=patient_id).order_by("-id")[:20])
        if any(limits.widget_open(v.visitor_id) for v in visitors):
            return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.DELIVERED)
        copy = _offline_copy(message, visitors, Patient.objects.get(pk=patient_id))
        if copy is not None:
            # Sending until the copy says otherwise: follow_offline_copy moves the reply with it.
            return SendResult(provider_message_id=offline_link(copy.pk), status=MessageStatus.SENDING)
        # Nobody to notify now: the reply waits in the conversation and the widget shows it next visit.
        return SendResult(provider_message_id=f"wc-out-{message.message_id}", status=MessageStatus.SENT)

    def map_status(self, provider_status: str) -> str:
        return provider_status


def _offline_copy(message: OutboundMessage, visitors: list[WebVisitor], patient: Patient) -> Message | None:
    """The reply sent on by SMS or email, whichever the patient gave: SMS first unless config["offline_prefer"]
    is "email". None when neither can be used, and the reply waits in the conversation."""
    # The widget's consent box is a service consent (check_may_send guards marketing only): a patient who
    # later withdrew it gets no SMS or email from a chat, only the answer on their next visit.
    if consent_status(patient=patient, purpose=ConsentPurpose.SERVICE) == ConsentStatus.OPTED_OUT:
        return None
    routes = (_by_email, _by_sms) if message.inbox.config.get("offline_prefer") == "email" else (_by_sms, _by_email)
    for route in routes:
        copy = route(message, visitors, patient)
        if copy is not None:
            return copy
    return None


def _has_identity(patient: Patient, kind: str) -> bool:
    # Delivery sends to the patient's own identity of the channel's kind; a phone or email the visitor
    # typed that belongs to another record was never attached to this one, and nothing goes to it.
    return PatientIdentity.objects.filter(patient=patient, kind=kind).exists()


def _by_sms(message: OutboundMessage, visitors: list[WebVisitor], patient: Patient) -> Message | None:
    """On the patient's conversation in the SMS inbox named in config["offline_sms_inbox_id"], if the visitor
    gave a phone and the patient's record has one."""
    sms_inbox_id = message.inbox.config.get("offline_sms_inbox_id")
    if not sms_inbox_id or not any(v.phone for v in visitors) or not _has_identity(patient, IdentityKind.PHONE):
        return None
    sms_inbox = Inbox.objects.filter(pk=sms_inbox_id, is_active=True).first()
    if sms_inbox is None or sms_inbox.channel_type not in SMS_CHANNELS:
        logger.warning("web chat inbox %s names no usable offline SMS inbox", message.inbox.pk)
        return None
    prefix = str(message.inbox.config.get("offline_sms_prefix") or "")
    return _send_copy(message, OfflineRoute.SMS, inbox=sms_inbox, patient=patient, body=f"{prefix}{message.body}")


def _by_email(message: OutboundMessage, visitors: list[WebVisitor], patient: Patient) -> Message | None:
    """As a plain-text email on the patient's conversation in the email inbox, if the visitor gave an address,
    the record has one, email is set up and the web chat inbox allows it (config["offline_email"], on by
    default). The inbox is config["offline_email_inbox_id"], else the web chat team's one email inbox."""
    visitor = next((v for v in visitors if v.email), None)
    if visitor is None or not email_available() or message.inbox.config.get("offline_email") is False:
        return None
    email_inbox = offline_email_inbox(message.inbox)
    if email_inbox is None or not _has_identity(patient, IdentityKind.EMAIL):
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
    return _send_copy(message, OfflineRoute.EMAIL, inbox=email_inbox, patient=patient, body=body, subject=subject)


def offline_email_inbox(chat_inbox: Inbox) -> Inbox | None:
    inboxes = Inbox.objects.filter(is_active=True, channel_type=ChannelType.EMAIL).order_by("pk")
    configured = chat_inbox.config.get("offline_email_inbox_id")
    if configured:
        found = inboxes.filter(pk=configured).first() if isinstance(configured, int) else None
        if found is None:
            logger.warning("web chat inbox %s names no usable offline email inbox", chat_inbox.pk)
        return found
    # Not configured: the team's email inbox when it has exactly one, so the choice is never a guess.
    candidates = list(inboxes.filter(team_id=chat_inbox.team_id)[:2])
    return candidates[0] if len(candidates) == 1 else None


def _send_copy(
    message: OutboundMessage, route: OfflineRoute, *, inbox: Inbox, patient: Patient, body: str, subject: str = ""
) -> Message | None:
    try:
        copy = send_offline_copy(
            chat_message_id=message.message_id,
            route=route,
            inbox=inbox,
            patient=patient,
            body=body,
            subject=subject,
            attachments=message.attachments,
        )
    except ValidationError:
        # The outbound path refused it (e.g. too long with the prefix): try the next route, or wait.
        logger.warning("web chat message %s could not go by %s", message.message_id, route.value)
        return None
    logger.info("web chat message %s sent on by %s as message %s", message.message_id, route.value, copy.pk)
    return copy


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

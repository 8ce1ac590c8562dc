"""Email as a channel: a message on an email inbox's conversation (an agent's reply, or a web chat reply sent
on while the chat was closed) sent as one plain-text email, accepted or refused by the server. Registered
for channel type "email" in channels_adapters.apps.

There are no delivery receipts in SMTP, so "sent" (the server took it) is as far as the status goes. The
Message-ID is ours and becomes the message's provider id, so replies can later be threaded by In-Reply-To.
"""

from __future__ import annotations

from typing import ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError

from channels_adapters.base import AdapterError, OutboundMessage, SendResult, Unconfirmed
from channels_adapters.email import transport
from contactcenter.identities import normalize_email
from contactcenter.models import IdentityKind, MessageStatus


def email_available() -> bool:
    return settings.EMAIL_TRANSPORT != "off"


class EmailAdapter:
    channel_type: ClassVar[str] = "email"
    address_kind: ClassVar[str] = IdentityKind.EMAIL
    # SMTP cannot be asked whether a message arrived, and a second copy would reach the patient: a send whose
    # outcome was lost is failed with a reason for staff to decide.
    unconfirmed: ClassVar[str] = Unconfirmed.FAIL

    def send(self, message: OutboundMessage) -> SendResult:
        try:
            to = normalize_email(message.to)
        except ValidationError:
            raise AdapterError("The email address is not valid.", permanent=True, code="invalid_email") from None
        if message.attachments:
            # Attachments in patient email need their own review (PHI); text only for now.
            raise AdapterError("Email replies cannot carry attachments yet.", permanent=True, code="email_attachment")
        message_id = transport.new_message_id(message_id=message.message_id)
        mail = transport.build_message(
            to=to, subject=message.subject or message.inbox.name, body=message.body, message_id=message_id
        )
        transport.send(mail, inbox_id=message.inbox.pk)
        return SendResult(provider_message_id=message_id, status=MessageStatus.SENT)

    def map_status(self, provider_status: str) -> str:
        return provider_status

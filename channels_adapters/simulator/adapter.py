"""A provider that lives inside the platform, for the embedded demo and tests.

Outbound messages land in SimulatedDelivery rows (the 'patient's phone'); the delivery receipt comes
back through the same status action a real provider's callback uses. Inbound messages typed on the
simulator page go through parse() and the one receive_inbound action, like any channel.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from typing import Any, ClassVar

from django.core.exceptions import ValidationError
from django.db import transaction

from channels_adapters.base import (
    AdapterError,
    InboundMessage,
    OutboundMessage,
    Sender,
    SendResult,
    StatusUpdate,
    Unconfirmed,
)
from contactcenter.boundary import BoundaryError, clean_identifier, clean_json, clean_text
from contactcenter.identities import normalize_phone
from contactcenter.models import IdentityKind, Inbox, MessageStatus

# Bodies the simulated network refuses, so the demo can show a permanent failure.
UNDELIVERABLE_MARKER = "#fail"


class SimulatorAdapter:
    channel_type: ClassVar[str] = "simulator"
    address_kind: ClassVar[str] = IdentityKind.PHONE
    # The "phone" is a row of ours: a send whose outcome was lost can simply be made again.
    unconfirmed: ClassVar[str] = Unconfirmed.RESEND

    def parse(self, inbox: Inbox, params: Mapping[str, Any]) -> InboundMessage:
        try:
            phone = normalize_phone(str(params.get("from", "")))
        except ValidationError as exc:
            raise AdapterError(exc.messages[0], permanent=True, code="invalid_sender") from None
        # What the phone page typed is kept (NUL and the like become U+FFFD); an id that cannot be one is refused.
        body = clean_text(str(params.get("body", "")).strip(), field="body")
        if not body:
            raise AdapterError("empty message", permanent=True, code="empty_body")
        try:
            provider_id = clean_identifier(
                params.get("id") or f"SIM-IN-{secrets.token_hex(8)}", field="id", max_length=120
            )
        except BoundaryError as exc:
            raise AdapterError(str(exc), permanent=True, code="invalid_id") from None
        return InboundMessage(
            inbox_id=inbox.pk,
            sender=Sender(
                kind=IdentityKind.PHONE,
                value=phone,
                name=clean_text(params.get("name", ""), field="name", max_length=200, truncate=True),
            ),
            body=body,
            provider_message_id=provider_id,
            provider_payload=clean_json(dict(params)),
        )

    def send(self, message: OutboundMessage) -> SendResult:
        from channels_adapters.simulator.models import SimulatedDelivery

        if UNDELIVERABLE_MARKER in message.body:
            raise AdapterError("the simulated network refused this message", permanent=True, code="SIM-30007")
        provider_id = f"SIM-{secrets.token_hex(10)}"
        SimulatedDelivery.objects.create(
            inbox=message.inbox, to=message.to, body=message.body, provider_message_id=provider_id
        )
        inbox_id = message.inbox.pk
        transaction.on_commit(lambda: _report_delivered(inbox_id, provider_id))
        return SendResult(provider_message_id=provider_id, status=MessageStatus.SENT)

    def map_status(self, provider_status: str) -> str:
        return provider_status


def _report_delivered(inbox_id: int, provider_id: str) -> None:
    from contactcenter.actions.delivery import update_message_status

    update_message_status(
        inbox_id=inbox_id,
        update=StatusUpdate(provider_message_id=provider_id, status=MessageStatus.DELIVERED),
    )

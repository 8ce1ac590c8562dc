"""The adapter contract every channel implements.

An adapter turns what a provider sends us into an InboundMessage (after verifying it really came
from the provider), sends an OutboundMessage, and maps provider statuses onto ours. Everything else
(identity resolution, conversations, events) happens once, in contactcenter.actions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol

from contactcenter.models import Inbox, MessageStatus


class AdapterError(Exception):
    """A send or parse failure. Permanent errors stop retries (a bad number); transient ones retry."""

    def __init__(
        self,
        message: str,
        *,
        permanent: bool = False,
        code: str = "",
        recipient_opted_out: bool = False,
        ambiguous: bool = False,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.permanent = permanent
        self.code = code
        # The provider says the recipient opted out (Twilio 21610): record it in the consent registry.
        self.recipient_opted_out = recipient_opted_out
        # The provider may or may not have the message (a read timeout): never resend, await its callback.
        self.ambiguous = ambiguous


class SignatureError(Exception):
    """The request did not come from the provider; answer 403 and store nothing."""


@dataclass(frozen=True)
class Sender:
    """Who wrote an inbound message, as the channel knows them."""

    kind: str  # an IdentityKind value: phone, email, visitor, mrn
    value: str
    name: str = ""
    # Extra identities the channel learned (a web-chat pre-chat form gives a phone or email).
    also_known_as: tuple[tuple[str, str], ...] = ()


@dataclass(frozen=True)
class InboundMessage:
    """One normalized inbound record, the same shape for every channel."""

    inbox_id: int
    sender: Sender
    body: str
    provider_message_id: str | None = None
    attachments: list[dict[str, Any]] = field(default_factory=list)
    subject: str = ""
    received_at: dt.datetime | None = None
    provider_payload: Mapping[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class OutboundMessage:
    message_id: int
    inbox: Inbox
    to: str  # the normalized identity value to deliver to (E.164, email, visitor id)
    body: str
    attachments: list[dict[str, Any]] = field(default_factory=list)
    subject: str = ""


@dataclass(frozen=True)
class SendResult:
    provider_message_id: str
    status: str = MessageStatus.SENT


@dataclass(frozen=True)
class StatusUpdate:
    provider_message_id: str
    status: str
    error_code: str = ""
    error_message: str = ""


class ChannelAdapter(Protocol):
    channel_type: ClassVar[str]
    # The identity kind this channel delivers to (phone for SMS, email for email...).
    address_kind: ClassVar[str]

    def send(self, message: OutboundMessage) -> SendResult: ...

    def map_status(self, provider_status: str) -> str: ...


_REGISTRY: dict[str, Callable[[], ChannelAdapter]] = {}


def register(channel_type: str, factory: Callable[[], ChannelAdapter]) -> None:
    _REGISTRY[channel_type] = factory


def adapter_for(inbox: Inbox) -> ChannelAdapter:
    try:
        factory = _REGISTRY[inbox.channel_type]
    except KeyError:
        raise AdapterError(f"no adapter registered for channel {inbox.channel_type!r}", permanent=True) from None
    return factory()


def channels_that_can(method: str) -> list[str]:
    """The channel types whose adapter offers an optional capability (`find_sent`, `prepare`)."""
    return sorted(channel for channel, factory in _REGISTRY.items() if callable(getattr(factory(), method, None)))

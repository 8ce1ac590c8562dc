"""The adapter contract every channel implements.

An adapter turns what a provider sends us into an InboundMessage (after verifying it really came
from the provider), sends an OutboundMessage, and maps provider statuses onto ours. Everything else
(identity resolution, conversations, events) happens once, in contactcenter.actions.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar, Protocol, runtime_checkable

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


class Unconfirmed:
    """What delivery may do with a send whose outcome was never recorded (a worker killed mid-send) when the
    channel cannot look it up at the provider: send it again (nothing outside the platform saw it, or a second
    copy is harmless), or fail it with a reason so staff decide (a second email or SMS would reach the patient)."""

    RESEND = "resend"
    FAIL = "fail"


class ChannelAdapter(Protocol):
    """What every registered channel does: send a message, and say what the provider's status words mean."""

    channel_type: ClassVar[str]
    # The identity kind this channel delivers to (phone for SMS, email for email...).
    address_kind: ClassVar[str]
    # Unconfirmed.RESEND or Unconfirmed.FAIL, for channels without LooksUpSent.
    unconfirmed: ClassVar[str]

    def send(self, message: OutboundMessage) -> SendResult: ...

    def map_status(self, provider_status: str) -> str: ...


# Optional capabilities. An adapter offers one by implementing its method; callers ask with isinstance()
# (the protocols are runtime-checkable) or channels_with(), never with getattr on a method name.


@runtime_checkable
class VerifiesWebhooks(Protocol):
    """Proves a webhook came from the provider; raises SignatureError (403, nothing stored) otherwise."""

    def verify(self, inbox: Inbox, *, urls: list[str], params: Mapping[str, Any], signature: str) -> None: ...


@runtime_checkable
class ParsesInbound(Protocol):
    """Turns a verified provider request into the one normalized InboundMessage (AdapterError when it cannot)."""

    def parse(self, inbox: Inbox, params: Mapping[str, Any]) -> InboundMessage: ...


@runtime_checkable
class AnswersSynchronously(Protocol):
    """Providers that read instructions from the webhook's own response (Twilio's TwiML): what to answer."""

    def answer(self, inbox: Inbox, params: Mapping[str, Any]) -> SyncAnswer: ...


@runtime_checkable
class LooksUpSent(Protocol):
    """Finds a message at the provider whose send answer was lost: one from this inbox to `message.to` with
    the same content, created since `since`, whose provider id is not in `exclude` (ids already attached to
    other rows of ours, so two identical texts are never both taken for the same provider message)."""

    def find_sent(
        self, message: OutboundMessage, *, since: dt.datetime, exclude: frozenset[str] = frozenset()
    ) -> SendResult | None: ...


@runtime_checkable
class LooksUpStatus(Protocol):
    """Asks the provider where a message it accepted stands now, for one whose status callbacks were lost (our
    server was restarting when they came). None when the provider no longer knows the id."""

    def fetch_status(self, inbox: Inbox, provider_message_id: str) -> StatusUpdate | None: ...


@runtime_checkable
class PreparesBatches(Protocol):
    """Reads what sending needs from the database up front; True when sends may then run on other threads."""

    def prepare(self, inbox: Inbox) -> bool: ...


@dataclass(frozen=True)
class SyncAnswer:
    body: str
    content_type: str = "text/xml"


CAPABILITIES: tuple[type, ...] = (
    VerifiesWebhooks,
    ParsesInbound,
    AnswersSynchronously,
    LooksUpSent,
    LooksUpStatus,
    PreparesBatches,
)

_REGISTRY: dict[str, Callable[[], ChannelAdapter]] = {}


def register(channel_type: str, factory: Callable[[], ChannelAdapter]) -> None:
    _REGISTRY[channel_type] = factory


def registered() -> dict[str, Callable[[], ChannelAdapter]]:
    """Every registered channel type and its adapter factory."""
    return dict(_REGISTRY)


def adapter_for(inbox: Inbox) -> ChannelAdapter:
    return adapter_for_channel(inbox.channel_type)


def adapter_for_channel(channel_type: str) -> ChannelAdapter:
    try:
        factory = _REGISTRY[channel_type]
    except KeyError:
        raise AdapterError(f"no adapter registered for channel {channel_type!r}", permanent=True) from None
    return factory()


def capabilities_of(channel_type: str) -> frozenset[str]:
    """The names of the optional capabilities a channel's adapter offers (for docs, tests and the status page)."""
    adapter = adapter_for_channel(channel_type)
    return frozenset(c.__name__ for c in CAPABILITIES if isinstance(adapter, c))


def channels_with(capability: type) -> list[str]:
    """The channel types whose adapter offers an optional capability (LooksUpSent, PreparesBatches …)."""
    return sorted(channel for channel, factory in _REGISTRY.items() if isinstance(factory(), capability))

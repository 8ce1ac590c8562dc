"""SMS through Twilio: verify and parse webhooks, send with the SDK, map statuses and errors."""

from __future__ import annotations

import datetime as dt
import logging
import time
from collections.abc import Mapping
from typing import Any, ClassVar

from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException
from twilio.rest import Client

from channels_adapters.base import (
    AdapterError,
    InboundMessage,
    OutboundMessage,
    Sender,
    SendResult,
    StatusUpdate,
    Unconfirmed,
)
from channels_adapters.sms.models import SenderKind, TwilioSender
from channels_adapters.twilio.client import client_for, is_simulated
from channels_adapters.twilio.errors import (
    CALLBACK_ERRORS,
    LOOKUP_ERRORS,
    OPTED_OUT_ERROR,
    PERMANENT_ERRORS,
    SEND_ERRORS,
    describe_error,
    lookup_error,
    send_error,
)
from channels_adapters.twilio.signing import (
    DEFAULT_TOKEN_ENV,
    auth_token_for,
    public_url,
    verify_signature,
)
from contactcenter.boundary import clean_identifier, clean_json, clean_text, lookup_key
from contactcenter.identities import normalize_phone
from contactcenter.models import IdentityKind, Inbox, Message, MessageStatus

logger = logging.getLogger(__name__)

# Twilio's status words onto ours. Twilio's own "queued"/"accepted" mean it has the message and has
# not handed it to a carrier yet, which for us is still "sending".
STATUS_MAP = {
    "accepted": MessageStatus.SENDING,
    "scheduled": MessageStatus.SENDING,
    "queued": MessageStatus.SENDING,
    "sending": MessageStatus.SENDING,
    "sent": MessageStatus.SENT,
    "delivered": MessageStatus.DELIVERED,
    "undelivered": MessageStatus.UNDELIVERED,
    "failed": MessageStatus.FAILED,
    "canceled": MessageStatus.FAILED,
    "read": MessageStatus.READ,
}


# What the webhook parameters that name things may hold: our columns' lengths (Twilio's SIDs are 34
# characters, its numbers E.164, far inside them). A value past these, or with control characters, cannot
# have come from Twilio as an id; once the request is verified it is refused with a 400 naming it.
SID_MAX = int(Message._meta.get_field("provider_message_id").max_length or 0)
SENDER_MAX = int(TwilioSender._meta.get_field("value").max_length or 0)
IDENTIFIER_PARAMS = {
    "MessageSid": SID_MAX,
    "SmsMessageSid": SID_MAX,
    "SmsSid": SID_MAX,
    "AccountSid": SENDER_MAX,
    "MessagingServiceSid": SENDER_MAX,
    "To": SENDER_MAX,
    "From": SENDER_MAX,
}
STATUS_IDENTIFIER_PARAMS = {**IDENTIFIER_PARAMS, "MessageStatus": 40, "SmsStatus": 40, "ErrorCode": 40}
MAX_MEDIA = 10


def checked_identifiers(params: Mapping[str, Any], limits: Mapping[str, int] = IDENTIFIER_PARAMS) -> dict[str, str]:
    """The id-like parameters that were sent, each validated (BoundaryError names the first bad one)."""
    return {
        name: clean_identifier(params.get(name), field=name, max_length=limit)
        for name, limit in limits.items()
        if params.get(name) not in (None, "")
    }


def inbox_for_webhook(params: Mapping[str, Any]) -> Inbox | None:
    """The Messaging Service decides when there is one (a pool of numbers), else the To number.

    Runs before the signature is checked, on raw values: one that no sender could hold (a NUL, too long)
    finds nothing, instead of reaching PostgreSQL, which refuses it."""
    service = lookup_key(params.get("MessagingServiceSid"), max_length=SENDER_MAX)
    if service:
        sender = _sender(SenderKind.MESSAGING_SERVICE, service)
        if sender is not None:
            return sender.inbox
    to = lookup_key(params.get("To"), max_length=SENDER_MAX)
    if not to:
        return None
    sender = _sender(SenderKind.NUMBER, to)
    return sender.inbox if sender is not None else None


# Number (or Messaging Service) → its inbox, per process, for a few seconds: the lookup (an ORM query compiled
# and two model instances built) was a quarter of a webhook's own Python time. Saving or deleting a sender or an
# inbox clears it in the process that did it; other processes see the change within SENDER_CACHE_SECONDS.
SENDER_CACHE_SECONDS = 5.0
_senders: dict[tuple[str, str], tuple[float, TwilioSender]] = {}


def _sender(kind: str, value: str) -> TwilioSender | None:
    now = time.monotonic()
    cached = _senders.get((kind, value))
    if cached is not None and now - cached[0] < SENDER_CACHE_SECONDS:
        return cached[1]
    # [:1] without ORDER BY, not first(): (kind, value) is unique, and the model's ordering would sort for nothing.
    found = TwilioSender.objects.select_related("inbox").filter(kind=kind, value=value).order_by()[:1]
    sender = next(iter(found), None)
    if sender is None:
        # Not kept: a number an admin is adding right now must not be refused (403) for seconds after.
        return None
    if len(_senders) > 10_000:
        _senders.clear()
    _senders[(kind, value)] = (now, sender)
    return sender


def forget_senders(**_kwargs: Any) -> None:
    _senders.clear()


def media_of(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The MMS attachments, cleaned for the jsonb column (NumMedia is Twilio's; nonsense there means none)."""
    raw_count = str(params.get("NumMedia") or "0")
    count = int(raw_count) if raw_count.isascii() and raw_count.isdigit() and len(raw_count) <= 2 else 0
    return [
        {
            "url": clean_text(params.get(f"MediaUrl{i}"), field=f"MediaUrl{i}"),
            "content_type": clean_text(params.get(f"MediaContentType{i}"), field=f"MediaContentType{i}"),
        }
        for i in range(min(count, MAX_MEDIA))
        if params.get(f"MediaUrl{i}")
    ]


class TwilioSmsAdapter:
    channel_type: ClassVar[str] = "sms"
    address_kind: ClassVar[str] = IdentityKind.PHONE
    # Looked up with find_sent instead; a blind resend could text the patient twice.
    unconfirmed: ClassVar[str] = Unconfirmed.FAIL

    def verify(self, inbox: Inbox, *, urls: list[str], params: Mapping[str, Any], signature: str) -> None:
        verify_signature(inbox=inbox, urls=urls, params=params, signature=signature)

    def parse(self, inbox: Inbox, params: Mapping[str, Any]) -> InboundMessage:
        """The patient's message from verified webhook parameters. Call after verify: Twilio signed the raw
        values, so they are cleaned only now. Text is kept (NUL and the like become U+FFFD, so the message
        is never lost); an id that cannot be valid raises BoundaryError naming it (a 400)."""
        ids = checked_identifiers(params)
        sid = ids.get("MessageSid") or ids.get("SmsMessageSid") or ""
        if not sid:
            raise AdapterError("MessageSid is missing", permanent=True, code="no_message_sid")
        try:
            phone = normalize_phone(ids.get("From", ""))
        except ValidationError as exc:
            raise AdapterError(f"From: {exc.messages[0]}", permanent=True, code="invalid_sender") from None
        return InboundMessage(
            inbox_id=inbox.pk,
            sender=Sender(kind=IdentityKind.PHONE, value=phone),
            body=clean_text(params.get("Body"), field="Body"),
            provider_message_id=sid,
            attachments=media_of(params),
            provider_payload=clean_json({key: params[key] for key in params}),
        )

    def __init__(self) -> None:
        # One adapter delivers a whole campaign chunk: the client and the inbox's sender are looked up once.
        self._sessions: dict[int, tuple[Client, dict[str, Any]]] = {}
        self._status_callback = ""

    def prepare(self, inbox: Inbox) -> bool:
        """Read what send needs from the database now; True when sends may then run on delivery threads.

        Not with the simulator: it stands in for the patient's phone by writing to our own database."""
        client, _sender = self._session(inbox)
        self._status_callback_url()
        return not is_simulated(client)

    def _session(self, inbox: Inbox) -> tuple[Client, dict[str, Any]]:
        session = self._sessions.get(inbox.pk)
        if session is not None:
            return session
        client = client_for(inbox)
        senders = {s.kind: s.value for s in TwilioSender.objects.filter(inbox=inbox)}
        if SenderKind.MESSAGING_SERVICE in senders:
            sender: dict[str, Any] = {"messaging_service_sid": senders[SenderKind.MESSAGING_SERVICE]}
        elif SenderKind.NUMBER in senders:
            sender = {"from_": senders[SenderKind.NUMBER]}
        else:
            raise AdapterError("the inbox has no Twilio number or Messaging Service", permanent=True, code="no_sender")
        self._sessions[inbox.pk] = (client, sender)
        return client, sender

    def _status_callback_url(self) -> str:
        # Once per adapter (a delivery batch), before its threads start: reverse() costs tens of microseconds
        # a call, and threads that are each first to reverse all build Django's URL tables.
        if not self._status_callback:
            self._status_callback = public_url(reverse("twilio-sms-status"))
        return self._status_callback

    def send(self, message: OutboundMessage) -> SendResult:
        client, sender = self._session(message.inbox)
        # Our id rides on the URL (it settles a send whose answer was lost), then the operator's connection
        # overrides, which Twilio reads from the fragment.
        overrides = settings.TWILIO_WEBHOOK_OVERRIDES
        status_callback = (
            self._status_callback_url() + f"?message={message.message_id}" + (f"#{overrides}" if overrides else "")
        )
        kwargs: dict[str, Any] = {"to": message.to, "body": message.body, "status_callback": status_callback, **sender}
        if message.attachments:
            kwargs["media_url"] = [a["url"] for a in message.attachments if a.get("url")]
        try:
            created = client.messages.create(**kwargs)
        except SEND_ERRORS as exc:
            raise send_error(exc) from None
        return SendResult(provider_message_id=str(created.sid), status=self.map_status(str(created.status)))

    def find_sent(
        self, message: OutboundMessage, *, since: dt.datetime, exclude: frozenset[str] = frozenset()
    ) -> SendResult | None:
        """The message as Twilio has it, if it does: one sent from this inbox's sender to the same number
        with the same text, created since `since`, and not one of ours already (`exclude`: two identical
        replies must not both adopt the same SID). Twilio has no idempotency key for Messages, so this is
        how a send whose answer was lost is told apart from one that never arrived."""
        client, sender = self._session(message.inbox)
        filters: dict[str, Any] = {"to": message.to, "limit": 50}
        if "from_" in sender:
            filters["from_"] = sender["from_"]
        try:
            candidates = client.messages.list(**filters)
        except LOOKUP_ERRORS as exc:
            raise lookup_error(exc) from None
        for candidate in candidates:
            created = candidate.date_created
            if str(candidate.sid) in exclude:
                continue
            if candidate.body == message.body and (created is None or created >= since):
                return SendResult(provider_message_id=str(candidate.sid), status=self.map_status(str(candidate.status)))
        return None

    def fetch_status(self, inbox: Inbox, provider_message_id: str) -> StatusUpdate | None:
        """The message's status as Twilio has it now: settles one whose status callbacks never reached us."""
        client, _sender = self._session(inbox)
        try:
            fetched = client.messages(provider_message_id).fetch()
        except TwilioRestException as exc:
            if exc.status == 404:
                return None
            raise lookup_error(exc) from None
        except LOOKUP_ERRORS as exc:
            raise lookup_error(exc) from None
        code = str(fetched.error_code or "")
        return StatusUpdate(
            provider_message_id=provider_message_id,
            status=self.map_status(str(fetched.status or "")),
            error_code=code,
            error_message=str(fetched.error_message or "") or describe_error(code),
        )

    def map_status(self, provider_status: str) -> str:
        return STATUS_MAP.get(provider_status.lower(), MessageStatus.SENDING)


__all__ = [
    "CALLBACK_ERRORS",
    "DEFAULT_TOKEN_ENV",
    "OPTED_OUT_ERROR",
    "PERMANENT_ERRORS",
    "TwilioSmsAdapter",
    "auth_token_for",
    "describe_error",
    "verify_signature",
]

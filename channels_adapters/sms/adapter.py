"""SMS through Twilio: verify and parse webhooks, send with the SDK, map statuses and errors."""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Mapping
from typing import Any, ClassVar

import requests
from django.conf import settings
from django.core.exceptions import ValidationError
from django.urls import reverse
from twilio.base.exceptions import TwilioRestException
from twilio.request_validator import RequestValidator
from twilio.rest import Client

from channels_adapters.base import AdapterError, InboundMessage, OutboundMessage, Sender, SendResult, SignatureError
from channels_adapters.sms import transport
from channels_adapters.sms.models import SenderKind, TwilioSender
from contactcenter.identities import normalize_phone
from contactcenter.models import IdentityKind, Inbox, MessageStatus

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "TWILIO_AUTH_TOKEN"

# Errors a retry cannot fix (https://www.twilio.com/docs/api/errors): the number, not the moment.
PERMANENT_ERRORS = {
    21211: "The number is not a valid phone number.",
    21408: "Sending to this region is not enabled for the account.",
    21610: "The patient has replied STOP to this number; the carrier blocks further messages.",
    21612: "This number cannot receive messages from the sending number.",
    21614: "The number is not a mobile number and cannot receive SMS.",
    21617: "The message is longer than Twilio accepts.",
    30003: "The handset is unreachable.",
    30004: "The recipient has blocked messages.",
    30005: "The number is unknown or no longer in service.",
    30006: "The number is a landline or unreachable carrier.",
    30007: "The carrier filtered the message.",
}
OPTED_OUT_ERROR = 21610
# Codes that only ever arrive on status callbacks, which carry the code but rarely the text.
CALLBACK_ERRORS = {
    30001: "Twilio's queue for this sender overflowed.",
    30002: "The Twilio account is suspended.",
    30008: "The carrier reported an unknown error.",
    30032: "The toll-free number is not verified.",
    30034: "The sender is not registered for this route (A2P 10DLC).",
}


def describe_error(code: str) -> str:
    """Readable text for an error code a status callback sent without its message."""
    if not code.isdigit():
        return ""
    number = int(code)
    return PERMANENT_ERRORS.get(number) or CALLBACK_ERRORS.get(number) or f"Twilio error {number}."


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


def auth_token_for(inbox: Inbox) -> str:
    name = str(inbox.config.get("auth_token_env") or DEFAULT_TOKEN_ENV)
    token = os.environ.get(name, "")
    if not token:
        raise AdapterError(f"{name} is not set in the environment", permanent=True, code="no_auth_token")
    return token


def signed_url(request_path: str) -> str:
    return settings.PUBLIC_BASE_URL + request_path


def verify_signature(*, inbox: Inbox, urls: list[str], params: Mapping[str, Any], signature: str) -> None:
    """Raise SignatureError unless X-Twilio-Signature matches one of the URLs we may have been called at.

    Twilio signs the exact URL it requested. Behind a TLS-terminating proxy Django sees http and an
    internal host, so the configured PUBLIC_BASE_URL comes first; the SDK's validator already tries
    each URL with and without an explicit port, which Twilio is inconsistent about.
    """
    if not signature:
        raise SignatureError("missing X-Twilio-Signature")
    try:
        validator = RequestValidator(auth_token_for(inbox))
    except AdapterError as exc:
        logger.error("inbox %s cannot verify webhooks: %s", inbox.pk, exc.message)
        raise SignatureError(exc.message) from None
    if not any(validator.validate(url, params, signature) for url in urls):
        raise SignatureError("X-Twilio-Signature does not match")


def inbox_for_webhook(params: Mapping[str, Any]) -> Inbox | None:
    """The Messaging Service decides when there is one (a pool of numbers), else the To number."""
    service = str(params.get("MessagingServiceSid") or "")
    if service:
        sender = (
            TwilioSender.objects.select_related("inbox")
            .filter(kind=SenderKind.MESSAGING_SERVICE, value=service)
            .first()
        )
        if sender is not None:
            return sender.inbox
    to = str(params.get("To") or "")
    sender = TwilioSender.objects.select_related("inbox").filter(kind=SenderKind.NUMBER, value=to).first()
    return sender.inbox if sender is not None else None


def media_of(params: Mapping[str, Any]) -> list[dict[str, Any]]:
    try:
        count = int(params.get("NumMedia") or 0)
    except ValueError:
        count = 0
    return [
        {"url": str(params.get(f"MediaUrl{i}", "")), "content_type": str(params.get(f"MediaContentType{i}", ""))}
        for i in range(min(count, 10))
        if params.get(f"MediaUrl{i}")
    ]


class TwilioSmsAdapter:
    channel_type: ClassVar[str] = "sms"
    address_kind: ClassVar[str] = IdentityKind.PHONE

    def parse(self, inbox: Inbox, params: Mapping[str, Any]) -> InboundMessage:
        sid = str(params.get("MessageSid") or params.get("SmsMessageSid") or "")
        if not sid:
            raise AdapterError("MessageSid is missing", permanent=True, code="no_message_sid")
        try:
            phone = normalize_phone(str(params.get("From", "")))
        except ValidationError as exc:
            raise AdapterError(exc.messages[0], permanent=True, code="invalid_sender") from None
        return InboundMessage(
            inbox_id=inbox.pk,
            sender=Sender(kind=IdentityKind.PHONE, value=phone),
            body=str(params.get("Body", "")),
            provider_message_id=sid,
            attachments=media_of(params),
            provider_payload={key: params[key] for key in params},
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
        return not isinstance(client.http_client, transport.SimulatedTwilioHttpClient)

    def _session(self, inbox: Inbox) -> tuple[Client, dict[str, Any]]:
        session = self._sessions.get(inbox.pk)
        if session is not None:
            return session
        account_sid = str(inbox.config.get("account_sid") or "")
        if not account_sid:
            raise AdapterError("the inbox has no Twilio account SID", permanent=True, code="no_account_sid")
        client = Client(account_sid, auth_token_for(inbox), http_client=transport.http_client())
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
            self._status_callback = signed_url(reverse("twilio-sms-status"))
        return self._status_callback

    def send(self, message: OutboundMessage) -> SendResult:
        client, sender = self._session(message.inbox)
        status_callback = self._status_callback_url() + f"?message={message.message_id}"
        kwargs: dict[str, Any] = {"to": message.to, "body": message.body, "status_callback": status_callback, **sender}
        if message.attachments:
            kwargs["media_url"] = [a["url"] for a in message.attachments if a.get("url")]
        try:
            created = client.messages.create(**kwargs)
        except TwilioRestException as exc:
            raise self._error(exc) from None
        except requests.exceptions.ConnectionError as exc:
            # Refused, reset or a connect timeout: Twilio never read the request, so a retry is safe.
            raise AdapterError(f"could not reach Twilio: {type(exc).__name__}", code="connection") from None
        except requests.exceptions.ReadTimeout:
            raise self._ambiguous() from None
        except requests.exceptions.Timeout as exc:
            raise AdapterError(f"Twilio timed out: {type(exc).__name__}", code="timeout") from None
        return SendResult(provider_message_id=str(created.sid), status=self.map_status(str(created.status)))

    def find_sent(self, message: OutboundMessage, *, since: dt.datetime) -> SendResult | None:
        """The message as Twilio has it, if it does: one sent from this inbox's sender to the same number
        with the same text, created since `since`. Twilio has no idempotency key for Messages, so this is
        how a send whose answer was lost is told apart from one that never arrived."""
        client, sender = self._session(message.inbox)
        filters: dict[str, Any] = {"to": message.to, "limit": 50}
        if "from_" in sender:
            filters["from_"] = sender["from_"]
        try:
            candidates = client.messages.list(**filters)
        except TwilioRestException as exc:
            raise self._error(exc) from None
        except requests.exceptions.RequestException as exc:
            raise AdapterError(f"could not reach Twilio: {type(exc).__name__}", code="connection") from None
        for candidate in candidates:
            created = candidate.date_created
            if candidate.body == message.body and (created is None or created >= since):
                return SendResult(provider_message_id=str(candidate.sid), status=self.map_status(str(candidate.status)))
        return None

    def map_status(self, provider_status: str) -> str:
        return STATUS_MAP.get(provider_status.lower(), MessageStatus.SENDING)

    @staticmethod
    def _error(exc: TwilioRestException) -> AdapterError:
        code = int(exc.code) if exc.code else None
        if exc.status == 429 or exc.status >= 500:
            return AdapterError(f"Twilio answered {exc.status}; will retry", code=str(code or exc.status))
        reason = PERMANENT_ERRORS.get(code or 0) or (exc.msg or f"Twilio refused the message ({exc.status})")
        return AdapterError(
            reason, permanent=True, code=str(code or exc.status), recipient_opted_out=code == OPTED_OUT_ERROR
        )

    @staticmethod
    def _ambiguous() -> AdapterError:
        # Twilio may have accepted it before the answer was lost; resending could text the patient
        # twice. The status callback carries our message id and settles it instead.
        return AdapterError(
            "Twilio did not answer in time; waiting for its status callback", code="timeout", ambiguous=True
        )

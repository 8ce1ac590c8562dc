"""Twilio's webhooks: inbound messages and status callbacks. Verify, parse, call one action, answer.

An inbound webhook answers once its parsed record is stored (one INSERT, contactcenter.actions.inbound_queue);
a worker turns it into the message. A status callback answers after its update committed. Either way a 200 means
it is stored, and anything Twilio retries is deduplicated on its MessageSid. Both are idempotent, so a database
that went away is retried for a few seconds before the answer is a 503 (contactcenter.resilience).
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels_adapters.base import AdapterError, SignatureError, StatusUpdate
from channels_adapters.sms.adapter import (
    SID_MAX,
    STATUS_IDENTIFIER_PARAMS,
    TwilioSmsAdapter,
    checked_identifiers,
    inbox_for_webhook,
)
from channels_adapters.twilio.errors import describe_error
from channels_adapters.twilio.signing import candidate_urls, verify_signature
from contactcenter.actions.delivery import settle_status
from contactcenter.actions.inbound_queue import accept_inbound
from contactcenter.boundary import BoundaryError, clean_text, lookup_key
from contactcenter.models import Inbox, Message
from contactcenter.resilience import retry_on_dead_connection

logger = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _forbidden(reason: str) -> HttpResponse:
    return HttpResponseForbidden(reason, content_type="text/plain")


def _bad_request(reason: str) -> HttpResponse:
    # A 4xx Twilio does not retry: right for a value that can never be valid, however often it is sent.
    return HttpResponse(reason, status=400, content_type="text/plain")


@csrf_exempt
@require_POST
@retry_on_dead_connection
def inbound(request: HttpRequest) -> HttpResponse:
    params = request.POST
    inbox = inbox_for_webhook(params)
    if inbox is None:
        # Without an inbox there is no token to verify with; refuse rather than store unverified data.
        logger.warning("SMS webhook for an unknown number or service refused")
        return _forbidden("No inbox owns this number or Messaging Service.")
    try:
        verify_signature(
            inbox=inbox,
            urls=candidate_urls(request),
            params=params,
            signature=request.headers.get("X-Twilio-Signature", ""),
        )
    except SignatureError as exc:
        logger.warning("SMS webhook for inbox %s refused: %s", inbox.pk, exc)
        return _forbidden("Invalid signature.")
    try:
        record = TwilioSmsAdapter().parse(inbox, params)
    except AdapterError as exc:
        logger.warning("SMS webhook for inbox %s unparseable: %s", inbox.pk, exc.code)
        return _bad_request(exc.message)
    except BoundaryError as exc:
        logger.warning("SMS webhook for inbox %s refused: %s cannot be valid", inbox.pk, exc.field)
        return _bad_request(str(exc))
    accept_inbound(record)
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")


@csrf_exempt
@require_POST
@retry_on_dead_connection
def status_callback(request: HttpRequest) -> HttpResponse:
    params = request.POST
    raw_sid = params.get("MessageSid") or params.get("SmsSid") or ""
    # Found on raw values (a SID no row could hold matches nothing), verified, and only then cleaned.
    message = _message_for(lookup_key(raw_sid, max_length=SID_MAX), _our_id(request.GET.get("message", "")))
    if not raw_sid or message is None:
        # Not ours (or already purged): acknowledge so Twilio stops retrying; nothing to store.
        return HttpResponse(status=204)
    inbox: Inbox = message.inbox
    try:
        verify_signature(
            inbox=inbox,
            urls=candidate_urls(request),
            params=params,
            signature=request.headers.get("X-Twilio-Signature", ""),
        )
    except SignatureError as exc:
        logger.warning("SMS status callback for inbox %s refused: %s", inbox.pk, exc)
        return _forbidden("Invalid signature.")
    try:
        ids = checked_identifiers(params, STATUS_IDENTIFIER_PARAMS)
        error_message = clean_text(params.get("ErrorMessage"), field="ErrorMessage", max_length=500, truncate=True)
    except BoundaryError as exc:
        logger.warning("SMS status callback for inbox %s refused: %s cannot be valid", inbox.pk, exc.field)
        return _bad_request(str(exc))
    status = ids.get("MessageStatus") or ids.get("SmsStatus") or ""
    error_code = ids.get("ErrorCode", "")
    settle_status(
        message=message,
        update=StatusUpdate(
            provider_message_id=ids.get("MessageSid") or ids["SmsSid"],
            status=TwilioSmsAdapter().map_status(status),
            error_code=error_code,
            error_message=error_message or describe_error(error_code),
        ),
    )
    return HttpResponse(status=204)


def _our_id(raw: str) -> int | None:
    """Our message id from the callback URL's ?message=, if it can be one (ASCII digits, within bigint)."""
    return int(raw) if raw.isascii() and raw.isdigit() and len(raw) <= 18 else None


def _message_for(sid: str, message_id: int | None) -> Message | None:
    message = None
    if sid:
        # The callback's one indexed read: the message with what verifying and settling it need. [:1], not
        # first(), and no ORDER BY: the provider id is unique, and the model's ordering would sort for nothing.
        found = (
            Message.objects.select_related("inbox", "conversation")
            .filter(provider_message_id=sid, inbox__channel_type="sms")
            .order_by()[:1]
        )
        message = next(iter(found), None)
    if message is None and message_id is not None:
        # Our own id rides on the callback URL: it settles a send whose API answer was lost.
        message = (
            Message.objects.select_related("inbox")
            .filter(pk=message_id, provider_message_id__isnull=True, inbox__channel_type="sms")
            .first()
        )
    return message

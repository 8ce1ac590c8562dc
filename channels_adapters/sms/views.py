"""Twilio's webhooks: inbound messages and status callbacks. Verify, parse, call one action, answer.

Both answer only after the action's transaction committed, so a 200 means the message is stored;
anything Twilio retries is deduplicated on its MessageSid.
"""

from __future__ import annotations

import logging

from django.http import HttpRequest, HttpResponse, HttpResponseForbidden
from django.views.decorators.csrf import csrf_exempt
from django.views.decorators.http import require_POST

from channels_adapters.base import AdapterError, SignatureError, StatusUpdate
from channels_adapters.sms.adapter import (
    TwilioSmsAdapter,
    describe_error,
    inbox_for_webhook,
    signed_url,
    verify_signature,
)
from contactcenter.actions.delivery import update_message_status
from contactcenter.actions.inbound import receive_inbound
from contactcenter.models import Inbox, Message

logger = logging.getLogger(__name__)

EMPTY_TWIML = '<?xml version="1.0" encoding="UTF-8"?><Response></Response>'


def _urls(request: HttpRequest) -> list[str]:
    return [signed_url(request.get_full_path()), request.build_absolute_uri()]


def _forbidden(reason: str) -> HttpResponse:
    return HttpResponseForbidden(reason, content_type="text/plain")


@csrf_exempt
@require_POST
def inbound(request: HttpRequest) -> HttpResponse:
    params = request.POST
    inbox = inbox_for_webhook(params)
    if inbox is None:
        # Without an inbox there is no token to verify with; refuse rather than store unverified data.
        logger.warning("SMS webhook for an unknown number or service refused")
        return _forbidden("No inbox owns this number or Messaging Service.")
    try:
        verify_signature(
            inbox=inbox, urls=_urls(request), params=params, signature=request.headers.get("X-Twilio-Signature", "")
        )
    except SignatureError as exc:
        logger.warning("SMS webhook for inbox %s refused: %s", inbox.pk, exc)
        return _forbidden("Invalid signature.")
    try:
        record = TwilioSmsAdapter().parse(inbox, params)
    except AdapterError as exc:
        logger.warning("SMS webhook for inbox %s unparseable: %s", inbox.pk, exc.code)
        return HttpResponse(exc.message, status=400, content_type="text/plain")
    receive_inbound(record)
    return HttpResponse(EMPTY_TWIML, content_type="text/xml")


@csrf_exempt
@require_POST
def status_callback(request: HttpRequest) -> HttpResponse:
    params = request.POST
    sid = str(params.get("MessageSid") or params.get("SmsSid") or "")
    message = _message_for(sid, request.GET.get("message", ""))
    if message is None:
        # Not ours (or already purged): acknowledge so Twilio stops retrying; nothing to store.
        return HttpResponse(status=204)
    inbox: Inbox = message.inbox
    try:
        verify_signature(
            inbox=inbox, urls=_urls(request), params=params, signature=request.headers.get("X-Twilio-Signature", "")
        )
    except SignatureError as exc:
        logger.warning("SMS status callback for inbox %s refused: %s", inbox.pk, exc)
        return _forbidden("Invalid signature.")
    status = str(params.get("MessageStatus") or params.get("SmsStatus") or "")
    error_code = str(params.get("ErrorCode") or "")
    update_message_status(
        inbox_id=inbox.pk,
        update=StatusUpdate(
            provider_message_id=sid,
            status=TwilioSmsAdapter().map_status(status),
            error_code=error_code,
            error_message=str(params.get("ErrorMessage") or "") or describe_error(error_code),
        ),
        message_id=message.pk,
    )
    return HttpResponse(status=204)


def _message_for(sid: str, message_id: str) -> Message | None:
    if not sid:
        return None
    message = Message.objects.select_related("inbox").filter(provider_message_id=sid, inbox__channel_type="sms").first()
    if message is None and message_id.isdigit():
        # Our own id rides on the callback URL: it settles a send whose API answer was lost.
        message = (
            Message.objects.select_related("inbox")
            .filter(pk=int(message_id), provider_message_id__isnull=True, inbox__channel_type="sms")
            .first()
        )
    return message

"""Who may call our Twilio webhooks: X-Twilio-Signature checked against the URL Twilio was given.

Twilio signs the exact URL it requested plus the POST parameters (HMAC-SHA1 with the account's auth token).
The token is never stored: each inbox names the environment variable that holds it.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Mapping
from typing import Any

from django.conf import settings
from django.http import HttpRequest
from twilio.request_validator import RequestValidator

from channels_adapters.base import AdapterError, SignatureError
from contactcenter.models import Inbox

logger = logging.getLogger(__name__)

DEFAULT_TOKEN_ENV = "TWILIO_AUTH_TOKEN"


def auth_token_for(inbox: Inbox) -> str:
    name = str(inbox.config.get("auth_token_env") or DEFAULT_TOKEN_ENV)
    token = os.environ.get(name, "")
    if not token:
        raise AdapterError(f"{name} is not set in the environment", permanent=True, code="no_auth_token")
    return token


def public_url(path: str) -> str:
    """A path on this server as the outside world (Twilio) reaches it: PUBLIC_BASE_URL, not the request's host."""
    return settings.PUBLIC_BASE_URL + path


def webhook_url(path: str) -> str:
    """The URL to give Twilio for a webhook: with the operator's connection overrides (TWILIO_WEBHOOK_OVERRIDES,
    e.g. "rc=3&rp=5xx": retry a 5xx three times) as the fragment Twilio reads them from."""
    overrides = settings.TWILIO_WEBHOOK_OVERRIDES
    return public_url(path) + (f"#{overrides}" if overrides else "")


def candidate_urls(request: HttpRequest) -> list[str]:
    """Every URL Twilio may have signed for this request.

    PUBLIC_BASE_URL first: behind a TLS-terminating proxy Django sees http and an internal host. Each with and
    without the connection-override fragment, which a browser or Twilio never sends on the wire and which the
    signature may or may not cover. The SDK's validator also tries each with and without an explicit port,
    which Twilio is inconsistent about.
    """
    bases = [public_url(request.get_full_path()), request.build_absolute_uri()]
    overrides = settings.TWILIO_WEBHOOK_OVERRIDES
    return [*bases, *(f"{url}#{overrides}" for url in bases)] if overrides else bases


def verify_signature(*, inbox: Inbox, urls: list[str], params: Mapping[str, Any], signature: str) -> None:
    """Raise SignatureError unless X-Twilio-Signature matches one of the URLs we may have been called at."""
    if not signature:
        raise SignatureError("missing X-Twilio-Signature")
    try:
        validator = RequestValidator(auth_token_for(inbox))
    except AdapterError as exc:
        logger.error("inbox %s cannot verify webhooks: %s", inbox.pk, exc.message)
        raise SignatureError(exc.message) from None
    if not any(validator.validate(url, params, signature) for url in urls):
        raise SignatureError("X-Twilio-Signature does not match")

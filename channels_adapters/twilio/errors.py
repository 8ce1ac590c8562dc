"""What Twilio's errors mean for delivery: permanent (the number, not the moment), transient (retry), or
ambiguous (Twilio may have the message: never resend blind). https://www.twilio.com/docs/api/errors"""

from __future__ import annotations

import requests
from twilio.base.exceptions import TwilioException, TwilioRestException

from channels_adapters.base import AdapterError

# Errors a retry cannot fix: the number, not the moment.
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
    # ASCII digits only: "²" is a digit to str.isdigit() but not to int().
    if not (code.isascii() and code.isdigit()):
        return ""
    number = int(code)
    return PERMANENT_ERRORS.get(number) or CALLBACK_ERRORS.get(number) or f"Twilio error {number}."


def rest_error(exc: TwilioRestException) -> AdapterError:
    """A refusal from Twilio's REST API: 429 and 5xx are worth retrying, the rest are the request's fault."""
    code = int(exc.code) if exc.code else None
    if exc.status == 429 or exc.status >= 500:
        return AdapterError(f"Twilio answered {exc.status}; will retry", code=str(code or exc.status))
    reason = PERMANENT_ERRORS.get(code or 0) or (exc.msg or f"Twilio refused the request ({exc.status})")
    return AdapterError(
        reason, permanent=True, code=str(code or exc.status), recipient_opted_out=code == OPTED_OUT_ERROR
    )


def send_error(exc: Exception) -> AdapterError:
    """What a failed create (a message, a call) means. Refused, reset or a connect timeout: Twilio never read
    the request, so a retry is safe. A read timeout: Twilio may have accepted it before the answer was lost,
    and resending could reach the patient twice, so it is ambiguous and the status callback settles it."""
    if isinstance(exc, TwilioRestException):
        return rest_error(exc)
    if isinstance(exc, requests.exceptions.ConnectionError):
        return AdapterError(f"could not reach Twilio: {type(exc).__name__}", code="connection")
    if isinstance(exc, requests.exceptions.ReadTimeout):
        return AdapterError(
            "Twilio did not answer in time; waiting for its status callback", code="timeout", ambiguous=True
        )
    if isinstance(exc, requests.exceptions.Timeout):
        return AdapterError(f"Twilio timed out: {type(exc).__name__}", code="timeout")
    raise exc


def lookup_error(exc: Exception) -> AdapterError:
    """What a failed read (a list, a fetch) means: ask again later. Never a reason to stop the dispatcher, whatever
    the SDK raised, including its own "Unable to fetch page" for an answer it could not read."""
    if isinstance(exc, TwilioRestException):
        return rest_error(exc)
    if isinstance(exc, TwilioException):
        return AdapterError(f"Twilio's answer could not be read: {type(exc).__name__}", code="lookup")
    if isinstance(exc, requests.exceptions.RequestException):
        return AdapterError(f"could not reach Twilio: {type(exc).__name__}", code="connection")
    raise exc


SEND_ERRORS = (TwilioRestException, requests.exceptions.ConnectionError, requests.exceptions.Timeout)
LOOKUP_ERRORS = (TwilioException, requests.exceptions.RequestException)

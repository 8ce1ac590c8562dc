"""The HTTP client the Twilio SDK uses: Twilio's own, or the in-platform simulator.

The simulator answers the SDK exactly as Twilio's REST API would (a Message resource as JSON), shows
the text on the patient-phone page, and later posts signed status callbacks to the StatusCallback URL
the SDK sent, so the demo goes through the same webhook views as production.
"""

from __future__ import annotations

import json
import logging
import secrets
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from typing import Any

from django.conf import settings
from django.db import transaction
from django.utils import timezone
from twilio.http import HttpClient
from twilio.http.http_client import TwilioHttpClient
from twilio.http.response import Response
from twilio.request_validator import RequestValidator

from channels_adapters.simulator.adapter import UNDELIVERABLE_MARKER

logger = logging.getLogger(__name__)

UNREACHABLE_HANDSET = 30003


def http_client() -> HttpClient:
    if settings.TWILIO_TRANSPORT == "simulator":
        return SimulatedTwilioHttpClient()
    return TwilioHttpClient(timeout=settings.TWILIO_API_TIMEOUT_SECONDS)


def sign_and_post(url: str, params: dict[str, str], auth_token: str) -> int:
    """POST form params to one of our webhook URLs with a valid X-Twilio-Signature, as Twilio does."""
    signature = RequestValidator(auth_token).compute_signature(url, params)
    request = urllib.request.Request(  # noqa: S310 - only ever our own PUBLIC_BASE_URL
        url,
        data=urllib.parse.urlencode(params).encode(),
        headers={"X-Twilio-Signature": signature, "Content-Type": "application/x-www-form-urlencoded"},
        method="POST",
    )
    with urllib.request.urlopen(request, timeout=10) as response:  # noqa: S310
        return int(response.status)


class SimulatedTwilioHttpClient(HttpClient):
    # How long the simulated network takes to report sent and delivered.
    SENT_AFTER, DELIVERED_AFTER = 0.2, 0.6

    def __init__(self) -> None:
        super().__init__(logger=logger, is_async=False)

    def request(
        self,
        method: str,
        uri: str,
        params: dict[str, object] | None = None,
        data: dict[str, object] | None = None,
        headers: dict[str, str] | None = None,
        auth: tuple[str, str] | None = None,
        timeout: float | None = None,
        allow_redirects: bool = False,
    ) -> Response:
        if method == "GET" and uri.endswith("/Messages.json"):
            return self._list(uri, params or {})
        if method == "GET" and "/Messages/" in uri and uri.endswith(".json"):
            return self._fetch(uri)
        if method != "POST" or not uri.endswith("/Messages.json") or data is None:
            return Response(404, json.dumps({"code": 20404, "message": "The simulator only sends and lists messages"}))
        from channels_adapters.simulator.models import SimulatedDelivery
        from contactcenter.models import Inbox

        account_sid = uri.split("/Accounts/")[1].split("/")[0]
        to = str(data.get("To", ""))
        body = str(data.get("Body", ""))
        sid = "SM" + secrets.token_hex(16)
        inbox = Inbox.objects.filter(channel_type="sms", config__account_sid=account_sid).first()
        if inbox is not None:
            SimulatedDelivery.objects.create(inbox=inbox, to=to, body=body, provider_message_id=sid)
        callback = str(data.get("StatusCallback", ""))
        if callback and auth is not None:
            token = auth[1]
            transaction.on_commit(lambda: _report_later(callback, sid, account_sid, to, data, token))
        now = timezone.now().strftime("%a, %d %b %Y %H:%M:%S +0000")
        resource = {
            "sid": sid,
            "account_sid": account_sid,
            "to": to,
            "from": data.get("From"),
            "messaging_service_sid": data.get("MessagingServiceSid"),
            "body": body,
            "status": "queued" if data.get("From") else "accepted",
            "num_segments": "1",
            "direction": "outbound-api",
            "date_created": now,
            "date_updated": now,
            "error_code": None,
            "error_message": None,
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{sid}.json",
        }
        return Response(201, json.dumps(resource))

    def _fetch(self, uri: str) -> Response:
        """One Message resource by SID: how delivery asks after a message whose status callbacks were lost."""
        from channels_adapters.simulator.models import SimulatedDelivery

        account_sid = uri.split("/Accounts/")[1].split("/")[0]
        sid = uri.rsplit("/", 1)[1].removesuffix(".json")
        row = SimulatedDelivery.objects.filter(provider_message_id=sid).first()
        if row is None:
            return Response(404, json.dumps({"code": 20404, "message": "The requested resource was not found"}))
        return Response(200, json.dumps(self._resource(row, account_sid, None)))

    @staticmethod
    def _resource(row: Any, account_sid: str, sender: object) -> dict[str, object]:
        undelivered = UNDELIVERABLE_MARKER in row.body
        return {
            "sid": row.provider_message_id,
            "account_sid": account_sid,
            "to": row.to,
            "from": sender,
            "body": row.body,
            "status": "undelivered" if undelivered else "delivered",
            "error_code": UNREACHABLE_HANDSET if undelivered else None,
            "error_message": None,
            "direction": "outbound-api",
            "date_created": row.created_at.strftime("%a, %d %b %Y %H:%M:%S +0000"),
            "uri": f"/2010-04-01/Accounts/{account_sid}/Messages/{row.provider_message_id}.json",
        }

    def _list(self, uri: str, params: dict[str, object]) -> Response:
        """Twilio's Messages list (newest first, filtered by To): how delivery looks up a send whose answer was
        lost (TwilioSmsAdapter.find_sent), so the embedded demo settles those as production does."""
        from channels_adapters.simulator.models import SimulatedDelivery

        account_sid = uri.split("/Accounts/")[1].split("/")[0]
        to = str(params.get("To", ""))
        size = min(int(str(params.get("PageSize", 50))), 1000)
        rows = SimulatedDelivery.objects.filter(inbox__config__account_sid=account_sid, to=to).order_by("-id")[:size]
        messages = [self._resource(row, account_sid, params.get("From")) for row in rows]
        page_uri = f"/2010-04-01/Accounts/{account_sid}/Messages.json"
        page = {
            "messages": messages,
            "page": 0,
            "page_size": size,
            "start": 0,
            "end": max(0, len(messages) - 1),
            "first_page_uri": page_uri,
            "next_page_uri": None,
            "previous_page_uri": None,
            "uri": page_uri,
        }
        return Response(200, json.dumps(page))


def _report_later(callback: str, sid: str, account_sid: str, to: str, data: dict[str, object], token: str) -> None:
    # "#fail" in the text plays a carrier that cannot reach the handset, so the demo shows an
    # undelivered message with Twilio's error code end to end.
    undeliverable = UNDELIVERABLE_MARKER in str(data.get("Body", ""))
    final = "undelivered" if undeliverable else "delivered"

    def run() -> None:
        started = time.monotonic()
        for status, after in (
            ("sent", SimulatedTwilioHttpClient.SENT_AFTER),
            (final, SimulatedTwilioHttpClient.DELIVERED_AFTER),
        ):
            time.sleep(max(0.0, after - (time.monotonic() - started)))
            params = {
                "MessageSid": sid,
                "SmsSid": sid,
                "AccountSid": account_sid,
                "MessageStatus": status,
                "SmsStatus": status,
                "To": to,
                "ApiVersion": "2010-04-01",
            }
            if status == "undelivered":
                params["ErrorCode"] = str(UNREACHABLE_HANDSET)
            if data.get("From"):
                params["From"] = str(data["From"])
            if data.get("MessagingServiceSid"):
                params["MessagingServiceSid"] = str(data["MessagingServiceSid"])
            _post_with_patience(callback, params, token, sid)

    threading.Thread(target=run, name="sim-status", daemon=True).start()


def _post_with_patience(url: str, params: dict[str, str], token: str, sid: str) -> None:
    # The demo seed sends before the server listens; keep trying for a while, as Twilio would.
    deadline = time.monotonic() + 30
    while True:
        try:
            sign_and_post(url, params, token)
            return
        except urllib.error.HTTPError as exc:
            logger.warning("simulated status callback for %s refused with %s", sid, exc.code)
            return
        except OSError:
            if time.monotonic() > deadline:
                logger.warning("simulated status callback for %s not delivered", sid)
                return
            time.sleep(1)

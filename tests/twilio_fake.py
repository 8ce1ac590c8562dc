"""A recording stand-in for Twilio's REST API, at the one place the SDK lets us swap: its HttpClient.

Everything above it (Client, messages.create, parameter encoding, error parsing) is the real SDK.
"""

from __future__ import annotations

import datetime as dt
import functools
import json
import threading
import time
from dataclasses import dataclass, field
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import requests
from twilio.http import HttpClient
from twilio.http.response import Response

FIXTURES = Path(__file__).resolve().parents[1] / "channels_adapters" / "sms" / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    """A fresh copy each call (callers edit it); the file is read once, so the fake costs the benchmarks little."""
    return json.loads(_fixture_text(name))


@functools.cache
def _fixture_text(name: str) -> str:
    return (FIXTURES / name).read_text()


@dataclass
class RecordedRequest:
    method: str
    uri: str
    data: dict[str, Any]
    auth: tuple[str, str] | None


@dataclass
class RecordingTwilioHttpClient(HttpClient):
    """Answers from a script (status code + body, or an exception to raise); records every request.

    Unscripted, it accepts each message (a fresh SID, status "queued") and remembers it, and answers a
    Messages list (GET, filtered by To) with the ones it accepted, newest first, as Twilio does. Safe to
    call from several delivery threads at once. `latency` (seconds) stands in for Twilio's round trip.
    """

    script: list[tuple[int, dict[str, Any]] | BaseException] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)
    accepted: list[dict[str, Any]] = field(default_factory=list)
    latency: float = 0.0

    def __post_init__(self) -> None:
        import logging

        super().__init__(logger=logging.getLogger("twilio.fake"), is_async=False)
        self._lock = threading.Lock()

    def request(
        self,
        method: str,
        uri: str,
        params: Any = None,
        data: Any = None,
        headers: Any = None,
        auth: Any = None,
        timeout: Any = None,
        allow_redirects: bool = False,
    ) -> Response:
        if self.latency:
            time.sleep(self.latency)
        with self._lock:
            self.requests.append(RecordedRequest(method, uri, dict(data or params or {}), auth))
            step = self.script.pop(0) if self.script else None
            if step is None and method.upper() == "GET" and uri.endswith("/Messages.json"):
                step = (200, self._page(dict(params or {})))
            elif step is None and method.upper() == "GET" and "/Messages/" in uri:
                # One message by SID, as Twilio has it now (tests set its "status" in `accepted`).
                sid = uri.rsplit("/", 1)[1].removesuffix(".json")
                found = next((m for m in self.accepted if m["sid"] == sid), None)
                step = (200, found) if found else (404, {"code": 20404, "message": "Not found", "status": 404})
            elif step is None:
                created = fixture("api_message_created.json")
                created.update(sid=f"SM{len(self.accepted) + 1:032x}", **_echoed(dict(data or {})))
                created["date_created"] = created["date_updated"] = format_datetime(dt.datetime.now(dt.UTC))
                self.accepted.append(created)
                step = (201, created)
        if isinstance(step, BaseException):
            raise step
        status, body = step
        return Response(status, json.dumps(body))

    def _page(self, params: dict[str, Any]) -> dict[str, Any]:
        page = fixture("api_message_list.json")
        to = params.get("To")
        page["messages"] = [m for m in reversed(self.accepted) if to is None or m["to"] == to][
            : int(params.get("PageSize", 50))
        ]
        page["end"] = max(0, len(page["messages"]) - 1)
        return page


def _echoed(data: dict[str, Any]) -> dict[str, Any]:
    """What Twilio's answer repeats of the request."""
    echoed = {"to": data.get("To", ""), "body": data.get("Body", "")}
    if data.get("From"):
        echoed["from"] = data["From"]
    if data.get("MessagingServiceSid"):
        echoed["messaging_service_sid"] = data["MessagingServiceSid"]
        echoed["from"] = None
    return echoed


__all__ = ["RecordingTwilioHttpClient", "fixture", "requests"]

"""A recording stand-in for Twilio's REST API, at the one place the SDK lets us swap: its HttpClient.

Everything above it (Client, messages.create, parameter encoding, error parsing) is the real SDK.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import requests
from twilio.http import HttpClient
from twilio.http.response import Response

FIXTURES = Path(__file__).resolve().parents[1] / "channels_adapters" / "sms" / "fixtures"


def fixture(name: str) -> dict[str, Any]:
    return json.loads((FIXTURES / name).read_text())


@dataclass
class RecordedRequest:
    method: str
    uri: str
    data: dict[str, Any]
    auth: tuple[str, str] | None


@dataclass
class RecordingTwilioHttpClient(HttpClient):
    """Answers from a script (status code + body, or an exception to raise); records every request."""

    script: list[tuple[int, dict[str, Any]] | BaseException] = field(default_factory=list)
    requests: list[RecordedRequest] = field(default_factory=list)

    def __post_init__(self) -> None:
        import logging

        super().__init__(logger=logging.getLogger("twilio.fake"), is_async=False)

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
        self.requests.append(RecordedRequest(method, uri, dict(data or {}), auth))
        if self.script:
            step = self.script.pop(0)
        else:
            created = fixture("api_message_created.json")
            created["sid"] = f"SM{len(self.requests):032x}"
            step = (201, created)
        if isinstance(step, BaseException):
            raise step
        status, body = step
        return Response(status, json.dumps(body))


__all__ = ["RecordingTwilioHttpClient", "fixture", "requests"]

"""Webhooks beyond WEBHOOK_MAX_IN_FLIGHT in one process are refused at once with a retryable 503, storing nothing.

Issue 15, "overload loses nothing": contactcenter.shedding wraps the HTTP side of config.asgi.application. These
tests drive that real ASGI application (asgiref's ApplicationCommunicator, as Daphne would call it): a webhook is
held in flight inside the view (its accept_inbound waits on an Event), and what else arrives meanwhile is watched.
Real PostgreSQL; the webhooks are signed with the twilio SDK's own RequestValidator over a real payload fixture.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from asgiref.sync import sync_to_async
from asgiref.testing import ApplicationCommunicator
from django.conf import settings as django_settings
from django.core.cache import cache
from django.db import connection
from twilio.request_validator import RequestValidator

import channels_adapters.sms.views as sms_views
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from config.asgi import application
from contactcenter.actions import inbound_queue
from contactcenter.models import InboundWebhook, Inbox, Message, Team
from tests.twilio_fake import fixture

# The view runs on a thread (and a database connection) of its own, as under Daphne: the data must be committed.
pytestmark = pytest.mark.django_db(transaction=True)

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
STATUS_PATH = "/webhooks/twilio/sms/status/"
# Generous: only reached when something is wrong (a response that never comes).
WAIT = 20.0


@pytest.fixture
def sms_inbox(monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Inbox]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    team = Team.objects.create(code="patient-service", name="Patient service", name_zh="客服中心")
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    cache.delete(inbound_queue._flag(inbox.pk))
    yield inbox
    cache.delete(inbound_queue._flag(inbox.pk))


@dataclass
class Held:
    """The first webhook's accept_inbound, held until released."""

    entered: threading.Event
    release: threading.Event


@pytest.fixture
def held_webhook(monkeypatch: pytest.MonkeyPatch) -> Iterator[Held]:
    held = Held(threading.Event(), threading.Event())
    real_accept = sms_views.accept_inbound

    def accept_when_released(record: Any) -> None:
        held.entered.set()
        if not held.release.wait(WAIT):
            raise AssertionError("the held webhook was never released")
        real_accept(record)

    monkeypatch.setattr(sms_views, "accept_inbound", accept_when_released)
    yield held
    # A failing test must not leave the view's thread waiting.
    held.release.set()


def sms_params(message_sid: str, body: str) -> dict[str, str]:
    return {**fixture("inbound_plain_text.json"), "MessageSid": message_sid, "SmsMessageSid": message_sid,
            "SmsSid": message_sid, "Body": body}  # fmt: skip


def start(method: str, path: str, params: dict[str, str] | None = None) -> ApplicationCommunicator:
    """An HTTP request into the real ASGI application, signed as Twilio signs when it carries params."""
    headers = [(b"host", b"testserver")]
    if params is not None:
        signature = RequestValidator(TOKEN).compute_signature(django_settings.PUBLIC_BASE_URL + path, params)
        headers += [
            (b"content-type", b"application/x-www-form-urlencoded"),
            (b"x-twilio-signature", signature.encode()),
        ]
    scope = {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": headers,
        "client": ("127.0.0.1", 50000),
        "server": ("testserver", 80),
    }
    return ApplicationCommunicator(application, scope)


@dataclass
class Answer:
    status: int
    headers: dict[bytes, bytes]
    body: bytes


async def send(request: ApplicationCommunicator, params: dict[str, str] | None = None) -> None:
    body = urlencode(params).encode() if params is not None else b""
    await request.send_input({"type": "http.request", "body": body, "more_body": False})


async def answer(request: ApplicationCommunicator) -> Answer:
    start_message = await request.receive_output(WAIT)
    assert start_message["type"] == "http.response.start"
    body = b""
    while True:
        part = await request.receive_output(WAIT)
        body += part.get("body", b"")
        if not part.get("more_body", False):
            break
    await request.wait(WAIT)
    return Answer(start_message["status"], dict(start_message["headers"]), body)


def _stored(message_sid: str) -> tuple[int, int]:
    try:
        return (
            InboundWebhook.objects.filter(provider_message_id=message_sid).count(),
            Message.objects.filter(provider_message_id=message_sid).count(),
        )
    finally:
        # Read on asgiref's thread: its connection must not outlive the test (the test database is dropped).
        connection.close()


async def stored(message_sid: str) -> tuple[int, int]:
    """(queue rows, messages) holding this MessageSid."""
    return await sync_to_async(_stored)(message_sid)


async def test_a_webhook_beyond_the_in_flight_limit_is_refused_with_503_and_stores_nothing(
    sms_inbox: Inbox, held_webhook: Held, settings: Any
) -> None:
    settings.WEBHOOK_MAX_IN_FLIGHT = 1
    settings.WEBHOOK_RETRY_AFTER_SECONDS = 7
    first = sms_params("SM" + "1" * 32, "first, held in flight")
    second = sms_params("SM" + "2" * 32, "second, over the limit")

    in_flight = start("POST", INBOUND_PATH, first)
    await send(in_flight, first)
    assert await asyncio.to_thread(held_webhook.entered.wait, WAIT), "the first webhook never reached the view"

    refused_request = start("POST", INBOUND_PATH, second)
    await send(refused_request, second)
    refused = await answer(refused_request)

    # Answered while the first is still being handled: refused at once, not queued behind it.
    assert not in_flight.future.done()
    assert refused.status == 503
    assert refused.headers[b"retry-after"] == str(settings.WEBHOOK_RETRY_AFTER_SECONDS).encode()
    assert await stored(second["MessageSid"]) == (0, 0)
    # Status callbacks are webhooks too.
    status_request = start("POST", STATUS_PATH, fixture("status_delivered.json"))
    await send(status_request, fixture("status_delivered.json"))
    assert (await answer(status_request)).status == 503

    # Other paths are never shed, whatever the webhooks are doing.
    health_request = start("GET", "/healthz")
    await send(health_request)
    health = await answer(health_request)
    assert health.status == 200, health.body
    assert not in_flight.future.done()

    held_webhook.release.set()
    accepted = await answer(in_flight)

    assert accepted.status == 200, accepted.body
    assert await stored(first["MessageSid"]) == (0, 1)
    assert await stored(second["MessageSid"]) == (0, 0)

    # The slot is free again: Twilio's retry of the refused webhook is taken and stored.
    retry = start("POST", INBOUND_PATH, second)
    await send(retry, second)
    assert (await answer(retry)).status == 200
    assert await stored(second["MessageSid"]) == (0, 1)


async def test_webhooks_within_the_limit_are_not_shed(sms_inbox: Inbox, held_webhook: Held, settings: Any) -> None:
    settings.WEBHOOK_MAX_IN_FLIGHT = 2
    first = sms_params("SM" + "3" * 32, "first, held in flight")
    second = sms_params("SM" + "4" * 32, "second, within the limit")

    in_flight = start("POST", INBOUND_PATH, first)
    await send(in_flight, first)
    assert await asyncio.to_thread(held_webhook.entered.wait, WAIT), "the first webhook never reached the view"
    # The second is held too (the same accept_inbound) until released: both are in flight together.
    held_webhook.entered.clear()
    also_in_flight = start("POST", INBOUND_PATH, second)
    await send(also_in_flight, second)
    assert await asyncio.to_thread(held_webhook.entered.wait, WAIT), "the second webhook was not let in"

    held_webhook.release.set()

    assert (await answer(in_flight)).status == 200
    assert (await answer(also_in_flight)).status == 200
    assert await stored(first["MessageSid"]) == (0, 1)
    assert await stored(second["MessageSid"]) == (0, 1)

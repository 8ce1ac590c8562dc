"""Web chat end to end: the widget's socket on config.asgi.application over the real Redis channel layer and
PostgreSQL, with TASK_RUNNER=immediate so an agent's reply is delivered when it commits.

Sockets connect as a browser on the hospital's site does: an Origin header, the inbox's public token in the
path, a client address. Each test uses its own client address so the per-IP limits of one never touch another.
"""

from __future__ import annotations

import io
import itertools
import os
import secrets
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from asgiref.sync import SyncToAsync
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.contrib.auth.models import User
from django.core.cache import caches
from django.core.files.uploadedfile import SimpleUploadedFile
from django.db import connection
from django.test import Client
from django.urls import reverse
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
from channels_adapters.simulator.models import SimulatedDelivery
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from channels_adapters.webchat import actions, consumer, hops, limits, poller, selectors
from channels_adapters.webchat.identity import identity_hash, sign_visitor
from channels_adapters.webchat.models import WebUpload, WebVisitor
from config.asgi import application
from contactcenter import events
from contactcenter.actions.conversations import resolve_conversation
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import create_patient
from contactcenter.layers import ResilientRedisChannelLayer
from contactcenter.models import (
    AgentProfile,
    Availability,
    ChannelType,
    ConsentChange,
    ConsentSource,
    Conversation,
    Event,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Patient,
    PatientIdentity,
    Role,
    SenderKind,
    Team,
)
from tests.conftest import make_staff
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

pytestmark = pytest.mark.django_db(transaction=True)

ORIGIN = "https://www.kanghua-hospital.example"
FRAME_TIMEOUT = 5
QUIET = 0.5
SECRET_ENV = "WEBCHAT_TEST_IDENTITY_SECRET"
SECRET = "portal-shared-secret-for-tests"
PATIENT_PHONE = "+8613800138000"
TWILIO_TOKEN = "webchat-test-auth-token-0123456789"
TWILIO_ACCOUNT = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
HOSPITAL_NUMBER = "+8610123456780"

_ips = (f"10.9.{n // 250}.{n % 250 + 1}" for n in itertools.count())


@dataclass
class Chat:
    team: Team
    inbox: Inbox
    sms_inbox: Inbox
    email_inbox: Inbox
    agent: Any


@pytest.fixture(autouse=True)
async def fresh_channel_layer() -> AsyncIterator[None]:
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if layer is not None:
        await layer.flush()
        await layer.close_pools()


@pytest.fixture
def chat(monkeypatch: pytest.MonkeyPatch) -> Chat:
    monkeypatch.setenv(SECRET_ENV, SECRET)
    team = Team.objects.create(code="service", name="Patient Service Center", name_zh="客服中心")
    sms_inbox = Inbox.objects.create(name="SMS", channel_type=ChannelType.SIMULATOR, team=team, auto_assign=False)
    email_inbox = Inbox.objects.create(name="Email", channel_type=ChannelType.EMAIL, team=team, auto_assign=False)
    inbox = Inbox.objects.create(
        name="Website chat",
        channel_type=ChannelType.WEBCHAT,
        team=team,
        auto_assign=False,
        config={
            "allowed_origins": [ORIGIN],
            "consent_text": {"en": "I agree.", "zh-hans": "我同意。"},
            "identity_secret_env": SECRET_ENV,
            "offline_sms_inbox_id": sms_inbox.pk,
            "offline_email_inbox_id": email_inbox.pk,
        },
    )
    agent = make_staff("alice", Role.AGENT, [team], availability=Availability.ONLINE)
    return Chat(team=team, inbox=inbox, sms_inbox=sms_inbox, email_inbox=email_inbox, agent=agent)


Opener = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
async def open_widget(chat: Chat) -> AsyncIterator[Opener]:
    opened: list[WebsocketCommunicator] = []

    async def open_(
        *, token: str | None = None, origin: str | None = ORIGIN, ip: str | None = None, expect: bool = True
    ) -> WebsocketCommunicator:
        headers = [(b"origin", origin.encode())] if origin is not None else []
        communicator = WebsocketCommunicator(
            application, f"/ws/webchat/{token or chat.inbox.public_token}/", headers=headers
        )
        communicator.scope["client"] = (ip or next(_ips), 50000)
        opened.append(communicator)
        connected, code = await communicator.connect(timeout=FRAME_TIMEOUT)
        assert connected is expect, (connected, code)
        if connected:
            welcome = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
            assert welcome["type"] == "welcome", welcome
            communicator.welcome = welcome
        else:
            communicator.close_code = code
        return communicator

    yield open_
    crashed = []
    for communicator in opened:
        if not communicator.future.done():
            await communicator.disconnect(timeout=0.5)
        elif not communicator.future.cancelled() and communicator.future.exception() is not None:
            crashed.append(communicator.future.exception())
    assert not crashed, crashed


FORM = {"name": "Wang Fang", "phone": "13800138001", "email": "", "consent": True, "language": "en"}


async def start(communicator: WebsocketCommunicator, **overrides: Any) -> dict[str, Any]:
    """Submit the pre-chat form; returns the ready frame (with the visitor token added)."""
    identity = overrides.pop("identity", None)
    frame: dict[str, Any] = {"op": "start", "form": {**FORM, **overrides}}
    if identity is not None:
        frame["identity"] = identity
    await communicator.send_json_to(frame)
    session = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
    assert session["type"] == "session", session
    ready = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
    assert ready["type"] == "ready", ready
    return {**ready, "visitor_token": session["visitor_token"]}


async def say(communicator: WebsocketCommunicator, body: str, client_id: str) -> int:
    """Send a message; returns its id from the ack (skipping the message's own event frame)."""
    await communicator.send_json_to({"op": "message", "body": body, "client_id": client_id})
    while True:
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        if frame["type"] == "ack":
            assert frame["client_id"] == client_id
            return int(frame["message_id"])
        assert frame["type"] == "events", frame
        communicator.cursor = frame["last_event_id"]


async def expect_error(communicator: WebsocketCommunicator, code: str) -> dict[str, Any]:
    frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    return frame


async def assert_usable(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"op": "ping"})
    assert await communicator.receive_json_from(timeout=FRAME_TIMEOUT) == {"type": "pong"}


async def widget_messages(communicator: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    """Read events frames until `count` message events came; status and seen events are skipped."""
    found: list[dict[str, Any]] = []
    while len(found) < count:
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events", frame
        found.extend(e["message"] for e in frame["events"] if e["kind"] == "message")
    return found


@database_sync_to_async
def agent_replies(chat: Chat, body: str) -> Message:
    conversation = Conversation.objects.filter(inbox=chat.inbox).order_by("-id").first()
    assert conversation is not None
    message = send_outbound(conversation=conversation, body=body, author=chat.agent)
    message.refresh_from_db()
    return message


@database_sync_to_async
def db(fn: Callable[[], Any]) -> Any:
    return fn()


# --- connecting --------------------------------------------------------------------------------------------


async def test_widget_connects_with_public_token_and_allowed_origin(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    assert widget.welcome["staffed"] is True
    assert widget.welcome["consent_text"] == {"en": "I agree.", "zh-hans": "我同意。"}
    await assert_usable(widget)


async def test_unknown_token_is_refused(open_widget: Opener) -> None:
    widget = await open_widget(token="no-such-inbox-token", expect=False)
    assert widget.close_code == 4404


async def test_a_non_webchat_inbox_token_is_refused(chat: Chat, open_widget: Opener) -> None:
    await open_widget(token=chat.sms_inbox.public_token, expect=False)


async def test_origin_not_allowed_by_the_inbox_is_refused(open_widget: Opener) -> None:
    widget = await open_widget(origin="https://evil.example", expect=False)
    assert widget.close_code == 4403
    await open_widget(origin=None, expect=False)


async def test_agent_socket_still_refuses_foreign_origins(chat: Chat) -> None:
    communicator = WebsocketCommunicator(application, "/ws/agent/", headers=[(b"origin", ORIGIN.encode())])
    connected, _ = await communicator.connect(timeout=FRAME_TIMEOUT)
    assert connected is False


async def test_connections_per_ip_are_rate_limited(open_widget: Opener, settings: Any) -> None:
    settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP = 2
    await open_widget(ip="10.200.0.1")
    await open_widget(ip="10.200.0.1")
    refused = await open_widget(ip="10.200.0.1", expect=False)
    assert refused.close_code == 4429
    await open_widget(ip="10.200.0.2")


# --- starting, identity, consent ---------------------------------------------------------------------------


async def test_pre_chat_creates_visitor_patient_and_widget_consent(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    ready = await start(widget)
    assert ready["history"] == []
    visitor = await db(lambda: WebVisitor.objects.get())
    assert visitor.phone == "+8613800138001" and not visitor.verified
    identities = await db(
        lambda: set(PatientIdentity.objects.filter(patient=visitor.patient).values_list("kind", flat=True))
    )
    assert identities == {IdentityKind.VISITOR, IdentityKind.PHONE}
    change = await db(lambda: ConsentChange.objects.get(patient=visitor.patient))
    assert change.source == ConsentSource.WIDGET and change.channel == ChannelType.WEBCHAT


async def test_pre_chat_without_consent_or_contact_is_refused(open_widget: Opener) -> None:
    widget = await open_widget()
    await widget.send_json_to({"op": "start", "form": {**FORM, "consent": False, "phone": ""}})
    error = await expect_error(widget, "invalid_form")
    assert set(error["fields"]) == {"consent", "phone"}
    assert await db(lambda: WebVisitor.objects.count()) == 0
    await assert_usable(widget)


async def test_typed_phone_never_claims_an_existing_patient(chat: Chat, open_widget: Opener) -> None:
    owner = await db(
        lambda: create_patient(fields={"name": "Existing"}, identities=[(IdentityKind.PHONE, PATIENT_PHONE)])
    )
    widget = await open_widget()
    await start(widget, phone=PATIENT_PHONE)
    visitor = await db(lambda: WebVisitor.objects.select_related("patient").get())
    assert visitor.patient_id != owner.pk
    assert (
        await db(lambda: PatientIdentity.objects.get(kind=IdentityKind.PHONE, value=PATIENT_PHONE).patient_id)
        == owner.pk
    )


async def test_portal_hmac_attaches_the_chat_to_the_patient_record(chat: Chat, open_widget: Opener) -> None:
    owner = await db(lambda: create_patient(fields={"name": "Portal"}, identities=[(IdentityKind.MRN, "MRN100042")]))
    widget = await open_widget()
    await start(widget, identity={"id": "MRN100042", "hash": identity_hash(SECRET, "MRN100042")})
    await say(widget, "Is my report ready?", "c1")
    message = await db(lambda: Message.objects.select_related("conversation").get())
    assert message.conversation.patient_id == owner.pk
    assert await db(lambda: WebVisitor.objects.get().verified) is True


async def test_forged_identity_hmac_is_refused(chat: Chat, open_widget: Opener) -> None:
    owner = await db(lambda: create_patient(fields={"name": "Portal"}, identities=[(IdentityKind.MRN, "MRN100042")]))
    widget = await open_widget()
    forged = identity_hash("a-guessed-secret", "MRN100042")
    await widget.send_json_to({"op": "start", "form": FORM, "identity": {"id": "MRN100042", "hash": forged}})
    await expect_error(widget, "identity_refused")
    assert await db(lambda: WebVisitor.objects.count()) == 0
    assert await db(lambda: PatientIdentity.objects.filter(patient=owner).count()) == 1
    await assert_usable(widget)


# --- messages both ways --------------------------------------------------------------------------------------


async def test_visitor_message_goes_through_receive_inbound(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    message_id = await say(widget, "<script>alert(1)</script> 你好", "c1")
    message = await db(lambda: Message.objects.select_related("conversation").get(pk=message_id))
    assert message.body == "<script>alert(1)</script> 你好"
    assert message.conversation.inbox_id == chat.inbox.pk and message.status == MessageStatus.RECEIVED
    assert message.provider_message_id is not None


async def test_resending_a_client_id_stores_the_message_once(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    first = await say(widget, "Hello", "same-id")
    again = await say(widget, "Hello", "same-id")
    assert first == again
    assert await db(lambda: Message.objects.count()) == 1


async def test_agent_reply_arrives_live_and_is_delivered(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Hello", "c1")
    reply = await agent_replies(chat, "您好，请问有什么可以帮您？")
    (received,) = await widget_messages(widget, 1)
    assert received["id"] == reply.pk and received["from"] == "hospital" and received["author"] == "Alice"
    assert set(received) == {"id", "client_id", "direction", "from", "author", "body", "images", "status", "created_at"}
    assert reply.status == MessageStatus.DELIVERED


async def test_read_receipt_moves_the_reply_to_read(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Hello", "c1")
    reply = await agent_replies(chat, "Hi")
    await widget_messages(widget, 1)
    await widget.send_json_to({"op": "read", "message_id": reply.pk})
    # The reply's own "delivered" may come first: it is committed after the message, and read in its own catch-up
    # when the widget's read of the message came between the two.
    statuses: list[dict[str, Any]] = []
    while not any(s["status"] == "read" for s in statuses):
        frame = await widget.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events", frame
        statuses.extend(e for e in frame["events"] if e["kind"] == "status")
    assert statuses[-1] == {"id": statuses[-1]["id"], "kind": "status", "message_id": reply.pk, "status": "read"}
    assert {s["status"] for s in statuses} <= {"delivered", "read"}
    assert await db(lambda: Message.objects.get(pk=reply.pk).status) == MessageStatus.READ


async def test_typing_both_ways(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Hello", "c1")
    conversation_id = await db(lambda: Conversation.objects.get().pk)
    layer = get_channel_layer()
    assert layer is not None
    agent_channel = await layer.new_channel()
    await layer.group_add(events.conversation_group(conversation_id), agent_channel)
    await widget.send_json_to({"op": "typing", "state": "start"})
    signal = await layer.receive(agent_channel)
    assert signal["who"] == "patient" and signal["state"] == "start" and signal["conversation_id"] == conversation_id
    await layer.group_send(
        events.conversation_group(conversation_id),
        {
            "type": "typing.signal",
            "conversation_id": conversation_id,
            "state": "start",
            "who": "agent",
            "user_id": 1,
            "name": "Alice",
            "sender_channel": agent_channel,
        },
    )
    assert await widget.receive_json_from(timeout=FRAME_TIMEOUT) == {
        "type": "typing",
        "state": "start",
        "name": "Alice",
    }


# --- resync and history ------------------------------------------------------------------------------------


async def test_reconnect_with_last_event_id_gets_exactly_what_was_missed(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    # No phone, and email is off in the tests: the replies wait for the widget rather than go by SMS.
    ready = await start(widget, phone="", email="fang@example.com")
    await say(widget, "Hello", "c1")
    cursor = widget.cursor
    assert cursor > ready["last_event_id"]
    await widget.disconnect()
    missed = [await agent_replies(chat, "First"), await agent_replies(chat, "Second")]
    assert {m.status for m in missed} == {MessageStatus.SENT}  # no widget open, the reply waits
    again = await open_widget()
    await again.send_json_to({"op": "resume", "visitor_token": ready["visitor_token"], "last_event_id": cursor})
    resumed = await again.receive_json_from(timeout=FRAME_TIMEOUT)
    assert resumed["type"] == "ready" and resumed["history"] is None
    received = await widget_messages(again, 2)
    assert [m["id"] for m in received] == [m.pk for m in missed]
    assert await again.receive_nothing(timeout=QUIET)


async def test_page_reload_restores_history(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    ready = await start(widget)
    await say(widget, "Hello", "c1")
    reply = await agent_replies(chat, "Hi there")
    await widget.disconnect()
    again = await open_widget()
    await again.send_json_to({"op": "resume", "visitor_token": ready["visitor_token"], "last_event_id": None})
    resumed = await again.receive_json_from(timeout=FRAME_TIMEOUT)
    assert [m["body"] for m in resumed["history"]] == ["Hello", "Hi there"]
    assert resumed["history"][1]["id"] == reply.pk


async def test_forged_or_foreign_visitor_token_is_refused(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    ready = await start(widget)
    other = await db(lambda: Inbox.objects.create(name="Other", channel_type=ChannelType.WEBCHAT, team=chat.team))
    visitor_id = await db(lambda: WebVisitor.objects.get().visitor_id)
    again = await open_widget()
    for token in (ready["visitor_token"] + "x", sign_visitor(inbox=other, visitor_id=visitor_id), 42):
        await again.send_json_to({"op": "resume", "visitor_token": token, "last_event_id": None})
        await expect_error(again, "unknown_visitor")
    await assert_usable(again)


# --- threads and the database -------------------------------------------------------------------------------


@dataclass
class Hops:
    """Work handed from the event loop to a thread: the widgets' own threads, and the process's one thread for
    sync work (Channels' dispatch visited it before every frame). The database is reached through nothing else."""

    widget: int = 0
    shared: int = 0

    @property
    def total(self) -> int:
        return self.widget + self.shared


@pytest.fixture
def thread_hops(monkeypatch: pytest.MonkeyPatch) -> Hops:
    counted = Hops()
    widget_submit = hops.executor.submit
    shared_submit = SyncToAsync.single_thread_executor.submit

    def on_widget(*args: Any, **kwargs: Any) -> Any:
        counted.widget += 1
        return widget_submit(*args, **kwargs)

    def on_shared(*args: Any, **kwargs: Any) -> Any:
        counted.shared += 1
        return shared_submit(*args, **kwargs)

    monkeypatch.setattr(hops.executor, "submit", on_widget)
    monkeypatch.setattr(SyncToAsync.single_thread_executor, "submit", on_shared)
    # No poller read during these tests: what is counted is the frames' own work.
    monkeypatch.setattr(poller, "IDLE_CATCH_UP_SECONDS", 3600.0)
    return counted


async def test_ping_typing_and_bad_frames_take_no_thread_hop(
    chat: Chat, open_widget: Opener, thread_hops: Hops
) -> None:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Hello", "c1")
    assert thread_hops.widget > 0  # the counter sees the widget's database work
    conversation_id = await db(lambda: Conversation.objects.get().pk)
    layer = get_channel_layer()
    assert layer is not None
    agent_channel = await layer.new_channel()
    await layer.group_add(events.conversation_group(conversation_id), agent_channel)
    before = thread_hops.total
    await widget.send_json_to({"op": "ping"})
    assert await widget.receive_json_from(timeout=FRAME_TIMEOUT) == {"type": "pong"}
    await widget.send_json_to({"op": "typing", "state": "start"})
    assert (await layer.receive(agent_channel))["who"] == "patient"
    await widget.send_json_to({"op": "typing", "state": "stop"})
    assert (await layer.receive(agent_channel))["state"] == "stop"
    await widget.send_to(text_data="not json")
    await expect_error(widget, "bad_frame")
    await widget.send_json_to({"op": "shout"})
    await expect_error(widget, "unknown_op")
    await widget.send_json_to({"op": "typing", "state": "sideways"})
    await expect_error(widget, "bad_typing")
    # A hint for an event the widget has already read, then an agent's typing: both answered on the event loop.
    # (They come through the widget's one channel, in the order sent: once the typing frame is out, the hint
    # was handled.)
    await layer.group_send(
        events.conversation_events_group(conversation_id), {"type": "event.hint", "event_id": widget.cursor}
    )
    await layer.group_send(
        events.conversation_group(conversation_id),
        {
            "type": "typing.signal",
            "conversation_id": conversation_id,
            "state": "start",
            "who": "agent",
            "name": "Alice",
        },
    )
    assert (await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] == "typing"
    assert thread_hops.total == before


async def test_a_visitor_message_is_stored_and_read_back_in_one_thread_hop(
    chat: Chat, open_widget: Opener, thread_hops: Hops
) -> None:
    sessions_before = await db(other_sessions)
    widget = await open_widget()
    await start(widget)
    before = thread_hops.total
    # The first message opens the conversation: stored and read in one hop, then read once more after the socket
    # joined the new thread's group (a hint between the two would have gone nowhere).
    await say(widget, "Hello", "c1")
    assert thread_hops.total - before == 2
    before = thread_hops.total
    await widget.send_json_to({"op": "message", "body": "Can I come on Friday?", "client_id": "c2"})
    frame = await widget.receive_json_from(timeout=FRAME_TIMEOUT)
    # The events up to and with the message come before its ack, from the same hop that stored it.
    assert frame["type"] == "events", frame
    (own,) = [e["message"] for e in frame["events"] if e["kind"] == "message"]
    assert own["client_id"] == "c2" and own["body"] == "Can I come on Friday?"
    ack = await widget.receive_json_from(timeout=FRAME_TIMEOUT)
    assert ack == {"type": "ack", "client_id": "c2", "message_id": own["id"]}
    assert thread_hops.total - before == 1
    # The widget's threads hold no database session between hops.
    assert await db(other_sessions) <= sessions_before


def other_sessions() -> set[int]:
    """The PostgreSQL sessions on the test database besides this thread's."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()"
        )
        return {pid for (pid,) in cursor.fetchall()}


async def test_a_thread_staff_open_reaches_the_widget_by_the_idle_catch_up(
    chat: Chat, open_widget: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "TICK_SECONDS", 0.05)
    monkeypatch.setattr(poller, "IDLE_CATCH_UP_SECONDS", 0.2)
    widget = await open_widget()
    await start(widget, phone="", email="fang@example.com")  # no phone: the reply waits for the widget
    await say(widget, "Hello", "c1")

    def new_thread() -> Message:
        first = Conversation.objects.get()
        resolve_conversation(conversation=first, actor=None)
        # A thread the widget does not follow yet: no hint reaches it.
        second = Conversation.objects.create(inbox=chat.inbox, patient=first.patient, team=chat.team)
        return send_outbound(conversation=second, body="Your appointment is confirmed.", author=chat.agent)

    reply = await db(new_thread)
    found: list[dict[str, Any]] = []
    while not any(m["id"] == reply.pk for m in found):
        found.extend(await widget_messages(widget, 1))
    # And the socket follows the new thread from now on: its typing reaches the widget.
    layer = get_channel_layer()
    assert layer is not None
    await layer.group_send(
        events.conversation_group(reply.conversation_id),
        {"type": "typing.signal", "conversation_id": reply.conversation_id, "state": "start", "who": "agent"},
    )
    while (frame := await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] != "typing":
        assert frame["type"] == "events", frame


async def test_lost_hints_are_made_good_for_every_widget_of_the_process_by_one_read(
    chat: Chat, open_widget: Opener, thread_hops: Hops, monkeypatch: pytest.MonkeyPatch
) -> None:
    widgets = [await open_widget() for _ in range(3)]
    for n, widget in enumerate(widgets):
        await start(widget, name=f"Visitor {n}", phone="", email=f"visitor{n}@example.com")  # replies wait
        await say(widget, "Hello", f"c{n}")

    def replies_whose_hints_are_lost() -> list[Message]:
        with monkeypatch.context() as lost:
            lost.setattr(events, "publish_hint", lambda event_id, groups: None)
            return [
                send_outbound(conversation=conversation, body=f"Reply {conversation.pk}", author=chat.agent)
                for conversation in Conversation.objects.order_by("id")
            ]

    replies = await db(replies_whose_hints_are_lost)
    (widget_poller,) = poller.pollers()
    hops_before, reads_before = thread_hops.total, widget_poller.reads
    monkeypatch.setattr(poller, "TICK_SECONDS", 0.05)
    monkeypatch.setattr(poller, "IDLE_CATCH_UP_SECONDS", 0.2)
    for widget, reply in zip(widgets, replies, strict=True):
        (received,) = await widget_messages(widget, 1)
        assert received["id"] == reply.pk
    # One hop per read of the poller, whatever the number of widgets it reads for.
    reads = widget_poller.reads - reads_before
    assert reads >= 1 and thread_hops.total - hops_before == reads
    for widget in widgets:
        await widget.disconnect()
    assert poller.pollers() == []


async def test_while_hints_cannot_arrive_the_poller_reads_often_and_probes_the_layer(
    chat: Chat, open_widget: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(poller, "TICK_SECONDS", 0.05)
    monkeypatch.setattr(poller, "IDLE_CATCH_UP_SECONDS", 3600.0)
    monkeypatch.setattr(poller, "DEGRADED_CATCH_UP_SECONDS", 0.2)
    widget = await open_widget()
    await start(widget, phone="", email="fang@example.com")
    await say(widget, "Hello", "c1")

    def reply_whose_hint_is_lost() -> Message:
        with monkeypatch.context() as lost:
            lost.setattr(events, "publish_hint", lambda event_id, groups: None)
            return send_outbound(conversation=Conversation.objects.get(), body="Hi", author=chat.agent)

    reply = await db(reply_whose_hint_is_lost)
    layer = get_channel_layer()
    assert isinstance(layer, ResilientRedisChannelLayer)
    generation = layer.generation
    layer.available = False  # as after a send that could not reach Redis
    (received,) = await widget_messages(widget, 1)
    assert received["id"] == reply.pk
    # The poller's probe (a group join) went through: the layer knows Redis is there.
    assert layer.available and layer.generation > generation


async def test_messages_take_the_inbox_as_it_is_once_the_sockets_copy_is_old(
    chat: Chat, open_widget: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    widget = await open_widget()
    await start(widget)
    surgery = await db(lambda: Team.objects.create(code="surgery", name="Surgery", name_zh="外科"))
    await db(lambda: Inbox.objects.filter(pk=chat.inbox.pk).update(team=surgery))
    # The socket read its inbox at connect; older than INBOX_FRESH_SECONDS, a message reads it again.
    monkeypatch.setattr(consumer, "INBOX_FRESH_SECONDS", 0.0)
    await say(widget, "Hello", "c1")
    assert await db(lambda: Conversation.objects.get().team_id) == surgery.pk


def _window_limits(scope: str, *limits_: tuple[str, int]) -> list[limits.Limit]:
    # Keys of their own and a window of years: no other test and no minute boundary changes the counts.
    run = secrets.token_hex(4)
    return [limits.Limit(f"{scope}-{run}", key, limit) for key, limit in limits_]


@pytest.mark.parametrize("backend", ["redis", "redis refusing scripts", "locmem"])
def test_rate_limits_checked_together_count_in_turn_and_stop_at_the_first_exceeded(
    backend: str, settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    if backend == "locmem":
        settings.CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}
    if backend == "redis refusing scripts":

        def refused(*args: Any, **kwargs: Any) -> Any:
            raise redis.exceptions.ResponseError("NOPERM this user has no permissions to run the 'eval' command")

        monkeypatch.setattr(redis.Redis, "eval", refused)
    years = 10**8
    visitor, address = _window_limits("t", ("visitor-1", 2), ("203.0.113.9", 3))
    assert limits.allow_all([visitor, address], window_seconds=years) is None
    assert limits.allow_all([visitor, address], window_seconds=years) is None
    assert limits.allow_all([visitor, address], window_seconds=years) == visitor
    # The hit the visitor's own limit refused was not counted against their address.
    other = limits.Limit(visitor.scope, "visitor-2", 2)
    assert limits.allow_all([other, address], window_seconds=years) is None
    assert limits.allow_all([other, address], window_seconds=years) == address
    # allow() counts the same windows.
    assert limits.allow(address.scope, address.key, limit=5, window_seconds=years) is True
    assert limits.allow(address.scope, address.key, limit=5, window_seconds=years) is False


def test_rate_limits_checked_together_and_presence_kept_together_let_patients_through_while_the_cache_is_down(
    settings: Any,
) -> None:
    settings.CACHES = {
        "default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": "redis://127.0.0.1:9/0"}
    }
    caches["default"].close()
    assert limits.allow_all(_window_limits("down", ("visitor-1", 0))) is None
    limits.widgets_alive(["visitor-1", "visitor-2"])


def test_the_poller_keeps_every_open_widget_present_in_one_call() -> None:
    run = secrets.token_hex(4)
    opened, never = f"wv_open_{run}", f"wv_never_{run}"
    limits.widget_opened(opened)
    redis = limits._redis()
    assert redis is not None
    backend, client = redis
    key = backend.make_and_validate_key(f"webchat:present:{opened}")
    client.expire(key, 3)  # as if its last heartbeat were long ago
    limits.widgets_alive([opened, never])
    assert client.ttl(key) > 100
    assert limits.widget_open(opened) is True
    # A visitor whose widget was never opened is not made present by a heartbeat.
    assert limits.widget_open(never) is False


def test_the_widgets_catch_up_reads_its_own_threads_events_in_id_order_a_batch_at_a_time(chat: Chat) -> None:
    mine = Conversation.objects.create(
        inbox=chat.inbox, patient=create_patient(fields={"name": "Wang"}, identities=[]), team=chat.team
    )
    other = Conversation.objects.create(
        inbox=chat.inbox, patient=create_patient(fields={"name": "Li"}, identities=[]), team=chat.team
    )
    for i, conversation in enumerate([mine, other] * 3):
        send_outbound(conversation=conversation, body=f"n{i}", author=chat.agent)
    first = selectors.widget_events([mine.pk], 0, 2)
    assert first.complete is False and first.cursor is not None  # stopped at the limit: read on from its cursor
    rest = selectors.widget_events([mine.pk], first.cursor, 1000)
    assert rest.complete is True and rest.cursor is not None
    read = first.events + rest.events
    assert [e["message"]["body"] for e in read if e["kind"] == "message"] == ["n0", "n2", "n4"]
    assert [e["id"] for e in read] == sorted(e["id"] for e in read)
    assert selectors.widget_events([mine.pk], rest.cursor, 1000) == ([], None, True)
    assert selectors.widget_events([], 0, 1000) == ([], None, True)


# --- safety ------------------------------------------------------------------------------------------------


async def test_messages_per_visitor_are_rate_limited_and_the_socket_stays(
    chat: Chat, open_widget: Opener, settings: Any
) -> None:
    settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR = 3
    widget = await open_widget()
    await start(widget)
    for n in range(3):
        await say(widget, f"message {n}", f"c{n}")
    await widget.send_json_to({"op": "message", "body": "one too many", "client_id": "c3"})
    error = await expect_error(widget, "rate_limited")
    assert error["client_id"] == "c3"
    assert await db(lambda: Message.objects.count()) == 3
    await assert_usable(widget)


async def test_messages_per_ip_are_rate_limited_across_visitors(open_widget: Opener, settings: Any) -> None:
    settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_IP = 2
    first, second = await open_widget(ip="10.201.0.1"), await open_widget(ip="10.201.0.1")
    await start(first)
    await start(second, name="Li Lei")
    await say(first, "one", "a")
    await say(second, "two", "b")
    await second.send_json_to({"op": "message", "body": "three", "client_id": "c"})
    await expect_error(second, "rate_limited")


async def test_oversized_message_and_frame_are_refused_and_the_socket_stays(open_widget: Opener, settings: Any) -> None:
    settings.WEBCHAT_MAX_MESSAGE_CHARS = 50
    widget = await open_widget()
    await start(widget)
    await widget.send_json_to({"op": "message", "body": "x" * 51, "client_id": "c1"})
    await expect_error(widget, "too_long")
    await widget.send_to(text_data='{"op": "message", "body": "' + "y" * 5000 + '", "client_id": "c2"}')
    await expect_error(widget, "too_large")
    assert await db(lambda: Message.objects.count()) == 0
    await say(widget, "x" * 50, "c3")
    await assert_usable(widget)


@pytest.mark.parametrize(
    ("frame", "code"),
    [
        ("not json", "bad_frame"),
        ("[1, 2]", "bad_frame"),
        ('{"no": "op"}', "bad_frame"),
        ('{"op": "shout"}', "unknown_op"),
        ('{"op": "message", "body": "before start", "client_id": "c"}', "no_session"),
        ('{"op": "resume", "visitor_token": "t", "last_event_id": -1}', "bad_cursor"),
        ('{"op": "typing", "state": "sideways"}', "bad_typing"),
        ('{"op": "read", "message_id": true}', "bad_read"),
    ],
)
async def test_malformed_frames_get_an_error_frame_and_the_socket_stays(
    open_widget: Opener, frame: str, code: str
) -> None:
    widget = await open_widget()
    await widget.send_to(text_data=frame)
    await expect_error(widget, code)
    await assert_usable(widget)


async def test_binary_frame_gets_an_error_frame(open_widget: Opener) -> None:
    widget = await open_widget()
    await widget.send_to(bytes_data=b"\x00\x01")
    await expect_error(widget, "bad_frame")
    await assert_usable(widget)


async def test_bad_client_id_is_refused(open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    await widget.send_json_to({"op": "message", "body": "hi", "client_id": "x" * 65})
    await expect_error(widget, "bad_client_id")
    await assert_usable(widget)


async def test_a_message_with_nul_and_lone_surrogates_is_stored_with_replacement_characters(
    open_widget: Opener,
) -> None:
    widget = await open_widget()
    await start(widget)
    # As a browser's JSON.stringify sends them: escapes, which json.loads turns into NUL and a lone surrogate.
    await widget.send_to(text_data='{"op": "message", "body": "pain\\u0000 here \\ud800 now", "client_id": "c1"}')
    while (frame := await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] != "ack":
        assert frame["type"] == "events", frame
    message = await db(lambda: Message.objects.get(pk=frame["message_id"]))
    assert message.body == "pain\ufffd here \ufffd now"
    await assert_usable(widget)


async def test_a_pre_chat_name_with_nul_and_a_lone_surrogate_is_stored_cleaned(open_widget: Opener) -> None:
    widget = await open_widget()
    await widget.send_to(
        text_data='{"op": "start", "form": '
        '{"name": "Wang\\u0000 \\udfff Fang", "phone": "13800138001", "consent": true}}'
    )
    assert (await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] == "session"
    assert (await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] == "ready"
    visitor = await db(lambda: WebVisitor.objects.select_related("patient").get())
    assert visitor.name == visitor.patient.name == "Wang\ufffd \ufffd Fang"


@pytest.mark.parametrize(
    ("form", "field"),
    [
        ('{"name": "Li", "email": "li@kanghua\\ud800.example", "consent": true}', "email"),
        ('{"name": "Li", "email": "li\\u0000@kanghua.example", "consent": true}', "email"),
        ('{"name": "Li", "phone": "\\ud800", "consent": true}', "phone"),
    ],
)
async def test_pre_chat_contact_details_that_cannot_be_stored_are_refused_field_by_field(
    open_widget: Opener, form: str, field: str
) -> None:
    widget = await open_widget()
    await widget.send_to(text_data='{"op": "start", "form": ' + form + "}")
    error = await expect_error(widget, "invalid_form")
    assert field in error["fields"]
    assert await db(lambda: WebVisitor.objects.count()) == 0
    await assert_usable(widget)


@pytest.mark.parametrize(
    "identity",
    ['{"id": "MRN\\ud800", "hash": "00"}', '{"id": "MRN100042", "hash": "\\u00e9\\u00e9"}', '{"id": "MRN\\u0000"}'],
)
async def test_a_portal_identity_that_cannot_be_ours_is_refused(chat: Chat, open_widget: Opener, identity: str) -> None:
    widget = await open_widget()
    await widget.send_to(
        text_data='{"op": "start", "form": {"name": "Li", "phone": "13800138001", "consent": true}, "identity": '
        + identity
        + "}"
    )
    await expect_error(widget, "identity_refused")
    assert await db(lambda: WebVisitor.objects.count()) == 0
    await assert_usable(widget)


async def test_a_visitor_token_with_a_lone_surrogate_is_an_unknown_visitor(open_widget: Opener) -> None:
    widget = await open_widget()
    await widget.send_to(text_data='{"op": "resume", "visitor_token": "abc:\\ud800", "last_event_id": null}')
    await expect_error(widget, "unknown_visitor")
    await assert_usable(widget)


async def test_an_inbox_token_with_a_nul_is_refused_as_unknown(open_widget: Opener) -> None:
    widget = await open_widget(token="abc%00def", expect=False)
    assert widget.close_code == 4404


def test_an_upload_to_an_inbox_token_with_a_nul_is_404(chat: Chat, media: Path) -> None:
    token = new_visitor(chat)
    response = Client(REMOTE_ADDR=next(_ips)).post(
        "/webchat/abc%00def/upload/", {"client_id": "img-1"}, headers={"X-Visitor-Token": token, "Origin": ORIGIN}
    )
    assert response.status_code == 404
    assert Message.objects.count() == 0


# --- offline ---------------------------------------------------------------------------------------------


async def test_no_agent_online_means_offline_and_messages_are_still_taken(chat: Chat, open_widget: Opener) -> None:
    await db(lambda: AgentProfile.objects.update(availability=Availability.OFFLINE))
    widget = await open_widget()
    assert widget.welcome["staffed"] is False
    ready = await start(widget)
    assert ready["staffed"] is False
    await say(widget, "Are you there?", "c1")


async def test_outside_business_hours_means_offline(chat: Chat, open_widget: Opener) -> None:
    await db(
        lambda: Inbox.objects.filter(pk=chat.inbox.pk).update(
            config={**chat.inbox.config, "business_hours": {"days": [], "open": "08:00", "close": "17:30"}}
        )
    )
    widget = await open_widget()
    assert widget.welcome["staffed"] is False


def offline_copy_of(reply: Message) -> Message:
    """The SMS or email a chat reply went on as: its provider id names the copy (actions.offline_link)."""
    assert reply.provider_message_id is not None and reply.provider_message_id.startswith("wc-via-")
    return Message.objects.select_related("conversation").get(pk=int(reply.provider_message_id.rsplit("-", 1)[1]))


async def test_reply_goes_by_sms_when_the_widget_is_closed(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Please call me back", "c1")
    await widget.disconnect()
    visitor = await db(lambda: WebVisitor.objects.get())
    assert not limits.widget_open(visitor.visitor_id)
    reply = await agent_replies(chat, "We will call you at 3 pm.")
    delivery = await db(lambda: SimulatedDelivery.objects.get())
    assert delivery.to == "+8613800138001" and delivery.body == "We will call you at 3 pm."
    assert delivery.inbox_id == chat.sms_inbox.pk
    # The copy is an ordinary SMS on the patient's conversation in the SMS inbox, sent through the outbound
    # path by the agent who wrote the reply; the simulator reported it delivered, and the reply followed.
    copy = await db(lambda: offline_copy_of(reply))
    assert (copy.inbox_id, copy.conversation.patient_id) == (chat.sms_inbox.pk, visitor.patient_id)
    assert (copy.direction, copy.sender_kind, copy.author_id) == ("out", SenderKind.SYSTEM, chat.agent.pk)
    assert copy.flags == [actions.WEBCHAT_REPLY_FLAG]
    assert copy.provider_message_id == delivery.provider_message_id
    assert copy.status == MessageStatus.DELIVERED
    assert reply.flags == ["sent_by_sms"]
    assert reply.status == MessageStatus.DELIVERED


@dataclass
class TwilioChat:
    chat: Chat
    sms_inbox: Inbox
    twilio_api: RecordingTwilioHttpClient


@pytest.fixture
def twilio_chat(chat: Chat, monkeypatch: pytest.MonkeyPatch, settings: Any) -> TwilioChat:
    """The web chat inbox sending its offline replies through a Twilio SMS inbox: the real twilio SDK, its
    HTTP client the recording fake, and Twilio's status callbacks signed with the inbox's token."""
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TWILIO_TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    sms_inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Hospital SMS",
            team=chat.team,
            account_sid=TWILIO_ACCOUNT,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[HOSPITAL_NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    chat.inbox.config = {
        **chat.inbox.config,
        "offline_sms_inbox_id": sms_inbox.pk,
        "offline_sms_prefix": "【康华医院】",
    }
    chat.inbox.save(update_fields=["config"])
    return TwilioChat(chat=chat, sms_inbox=sms_inbox, twilio_api=fake)


def twilio_reports(message: Message, fixture_name: str) -> int:
    """Twilio's signed status callback for `message`, as it posts it to the URL the send gave it."""
    params = {
        **fixture(fixture_name),
        "MessageSid": message.provider_message_id,
        "SmsSid": message.provider_message_id,
    }
    path = f"/webhooks/twilio/sms/status/?message={message.pk}"
    signature = RequestValidator(TWILIO_TOKEN).compute_signature(f"http://testserver{path}", params)
    response = Client().post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature
    )
    return int(response.status_code)


def reply_events(reply: Message) -> list[tuple[str, str, Any]]:
    """What the agents' sockets were told about the reply, in order: (type.op, status, flags)."""
    found = []
    for event in Event.objects.filter(conversation_id=reply.conversation_id).order_by("id"):
        payload = event.payload
        if event.op == "update_status" and payload["message_id"] == reply.pk:
            found.append(("message.update_status", payload["status"], None))
        elif event.op == "add" and event.type == "message" and payload["message"]["id"] == reply.pk:
            found.append(("message.add", payload["message"]["status"], payload["message"]["flags"]))
    return found


async def reply_with_widget_closed(twilio_chat: TwilioChat, open_widget: Opener, body: str) -> Message:
    widget = await open_widget()
    await start(widget)
    await say(widget, "Can I come on Friday instead?", "c1")
    await widget.disconnect()
    return await agent_replies(twilio_chat.chat, body)


async def test_offline_sms_statuses_from_twilios_signed_callbacks_reach_the_chat_reply_live(
    twilio_chat: TwilioChat, open_widget: Opener
) -> None:
    reply = await reply_with_widget_closed(twilio_chat, open_widget, "Yes, Friday 10:00 is booked.")

    [request] = twilio_chat.twilio_api.requests
    assert (request.data["To"], request.data["From"]) == ("+8613800138001", HOSPITAL_NUMBER)
    # The inbox's prefix and the agent's words: nothing else, nothing clinical, is added.
    assert request.data["Body"] == "【康华医院】Yes, Friday 10:00 is booked."
    copy = await db(lambda: offline_copy_of(reply))
    assert copy.inbox_id == twilio_chat.sms_inbox.pk
    assert request.data["StatusCallback"].endswith(f"/webhooks/twilio/sms/status/?message={copy.pk}")
    # Twilio took it ("queued"): both are sending until Twilio says more.
    assert (copy.status, reply.status) == (MessageStatus.SENDING, MessageStatus.SENDING)
    assert reply.flags == ["sent_by_sms"]

    assert await db(lambda: twilio_reports(copy, "status_sent.json")) == 204
    assert await db(lambda: twilio_reports(copy, "status_delivered.json")) == 204

    copy = await db(lambda: Message.objects.get(pk=copy.pk))
    reply = await db(lambda: Message.objects.get(pk=reply.pk))
    assert (copy.status, reply.status) == (MessageStatus.DELIVERED, MessageStatus.DELIVERED)
    assert reply.sent_at is not None and reply.delivered_at is not None
    # Every step of the reply was an event, so an open inbox showed it as it happened.
    assert await db(lambda: reply_events(reply)) == [
        ("message.add", MessageStatus.QUEUED, []),
        ("message.update_status", MessageStatus.SENDING, None),
        ("message.add", MessageStatus.SENDING, ["sent_by_sms"]),
        ("message.update_status", MessageStatus.SENT, None),
        ("message.update_status", MessageStatus.DELIVERED, None),
    ]
    # A late or repeated callback changes nothing.
    assert await db(lambda: twilio_reports(copy, "status_sent.json")) == 204
    assert (await db(lambda: Message.objects.get(pk=reply.pk))).status == MessageStatus.DELIVERED


async def test_an_undelivered_offline_sms_marks_the_chat_reply_undelivered_with_twilios_reason(
    twilio_chat: TwilioChat, open_widget: Opener
) -> None:
    reply = await reply_with_widget_closed(twilio_chat, open_widget, "Yes, Friday 10:00 is booked.")
    copy = await db(lambda: offline_copy_of(reply))

    assert await db(lambda: twilio_reports(copy, "status_undelivered_30003.json")) == 204

    reply = await db(lambda: Message.objects.get(pk=reply.pk))
    copy = await db(lambda: Message.objects.get(pk=copy.pk))
    assert copy.status == reply.status == MessageStatus.UNDELIVERED
    assert copy.error_code == reply.error_code == "30003"
    assert reply.error_message == copy.error_message != ""


async def test_a_typed_phone_of_another_patient_gets_no_sms_of_this_chat(
    twilio_chat: TwilioChat, open_widget: Opener
) -> None:
    owner = await db(
        lambda: create_patient(fields={"name": "Zhao Min"}, identities=[(IdentityKind.PHONE, "+8613800138001")])
    )
    reply = await reply_with_widget_closed(twilio_chat, open_widget, "Answer")

    # The phone was never attached to the visitor's record, so the answer is not texted to it, nor put in
    # the SMS thread of the patient who owns the number: it waits in the chat.
    assert twilio_chat.twilio_api.requests == []
    assert await db(lambda: Message.objects.filter(conversation__patient=owner).count()) == 0
    assert reply.status == MessageStatus.SENT and reply.flags == []


async def test_reply_without_phone_waits_for_the_next_visit(chat: Chat, open_widget: Opener) -> None:
    widget = await open_widget()
    await start(widget, phone="", email="fang@example.com")
    await say(widget, "Hello", "c1")
    await widget.disconnect()
    reply = await agent_replies(chat, "Answer")
    assert reply.status == MessageStatus.SENT
    assert await db(lambda: SimulatedDelivery.objects.count()) == 0
    assert await db(lambda: Patient.objects.count()) == 1


# --- images ------------------------------------------------------------------------------------------------


def image_bytes(fmt: str, size: tuple[int, int] = (40, 30), noise: bool = False) -> bytes:
    from PIL import Image

    image = Image.frombytes("RGB", size, os.urandom(size[0] * size[1] * 3)) if noise else Image.new("RGB", size)
    if not noise:
        image.paste((200, 30, 30), (0, 0, size[0] // 2, size[1]))
    out = io.BytesIO()
    image.save(out, fmt)
    return out.getvalue()


@pytest.fixture
def media(settings: Any, tmp_path: Path) -> Path:
    settings.MEDIA_ROOT = tmp_path
    return tmp_path


def stored_files(media: Path) -> list[Path]:
    return sorted((media / "webchat").glob("*")) if (media / "webchat").exists() else []


def new_visitor(chat: Chat, name: str = "Wang Fang") -> str:
    """A started visit, as the socket's start op makes it; returns the widget's signed token."""
    visitor = actions.start_visit(inbox=chat.inbox, form=actions.check_pre_chat({**FORM, "name": name}), portal=None)
    return sign_visitor(inbox=chat.inbox, visitor_id=visitor.visitor_id)


def upload(
    token: str | None,
    data: bytes,
    *,
    inbox: Inbox,
    filename: str = "photo.png",
    content_type: str = "image/png",
    client_id: str = "img-1",
    origin: str | None = ORIGIN,
) -> Any:
    headers = {"X-Visitor-Token": token} if token is not None else {}
    if origin is not None:
        headers["Origin"] = origin
    client = Client(REMOTE_ADDR=next(_ips))
    image = SimpleUploadedFile(filename, data, content_type=content_type)
    return client.post(
        reverse("webchat-upload", args=[inbox.public_token]),
        {"image": image, "client_id": client_id},
        headers=headers,
    )


def visitor_fetch(token: str, inbox: Inbox, name: str, origin: str | None = ORIGIN) -> Any:
    headers = {"X-Visitor-Token": token}
    if origin is not None:
        headers["Origin"] = origin
    return Client().get(reverse("webchat-visitor-file", args=[inbox.public_token, name]), headers=headers)


@pytest.mark.parametrize(("fmt", "content_type"), [("PNG", "image/png"), ("JPEG", "image/jpeg")])
def test_image_upload_creates_one_inbound_message_with_attachment(
    chat: Chat, media: Path, fmt: str, content_type: str
) -> None:
    token = new_visitor(chat)
    response = upload(token, image_bytes(fmt), inbox=chat.inbox, filename="x.bin", content_type="text/plain")
    assert response.status_code == 201, response.content
    assert response["Access-Control-Allow-Origin"] == ORIGIN
    message = Message.objects.select_related("conversation").get()
    assert response.json()["message_id"] == message.pk
    assert message.conversation.inbox_id == chat.inbox.pk and message.status == MessageStatus.RECEIVED
    assert message.body == ""
    (attachment,) = message.attachments
    assert attachment["kind"] == "image" and attachment["content_type"] == content_type
    assert (attachment["width"], attachment["height"]) == (40, 30)
    (path,) = stored_files(media)
    assert attachment["file"] == path.name and attachment["size"] == path.stat().st_size
    assert attachment["url"] == reverse("webchat-staff-file", args=[path.name])
    assert path.suffix == {"PNG": ".png", "JPEG": ".jpg"}[fmt]
    upload_row = WebUpload.objects.get()
    assert upload_row.message_id == message.pk and upload_row.name == path.name

    # Retrying the same client id stores neither a second message nor a second file.
    again = upload(token, image_bytes(fmt), inbox=chat.inbox)
    assert again.status_code == 201 and again.json()["message_id"] == message.pk
    assert Message.objects.count() == 1 and len(stored_files(media)) == 1


def test_an_image_is_re_encoded_so_trailing_content_is_dropped(chat: Chat, media: Path) -> None:
    token = new_visitor(chat)
    polyglot = image_bytes("PNG") + b"<html><script>alert(1)</script></html>"
    assert upload(token, polyglot, inbox=chat.inbox).status_code == 201
    (path,) = stored_files(media)
    assert b"<script" not in path.read_bytes()


async def test_the_widget_sees_its_image_message_after_sync(chat: Chat, open_widget: Opener, media: Path) -> None:
    widget = await open_widget()
    ready = await start(widget)
    response = await db(lambda: upload(ready["visitor_token"], image_bytes("PNG"), inbox=chat.inbox))
    assert response.status_code == 201
    await widget.send_json_to({"op": "sync"})
    (received,) = await widget_messages(widget, 1)
    name = (await db(lambda: WebUpload.objects.get())).name
    assert received["client_id"] == "img-1" and received["from"] == "patient"
    assert received["images"] == [{"file": name, "width": 40, "height": 30}]


@pytest.mark.parametrize(
    ("data", "filename", "content_type"),
    [
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.svg", "image/svg+xml"),
        (b'<svg xmlns="http://www.w3.org/2000/svg"><script>alert(1)</script></svg>', "x.png", "image/png"),
        (b"<!doctype html><html><script>alert(1)</script></html>", "photo.png", "image/png"),
        (b"GIF89a<script>alert(1)</script>", "photo.gif", "image/gif"),
        ("truncated", "photo.png", "image/png"),
        (b"", "empty.png", "image/png"),
    ],
)
def test_anything_but_a_whole_image_is_refused(
    chat: Chat, media: Path, data: bytes | str, filename: str, content_type: str
) -> None:
    token = new_visitor(chat)
    if data == "truncated":
        whole = image_bytes("PNG", (200, 200), noise=True)
        data = whole[: len(whole) // 2]
    assert isinstance(data, bytes)
    response = upload(token, data, inbox=chat.inbox, filename=filename, content_type=content_type)
    assert response.status_code == 400, response.content
    assert response.json()["code"] in {"not_an_image", "bad_upload"}
    assert response.json()["message"]
    assert Message.objects.count() == 0 and WebUpload.objects.count() == 0 and stored_files(media) == []


def test_oversized_image_is_refused_with_413(chat: Chat, media: Path, settings: Any) -> None:
    settings.WEBCHAT_MAX_IMAGE_BYTES = 2000
    token = new_visitor(chat)
    small_body = upload(token, image_bytes("PNG", (60, 60), noise=True), inbox=chat.inbox)
    assert small_body.status_code == 413 and small_body.json()["code"] == "image_too_large"
    big_body = upload(token, image_bytes("PNG", (200, 200), noise=True), inbox=chat.inbox)
    assert big_body.status_code == 413
    assert Message.objects.count() == 0 and stored_files(media) == []


def test_upload_with_a_bad_or_forged_token_is_refused(chat: Chat, media: Path) -> None:
    token = new_visitor(chat)
    other = Inbox.objects.create(name="Other", channel_type=ChannelType.WEBCHAT, team=chat.team)
    visitor_id = WebVisitor.objects.get().visitor_id
    for bad in (None, "", token + "x", sign_visitor(inbox=other, visitor_id=visitor_id)):
        response = upload(bad, image_bytes("PNG"), inbox=chat.inbox)
        assert response.status_code == 403 and response.json()["code"] == "unknown_visitor"
    assert Message.objects.count() == 0 and stored_files(media) == []


def test_upload_from_a_foreign_origin_is_refused(chat: Chat, media: Path) -> None:
    token = new_visitor(chat)
    for origin in ("https://evil.example", None):
        response = upload(token, image_bytes("PNG"), inbox=chat.inbox, origin=origin)
        assert response.status_code == 403 and response.json()["code"] == "origin_refused"
        assert "Access-Control-Allow-Origin" not in response
    assert Message.objects.count() == 0 and stored_files(media) == []


def test_preflight_answers_only_allowed_origins(chat: Chat) -> None:
    url = reverse("webchat-upload", args=[chat.inbox.public_token])
    ok = Client().options(url, headers={"Origin": ORIGIN, "Access-Control-Request-Method": "POST"})
    assert ok.status_code == 204 and ok["Access-Control-Allow-Origin"] == ORIGIN
    assert "X-Visitor-Token" in ok["Access-Control-Allow-Headers"]
    refused = Client().options(url, headers={"Origin": "https://evil.example"})
    assert refused.status_code == 403 and "Access-Control-Allow-Origin" not in refused


def test_uploads_are_rate_limited_per_visitor(chat: Chat, media: Path, settings: Any) -> None:
    settings.WEBCHAT_UPLOADS_PER_MINUTE_PER_VISITOR = 2
    token = new_visitor(chat)
    for n in range(2):
        assert upload(token, image_bytes("PNG"), inbox=chat.inbox, client_id=f"i{n}").status_code == 201
    refused = upload(token, image_bytes("PNG"), inbox=chat.inbox, client_id="i2")
    assert refused.status_code == 429 and refused.json()["code"] == "rate_limited"
    assert Message.objects.count() == 2 and len(stored_files(media)) == 2


def test_only_the_owning_visitor_and_the_team_may_fetch_an_image(chat: Chat, media: Path) -> None:
    owner = new_visitor(chat)
    assert upload(owner, image_bytes("PNG"), inbox=chat.inbox).status_code == 201
    (path,) = stored_files(media)
    name = path.name

    mine = visitor_fetch(owner, chat.inbox, name)
    assert mine.status_code == 200 and mine["Content-Type"] == "image/png"
    assert mine.getvalue() == path.read_bytes()
    assert mine["X-Content-Type-Options"] == "nosniff" and "no-store" in mine["Cache-Control"]
    assert mine["Access-Control-Allow-Origin"] == ORIGIN

    stranger = new_visitor(chat, name="Li Lei")
    assert visitor_fetch(stranger, chat.inbox, name).status_code == 404
    assert visitor_fetch(owner + "x", chat.inbox, name).status_code == 403
    assert visitor_fetch(owner, chat.inbox, name, origin="https://evil.example").status_code == 403

    staff_url = reverse("webchat-staff-file", args=[name])
    assert Client().get(staff_url).status_code == 302  # to the login page

    other_team = Team.objects.create(code="ortho", name="Orthopedics", name_zh="骨科")
    outsider = Client()
    make_staff("charlie", Role.AGENT, [other_team])
    outsider.force_login(User.objects.get(username="charlie"))
    assert outsider.get(staff_url).status_code == 404

    teammate = Client()
    teammate.force_login(chat.agent)
    seen = teammate.get(staff_url)
    assert seen.status_code == 200 and seen["Content-Type"] == "image/png"
    assert seen.getvalue() == path.read_bytes()

"""The agents' websocket end to end: config.asgi.application over the real Redis channel layer and PostgreSQL.

Sockets authenticate the way a browser does, with the session cookie of a real login and an allowed Origin.
The one deliberate interference is `hints_dropped`, which swallows the channel-layer hints of one action to
simulate a lost frame; everything else (events, hints, groups, catch-up) is the product's own code path.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from typing import Any

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.db import transaction
from django.test import Client

from config.asgi import application
from contactcenter import events
from contactcenter.actions.presence import set_availability
from contactcenter.models import AgentProfile, AuditAction, AuditLogEntry, Availability, Event
from tests.conftest import PASSWORD

pytestmark = pytest.mark.django_db(transaction=True)

WS_PATH = "/ws/agent/"
ORIGIN = b"http://127.0.0.1:8000"
# Upper bound for a frame that must arrive; only waited out when the test is failing anyway.
FRAME_TIMEOUT = 5
# How long a socket must stay silent to count as "received nothing".
QUIET = 0.5
# A clean disconnect takes milliseconds. Bounded because redis-py 8 with its default 5 s socket_timeout can
# swallow the cancellation of the consumer's blocking BZPOPMIN (see test_an_idle_socket_...); the communicator
# then cancels the application a second time, which is honoured.
DISCONNECT_TIMEOUT = 0.5

_phones = (f"+86138{n:08d}" for n in itertools.count(10_000_001))


def next_phone() -> str:
    return next(_phones)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    """The personas are created and log in with real passwords; a cheap hasher keeps that from dominating."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture(autouse=True)
async def fresh_channel_layer() -> AsyncIterator[None]:
    """One channel layer per test, built on the test's event loop as the server builds one on its loop.

    The layer object is process-wide and caches per-loop state; each test runs on a new loop. Flushing at the
    end also empties the Redis groups, so no test sees another's hints.
    """
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if layer is not None:
        await layer.flush()
        await layer.close_pools()


# --- connecting -------------------------------------------------------------------------------------------


def _login_cookie(username: str) -> str:
    client = Client()
    assert client.login(username=username, password=PASSWORD), f"{username} could not log in"
    return client.cookies[settings.SESSION_COOKIE_NAME].value


Opener = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
async def open_socket() -> AsyncIterator[Opener]:
    """Open a websocket to the real ASGI application; every socket is closed at teardown."""
    opened: list[WebsocketCommunicator] = []

    async def open_(
        username: str | None, *, origin: bytes | None = ORIGIN, expect_connected: bool | None = True
    ) -> WebsocketCommunicator:
        headers: list[tuple[bytes, bytes]] = []
        if origin is not None:
            headers.append((b"origin", origin))
        if username is not None:
            cookie = await database_sync_to_async(_login_cookie)(username)
            headers.append((b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode()))
        communicator = WebsocketCommunicator(application, WS_PATH, headers=headers)
        opened.append(communicator)
        connected, detail = await communicator.connect(timeout=FRAME_TIMEOUT)
        communicator.connect_result = (connected, detail)  # type: ignore[attr-defined]
        if expect_connected is not None:
            assert connected is expect_connected, f"{username}: connect returned {(connected, detail)}"
        return communicator

    yield open_
    crashed: list[BaseException] = []
    for communicator in opened:
        future = communicator.future
        if not future.done():
            await communicator.disconnect(timeout=DISCONNECT_TIMEOUT)
        elif not future.cancelled() and future.exception() is not None:
            crashed.append(future.exception())  # type: ignore[arg-type]
    if crashed:
        raise AssertionError(f"{len(crashed)} consumer(s) crashed during the test") from crashed[0]


async def resync(communicator: WebsocketCommunicator, last_event_id: int | None) -> int:
    """Send resync and check the ready frame; returns the cursor the server starts from."""
    await communicator.send_json_to({"op": "resync", "last_event_id": last_event_id})
    ready = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
    assert ready["type"] == "ready", ready
    if last_event_id is not None:
        assert ready["last_event_id"] == last_event_id
    return int(ready["last_event_id"])


async def streaming(open_socket: Opener, username: str) -> WebsocketCommunicator:
    """A connected socket that has resynced from the current end, as a freshly loaded page does."""
    communicator = await open_socket(username)
    await resync(communicator, None)
    return communicator


async def receive_events(communicator: WebsocketCommunicator, count: int) -> list[dict[str, Any]]:
    """Read `events` frames until exactly `count` events came; any other frame or a timeout fails."""
    received: list[dict[str, Any]] = []
    while len(received) < count:
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events", frame
        assert frame["events"], "an events frame must not be empty"
        assert frame["last_event_id"] == frame["events"][-1]["id"]
        received.extend(frame["events"])
    assert len(received) == count, [e["id"] for e in received]
    return received


async def assert_silent(communicator: WebsocketCommunicator) -> None:
    if not await communicator.receive_nothing(timeout=QUIET):
        unexpected = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        pytest.fail(f"expected nothing, got {unexpected}")


async def assert_usable(communicator: WebsocketCommunicator) -> None:
    await communicator.send_json_to({"op": "ping"})
    assert await communicator.receive_json_from(timeout=FRAME_TIMEOUT) == {"type": "pong"}


async def expect_error(communicator: WebsocketCommunicator, code: str) -> dict[str, Any]:
    frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
    assert frame["type"] == "error", frame
    assert frame["code"] == code, frame
    assert isinstance(frame["message"], str) and frame["message"]
    return frame


def kinds(batch: list[dict[str, Any]]) -> list[str]:
    return [f"{e['type']}.{e['op']}" for e in batch]


def ids(batch: list[dict[str, Any]]) -> list[int]:
    return [e["id"] for e in batch]


# --- database helpers (sync, called through database_sync_to_async) -----------------------------------------


def _last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _event_ids_after(after: int, **filters: Any) -> list[int]:
    return list(Event.objects.filter(id__gt=after, **filters).order_by("id").values_list("id", flat=True))


last_event_id = database_sync_to_async(_last_event_id)
event_ids_after = database_sync_to_async(_event_ids_after)


@pytest.fixture
def deliver(inbound: Callable[..., Any]) -> Callable[..., Awaitable[tuple[Any, list[int]]]]:
    """Deliver an inbound message from a worker thread; returns the result and the ids of the events it wrote."""

    def run(inbox: Any, phone: str, body: str) -> tuple[Any, list[int]]:
        before = _last_event_id()
        result = inbound(inbox, phone, body)
        return result, _event_ids_after(before, conversation_id=result.conversation.pk)

    async def deliver_(inbox: Any, phone: str, body: str = "Hello") -> tuple[Any, list[int]]:
        return await database_sync_to_async(run)(inbox, phone, body)

    return deliver_


@contextlib.contextmanager
def hints_dropped(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[int]]:
    """The channel layer loses every hint published inside the block (the events themselves are committed)."""
    dropped: list[int] = []
    with monkeypatch.context() as patch:
        patch.setattr(events, "publish_hint", lambda event_id, groups: dropped.append(event_id))
        yield dropped


# --- who may connect ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("username", [None, "mark"], ids=["anonymous", "marketer"])
async def test_anonymous_and_marketer_are_refused(world, open_socket, username) -> None:
    communicator = await open_socket(username, expect_connected=False)
    assert communicator.connect_result == (False, 4403)


@pytest.mark.parametrize("origin", [b"http://evil.example", None], ids=["foreign-origin", "no-origin"])
async def test_a_valid_session_from_a_foreign_origin_is_refused(world, open_socket, origin) -> None:
    communicator = await open_socket("alice", origin=origin, expect_connected=False)
    assert communicator.connect_result[0] is False


@pytest.mark.parametrize("username", ["alice", "nina", "sam", "ada"], ids=["agent", "nurse", "supervisor", "admin"])
async def test_inbox_roles_connect_and_get_pong(world, open_socket, username) -> None:
    communicator = await open_socket(username)
    await assert_usable(communicator)


# --- resync -------------------------------------------------------------------------------------------------


async def test_resync_sends_every_visible_event_after_the_cursor_in_id_order(world, open_socket, deliver) -> None:
    _, a1 = await deliver(world.inbox_a, next_phone(), "a1")
    _, b1 = await deliver(world.inbox_b, next_phone(), "b1")
    phone_a2 = next_phone()
    _, a2 = await deliver(world.inbox_a, phone_a2, "a2")
    _, b2 = await deliver(world.inbox_b, next_phone(), "b2")
    _, a3 = await deliver(world.inbox_a, phone_a2, "a3")
    before_presence = await last_event_id()
    await database_sync_to_async(set_availability)(user=world.bob, availability=Availability.ONLINE)
    bob_team_event = await event_ids_after(before_presence, team=world.team_a)
    bob_own_event = await event_ids_after(before_presence, user=world.bob)
    assert len(bob_team_event) == len(bob_own_event) == 1

    cursor = a1[-1]  # alice already has the first delivery
    visible_to_team_a = sorted([*a2, *a3, *bob_team_event])
    everything_after = await event_ids_after(cursor)
    assert set(everything_after) == {*b1, *a2, *b2, *a3, *bob_team_event, *bob_own_event}

    for username, expected in [("alice", visible_to_team_a), ("nina", visible_to_team_a), ("sam", everything_after)]:
        communicator = await open_socket(username)
        await resync(communicator, cursor)
        batch = await receive_events(communicator, len(expected))
        assert ids(batch) == expected, username
        await assert_silent(communicator)

    # Charlie (team B) sees only his team's deliveries, never team A's nor bob's presence.
    charlie = await open_socket("charlie")
    await resync(charlie, 0)
    batch = await receive_events(charlie, len(b1) + len(b2))
    assert ids(batch) == [*b1, *b2]
    assert [e["message"]["body"] for e in batch if e["type"] == "message"] == ["b1", "b2"]
    await assert_silent(charlie)


async def test_resynced_events_carry_their_payload(world, open_socket, deliver) -> None:
    result, written = await deliver(world.inbox_a, next_phone(), "Chest pain since morning")
    alice = await open_socket("alice")
    await resync(alice, written[0] - 1)
    conversation_added, message_added = await receive_events(alice, 2)
    assert conversation_added["id"] == written[0]
    assert kinds([conversation_added, message_added]) == ["conversation.add", "message.add"]
    assert conversation_added["conversation"]["id"] == result.conversation.pk
    assert message_added["message"]["id"] == result.message.pk
    assert message_added["message"]["body"] == "Chest pain since morning"


async def test_resync_with_null_starts_at_the_current_end(world, open_socket, deliver) -> None:
    await deliver(world.inbox_a, next_phone(), "old news")
    end = await last_event_id()
    alice = await open_socket("alice")
    assert await resync(alice, None) == end
    await assert_silent(alice)

    _, fresh = await deliver(world.inbox_a, next_phone(), "fresh")
    batch = await receive_events(alice, len(fresh))
    assert ids(batch) == fresh
    assert batch[0]["id"] > end


def _bulk_events(world: Any, count: int) -> tuple[list[int], list[int]]:
    """Stored rows only (no hints): enough to make a resync span several batches."""
    with transaction.atomic():
        rows = Event.objects.bulk_create(
            Event(
                type="note",
                op="add",
                payload={"n": n},
                inbox=world.inbox_b if n % 400 == 7 else world.inbox_a,
                team=world.team_b if n % 400 == 7 else world.team_a,
            )
            for n in range(count)
        )
    visible = [r.id for r in rows if r.inbox_id == world.inbox_a.pk]
    hidden = [r.id for r in rows if r.inbox_id != world.inbox_a.pk]
    return visible, hidden


async def test_resync_beyond_one_batch_arrives_complete_in_ordered_batches(world, open_socket) -> None:
    start = await last_event_id()
    visible, hidden = await database_sync_to_async(_bulk_events)(world, 1203)
    assert len(hidden) == 3 and len(visible) == 1200
    alice = await open_socket("alice")
    await resync(alice, start)
    sizes = []
    received: list[dict[str, Any]] = []
    while len(received) < len(visible):
        frame = await alice.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events"
        assert frame["last_event_id"] == frame["events"][-1]["id"]
        sizes.append(len(frame["events"]))
        received.extend(frame["events"])
    assert sizes == [500, 500, 200]
    assert ids(received) == visible
    await assert_silent(alice)


# --- resyncs are audited --------------------------------------------------------------------------------------


def _replay_entries() -> list[Any]:
    return list(AuditLogEntry.objects.filter(action=AuditAction.REPLAY_EVENTS).order_by("id"))


replay_entries = database_sync_to_async(_replay_entries)


def _conversation_events(conversation: Any, count: int) -> list[int]:
    """Stored rows only (no hints) about one conversation: enough to make a resync span several batches."""
    with transaction.atomic():
        rows = Event.objects.bulk_create(
            Event(
                type="note",
                op="add",
                payload={"n": n},
                inbox_id=conversation.inbox_id,
                team_id=conversation.team_id,
                conversation_id=conversation.pk,
            )
            for n in range(count)
        )
    return [r.id for r in rows]


async def test_a_resync_writes_one_audit_entry_per_batch_of_conversation_events(world, open_socket, deliver) -> None:
    start = await last_event_id()
    result, written = await deliver(world.inbox_a, next_phone(), "history")
    bulk = await database_sync_to_async(_conversation_events)(result.conversation, 700)
    alice = await open_socket("alice")
    await resync(alice, start)
    replayed = await receive_events(alice, len(written) + len(bulk))
    await assert_silent(alice)

    batches = await replay_entries()
    assert [e.detail["events"] for e in batches] == [500, len(replayed) - 500]
    for entry in batches:
        assert (entry.actor_id, entry.via, entry.object_type, entry.object_id) == (
            world.alice.pk,
            "socket",
            "conversation",
            "*",
        )
        assert entry.detail["ids"] == [result.conversation.pk]
        assert entry.detail["patient_ids"] == [result.patient.pk]
    assert [(e.detail["first_event_id"], e.detail["last_event_id"]) for e in batches] == [
        (replayed[0]["id"], replayed[499]["id"]),
        (replayed[500]["id"], replayed[-1]["id"]),
    ]


async def test_live_events_and_resyncs_with_nothing_about_conversations_are_not_audited(
    world, open_socket, deliver
) -> None:
    start = await last_event_id()
    await database_sync_to_async(set_availability)(user=world.bob, availability=Availability.ONLINE)
    alice = await open_socket("alice")
    await resync(alice, start)
    [presence] = await receive_events(alice, 1)
    assert kinds([presence]) == ["presence.update"]
    _, live = await deliver(world.inbox_a, next_phone(), "live, while she watches")
    assert ids(await receive_events(alice, len(live))) == live
    assert await replay_entries() == []

    # A resync from the current end replays nothing, so reads nothing.
    sam = await open_socket("sam")
    await resync(sam, None)
    await assert_silent(sam)
    assert await replay_entries() == []


# --- live delivery --------------------------------------------------------------------------------------------


async def test_an_inbound_message_reaches_its_team_and_supervisors_only(world, open_socket, deliver) -> None:
    alice = await streaming(open_socket, "alice")
    bob = await streaming(open_socket, "bob")
    nina = await streaming(open_socket, "nina")
    sam = await streaming(open_socket, "sam")
    charlie = await streaming(open_socket, "charlie")

    result, written = await deliver(world.inbox_a, next_phone(), "I need my results")
    assert len(written) == 2
    for communicator in (alice, bob, nina, sam):
        batch = await receive_events(communicator, 2)
        assert ids(batch) == written
        assert kinds(batch) == ["conversation.add", "message.add"]
        assert batch[1]["message"]["body"] == "I need my results"
        assert batch[0]["conversation"]["id"] == result.conversation.pk
    await assert_silent(charlie)

    # And the other way round: team B's patient reaches charlie and sam, not team A.
    _, written_b = await deliver(world.inbox_b, next_phone(), "knee")
    assert ids(await receive_events(charlie, 2)) == written_b
    assert ids(await receive_events(sam, 2)) == written_b
    for communicator in (alice, bob, nina):
        await assert_silent(communicator)


async def test_concurrent_deliveries_reach_the_socket_once_each_in_id_order(world, open_socket, inbound) -> None:
    alice = await streaming(open_socket, "alice")
    start = await last_event_id()

    def run(inbox: Any, phone: str) -> None:
        inbound(inbox, phone, "at once")

    deliveries = [
        database_sync_to_async(run, thread_sensitive=False)(world.inbox_a if n % 2 else world.inbox_b, next_phone())
        for n in range(10)
    ]
    await asyncio.gather(*deliveries)
    expected = await event_ids_after(start, inbox=world.inbox_a)
    assert len(expected) == 10
    batch = await receive_events(alice, len(expected))
    assert ids(batch) == expected
    await assert_silent(alice)


# --- lost hints and reconnects --------------------------------------------------------------------------------


async def test_a_dropped_hint_is_recovered_by_the_next_one(world, open_socket, deliver, monkeypatch) -> None:
    alice = await streaming(open_socket, "alice")
    phone = next_phone()
    with hints_dropped(monkeypatch) as dropped:
        _, first = await deliver(world.inbox_a, phone, "first")
    assert dropped == [max(first)]  # the transaction's one hint (its newest event) was lost...
    await assert_silent(alice)  # ...so nothing could have told the socket

    _, second = await deliver(world.inbox_a, phone, "second")
    batch = await receive_events(alice, len(first) + len(second))
    assert ids(batch) == [*first, *second]
    assert kinds(batch) == ["conversation.add", "message.add", "conversation.update", "message.add"]
    assert [e["message"]["body"] for e in batch if e["type"] == "message"] == ["first", "second"]
    await assert_silent(alice)


async def test_a_dropped_hint_for_another_team_does_not_leak_on_recovery(
    world, open_socket, deliver, monkeypatch
) -> None:
    charlie = await streaming(open_socket, "charlie")
    with hints_dropped(monkeypatch):
        _, team_b_missed = await deliver(world.inbox_b, next_phone(), "lost hint")
    # Every hint wakes the process's hub, which reads everything after its cursor: team A's hint recovers what
    # team B's lost one announced, and charlie gets team B's events and nothing of team A's.
    await deliver(world.inbox_a, next_phone(), "team A only")
    assert ids(await receive_events(charlie, len(team_b_missed))) == team_b_missed
    await assert_silent(charlie)
    _, team_b_next = await deliver(world.inbox_b, next_phone(), "next")
    assert ids(await receive_events(charlie, len(team_b_next))) == team_b_next
    await assert_silent(charlie)


async def test_reconnect_with_the_last_seen_id_gets_exactly_the_missed_events(world, open_socket, deliver) -> None:
    alice = await streaming(open_socket, "alice")
    phone = next_phone()
    _, seen = await deliver(world.inbox_a, phone, "before")
    first = await receive_events(alice, len(seen))
    assert ids(first) == seen
    last_seen = first[-1]["id"]
    await alice.disconnect(timeout=DISCONNECT_TIMEOUT)

    _, missed_1 = await deliver(world.inbox_a, phone, "while away 1")
    _, not_mine = await deliver(world.inbox_b, next_phone(), "team B")
    _, missed_2 = await deliver(world.inbox_a, next_phone(), "while away 2")

    alice = await open_socket("alice")
    await resync(alice, last_seen)
    batch = await receive_events(alice, len(missed_1) + len(missed_2))
    assert ids(batch) == [*missed_1, *missed_2]
    assert not set(ids(batch)) & (set(seen) | set(not_mine))
    await assert_silent(alice)

    _, live = await deliver(world.inbox_a, phone, "back online")
    assert ids(await receive_events(alice, len(live))) == live
    await assert_silent(alice)


async def test_an_idle_socket_outlives_the_channel_layers_blocking_receive(world, open_socket, deliver) -> None:
    """channels_redis waits for hints in BZPOPMIN rounds of brpop_timeout seconds; a quiet agent keeps the socket.

    With redis-py >= 8 (socket_timeout now defaults to 5 s, equal to brpop_timeout) the blocking read times
    out client-side, the receive raises redis TimeoutError and the consumer dies (django/channels_redis#422).
    """
    alice = await streaming(open_socket, "alice")
    idle = get_channel_layer().brpop_timeout + 1.5
    assert await alice.receive_nothing(timeout=idle)
    await assert_usable(alice)
    _, written = await deliver(world.inbox_a, next_phone(), "after a quiet spell")
    assert ids(await receive_events(alice, len(written))) == written


# --- typing ---------------------------------------------------------------------------------------------------


async def test_typing_reaches_other_watchers_but_not_the_typist(world, open_socket, deliver) -> None:
    result, _ = await deliver(world.inbox_a, next_phone(), "hi")
    conversation_id = result.conversation.pk
    alice = await open_socket("alice")
    bob = await open_socket("bob")
    sam = await open_socket("sam")
    nina = await open_socket("nina")  # same team, but not watching
    for communicator in (alice, bob, sam):
        await communicator.send_json_to({"op": "watch", "conversation_id": conversation_id})
    for communicator in (alice, bob, sam):
        await assert_usable(communicator)  # watch succeeded silently

    await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    expected = {
        "type": "typing",
        "conversation_id": conversation_id,
        "state": "start",
        "who": "agent",
        "user_id": world.alice.pk,
        "name": "Alice",
    }
    assert await bob.receive_json_from(timeout=FRAME_TIMEOUT) == expected
    assert await sam.receive_json_from(timeout=FRAME_TIMEOUT) == expected
    await assert_silent(alice)
    await assert_silent(nina)

    await bob.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "stop"})
    for communicator in (alice, sam):
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert (frame["type"], frame["state"], frame["user_id"]) == ("typing", "stop", world.bob.pk)
    await assert_silent(bob)

    # Watching null stops the signals.
    await bob.send_json_to({"op": "watch", "conversation_id": None})
    await assert_usable(bob)
    await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    assert (await sam.receive_json_from(timeout=FRAME_TIMEOUT))["state"] == "start"
    await assert_silent(bob)


async def test_switching_the_watched_conversation_leaves_the_old_one(world, open_socket, deliver) -> None:
    first, _ = await deliver(world.inbox_a, next_phone(), "one")
    second, _ = await deliver(world.inbox_a, next_phone(), "two")
    alice = await open_socket("alice")
    bob = await open_socket("bob")
    await alice.send_json_to({"op": "watch", "conversation_id": first.conversation.pk})
    await bob.send_json_to({"op": "watch", "conversation_id": first.conversation.pk})
    await bob.send_json_to({"op": "watch", "conversation_id": second.conversation.pk})
    await assert_usable(alice)
    await assert_usable(bob)
    await alice.send_json_to({"op": "typing", "conversation_id": first.conversation.pk, "state": "start"})
    await assert_silent(bob)
    await bob.send_json_to({"op": "typing", "conversation_id": first.conversation.pk, "state": "start"})
    await expect_error(bob, "bad_typing")  # bob no longer watches the first one


async def test_charlie_cannot_watch_team_a_conversations(world, open_socket, deliver) -> None:
    result, _ = await deliver(world.inbox_a, next_phone(), "private")
    conversation_id = result.conversation.pk
    alice = await open_socket("alice")
    charlie = await open_socket("charlie")
    await alice.send_json_to({"op": "watch", "conversation_id": conversation_id})
    await charlie.send_json_to({"op": "watch", "conversation_id": conversation_id})
    await expect_error(charlie, "forbidden")
    await charlie.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    await expect_error(charlie, "bad_typing")

    await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    await assert_silent(charlie)
    await assert_usable(charlie)


@pytest.mark.parametrize("conversation_id", [987_654_321, "1", 1.5, [1], 2**70, True], ids=repr)
async def test_watching_something_that_is_not_a_visible_conversation_is_forbidden(
    world, open_socket, conversation_id
) -> None:
    alice = await open_socket("alice")
    await alice.send_json_to({"op": "watch", "conversation_id": conversation_id})
    await expect_error(alice, "forbidden")
    await assert_usable(alice)


async def test_typing_without_watching_or_with_a_bad_state_is_an_error(world, open_socket, deliver) -> None:
    result, _ = await deliver(world.inbox_a, next_phone(), "hi")
    conversation_id = result.conversation.pk
    alice = await open_socket("alice")
    bob = await open_socket("bob")
    await bob.send_json_to({"op": "watch", "conversation_id": conversation_id})
    await assert_usable(bob)

    await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    await expect_error(alice, "bad_typing")
    await alice.send_json_to({"op": "typing", "conversation_id": None, "state": "start"})
    await expect_error(alice, "bad_typing")

    await alice.send_json_to({"op": "watch", "conversation_id": conversation_id})
    for state in ("typing", None, "START"):
        await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": state})
        await expect_error(alice, "bad_typing")
    await assert_silent(bob)
    await assert_usable(alice)


# --- presence -------------------------------------------------------------------------------------------------


async def test_presence_updates_the_profile_and_tells_teammates(world, open_socket) -> None:
    alice = await streaming(open_socket, "alice")
    bob = await streaming(open_socket, "bob")
    charlie = await streaming(open_socket, "charlie")
    sam = await streaming(open_socket, "sam")

    await alice.send_json_to({"op": "presence", "availability": "online"})
    [to_bob] = await receive_events(bob, 1)
    assert kinds([to_bob]) == ["presence.update"]
    assert (to_bob["user_id"], to_bob["availability"]) == (world.alice.pk, "online")
    profile = await database_sync_to_async(AgentProfile.objects.get)(user=world.alice)
    assert profile.availability == Availability.ONLINE

    own = await receive_events(alice, 2)  # the team's copy and her own
    assert to_bob["id"] in ids(own)
    assert {(e["user_id"], e["availability"]) for e in own} == {(world.alice.pk, "online")}
    assert ids(await receive_events(sam, 2)) == ids(own)
    await assert_silent(charlie)

    # Setting the same availability again changes nothing and tells no one.
    await alice.send_json_to({"op": "presence", "availability": "online"})
    await assert_usable(alice)
    await assert_silent(bob)

    await bob.send_json_to({"op": "presence", "availability": "busy"})
    [to_alice] = await receive_events(alice, 1)
    assert (to_alice["user_id"], to_alice["availability"]) == (world.bob.pk, "busy")


@pytest.mark.parametrize("availability", ["vacation", None, "", ["online"], 1], ids=repr)
async def test_an_invalid_availability_is_an_error_and_the_socket_stays_open(world, open_socket, availability) -> None:
    alice = await streaming(open_socket, "alice")
    bob = await streaming(open_socket, "bob")
    frame: dict[str, Any] = {"op": "presence", "availability": availability}
    await alice.send_json_to(frame)
    await expect_error(alice, "bad_presence")
    await assert_usable(alice)
    profile = await database_sync_to_async(AgentProfile.objects.get)(user=world.alice)
    assert profile.availability == Availability.OFFLINE
    await assert_silent(bob)


# --- malformed frames -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "code"),
    [
        ("not json", "bad_frame"),
        ("{'op': 'ping'}", "bad_frame"),
        ('[{"op": "ping"}]', "bad_frame"),
        ('"ping"', "bad_frame"),
        ("42", "bad_frame"),
        ("null", "bad_frame"),
        ("{}", "bad_frame"),
        ('{"last_event_id": 0}', "bad_frame"),
        ('{"op": 7}', "bad_frame"),
        ('{"op": "subscribe"}', "unknown_op"),
        ('{"op": ""}', "unknown_op"),
        ('{"op": "resync", "last_event_id": -1}', "bad_cursor"),
        ('{"op": "resync", "last_event_id": "5"}', "bad_cursor"),
        ('{"op": "resync", "last_event_id": 1.5}', "bad_cursor"),
        ('{"op": "resync", "last_event_id": [1]}', "bad_cursor"),
        ('{"op": "resync", "last_event_id": true}', "bad_cursor"),
        ('{"op": "resync", "last_event_id": false}', "bad_cursor"),
    ],
)
async def test_a_malformed_frame_gets_an_error_and_the_socket_stays_usable(world, open_socket, text, code) -> None:
    alice = await open_socket("alice")
    await alice.send_to(text_data=text)
    await expect_error(alice, code)
    await assert_usable(alice)


async def test_an_unknown_op_name_is_echoed_truncated(world, open_socket) -> None:
    alice = await open_socket("alice")
    await alice.send_json_to({"op": "x" * 5000})
    frame = await expect_error(alice, "unknown_op")
    assert len(frame["message"]) < 100


@pytest.mark.parametrize(
    "message",
    [
        {"type": "websocket.receive", "bytes": b'{"op": "ping"}'},
        {"type": "websocket.receive", "text": ""},
        {"type": "websocket.receive", "text": "[" * 100_000},
    ],
    ids=["binary-frame", "empty-text", "deeply-nested-json"],
)
async def test_frames_the_json_layer_cannot_read_are_errors_not_crashes(world, open_socket, message) -> None:
    alice = await open_socket("alice")
    await alice.send_input(message)
    await expect_error(alice, "bad_frame")
    await assert_usable(alice)


async def test_a_bad_cursor_does_not_start_the_stream(world, open_socket, deliver) -> None:
    alice = await open_socket("alice")
    await alice.send_json_to({"op": "resync", "last_event_id": "latest"})
    await expect_error(alice, "bad_cursor")
    await deliver(world.inbox_a, next_phone(), "nobody asked yet")
    await assert_silent(alice)
    # A huge cursor is valid and simply means "nothing yet".
    await resync(alice, 2**70)
    await assert_silent(alice)
    await assert_usable(alice)

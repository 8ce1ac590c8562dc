"""The process's event hub (contactcenter.fanout): one reader of the event table for every agent socket.

The sockets run on the real ASGI application over the Redis channel layer and PostgreSQL, signed in with the
cookie of a real login, as in tests/test_consumers.py. What is measured, not mocked:
- who reads the event table: the hub's read (fanout._events_after), a socket's own database catch-up
  (AgentConsumer._events_after), and every SELECT Django compiles for the Event model, on any thread, are
  counted by wrappers that call the real code;
- the hub's timings (POLL_SECONDS, BUFFER_EVENTS, ACCESS_RECHECK_SECONDS) are set per test, so that only the
  path under test can deliver within the bound.
The one deliberate interference is `hints_dropped` (tests.test_consumers), which loses the hints of one action.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers, get_channel_layer
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.sessions.backends.db import SessionStore
from django.contrib.sessions.models import Session
from django.db import OperationalError, connection
from django.db.models.sql.compiler import SQLCompiler, SQLDeleteCompiler, SQLInsertCompiler, SQLUpdateCompiler
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone

from config.asgi import application
from contactcenter import access, consumers, fanout
from contactcenter.actions.conversations import assign_conversation, transfer_to_team
from contactcenter.models import AgentProfile, ChannelType, Event, Inbox, Role, Team
from tests.conftest import PASSWORD, World, make_staff
from tests.test_consumers import (
    DISCONNECT_TIMEOUT,
    FRAME_TIMEOUT,
    ORIGIN,
    QUIET,
    WS_PATH,
    assert_usable,
    hints_dropped,
    ids,
    last_event_id,
    next_phone,
    resync,
)

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
async def layer() -> AsyncIterator[Any]:
    """One channel layer per test, on the test's event loop (as tests.test_consumers.fresh_channel_layer)."""
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield get_channel_layer()
    used = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if used is not None:
        await used.flush()
        await used.close_pools()


@pytest.fixture
def no_hintless_reads(monkeypatch: pytest.MonkeyPatch) -> None:
    """The hub reads only when a hint wakes it: a read counted in a test is one a hint (or the path under test)
    caused, not the periodic poll."""
    monkeypatch.setattr(fanout, "POLL_SECONDS", 600.0)
    monkeypatch.setattr(fanout, "DEGRADED_POLL_SECONDS", 600.0)


# --- sockets --------------------------------------------------------------------------------------------------


@dataclass
class Socket:
    username: str
    communicator: WebsocketCommunicator
    session_key: str
    # The cursor it resynced from, and the ids of the events it got since, in the order they came.
    since: int = 0
    got: list[int] = field(default_factory=list)


Opener = Callable[[str], Awaitable[Socket]]


def _login_cookie(username: str) -> str:
    client = Client()
    assert client.login(username=username, password=PASSWORD), f"{username} could not log in"
    return client.cookies[settings.SESSION_COOKIE_NAME].value


@pytest.fixture
async def open_socket(layer: Any) -> AsyncIterator[Opener]:
    """Signed-in sockets on the real ASGI application; at teardown every one has ended and none crashed."""
    opened: list[WebsocketCommunicator] = []

    async def open_(username: str) -> Socket:
        cookie = await database_sync_to_async(_login_cookie)(username)
        headers = [(b"origin", ORIGIN), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]
        communicator = WebsocketCommunicator(application, WS_PATH, headers=headers)
        opened.append(communicator)
        connected, detail = await communicator.connect(timeout=FRAME_TIMEOUT)
        assert connected, f"{username}: connect returned {(connected, detail)}"
        return Socket(username, communicator, cookie)

    yield open_
    crashed: list[BaseException] = []
    for communicator in opened:
        if not communicator.future.done():
            await communicator.disconnect(timeout=DISCONNECT_TIMEOUT)
        elif not communicator.future.cancelled() and communicator.future.exception() is not None:
            crashed.append(communicator.future.exception())
    if crashed:
        raise AssertionError(f"{len(crashed)} consumer(s) crashed during the test") from crashed[0]


async def streaming(open_socket: Opener, username: str) -> Socket:
    """A socket that resynced from the current end, as a freshly loaded page does."""
    socket = await open_socket(username)
    socket.since = await resync(socket.communicator, None)
    # The socket takes frames one at a time: the pong says the resync's catch-up has finished.
    await assert_usable(socket.communicator)
    return socket


async def receive_frames(socket: Socket, count: int) -> list[dict[str, Any]]:
    """`events` frames until exactly `count` events came; any other frame, a timeout or one event too many fails."""
    frames: list[dict[str, Any]] = []
    received = 0
    while received < count:
        frame = await socket.communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events", (socket.username, frame)
        assert frame["events"], "an events frame must not be empty"
        assert frame["last_event_id"] == frame["events"][-1]["id"]
        frames.append(frame)
        received += len(frame["events"])
        socket.got.extend(ids(frame["events"]))
    assert received == count, (socket.username, frames)
    return frames


async def receive_events(socket: Socket, count: int) -> list[dict[str, Any]]:
    return [event for frame in await receive_frames(socket, count) for event in frame["events"]]


async def silent(*sockets: Socket) -> None:
    """None of these sockets sends anything for QUIET seconds, waited out once for all of them.

    Not a receive_nothing() per socket at once: channels' test communicator mock.patches channels.db's
    close_old_connections while it waits, and overlapping waits can leave the no-op patched in for good (the
    database thread's connection then outlives the test and the test database cannot be dropped).
    """
    await asyncio.sleep(QUIET)
    for socket in sockets:
        if not socket.communicator.output_queue.empty():
            pytest.fail(f"{socket.username} expected nothing, got {socket.communicator.output_queue.get_nowait()}")


async def closed_with(communicator: WebsocketCommunicator, within: float) -> tuple[int | None, list[Any]]:
    """Wait for the server to close the socket: its close code, and the frames that came before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    frames: list[Any] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"the socket was still open after {within} s; it sent {frames}")
        try:
            output = await communicator.receive_output(timeout=remaining)
        except TimeoutError:
            pytest.fail(f"the socket was still open after {within} s; it sent {frames}")
        if output["type"] == "websocket.close":
            return output.get("code"), frames
        frames.append(json.loads(output["text"]))


async def until(condition: Callable[[], bool], *, within: float, what: str) -> None:
    """Poll a condition on the event loop until it holds; fail after `within` seconds."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not condition():
        if loop.time() > deadline:
            pytest.fail(f"not within {within} s: {what}")
        await asyncio.sleep(0.02)


def hubs_of_this_loop() -> list[fanout.EventHub]:
    loop_id = id(asyncio.get_running_loop())
    return [hub for hub in fanout.hubs() if hub.loop_key is not None and hub.loop_key[0] == loop_id]


def the_hub() -> fanout.EventHub:
    [hub] = hubs_of_this_loop()
    return hub


# --- who reads the event table ----------------------------------------------------------------------------------

# Database work the test does itself (delivering messages, computing expectations) runs with this flag set in its
# thread, and is not counted: the count is the fan-out's, whatever thread the hub and the sockets read on.
_test_itself = threading.local()


@contextlib.contextmanager
def not_counted() -> Iterator[None]:
    _test_itself.active = True
    try:
        yield
    finally:
        _test_itself.active = False


@dataclass
class TableReads:
    hub: list[int] = field(default_factory=list)  # the cursor of each hub read
    sockets: list[tuple[int, int, bool]] = field(default_factory=list)  # (user id, cursor, audited) of socket reads
    selects: int = 0  # every SELECT on the Event table outside the test's own work
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def reset(self) -> None:
        with self._lock:
            self.hub.clear()
            self.sockets.clear()
            self.selects = 0

    def snapshot(self) -> tuple[int, int, int]:
        with self._lock:
            return len(self.hub), len(self.sockets), self.selects


@pytest.fixture
def table_reads(monkeypatch: pytest.MonkeyPatch) -> TableReads:
    reads = TableReads()
    hub_read = fanout._events_after
    socket_read = consumers.AgentConsumer._events_after
    execute_sql = SQLCompiler.execute_sql

    def counted_hub_read(cursor: int) -> Any:
        with reads._lock:
            reads.hub.append(cursor)
        return hub_read(cursor)

    def counted_socket_read(self: consumers.AgentConsumer, cursor: int, audit: bool) -> Any:
        with reads._lock:
            reads.sockets.append((self.user.pk, cursor, audit))
        return socket_read(self, cursor, audit)

    def counted_execute_sql(self: SQLCompiler, *args: Any, **kwargs: Any) -> Any:
        writes = (SQLInsertCompiler, SQLUpdateCompiler, SQLDeleteCompiler)
        if self.query.model is Event and not isinstance(self, writes) and not getattr(_test_itself, "active", False):
            with reads._lock:
                reads.selects += 1
        return execute_sql(self, *args, **kwargs)

    monkeypatch.setattr(fanout, "_events_after", counted_hub_read)
    monkeypatch.setattr(consumers.AgentConsumer, "_events_after", counted_socket_read)
    monkeypatch.setattr(SQLCompiler, "execute_sql", counted_execute_sql)
    return reads


# --- delivering -------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Delivered:
    conversation_id: int
    event_ids: list[int]


@pytest.fixture
def deliver(inbound: Callable[..., Any]) -> Callable[..., Awaitable[Delivered]]:
    """An inbound message through the product's one path, from a worker thread; the ids of the events it wrote.
    Its own database work is not counted as the fan-out's."""

    def run(inbox: Inbox, phone: str, body: str) -> Delivered:
        with not_counted():
            before = _last_id()
            result = inbound(inbox, phone, body)
            written = list(
                Event.objects.filter(id__gt=before, conversation_id=result.conversation.pk)
                .order_by("id")
                .values_list("id", flat=True)
            )
            return Delivered(result.conversation.pk, written)

    async def deliver_(inbox: Inbox, phone: str, body: str = "Hello") -> Delivered:
        return await database_sync_to_async(run)(inbox, phone, body)

    return deliver_


def _last_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _visible_after(username: str, after: int) -> list[int]:
    """The events after `after` that REST's rule (access.event_filter_for, in SQL) lets this user read now."""
    with not_counted():
        rule = access.event_filter_for(User.objects.get(username=username))
        if rule is None:
            return []
        return list(Event.objects.filter(rule, id__gt=after).order_by("id").values_list("id", flat=True))


visible_after = database_sync_to_async(_visible_after)


def _staff(*people: tuple[str, str, list[Team]]) -> None:
    for username, role, teams in people:
        make_staff(username, role, teams)


# --- one read for every socket -------------------------------------------------------------------------------------


async def test_one_message_costs_the_same_event_reads_for_two_sockets_as_for_twelve(
    world: World, open_socket: Opener, deliver: Any, table_reads: TableReads, no_hintless_reads: None
) -> None:
    await database_sync_to_async(_staff)(
        ("dora", Role.AGENT, [world.team_a]),
        ("eve", Role.NURSE, [world.team_a]),
        ("finn", Role.AGENT, [world.team_b]),
        ("gina", Role.NURSE, [world.team_b]),
        ("hal", Role.AGENT, [world.team_b]),
        ("jo", Role.AGENT, [world.team_a, world.team_b]),
    )
    team_a = {"alice", "bob", "nina", "dora", "eve"}
    team_b = {"charlie", "finn", "gina", "hal"}
    both = {"jo", "sam", "ada"}  # an agent of both teams, a supervisor, an admin

    async def one_message_to_each_team(sockets: list[Socket]) -> list[tuple[int, int, int]]:
        """One message to each team's inbox: each socket that may see it gets it as one frame, the others
        nothing. Returns what each message cost: (hub reads, socket reads, SELECTs on the event table)."""
        costs = []
        for inbox, audience, others in ((world.inbox_a, team_a, team_b), (world.inbox_b, team_b, team_a)):
            table_reads.reset()
            delivered = await deliver(inbox, next_phone(), "one message")
            assert len(delivered.event_ids) == 2
            receivers = [s for s in sockets if s.username in audience | both]
            bystanders = [s for s in sockets if s.username in others]
            assert receivers and bystanders
            frames = [await receive_frames(s, 2) for s in receivers]
            for socket, got in zip(receivers, frames, strict=True):
                assert len(got) == 1, f"{socket.username} got the message in {len(got)} frames"
                assert ids(got[0]["events"]) == delivered.event_ids, socket.username
            await silent(*sockets)
            costs.append(table_reads.snapshot())
        return costs

    few = [await streaming(open_socket, name) for name in ("alice", "charlie")]
    cost_for_two = await one_message_to_each_team(few)

    more = sorted((team_a | team_b | both) - {"alice", "charlie"})
    many = few + [await streaming(open_socket, name) for name in more]
    assert len(many) == 12
    assert len(hubs_of_this_loop()) == 1 and len(the_hub().subscribers) == 12
    cost_for_twelve = await one_message_to_each_team(many)

    assert cost_for_twelve == cost_for_two
    for hub_reads, socket_reads, selects in cost_for_twelve:
        # One hint, one read by the hub; no socket reads the table on its own, and nothing else does either.
        assert (hub_reads, socket_reads, selects) == (1, 0, 1)

    # Over the whole test, each socket got exactly what REST's rule lets its user read: once each, in id order.
    for socket in many:
        expected = await visible_after(socket.username, socket.since)
        assert socket.got == expected, socket.username
        assert expected, f"{socket.username} was expected to see something"


# --- visibility at the moment of sending --------------------------------------------------------------------------


@dataclass
class Referral:
    """A Neurology-inbox conversation referred to Cardiology and held by alice: Cardiology sees it by its team,
    Neurology by its inbox, Orthopedics not at all."""

    conversation_id: int
    phone: str


def _referral(world: World, inbound: Callable[..., Any]) -> Referral:
    with not_counted():
        team_c = Team.objects.create(code="neurology", name="Neurology", name_zh="神经内科")
        inbox_c = Inbox.objects.create(
            name="Neurology SMS", channel_type=ChannelType.SIMULATOR, team=team_c, auto_assign=False
        )
        make_staff("neo", Role.AGENT, [team_c])
        phone = next_phone()
        conversation = inbound(inbox_c, phone, "Headaches since the fall").conversation
        sam, alice = User.objects.get(pk=world.sam.pk), User.objects.get(pk=world.alice.pk)
        transfer_to_team(conversation=conversation, team=world.team_a, actor=sam)
        assign_conversation(conversation=conversation, assignee=alice, actor=sam)
        return Referral(conversation.pk, phone)


def _inbox_of(conversation_id: int) -> Inbox:
    from contactcenter.models import Conversation

    return Conversation.objects.select_related("inbox").get(pk=conversation_id).inbox


def _transfer(conversation_id: int, team: Team, actor: Any) -> list[int]:
    from contactcenter.models import Conversation

    with not_counted():
        before = _last_id()
        transfer_to_team(conversation=Conversation.objects.get(pk=conversation_id), team=team, actor=actor)
        return list(Event.objects.filter(id__gt=before).order_by("id").values_list("id", flat=True))


def removed(event_id: int, conversation_id: int) -> dict[str, Any]:
    return {"id": event_id, "type": "conversation", "op": "remove", "conversation_id": conversation_id}


async def test_a_transfer_moves_the_conversations_later_events_from_the_old_team_to_the_new(
    world: World, open_socket: Opener, deliver: Any, inbound: Any, no_hintless_reads: None
) -> None:
    referral = await database_sync_to_async(_referral)(world, inbound)
    inbox_c = await database_sync_to_async(_inbox_of)(referral.conversation_id)
    alice, bob, charlie, sam, neo = [
        await streaming(open_socket, name) for name in ("alice", "bob", "charlie", "sam", "neo")
    ]

    before = await deliver(inbox_c, referral.phone, "still in Cardiology's hands")
    for socket in (alice, bob, sam, neo):
        assert ids(await receive_events(socket, len(before.event_ids))) == before.event_ids
    await silent(charlie)

    # To Orthopedics: the new team and the inbox's team are told; alice, who held it, is told it left her list
    # and nothing else; bob, whose team no longer has it, gets nothing of it.
    transfer = await database_sync_to_async(_transfer)(referral.conversation_id, world.team_b, world.sam)
    assert len(transfer) == 2
    [told] = await receive_events(alice, 1)
    assert told == removed(transfer[1], referral.conversation_id)
    [moved] = await receive_events(charlie, 1)
    assert moved["id"] == transfer[0] and moved["conversation"]["team_id"] == world.team_b.pk
    assert ids(await receive_events(sam, 2)) == transfer
    assert ids(await receive_events(neo, 1)) == [transfer[0]]
    await silent(bob)

    after = await deliver(inbox_c, referral.phone, "now Orthopedics' patient")
    for socket in (charlie, sam, neo):
        got = await receive_events(socket, len(after.event_ids))
        assert ids(got) == after.event_ids
        assert got[-1]["message"]["body"] == "now Orthopedics' patient"
    await silent(alice, bob, charlie, sam, neo)


async def test_events_read_after_a_transfer_are_judged_by_where_the_conversation_is_when_sent(
    world: World,
    open_socket: Opener,
    deliver: Any,
    inbound: Any,
    monkeypatch: pytest.MonkeyPatch,
    no_hintless_reads: None,
) -> None:
    """A message written while Cardiology had the conversation, whose hint was lost, reaches the hub in the same
    read as the transfer to Orthopedics: by then Cardiology may no longer read it, so bob gets none of it and
    alice (who held it) only its withdrawal, though the events were addressed to them when written."""
    referral = await database_sync_to_async(_referral)(world, inbound)
    inbox_c = await database_sync_to_async(_inbox_of)(referral.conversation_id)
    alice, bob, charlie, sam, neo = [
        await streaming(open_socket, name) for name in ("alice", "bob", "charlie", "sam", "neo")
    ]
    cursor = await last_event_id()

    with hints_dropped(monkeypatch) as dropped:
        unsent = await deliver(inbox_c, referral.phone, "the scan shows a bleed")
    assert dropped == [unsent.event_ids[-1]]
    await silent(alice, bob, sam)  # nothing told the hub
    transfer = await database_sync_to_async(_transfer)(referral.conversation_id, world.team_b, world.sam)

    [withdrawn] = await receive_events(alice, 1)
    assert withdrawn == removed(unsent.event_ids[0], referral.conversation_id)
    everything = [*unsent.event_ids, *transfer]
    replayed = await receive_events(sam, len(everything))
    assert ids(replayed) == everything
    assert replayed[1]["message"]["body"] == "the scan shows a bleed"
    for socket in (charlie, neo):
        expected = await visible_after(socket.username, cursor)
        assert ids(await receive_events(socket, len(expected))) == expected
    assert await visible_after("charlie", cursor) == [transfer[0]]
    assert await visible_after("bob", cursor) == []
    await silent(alice, bob, charlie, sam, neo)

    # The database path (a page reloaded from the same cursor) gives them the same answer.
    alice_again, bob_again = [await open_socket(name) for name in ("alice", "bob")]
    await resync(alice_again.communicator, cursor)
    await resync(bob_again.communicator, cursor)
    assert await receive_events(alice_again, 1) == [withdrawn]
    await silent(alice_again, bob_again)


# --- a socket further behind than the buffer ------------------------------------------------------------------------


async def test_a_socket_behind_the_buffer_reads_the_database_once_then_follows_from_memory(
    world: World,
    open_socket: Opener,
    deliver: Any,
    table_reads: TableReads,
    monkeypatch: pytest.MonkeyPatch,
    no_hintless_reads: None,
) -> None:
    monkeypatch.setattr(fanout, "BUFFER_EVENTS", 5)
    alice, charlie, sam = [await streaming(open_socket, name) for name in ("alice", "charlie", "sam")]
    cursor = alice.since

    # Eight events the hub is not told about, then two it is: one read of ten, of which the buffer keeps five.
    with hints_dropped(monkeypatch):
        for inbox in (world.inbox_a, world.inbox_b, world.inbox_a, world.inbox_b):
            await deliver(inbox, next_phone(), "while nobody was told")
    table_reads.reset()
    await deliver(world.inbox_a, next_phone(), "the one that was announced")
    for socket in (alice, charlie, sam):
        expected = await visible_after(socket.username, cursor)
        assert ids(await receive_events(socket, len(expected))) == expected
    await silent(alice, charlie, sam)
    hub = the_hub()
    assert len(hub.buffer) == 5 and hub.floor > cursor
    assert table_reads.hub == [cursor]
    # Each socket found the buffer did not reach back to its cursor, and read the database itself, once.
    assert sorted(table_reads.sockets) == sorted(
        (user.pk, cursor, False) for user in (world.alice, world.charlie, world.sam)
    )

    # A page reloaded from before all that replays it from the database, exactly once and in order...
    bob = await open_socket("bob")
    await resync(bob.communicator, cursor)
    expected = await visible_after("bob", cursor)
    assert len(expected) == 6
    assert ids(await receive_events(bob, len(expected))) == expected
    await silent(bob)

    # ...and from then on every socket is served from memory.
    table_reads.reset()
    live = await deliver(world.inbox_a, next_phone(), "back to normal")
    for socket in (alice, bob, sam):
        assert ids(await receive_events(socket, len(live.event_ids))) == live.event_ids
    await silent(alice, bob, charlie, sam)
    assert (len(table_reads.hub), table_reads.sockets) == (1, [])
    for socket in (alice, bob, charlie, sam):
        assert socket.got == await visible_after(socket.username, cursor), socket.username


# --- the hub's poll -------------------------------------------------------------------------------------------------


async def test_a_hint_lost_for_every_socket_is_recovered_by_the_hubs_poll(
    world: World, open_socket: Opener, deliver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "POLL_SECONDS", 0.5)
    alice, charlie = [await streaming(open_socket, name) for name in ("alice", "charlie")]
    with hints_dropped(monkeypatch) as dropped:
        lost = await deliver(world.inbox_a, next_phone(), "nobody was told")
    assert dropped == [lost.event_ids[-1]]
    # Nothing else happens: no message, no resync. The poll (at the latest a tick after POLL_SECONDS) finds it.
    assert ids(await receive_events(alice, len(lost.event_ids))) == lost.event_ids
    await silent(alice, charlie)


async def test_without_the_poll_a_lost_hint_waits_for_the_next_message(
    world: World, open_socket: Opener, deliver: Any, monkeypatch: pytest.MonkeyPatch, no_hintless_reads: None
) -> None:
    """The counterpart of the test above: what brought the events there was the poll and nothing else."""
    alice = await streaming(open_socket, "alice")
    with hints_dropped(monkeypatch):
        lost = await deliver(world.inbox_a, next_phone(), "nobody was told")
    assert await alice.communicator.receive_nothing(timeout=fanout.TICK_SECONDS + 1.5)
    announced = await deliver(world.inbox_a, next_phone(), "told")
    expected = [*lost.event_ids, *announced.event_ids]
    assert ids(await receive_events(alice, len(expected))) == expected


# --- the hub's life ---------------------------------------------------------------------------------------------------


async def _in_hub_group(layer: Any, channel: str) -> bool:
    key = layer._group_key(fanout.HUB_GROUP)
    async with layer.connection(layer.consistent_hash(fanout.HUB_GROUP)) as redis:
        return channel.encode() in await redis.zrange(key, 0, -1)


async def test_the_hub_stops_with_its_last_socket_and_the_next_socket_starts_a_fresh_one(
    world: World, open_socket: Opener, deliver: Any, layer: Any
) -> None:
    assert hubs_of_this_loop() == []
    alice = await streaming(open_socket, "alice")
    bob = await streaming(open_socket, "bob")
    hub = the_hub()
    assert hub.channel_name is not None and await _in_hub_group(layer, hub.channel_name)
    tasks = list(hub._tasks)
    assert len(tasks) == 3 and not any(task.done() for task in tasks)

    await alice.communicator.disconnect(timeout=DISCONNECT_TIMEOUT)
    assert hubs_of_this_loop() == [hub] and len(hub.subscribers) == 1  # bob still has it
    await assert_usable(bob.communicator)

    await bob.communicator.disconnect(timeout=DISCONNECT_TIMEOUT)
    await until(lambda: hubs_of_this_loop() == [], within=FRAME_TIMEOUT, what="the hub was forgotten")
    await until(lambda: all(task.done() for task in tasks), within=FRAME_TIMEOUT, what="the hub's tasks ended")
    assert not await _in_hub_group(layer, hub.channel_name)
    reads = hub.reads

    charlie = await streaming(open_socket, "charlie")
    fresh = the_hub()
    assert fresh is not hub and fresh.channel_name != hub.channel_name
    assert await _in_hub_group(layer, fresh.channel_name)  # type: ignore[arg-type]
    delivered = await deliver(world.inbox_b, next_phone(), "after the restart")
    assert ids(await receive_events(charlie, len(delivered.event_ids))) == delivered.event_ids
    assert hub.reads == reads, "the stopped hub read again"
    await silent(charlie)


async def test_a_hub_whose_start_failed_is_retried_by_the_next_socket(
    world: World, open_socket: Opener, deliver: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A first read that fails (a database failover) refuses that one handshake; it does not poison the process."""
    real = fanout._max_event_id
    failures = [OperationalError("the database went away")]

    def flaky() -> int:
        if failures:
            raise failures.pop()
        return real()

    monkeypatch.setattr(fanout, "_max_event_id", flaky)
    cookie = await database_sync_to_async(_login_cookie)("alice")
    headers = [(b"origin", ORIGIN), (b"cookie", f"{settings.SESSION_COOKIE_NAME}={cookie}".encode())]
    refused = WebsocketCommunicator(application, WS_PATH, headers=headers)
    connected, code = await refused.connect(timeout=FRAME_TIMEOUT)
    assert (connected, code) == (False, consumers.CLOSE_UNAVAILABLE)
    assert hubs_of_this_loop() == []  # nothing half-started is left behind

    bob = await streaming(open_socket, "bob")
    hub = the_hub()
    assert len(hub.subscribers) == 1  # the refused socket left no subscriber behind
    delivered = await deliver(world.inbox_a, next_phone(), "after the failover")
    assert ids(await receive_events(bob, len(delivered.event_ids))) == delivered.event_ids


# --- access re-checked in one batch -----------------------------------------------------------------------------------


async def test_the_hub_rechecks_every_sockets_session_and_access_in_one_batch(
    world: World, open_socket: Opener, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fanout, "ACCESS_RECHECK_SECONDS", 0.3)
    # Only the hub's batch can find what changed within the bound: no socket checks itself.
    monkeypatch.setattr(consumers, "OWN_RECHECK_SECONDS", 600.0)
    batches: list[list[str]] = []
    one_by_one: list[str | None] = []
    batch_check = access.staff_and_visibility_for_sessions
    own_check = consumers.AgentConsumer._check_access

    def counted_batch(session_keys: Any) -> Any:
        keys = list(session_keys)
        batches.append([key or "" for key in keys])
        return batch_check(keys)

    def counted_own(self: consumers.AgentConsumer) -> Any:
        one_by_one.append(self.session_key)
        return own_check(self)

    monkeypatch.setattr(access, "staff_and_visibility_for_sessions", counted_batch)
    monkeypatch.setattr(consumers.AgentConsumer, "_check_access", counted_own)
    alice, bob, charlie, sam = [await streaming(open_socket, name) for name in ("alice", "bob", "charlie", "sam")]
    connected_checks = len(one_by_one)
    assert connected_checks == 4  # each socket's check at connect

    def change_behind_the_actions_back() -> None:
        # A session that ran out, and a team change made as a data fix (nobody pushed either to the sockets).
        Session.objects.filter(pk=bob.session_key).update(expire_date=timezone.now())
        AgentProfile.objects.get(user_id=world.charlie.pk).teams.set([world.team_a])

    await database_sync_to_async(change_behind_the_actions_back)()
    assert (await closed_with(bob.communicator, FRAME_TIMEOUT))[0] == consumers.CLOSE_SIGNED_OUT
    assert (await closed_with(charlie.communicator, FRAME_TIMEOUT))[0] == consumers.CLOSE_ACCESS_CHANGED
    await assert_usable(alice.communicator)
    await assert_usable(sam.communicator)
    assert len(one_by_one) == connected_checks, "a socket checked itself"
    # One call for all the sockets there were (batches before the fourth connected had fewer), none one by one.
    keys = sorted(s.session_key for s in (alice, bob, charlie, sam))
    assert any(sorted(batch) == keys for batch in batches), batches
    assert all(set(batch) <= set(keys) for batch in batches)


# --- the batch access check, against the one-by-one check -------------------------------------------------------------


def _session_of(username: str) -> str:
    return _login_cookie(username)


def _answer(user: Any, visibility: access.EventVisibility | None) -> tuple[int | None, access.EventVisibility | None]:
    return (user.pk if user is not None else None, visibility)


def _one_by_one(session_key: str | None) -> tuple[int | None, access.EventVisibility | None]:
    user = access.staff_for_session(session_key)
    return _answer(user, access.event_visibility_for(user) if user is not None else None)


def _batch(session_keys: list[str | None]) -> dict[str | None, tuple[int | None, access.EventVisibility | None]]:
    answers = access.staff_and_visibility_for_sessions(session_keys)
    # What the hub hands a socket whose key has no answer (fanout.EventHub.recheck).
    return {key: _answer(*answers.get(key or "", (None, None))) for key in session_keys}


def _hand_made_session(**data: Any) -> str:
    store = SessionStore()
    store.update(data)
    store.create()
    assert store.session_key is not None
    return store.session_key


@pytest.fixture
def sessions(world: World) -> dict[str, str | None]:
    """Sessions in every state a socket's session can be in, each made the way it happens."""
    make_staff("dora", Role.AGENT, [world.team_a, world.team_b])
    make_staff("lone", Role.AGENT, [])
    User.objects.create_user(username="noprofile", password=PASSWORD)
    keys: dict[str, str | None] = {
        name: _session_of(name) for name in ("alice", "charlie", "nina", "dora", "lone", "sam", "ada", "mark")
    }
    keys["noprofile"] = _session_of("noprofile")

    keys["deactivated"] = _session_of("bob")
    world.bob.is_active = False
    world.bob.save()

    make_staff("pat", Role.AGENT, [world.team_a])
    keys["password_changed"] = _session_of("pat")
    pat = User.objects.get(username="pat")
    pat.set_password("a-much-longer-new-passphrase-42")
    pat.save()

    make_staff("exp", Role.AGENT, [world.team_b])
    keys["expired"] = _session_of("exp")
    Session.objects.filter(pk=keys["expired"]).update(expire_date=timezone.now())

    keys["never_stored"] = "x" * 32
    keys["none"] = None
    keys["empty"] = ""
    alice = world.alice
    keys["no_hash"] = _hand_made_session(
        _auth_user_id=str(alice.pk), _auth_user_backend="django.contrib.auth.backends.ModelBackend"
    )
    keys["unknown_backend"] = _hand_made_session(
        _auth_user_id=str(alice.pk),
        _auth_user_backend="some.removed.Backend",
        _auth_user_hash=alice.get_session_auth_hash(),
    )
    keys["forged_hash"] = _hand_made_session(
        _auth_user_id=str(alice.pk),
        _auth_user_backend="django.contrib.auth.backends.ModelBackend",
        _auth_user_hash="0" * 64,
    )
    keys["no_user_id"] = _hand_made_session(
        _auth_user_backend="django.contrib.auth.backends.ModelBackend", _auth_user_hash=alice.get_session_auth_hash()
    )
    keys["deleted_user"] = _hand_made_session(
        _auth_user_id="987654321",
        _auth_user_backend="django.contrib.auth.backends.ModelBackend",
        _auth_user_hash=alice.get_session_auth_hash(),
    )
    return keys


def test_the_batch_check_answers_as_the_one_by_one_check_for_every_kind_of_session(
    world: World, sessions: dict[str, str | None]
) -> None:
    expected = {name: _one_by_one(key) for name, key in sessions.items()}
    batch = _batch(list(sessions.values()))
    assert {name: batch[key] for name, key in sessions.items()} == expected

    # The cases are what their names say (so the comparison above is not between two empty answers).
    signed_in = {name for name, (user_id, _) in expected.items() if user_id is not None}
    assert signed_in == {"alice", "charlie", "nina", "dora", "lone", "sam", "ada", "mark", "noprofile"}
    sees = {name: visibility for name, (_, visibility) in expected.items() if visibility is not None}
    assert set(sees) == {"alice", "charlie", "nina", "dora", "lone", "sam", "ada"}
    assert sees["sam"].everything and sees["ada"].everything
    assert sees["alice"].team_ids == frozenset({world.team_a.pk}) and world.inbox_a.pk in sees["alice"].inbox_ids
    assert sees["dora"].team_ids == frozenset({world.team_a.pk, world.team_b.pk})
    assert sees["dora"].inbox_ids == frozenset({world.inbox_a.pk, world.inbox_b.pk})
    assert sees["lone"].team_ids == sees["lone"].inbox_ids == frozenset()


def test_a_session_signed_with_a_retired_secret_key_is_accepted_by_both_checks(world: World, settings: Any) -> None:
    old = settings.SECRET_KEY
    key = _session_of("alice")
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = [old]
    assert _one_by_one(key)[0] == world.alice.pk
    assert _batch([key]) == {key: _one_by_one(key)}
    settings.SECRET_KEY_FALLBACKS = []
    assert _one_by_one(key) == (None, None)
    assert _batch([key]) == {key: (None, None)}


def test_the_batch_check_costs_as_many_queries_for_ten_sessions_as_for_two(
    world: World, sessions: dict[str, str | None]
) -> None:
    two = [sessions["alice"], sessions["sam"]]
    ten = [sessions[name] for name in ("alice", "sam", "charlie", "nina", "dora", "ada", "mark", "noprofile")]
    ten += [sessions["deactivated"], sessions["password_changed"]]
    assert len(set(ten)) == 10
    with CaptureQueriesContext(connection) as for_two:
        _batch(two)
    with CaptureQueriesContext(connection) as for_ten:
        _batch(ten)
    assert len(for_ten) == len(for_two)
    with CaptureQueriesContext(connection) as one_by_one:
        for key in ten:
            _one_by_one(key)
    assert len(one_by_one) > len(for_ten)

"""One reader of the event table per server process: the fan-out from committed events to agent sockets.

Each agent socket used to join its inbox and team groups and, on every hint, read the event table on its own:
with 250 sockets a message cost 64 catch-up queries and the p99 from commit to screen was 16 s. Now each server
process (each Daphne, on its event loop) has one EventHub:

- every transaction that records events sends one hint to HUB_GROUP, which each hub joins (one channel per
  process, not one per socket);
- the hub reads the events after its cursor once per batch of hints (one query, and one for the placements of
  the conversations they are about), serialises each event once, and keeps the newest BUFFER_EVENTS in memory;
- it then offers them to its sockets: each socket picks, in memory, the events its EventVisibility may see, and
  sends them as one frame. No query per socket, no JSON encoding per socket and event.

Nothing is lost on the way, for the same reasons as before: events commit in id order (events.record_many's
advisory lock), so reading "after the cursor" never skips a row committed later; a socket whose cursor is older
than the buffer (a resync after a long disconnect, a socket that fell behind) reads the database on its own until
it reaches the buffer, and is served from memory from then on; and the hub reads now and then without a hint
(POLL_SECONDS), more often while the channel layer cannot carry hints.

The periodic access re-check of every socket (is the session still signed in, may the user still see what they
saw) is also done once per process: one batch of queries for all sockets every ACCESS_RECHECK_SECONDS.
"""

from __future__ import annotations

import asyncio
import bisect
import contextlib
import json
import logging
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from channels.db import database_sync_to_async
from channels.layers import BaseChannelLayer

from contactcenter import access, events, layers
from contactcenter.models import Event

logger = logging.getLogger(__name__)

HUB_GROUP = events.HUB_GROUP
# Events kept in memory: a socket up to this many events behind is served without a query. At a busy hospital's
# few hundred events a minute, several minutes; a socket further behind reads the database.
BUFFER_EVENTS = 5000
# One read of the table per batch of hints takes at most this many rows (a campaign chunk commits hundreds).
READ_BATCH = 500
# Read even without a hint now and then: hints are best effort.
POLL_SECONDS = 2.0
# While the channel layer cannot carry hints (Redis restarting), read this often instead.
DEGRADED_POLL_SECONDS = 1.0
# How often the hub looks whether it must re-join its group or read without a hint (no query unless it must).
TICK_SECONDS = 1.0
# Re-join HUB_GROUP this often even when nothing went wrong that the hub could see (a Redis FLUSHALL).
GROUP_REFRESH_SECONDS = 30.0
ACCESS_RECHECK_SECONDS = 5.0


@dataclass(frozen=True, slots=True)
class BufferedEvent:
    id: int
    type: str
    inbox_id: int | None
    team_id: int | None
    user_id: int | None
    conversation_id: int | None
    # The event as the client receives it, encoded once for every socket that may see it.
    json: str


class Subscriber(Protocol):
    """What the hub needs of a socket (contactcenter.consumers.AgentConsumer)."""

    cursor: int | None
    closing: bool

    async def hub_offer(self) -> None:
        """New events are in the buffer: take what this socket may see."""

    def hub_skip(self, addressed: Addressed, *, before: int, newest: int) -> bool:
        """True (with the cursor moved to `newest`) when none of the new rows can be for this socket."""

    def access_inputs(self) -> tuple[str | None, int | None, access.EventVisibility | None]:
        """Session key, user id and current visibility, for the batch re-check."""

    async def access_checked(self, user: Any, visibility: access.EventVisibility | None) -> None:
        """The batch re-check's answer for this socket: who its session is signed in as now, and what they see."""


@dataclass(frozen=True)
class Addressed:
    """Whom a batch of rows is addressed to."""

    inbox_ids: set[int]
    team_ids: set[int]
    user_ids: set[int]

    def concerns(self, visibility: access.EventVisibility) -> bool:
        return (
            visibility.everything
            or not self.inbox_ids.isdisjoint(visibility.inbox_ids)
            or not self.team_ids.isdisjoint(visibility.team_ids)
            or visibility.user_id in self.user_ids
        )


@dataclass(frozen=True)
class Served:
    """What the buffer holds for one socket after its cursor: the frame to send (or None) and the new cursor."""

    frame: str | None
    last_id: int
    events: int


class EventHub:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.subscribers: set[Subscriber] = set()
        self.buffer: list[BufferedEvent] = []
        self._ids: list[int] = []
        # The newest event id read; the buffer holds every event with floor < id <= cursor.
        self.cursor: int | None = None
        self.floor = 0
        self.placements: dict[int, access.Placement] = {}
        self.channel_name: str | None = None
        self._wake = asyncio.Event()
        self._tasks: list[asyncio.Task[None]] = []
        self._started: asyncio.Future[None] | None = None
        self._generation = layers.generation(layer)
        self._joined_at = 0.0
        self.reads = 0
        # The newest event id a hint announced: a hint for an event a read already covers wakes nobody.
        self._hinted = 0
        self.loop_key: tuple[int, int] | None = None

    # --- life cycle --------------------------------------------------------------------------------------

    async def _subscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.add(subscriber)
        if self._started is None:
            self._started = asyncio.ensure_future(self._start())
        try:
            await asyncio.shield(self._started)
        except BaseException:
            # A start that failed (the database unreachable at its first read) is not kept: the next socket tries
            # again, rather than every later one inheriting this error.
            self.subscribers.discard(subscriber)
            if self._started.done() and (self._started.cancelled() or self._started.exception() is not None):
                self._started = None
            if not self.subscribers:
                await self.stop()
            raise

    async def unsubscribe(self, subscriber: Subscriber) -> None:
        self.subscribers.discard(subscriber)
        if not self.subscribers:
            await self.stop()

    async def _start(self) -> None:
        self.cursor = await database_sync_to_async(_max_event_id)()
        self.floor = self.cursor
        # The default prefix: channels_redis reads every "specific." channel of a process from one Redis list, with
        # one receive loop; another prefix would be a second list that loop takes turns with (seconds of delay).
        self.channel_name = await self.layer.new_channel()
        await self._join()
        self._tasks = [
            asyncio.ensure_future(self._listen()),
            asyncio.ensure_future(self._read_loop()),
            asyncio.ensure_future(self._recheck_loop()),
        ]

    async def stop(self) -> None:
        _forget(self)
        if self._started is not None and not self._started.done():
            self._started.cancel()
        for task in self._tasks:
            task.cancel()
        self._tasks = []
        if self.channel_name is not None:
            with contextlib.suppress(*layers.LAYER_ERRORS):
                await self.layer.group_discard(HUB_GROUP, self.channel_name)

    async def _join(self) -> None:
        assert self.channel_name is not None
        self._joined_at = time.monotonic()
        self._generation = layers.generation(self.layer)
        await self.layer.group_add(HUB_GROUP, self.channel_name)

    # --- reading -----------------------------------------------------------------------------------------

    async def _listen(self) -> None:
        assert self.channel_name is not None
        while True:
            message = await self.layer.receive(self.channel_name)
            event_id = message.get("event_id", 0) if message.get("type") == "event.hint" else 0
            if isinstance(event_id, int) and event_id > max(self.cursor or 0, self._hinted):
                self._hinted = event_id
                self._wake.set()

    async def _read_loop(self) -> None:
        read_at = time.monotonic()
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout=TICK_SECONDS)
            self._wake.clear()
            # Hints that came in while the last read ran may all be covered by it already.
            woken = self._hinted > (self.cursor or 0)
            try:
                # Hints sent while the hub was out of its group are gone: read what they would have announced.
                woken = await self._keep_group() or woken
                every = POLL_SECONDS if layers.available(self.layer) else DEGRADED_POLL_SECONDS
                if woken or time.monotonic() - read_at >= every:
                    read_at = time.monotonic()
                    await self.read()
            except Exception:
                # This loop is every socket's source of events: a database hiccup must not end it.
                logger.exception("event hub: read failed")

    async def _keep_group(self) -> bool:
        """Re-join HUB_GROUP when the layer came back from an outage or a flush (True then), and now and then."""
        if not layers.available(self.layer) or layers.generation(self.layer) != self._generation:
            # While the layer is down this join is the probe that tells it Redis is back.
            await self._join()
            return True
        if time.monotonic() - self._joined_at >= GROUP_REFRESH_SECONDS:
            await self._join()
        return False

    async def read(self) -> None:
        """Read every event after the cursor, a batch at a time, and offer each batch to the sockets."""
        while self.cursor is not None:
            rows, placements = await database_sync_to_async(_events_after)(self.cursor)
            self.reads += 1
            if rows:
                before = self.cursor
                self._append(rows, placements)
                await self._offer(rows, before)
            if len(rows) < READ_BATCH:
                return

    def _append(self, rows: Sequence[BufferedEvent], placements: dict[int, access.Placement]) -> None:
        self.placements.update(placements)
        self.buffer.extend(rows)
        self._ids.extend(row.id for row in rows)
        self.cursor = rows[-1].id
        excess = len(self.buffer) - BUFFER_EVENTS
        if excess > 0:
            self.floor = self._ids[excess - 1]
            del self.buffer[:excess]
            del self._ids[:excess]
            if len(self.placements) > 2 * BUFFER_EVENTS:
                kept = {row.conversation_id for row in self.buffer}
                self.placements = {k: v for k, v in self.placements.items() if k in kept}

    async def _offer(self, rows: Sequence[BufferedEvent], before: int) -> None:
        """Offer new rows to the sockets they may concern. A socket that had everything up to `before` and to which
        none of the rows is addressed (by inbox, team or user) only moves its cursor: most agents see a few teams of
        many, and visiting them all was most of a busy hub's time."""
        newest = self.cursor or 0
        addressed = Addressed(
            inbox_ids={r.inbox_id for r in rows if r.inbox_id is not None},
            team_ids={r.team_id for r in rows if r.team_id is not None},
            user_ids={r.user_id for r in rows if r.user_id is not None},
        )
        for subscriber in list(self.subscribers):
            if subscriber.cursor is None or subscriber.cursor >= newest or subscriber.closing:
                continue
            if subscriber.hub_skip(addressed, before=before, newest=newest):
                continue
            try:
                await subscriber.hub_offer()
            except Exception:
                logger.exception("event hub: a socket failed to take its events")

    # --- serving a socket --------------------------------------------------------------------------------

    def serves(self, cursor: int) -> bool:
        """Whether the buffer holds every event after `cursor` that has been read (else: read the database)."""
        return self.cursor is not None and cursor >= self.floor

    def serve(self, visibility: access.EventVisibility, cursor: int) -> Served:
        """The events after `cursor` that `visibility` may see, as one frame; call only when serves(cursor)."""
        assert self.cursor is not None
        start = bisect.bisect_right(self._ids, cursor)
        rows = self.buffer[start:]
        if not rows:
            return Served(frame=None, last_id=max(cursor, self.cursor), events=0)
        parts: list[str] = []
        withdrawn: set[int] = set()
        last_sent = 0
        for row in rows:
            placement = self.placements.get(row.conversation_id) if row.conversation_id is not None else None
            verdict = visibility.delivery(
                event_type=row.type,
                inbox_id=row.inbox_id,
                team_id=row.team_id,
                user_id=row.user_id,
                conversation_id=row.conversation_id,
                placement=placement,
            )
            if verdict is access.Delivery.SEND:
                parts.append(row.json)
                last_sent = row.id
            elif verdict is access.Delivery.WITHDRAW and row.conversation_id not in withdrawn:
                assert row.conversation_id is not None
                withdrawn.add(row.conversation_id)
                parts.append(
                    json.dumps(
                        {"id": row.id, "type": "conversation", "op": "remove", "conversation_id": row.conversation_id}
                    )
                )
                last_sent = row.id
        last_id = rows[-1].id
        if not parts:
            return Served(frame=None, last_id=last_id, events=0)
        frame = f'{{"type": "events", "events": [{", ".join(parts)}], "last_event_id": {last_sent}}}'
        return Served(frame=frame, last_id=last_id, events=len(parts))

    # --- access ------------------------------------------------------------------------------------------

    async def _recheck_loop(self) -> None:
        while True:
            await asyncio.sleep(ACCESS_RECHECK_SECONDS)
            try:
                await self.recheck()
            except Exception:
                logger.exception("event hub: access re-check failed")

    async def recheck(self) -> None:
        """Re-check every socket's session and access in one batch of queries, and hand each its answer."""
        subscribers = [s for s in self.subscribers if not s.closing]
        if not subscribers:
            return
        inputs = [s.access_inputs() for s in subscribers]
        answers = await database_sync_to_async(access.staff_and_visibility_for_sessions)(
            [session_key for session_key, _, _ in inputs]
        )
        for subscriber, (session_key, _, _) in zip(subscribers, inputs, strict=True):
            user, visibility = answers.get(session_key or "", (None, None))
            await subscriber.access_checked(user, visibility)


def _max_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def _events_after(cursor: int) -> tuple[list[BufferedEvent], dict[int, access.Placement]]:
    rows = list(
        Event.objects.filter(id__gt=cursor)
        .order_by("id")
        .values_list("id", "type", "op", "payload", "inbox_id", "team_id", "user_id", "conversation_id")[:READ_BATCH]
    )
    buffered = [
        BufferedEvent(
            id=pk,
            type=type_,
            inbox_id=inbox_id,
            team_id=team_id,
            user_id=user_id,
            conversation_id=conversation_id,
            json=json.dumps({"id": pk, "type": type_, "op": op, **payload}),
        )
        for pk, type_, op, payload, inbox_id, team_id, user_id, conversation_id in rows
    ]
    placements = access.placements_of({row.conversation_id for row in buffered if row.conversation_id is not None})
    return buffered, placements


# One hub per event loop and channel layer: Daphne has one loop; tests start a loop per test.
_hubs: dict[tuple[int, int], EventHub] = {}


async def subscribe(layer: BaseChannelLayer, subscriber: Subscriber) -> EventHub:
    """The process's hub for this layer (started if need be), with `subscriber` among its sockets.

    Finding the hub and joining it happen without an await in between, so a hub whose last socket is leaving
    is either joined before it could stop or already forgotten."""
    key = (id(asyncio.get_running_loop()), id(layer))
    hub = _hubs.get(key)
    if hub is None:
        hub = _hubs[key] = EventHub(layer)
        hub.loop_key = key
    await hub._subscribe(subscriber)
    return hub


def _forget(hub: EventHub) -> None:
    if hub.loop_key is not None and _hubs.get(hub.loop_key) is hub:
        del _hubs[hub.loop_key]


def hubs() -> Iterable[EventHub]:
    return list(_hubs.values())

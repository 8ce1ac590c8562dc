"""The widgets' safety net, once per server process: what every open widget may have missed, in one read.

Hints are best effort (the channel layer may drop one, or be down for a while), so a widget also reads the event
table now and then without one. Each widget socket used to do that on its own every 20 s: 500 open chats cost 25
reads a second (three queries and a cache call each) while nobody typed, and a widget whose threads were quiet
read past everything the hospital had written since its own last event, every time. Now each server process has
one WidgetPoller on its event loop (as it has one EventHub for the staff's sockets, contactcenter.fanout). Every
IDLE_CATCH_UP_SECONDS (DEGRADED_CATCH_UP_SECONDS while the channel layer cannot carry hints) it reads, in one
thread hop:
- the newest event id, first: the horizon;
- the threads of every open widget's visitor, in one query (staff may have opened a new one);
- the events of all those threads after the oldest widget's cursor, up to the horizon, in one query;
and keeps every open widget's presence alive in one round trip. Each socket then takes, in memory, its own
threads' events after its cursor, follows any new thread, and moves its cursor to the horizon.

Why a cursor may move to the horizon: events commit in id order (contactcenter.events), so every event up to the
horizon had committed when the horizon was read, and so had its thread (a conversation is written in or before the
transaction of its first event), which the read of threads, made after it, therefore found. Nothing a socket may
see up to the horizon is left out; and a socket's next read (a hint's) starts from there, not from its last own
event.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Protocol

from channels.layers import BaseChannelLayer

from channels_adapters.webchat import limits, selectors
from channels_adapters.webchat.hops import db_hop
from channels_adapters.webchat.models import WebVisitor
from contactcenter import layers

logger = logging.getLogger(__name__)

IDLE_CATCH_UP_SECONDS = 20.0
# While the channel layer cannot carry hints (Redis restarting), the widgets are read for this often.
DEGRADED_CATCH_UP_SECONDS = 2.0
# How often the poller looks whether a read is due or the layer came back (nothing is read unless one is).
TICK_SECONDS = 1.0
# Rows per read: a read cut short is complete up to its last row, and the next one goes on from there.
READ_LIMIT = 5000


class Polled(Protocol):
    """What the poller needs of a widget socket (consumer.WidgetConsumer)."""

    def poll_input(self) -> tuple[WebVisitor, int] | None:
        """The socket's visitor and cursor, or None before a chat started (or once it is closing)."""

    async def polled(self, conversation_ids: list[int], found: selectors.ThreadEvents) -> None:
        """The read's answer: the visitor's threads now, and every thread's events up to the horizon."""

    async def rejoin_groups(self) -> int:
        """Join the socket's groups again (the layer lost them, or may have); how many it joined."""


@dataclass(frozen=True)
class Poll:
    threads: dict[int, list[int]]  # visitor pk → their threads now
    found: selectors.ThreadEvents


def read_for(visits: list[tuple[WebVisitor, int]]) -> Poll:
    """The poll's one hop: presence, the horizon, every visitor's threads, and their events up to the horizon."""
    limits.widgets_alive([visitor.visitor_id for visitor, _ in visits])
    horizon = selectors.last_event_id()
    threads = selectors.conversation_ids_of_visitors([visitor for visitor, _ in visits])
    followed = {conversation_id for ids in threads.values() for conversation_id in ids}
    oldest = min(cursor for _, cursor in visits)
    return Poll(threads, selectors.thread_events(followed, oldest, horizon, READ_LIMIT))


class WidgetPoller:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.layer = layer
        self.loop = asyncio.get_running_loop()
        self.widgets: set[Polled] = set()
        self.reads = 0
        self._task: asyncio.Task[None] | None = None
        self.loop_key: tuple[int, int] | None = None

    def add(self, widget: Polled) -> None:
        self.widgets.add(widget)
        if self._task is None:
            self._task = asyncio.ensure_future(self._run())

    def discard(self, widget: Polled) -> None:
        self.widgets.discard(widget)
        if not self.widgets:
            self.stop()

    def stop(self) -> None:
        if self.loop_key is not None and _pollers.get(self.loop_key) is self:
            del _pollers[self.loop_key]
        if self._task is not None:
            self._task.cancel()
            self._task = None

    async def _run(self) -> None:
        generation = layers.generation(self.layer)
        waited = 0.0
        while True:
            await asyncio.sleep(TICK_SECONDS)
            waited += TICK_SECONDS
            back = layers.generation(self.layer) != generation
            up = layers.available(self.layer)
            if not (back or waited >= (IDLE_CATCH_UP_SECONDS if up else DEGRADED_CATCH_UP_SECONDS)):
                continue
            try:
                if not up:
                    await self._probe()
                generation, waited = layers.generation(self.layer), 0.0
                if back:
                    # A join may have been skipped during the outage, or the groups lost with Redis's data.
                    for widget in list(self.widgets):
                        await widget.rejoin_groups()
                await self.poll()
            except Exception:
                # Every widget's safety net: a database or cache hiccup must not end it.
                logger.exception("web chat poller: read failed")

    async def _probe(self) -> None:
        # One socket's joins, not every socket's: one that goes through tells the layer Redis is back (see
        # contactcenter.layers), and then every socket joins again.
        for widget in list(self.widgets):
            if await widget.rejoin_groups():
                return

    async def poll(self) -> None:
        """Read once for every open widget of this process, and hand each socket its part."""
        widgets: list[Polled] = []
        visits: list[tuple[WebVisitor, int]] = []
        for widget in list(self.widgets):
            visit = widget.poll_input()
            if visit is not None:
                widgets.append(widget)
                visits.append(visit)
        if not visits:
            return
        poll = await db_hop(read_for)(visits)
        self.reads += 1
        answers = await asyncio.gather(
            *(
                widget.polled(poll.threads.get(visitor.pk, []), poll.found)
                for widget, (visitor, _cursor) in zip(widgets, visits, strict=True)
            ),
            return_exceptions=True,
        )
        for answer in answers:
            if isinstance(answer, BaseException):
                logger.error("web chat poller: a socket failed to take its events", exc_info=answer)


# One poller per event loop and channel layer: Daphne has one loop; tests start a loop per test.
_pollers: dict[tuple[int, int], WidgetPoller] = {}


def poller_for(layer: BaseChannelLayer) -> WidgetPoller:
    key = (id(asyncio.get_running_loop()), id(layer))
    poller = _pollers.get(key)
    if poller is None or poller.loop is not asyncio.get_running_loop():
        # (A loop that closed with widgets still open, whose id a new loop took: start afresh.)
        poller = _pollers[key] = WidgetPoller(layer)
        poller.loop_key = key
    return poller


def pollers() -> list[WidgetPoller]:
    return list(_pollers.values())

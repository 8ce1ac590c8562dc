"""Web chat: 500 concurrent widget sockets talking to agents, as ratios to a ping on the same Daphne.

    .venv/bin/python -m bench.webchat            # from the repository root; 500 widgets at 25 msg/s; ~4 minutes
    .venv/bin/python -m bench.webchat --rate 50  # the same at 50 msg/s: beyond one process's capacity here
    .venv/bin/python -m bench.webchat --quick    # 60 widgets at 5 msg/s, short phases; about 1 minute

Starts its own PostgreSQL and Redis on loopback (tests/services.py), migrates, creates a team with a web
chat inbox (auto-assign on, agents' capacity sized to take every chat; its allowed origin is the clients'
Origin header), online agents with API tokens and sessions and a supervisor, and serves config.asgi with
one Daphne process (bench.settings: production settings plus /bench/trivial/; channels_redis, the psycopg
pool) and one Celery worker for deliveries, as docs/production.md runs them. Every client comes from
127.0.0.1, so the per-IP web chat limits are raised through the environment (the per-visitor limit only if
the offered rate needs it). Then, from one asyncio process using the `websockets` package:

1. an /ws/agent/ socket per staff member (the supervisor sees everything, agents see the inbox through
   their team), and a warm-up: a few chats through every path (start, message, REST reply, read, resume);
2. --visitors /ws/webchat/<token>/ sockets connect (welcome), fill in the pre-chat form (start → session
   → ready) and send a first message (→ ack): the conversation opens and is auto-assigned. Daphne's RSS
   (/proc) and Redis's data set are read idle, with every socket connected, and with every chat started;
3. an idle window: what the open chats cost when nobody types (the reads without a hint, every 20 s, that
   make good a hint the channel layer lost);
4. baselines: {"op": "ping"} → pong on the widget sockets at --rate, and a trivial POST with a reply's
   headers and body at --reply-rate;
5. traffic, open loop: visitors send --rate messages/s in all (round robin) while agents reply through
   the REST API (POST /api/v1/conversations/<id>/messages/ with their token) at --reply-rate to a
   --reply-share sample of the conversations; widgets send read receipts as widget.js does. Timed from
   each due time: visitor message → message.add on every agent socket, → its ack on the widget; reply →
   the reply on the visitor's widget. A few probe sockets that never start a chat are pinged meanwhile:
   what any frame waits for under the load (Daphne's event loop, and whatever thread a frame is handed to:
   Channels' own dispatch runs close_old_connections on the process's one sync thread before every handler);
6. drops: every event an agent or a widget may see that had not arrived once nothing more arrived for
   --grace seconds (live path); then every socket reconnects and resyncs from its last event id (agents:
   resync; widgets: resume, as widget.js does) and whatever is still missing; every widget reconnects once
   more (memory growth that repeats is a per-connection leak);
7. the ping baseline again (spread), then the database: every acknowledged message stored exactly once,
   every reply stored and delivered; and the servers' logs (PostgreSQL's too: deadlocks).

Exit status 0 when the run completed and nothing was missing after resync, nothing arrived twice or out
of order, and every database check passed (a missed target, a live-path drop or an overloaded server is
reported as MISS, not an error); 1 otherwise; 130 when interrupted. See bench/README.md.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import resource
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import warnings
from collections import Counter, deque
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http import Response
from bench.load import Request, paced, percentile, start_py_spy
from bench.procs import CpuMeter, CpuSnapshot, Daphne, fast_stop_postgres, postmaster_pid
from bench.realtime_fanout import (
    Listener,
    LoopLag,
    Staff,
    bounded,
    events_after,
    expected_events,
    log_problems,
    over_capacity,
    session_cookie,
    settle,
)
from bench.sms_inbound import bench_env, migrate, progress

ROOT = Path(__file__).resolve().parent.parent
ORIGIN = "https://www.kanghua-hospital.example"  # the hospital site the widget is embedded in
TRIVIAL_PATH = "/bench/trivial/"
CONNECT_CONCURRENCY = 25  # widgets connecting, starting or resuming at once (a burst of page loads)
FRAME_TIMEOUT = 60.0
WARM_WIDGETS = 8
PROBES = 5  # widget sockets that stay at "welcome": pinged during the traffic, they have no work of their own queued
PRODUCT_VISITOR_LIMIT = 20  # settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR's default
GOAL_RATE = 25.0  # issue 15, goal 4: visitor messages acknowledged per second by one Daphne process
UNLIMITED = "1000000"
MiB = 1024 * 1024


# ---------------------------------------------------------------------------------------------------
# The world: a team with a web chat inbox, agents with API tokens and sessions, a supervisor
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    team_id: int
    inbox_id: int
    public_token: str
    staff: list[Staff]  # agents first, then supervisors
    api_tokens: dict[int, str]  # agent user id → REST API token
    capacity: int


def create_world(*, agents: int, supervisors: int, capacity: int) -> World:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from contactcenter.models import AgentProfile, Availability, ChannelType, Inbox, Role, Team

    team = Team.objects.create(code="bench-webchat", name="Patient service center", name_zh="客服中心")
    inbox = Inbox.objects.create(
        name="Website chat",
        channel_type=ChannelType.WEBCHAT,
        team=team,
        auto_assign=True,
        config={
            "allowed_origins": [ORIGIN],
            "title": {"en": "Chat with us", "zh-hans": "在线咨询"},
            "consent_text": {"en": "I agree to the privacy notice.", "zh-hans": "我同意隐私声明。"},
        },
    )
    unusable = make_password(None)  # sessions and tokens are made directly: no password hashing
    staff: list[Staff] = []
    tokens: dict[int, str] = {}
    for i in range(agents + supervisors):
        supervisor = i >= agents
        user = User.objects.create(username=f"bench-{'supervisor' if supervisor else 'agent'}{i}", password=unusable)
        profile = AgentProfile.objects.create(
            user=user,
            role=Role.SUPERVISOR if supervisor else Role.AGENT,
            availability=Availability.ONLINE,
            capacity=capacity,
            display_name=f"Supervisor {i - agents}" if supervisor else f"Agent {i}",
        )
        if not supervisor:
            profile.teams.add(team)
            tokens[user.pk] = Token.objects.create(user=user).key
        staff.append(
            Staff(
                user_id=user.pk,
                supervisor=supervisor,
                team_ids=frozenset() if supervisor else frozenset({team.pk}),
                inbox_ids=frozenset() if supervisor else frozenset({inbox.pk}),
                cookie=session_cookie(user),
                home_team=team.pk,  # one team: the fan-out bench's broadcast baseline is not used here
            )
        )
    return World(team.pk, inbox.pk, inbox.public_token, staff, tokens, capacity)


@dataclass(frozen=True)
class Visit:
    """What the database says about one started widget: its visitor and its (single) conversation."""

    visitor_pk: int
    conversation_ids: list[int]
    assignee_id: int | None


def visits_of(inbox_id: int, tokens: dict[int, str]) -> dict[int, Visit]:
    """Widget index → Visit, from the signed visitor tokens the widgets were given (in a worker thread)."""
    from django.db import connections

    from channels_adapters.webchat import selectors
    from channels_adapters.webchat.identity import unsign_visitor
    from contactcenter.models import Conversation, Inbox

    try:
        inbox = Inbox.objects.get(pk=inbox_id)
        out: dict[int, Visit] = {}
        for index, token in tokens.items():
            visitor_id = unsign_visitor(inbox=inbox, token=token)
            visitor = selectors.visitor_by_id(inbox=inbox, visitor_id=visitor_id) if visitor_id else None
            if visitor is None:
                raise RuntimeError(f"widget {index}: its visitor token names no visitor")
            ids = selectors.conversation_ids_of(visitor)
            assignee = Conversation.objects.filter(pk__in=ids).order_by("-id").values_list("assignee_id", flat=True)
            out[index] = Visit(visitor.pk, ids, assignee.first())
        return out
    finally:
        connections.close_all()


def widget_expectations(items: dict[int, tuple[list[int], int]]) -> dict[int, set[int]]:
    """Widget index → every event id it may see after its first cursor, by the widget's own selector."""
    from django.db import connections

    from channels_adapters.webchat.selectors import widget_events

    try:
        return {
            index: {e["id"] for e in widget_events(conversation_ids, cursor, 10**7)[0]}
            for index, (conversation_ids, cursor) in items.items()
        }
    finally:
        connections.close_all()


def message_add_events(after_id: int) -> list[tuple[int, int, str, str]]:
    """(event id, message id, direction, provider message id) of every message.add after `after_id`."""
    from django.db import connections

    from contactcenter.models import Event

    try:
        rows = Event.objects.filter(id__gt=after_id, type="message", op="add").values_list(
            "id", "payload__message__id", "payload__message__direction", "payload__message__provider_message_id"
        )
        return [(int(a), int(b), str(c), str(d or "")) for a, b, c, d in rows]
    finally:
        connections.close_all()


# ---------------------------------------------------------------------------------------------------
# The widget's socket, as widget.js speaks it
# ---------------------------------------------------------------------------------------------------


class WidgetError(RuntimeError):
    pass


class Widget:
    """One visitor's /ws/webchat/<token>/ socket. Timestamps every event id and message id on arrival."""

    def __init__(self, index: int, port: int, public_token: str, *, read_receipts: bool) -> None:
        self.index = index
        self.url = f"ws://127.0.0.1:{port}/ws/webchat/{public_token}/"
        self.read_receipts = read_receipts
        self.visitor_token: str | None = None
        self.start_cursor: int | None = None
        self.last_event_id: int | None = None  # as widget.js keeps it
        self.max_seen = 0
        self.received: dict[int, float] = {}  # event id → first arrival
        self.message_at: dict[int, float] = {}  # message id → first arrival as an event
        self.acks: dict[str, tuple[float, int]] = {}  # client id → (arrival, message id)
        self.errors: list[dict[str, Any]] = []
        self.duplicates = 0
        self.out_of_order = 0
        self.frames = 0
        self.read_up_to = 0
        self.reads_sent = 0
        self.server_closes: list[int | None] = []
        self.refused: set[str] = set()  # client ids answered with an error frame
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pongs: deque[asyncio.Future[float]] = deque()
        self._ack_waiters: dict[str, asyncio.Future[float]] = {}
        self._closing = False

    # --- connecting ---------------------------------------------------------------------------------

    async def connect(self) -> float:
        """Open the socket and read the welcome frame; seconds taken."""
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        loop = asyncio.get_running_loop()
        started = loop.time()
        self._closing = False
        self._ws = await connect(
            self.url,
            origin=Origin(ORIGIN),
            compression=None,  # browsers offer permessage-deflate; Daphne declines it, so this is what they get
            max_size=None,
            ping_interval=None,  # browsers send no protocol pings (Daphne's own pings are answered)
            open_timeout=FRAME_TIMEOUT,
            proxy=None,
        )
        frame = await self._recv()
        if frame.get("type") != "welcome":
            raise WidgetError(f"expected welcome, got {frame}")
        return loop.time() - started

    def listen(self) -> None:
        """Read frames from now on (a widget that never starts a chat: its pongs still need a reader)."""
        if self._task is None:
            self._task = asyncio.ensure_future(self._read(self._ws))

    async def start(self, form: dict[str, Any]) -> float:
        """The pre-chat form: start → session → ready. Seconds taken; the reader runs afterwards."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self._ws.send(json.dumps({"op": "start", "form": form}))
        await self._until_ready()
        return loop.time() - started

    async def resume(self, timeout: float) -> float:
        """Reconnect and resume from the last event id, as widget.js does after any close."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.close()
        await self.connect()
        await self._ws.send(
            json.dumps({"op": "resume", "visitor_token": self.visitor_token, "last_event_id": self.last_event_id})
        )
        await self._until_ready()
        await self.ping(timeout)  # frames are handled in order: the catch-up before it is done
        return loop.time() - started

    async def _until_ready(self) -> None:
        while True:
            frame = await self._recv()
            kind = frame.get("type")
            if kind == "session":
                self.visitor_token = str(frame["visitor_token"])
            elif kind == "ready":
                cursor = int(frame["last_event_id"])
                if self.start_cursor is None:
                    self.start_cursor = self.max_seen = cursor
                self.last_event_id = cursor
                break
            elif kind == "error":
                raise WidgetError(f"widget {self.index}: {frame}")
        self._task = asyncio.ensure_future(self._read(self._ws))

    async def _recv(self) -> dict[str, Any]:
        frame = json.loads(await asyncio.wait_for(self._ws.recv(), FRAME_TIMEOUT))
        self.frames += 1
        if not isinstance(frame, dict):
            raise WidgetError(f"not a JSON object: {frame!r}")
        return frame

    # --- talking ------------------------------------------------------------------------------------

    async def say(self, client_id: str, body: str) -> None:
        await self._ws.send(json.dumps({"op": "message", "body": body, "client_id": client_id}))

    async def say_and_wait(self, client_id: str, body: str, timeout: float) -> float:
        """Send a message and wait for its ack; seconds taken."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[float] = loop.create_future()
        self._ack_waiters[client_id] = waiter
        started = loop.time()
        await self.say(client_id, body)
        return await asyncio.wait_for(waiter, timeout) - started

    async def ping(self, timeout: float) -> float:
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[float] = loop.create_future()
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late pong's fate is retrieved
        self._pongs.append(waiter)
        sent = loop.time()
        await self._ws.send('{"op": "ping"}')
        return await asyncio.wait_for(asyncio.shield(waiter), timeout) - sent

    # --- reading ------------------------------------------------------------------------------------

    async def _read(self, ws: Any) -> None:
        from websockets.exceptions import ConnectionClosed

        loop = asyncio.get_running_loop()
        try:
            async for raw in ws:
                now = loop.time()
                self.frames += 1
                frame = json.loads(raw)
                kind = frame.get("type")
                if kind == "events":
                    await self._on_events(ws, frame, now)
                elif kind == "ack":
                    client_id = str(frame.get("client_id"))
                    self.acks.setdefault(client_id, (now, int(frame["message_id"])))
                    ack_waiter = self._ack_waiters.pop(client_id, None)
                    if ack_waiter is not None and not ack_waiter.done():
                        ack_waiter.set_result(now)
                elif kind == "pong":
                    if self._pongs:
                        waiter = self._pongs.popleft()
                        if not waiter.done():
                            waiter.set_result(now)
                elif kind == "error":
                    self.errors.append(frame)
                    if frame.get("client_id") is not None:
                        self.refused.add(str(frame["client_id"]))
                    ack_waiter = self._ack_waiters.pop(str(frame.get("client_id")), None)
                    if ack_waiter is not None and not ack_waiter.done():
                        ack_waiter.set_exception(WidgetError(f"widget {self.index}: {frame}"))
        except ConnectionClosed:
            pass
        finally:
            if not self._closing:
                self.server_closes.append(ws.close_code)
            while self._pongs:
                waiter = self._pongs.popleft()
                if not waiter.done():
                    waiter.set_exception(ConnectionError("socket closed"))

    async def _on_events(self, ws: Any, frame: dict[str, Any], now: float) -> None:
        newest_staff_message = 0
        for event in frame.get("events") or []:
            event_id = int(event["id"])
            if event_id in self.received:
                self.duplicates += 1
                continue
            if event_id < self.max_seen:
                self.out_of_order += 1
            self.max_seen = max(self.max_seen, event_id)
            self.received[event_id] = now
            if event.get("kind") == "message":
                message = event["message"]
                self.message_at.setdefault(int(message["id"]), now)
                if message.get("from") == "hospital":
                    newest_staff_message = max(newest_staff_message, int(message["id"]))
        last = frame.get("last_event_id")
        if isinstance(last, int):
            self.last_event_id = last
        # widget.js sendRead(): the newest staff message seen, once per new one, while the chat is open.
        if self.read_receipts and newest_staff_message > self.read_up_to:
            self.read_up_to = newest_staff_message
            self.reads_sent += 1
            await ws.send(json.dumps({"op": "read", "message_id": newest_staff_message}))

    @property
    def reading(self) -> bool:
        return self._task is not None and not self._task.done()

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._ws = self._task = None


def pre_chat_form(index: int) -> dict[str, Any]:
    """Distinct valid mainland mobiles; a third of the visitors use the Chinese page."""
    return {
        "name": f"Visitor {index}",
        "phone": f"+86139{index:08d}",
        "email": "",
        "consent": True,
        "language": "zh-hans" if index % 3 == 0 else "en",
    }


class CeleryWorker:
    """`celery -A config worker` as docs/production.md runs it (deliveries of the agents' replies)."""

    def __init__(self, *, concurrency: int, env: dict[str, str], log: Path) -> None:
        self.concurrency = concurrency
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child for its whole life
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info"]
        command += ["--concurrency", str(self.concurrency), "--without-gossip", "--without-mingle"]
        self.proc = subprocess.Popen(
            command, cwd=ROOT, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline and self.proc.poll() is None:
            if " ready." in self.log.read_text(errors="replace"):
                return
            time.sleep(0.2)
        raise RuntimeError(f"the Celery worker did not start:\n{self.log.read_text(errors='replace')[-3000:]}")

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()  # warm shutdown: finish the task at hand
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


# ---------------------------------------------------------------------------------------------------
# Measuring: memory from /proc and Redis, CPU, a calm server
# ---------------------------------------------------------------------------------------------------


def rss_bytes(pid: int) -> int:
    """VmRSS of a live process."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    return 0


def redis_used_memory(url: str) -> int:
    import redis

    client = redis.Redis.from_url(url)
    try:
        # The data set alone: used_memory also counts client buffers, which swing with whatever is in flight.
        return int(client.info("memory")["used_memory_dataset"])
    finally:
        client.close()


@dataclass(frozen=True)
class Memory:
    daphne: int
    redis: int


async def calm(meter: CpuMeter, *, busy_below: float, limit: float = 20.0) -> None:
    """Wait until the servers use under `busy_below` CPUs (averaged over 0.5 s), or `limit` seconds passed.

    With hundreds of widgets open the servers are never quite idle (the reads without a hint, every 20 s),
    so the threshold is the measured idle load plus a margin, not bench.load.quiesce's fixed tenth.
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last = meter.snapshot()
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        now = meter.snapshot()
        busy = sum(v for k, v in now.minus(last).items() if k != "client") / (now.at - last.at)
        last = now
        if busy < busy_below:
            return


@dataclass
class Window:
    """CPU seconds per side over a stretch of time, and the rest of the machine's."""

    seconds: float
    cpu: dict[str, float]
    other: float  # CPU seconds of processes this run did not start

    @staticmethod
    def between(a: CpuSnapshot, b: CpuSnapshot) -> Window:
        cpu = b.minus(a)
        return Window(b.at - a.at, cpu, max(0.0, b.machine - a.machine - sum(cpu.values())))

    def cores(self, side: str) -> float:
        return self.cpu.get(side, 0.0) / self.seconds if self.seconds > 0 else 0.0

    def servers(self) -> float:
        return sum(v for k, v in self.cpu.items() if k != "client")


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    widget: int
    due: float
    failed: bool = False  # the socket was gone when it was due


@dataclass
class Results:
    visitors: int
    opened: int
    connect_s: list[float]
    start_s: list[float]
    first_ack_s: list[float]
    open_failures: Counter[str]
    open_wall: float
    start_wall: float
    start_window: Window
    memory: dict[str, Memory]
    idle: Window
    idle_daphne: list[float]  # Daphne's cores, second by second, in the idle window
    ping_before: list[float]
    ping_after: list[float]
    ping_failed: int
    ping_window: Window
    trivial_rtt: list[float]
    load_ping: list[float]
    load_ping_failures: Counter[str]
    probe_closes: list[int | None]
    # traffic
    sent: dict[str, Sent]
    window_start: float
    window_end: float
    traffic: Window
    replies_due: dict[str, float]
    replies_to: dict[str, int]
    reply_ids: dict[str, int]
    reply_statuses: Counter[int]
    reply_answered: dict[str, float]
    reply_failed: int
    reply_conversations: int
    # deliveries
    message_events: list[tuple[int, int, str, str]]
    agent_expected: dict[int, set[int]]
    agent_live: dict[int, dict[int, float]]
    widget_expected: dict[int, set[int]]
    widget_live: dict[int, dict[int, float]]
    widget_message_live: dict[int, dict[int, float]]
    grace_used: float
    resync_agent_s: list[float]
    resync_widget_s: list[float]
    resync_failed: int
    resync_errors: Counter[str]
    drain_seconds: float  # after the traffic, until every visitor message was answered
    agent_final: dict[int, set[int]]  # event ids each agent socket had after the resync
    widget_final: dict[int, set[int]]
    widget_message_final: dict[int, set[int]]
    acks: dict[str, float]  # client id → ack arrival on the widget
    sockets: SocketStats
    lag: list[float]
    checks: list[tuple[str, bool, str]] = field(default_factory=list)


@dataclass
class SocketStats:
    frames: int = 0
    duplicates: int = 0
    out_of_order: int = 0
    reads_sent: int = 0
    closes: Counter[str] = field(default_factory=Counter)  # "widget 1006", "agent 4403", …
    errors: Counter[str] = field(default_factory=Counter)  # error frames by code

    @staticmethod
    def of(widgets: list[Widget], listeners: list[Listener]) -> SocketStats:
        stats = SocketStats()
        for w in widgets:
            stats.frames += w.frames
            stats.duplicates += w.duplicates
            stats.out_of_order += w.out_of_order
            stats.reads_sent += w.reads_sent
            stats.closes.update(f"widget {code}" for code in w.server_closes)
            stats.errors.update(f"widget {e.get('code')}" for e in w.errors)
        for listener in listeners:
            stats.frames += listener.frames
            stats.duplicates += listener.duplicates
            stats.out_of_order += listener.out_of_order
            stats.closes.update(f"agent {code}" for code in listener.server_closes)
            stats.errors.update(f"agent {e.get('code')}" for e in listener.errors)
        return stats


class Run:
    """The phases, in order. Everything it opens is closed in run()'s finally."""

    def __init__(
        self, world: World, port: int, args: argparse.Namespace, meter: CpuMeter, redis_url: str, daphne_pid: int
    ) -> None:
        self.world = world
        self.port = port
        self.args = args
        self.meter = meter
        self.redis_url = redis_url
        self.daphne_pid = daphne_pid
        self.rng = random.Random(args.seed)
        self.listeners = [Listener(staff, port) for staff in world.staff]
        self.widgets = [
            Widget(i, port, world.public_token, read_receipts=not args.no_read) for i in range(args.visitors)
        ]
        self.probes = [Widget(-100 - i, port, world.public_token, read_receipts=False) for i in range(PROBES)]
        self.idle_cores = 0.0
        self.ping_failures: Counter[str] = Counter()  # by exception: TimeoutError (10 s), ConnectionError, …
        self.load_ping_failures: Counter[str] = Counter()
        self.profilers: list[subprocess.Popen[bytes]] = []

    async def memory(self) -> Memory:
        return Memory(rss_bytes(self.daphne_pid), await asyncio.to_thread(redis_used_memory, self.redis_url))

    async def calm(self, limit: float = 20.0) -> None:
        await calm(self.meter, busy_below=0.15 + 1.2 * self.idle_cores, limit=limit)

    def reply_request(self, conversation_id: int, agent_id: int, key: str, target: str | None = None) -> Request:
        body = json.dumps({"body": f"Thank you, we have your message; a nurse will call you today. ({key})"}).encode()
        headers = [("Content-Type", "application/json"), ("Authorization", f"Token {self.world.api_tokens[agent_id]}")]
        return "POST", target or f"/api/v1/conversations/{conversation_id}/messages/", body, headers, key

    def answering_agent(self, visit: Visit) -> int:
        """The conversation's assignee; anyone of the team if it is queued (the reply assigns it to them)."""
        agents = sorted(self.world.api_tokens)
        if visit.assignee_id in self.world.api_tokens:
            return visit.assignee_id
        return agents[visit.conversation_ids[-1] % len(agents)]

    async def run(self) -> Results:
        lag = LoopLag()
        lag.start()
        try:
            return await self._phases(lag)
        finally:
            for profiler in self.profilers:
                if profiler.poll() is None:
                    profiler.kill()
            await lag.stop()
            await asyncio.gather(
                *(w.close() for w in [*self.widgets, *self.probes]),
                *(x.close() for x in self.listeners),
                return_exceptions=True,
            )

    async def _phases(self, lag: LoopLag) -> Results:
        args, loop = self.args, asyncio.get_running_loop()
        progress(f"  opening {len(self.listeners)} agent sockets …")
        await asyncio.gather(*(listener.open(None) for listener in self.listeners))
        agent_cursor = min(listener.start_cursor or 0 for listener in self.listeners)

        progress(f"  warm-up: {WARM_WIDGETS} widgets chat, get a reply through the REST API, and leave …")
        await self.warm_up()
        for probe in self.probes:
            await probe.connect()
            probe.listen()
        await self.calm(30)
        memory = {"idle": await self.memory()}

        progress(f"  connecting {len(self.widgets)} widgets (welcome only), {CONNECT_CONCURRENCY} at a time …")
        failures: Counter[str] = Counter()
        connect_s: dict[int, float] = {}

        async def connect_one(widget: Widget) -> None:
            try:
                connect_s[widget.index] = await widget.connect()
            except Exception as exc:
                failures[f"connect: {type(exc).__name__}: {str(exc)[:80]}"] += 1

        started = loop.time()
        await bounded(self.widgets, CONNECT_CONCURRENCY, connect_one)
        open_wall = loop.time() - started
        await self.calm()
        memory["connected"] = await self.memory()

        progress("  each widget: pre-chat form (start → ready), then a first message (→ ack) …")
        start_s: dict[int, float] = {}
        first_ack_s: dict[int, float] = {}

        async def start_one(widget: Widget) -> None:
            if widget.index not in connect_s:
                return
            try:
                start_s[widget.index] = await widget.start(pre_chat_form(widget.index))
                body = "Hello, I would like to change my appointment. 你好，我想改预约时间。"
                first_ack_s[widget.index] = await widget.say_and_wait(f"hello-{widget.index}", body, FRAME_TIMEOUT)
            except Exception as exc:
                failures[f"start: {type(exc).__name__}: {str(exc)[:120]}"] += 1

        before = self.meter.snapshot()
        started = loop.time()
        await bounded(self.widgets, CONNECT_CONCURRENCY, start_one)
        start_wall = loop.time() - started
        start_window = Window.between(before, self.meter.snapshot())
        live = [w for w in self.widgets if w.index in first_ack_s]
        if not live:
            raise RuntimeError(f"no widget completed the start flow: {dict(failures)}")
        await self.calm()
        memory["started"] = await self.memory()

        idle_daphne: list[float] = []
        if args.idle_seconds > 0:
            progress(f"  idle: {len(live)} open chats, nobody typing, for {args.idle_seconds:g} s …")
            before = last = self.meter.snapshot()
            deadline = loop.time() + args.idle_seconds
            while loop.time() < deadline:  # second by second: the widgets' catch-ups come in bursts
                await asyncio.sleep(min(1.0, max(0.0, deadline - loop.time())))
                now = self.meter.snapshot()
                step = Window.between(last, now)
                if step.seconds > 0.5:
                    idle_daphne.append(step.cores("daphne"))
                last = now
            idle = Window.between(before, last)
            self.idle_cores = idle.servers() / idle.seconds
        else:
            idle = Window(0.0, {}, 0.0)

        progress(f"  baseline: widget ping → pong at {args.rate:g}/s for {args.baseline_seconds:g} s …")
        before = self.meter.snapshot()
        ping_before, failed1 = await self.pings(live, args.rate, args.baseline_seconds)
        ping_window = Window.between(before, self.meter.snapshot())
        await self.calm()
        progress(f"  baseline: trivial POST with a reply's headers and body at {args.reply_rate:g}/s …")
        agent0 = sorted(self.world.api_tokens)[0]

        def trivial() -> tuple[Request, str]:
            key = secrets.token_hex(6)
            return self.reply_request(0, agent0, key, TRIVIAL_PATH), key

        trivial_run = await paced(
            trivial,
            lambda _t, _r: None,
            host="127.0.0.1",
            port=self.port,
            rate=args.reply_rate,
            seconds=args.baseline_seconds,
            pool_size=args.pool,
        )
        await self.calm()

        visits = await asyncio.to_thread(visits_of, self.world.inbox_id, {w.index: str(w.visitor_token) for w in live})
        sample = self.rng.sample(live, max(1, round(args.reply_share * len(live))))
        progress(
            f"  traffic: visitors {args.rate:g} msg/s, agents reply at {args.reply_rate:g}/s to {len(sample)} "
            f"conversations, {args.warmup:g} s warm-up + {args.seconds:g} s measured …"
        )
        traffic = await self.traffic(live, sample, visits)
        window_start, window_end, sent, reply_run, reply_ids, replies_to, tw, load_ping = traffic

        # An overloaded server still holds a backlog: every message sent must be answered (ack or error) before
        # what is missing can be told from what is late. Frames may stop arriving for seconds meanwhile.
        by_index = {w.index: w for w in live}

        def unanswered() -> int:
            return sum(
                1
                for cid, sent_one in sent.items()
                if not sent_one.failed
                and cid not in by_index[sent_one.widget].acks
                and cid not in by_index[sent_one.widget].refused
                and by_index[sent_one.widget].reading
            )

        drain_started = loop.time()
        if unanswered():
            progress(f"  draining the server's backlog: {unanswered()} visitor messages not answered yet …")
            reported = loop.time()
            while unanswered() and loop.time() - drain_started < args.drain_limit:
                await asyncio.sleep(0.5)
                if loop.time() - reported >= 30:
                    progress(f"    … {unanswered()} still not answered")
                    reported = loop.time()
        drain_seconds = loop.time() - drain_started

        # Deliveries: what each socket may see, from the database, then wait for the stragglers.
        progress(f"  waiting for the last deliveries (until {args.grace:g} s without any) …")
        widget_items = {w.index: (visits[w.index].conversation_ids, w.start_cursor or 0) for w in live}

        async def expectations() -> tuple[dict[int, set[int]], dict[int, set[int]]]:
            stored = await asyncio.to_thread(events_after, agent_cursor)
            return expected_events(self.listeners, stored), await asyncio.to_thread(widget_expectations, widget_items)

        def done(agents: dict[int, set[int]], widgets: dict[int, set[int]]) -> Callable[[], bool]:
            def check() -> bool:
                return all(ids <= self.listeners[i].received.keys() for i, ids in agents.items()) and all(
                    ids <= self.widgets[i].received.keys() for i, ids in widgets.items()
                )

            return check

        def progress_count() -> int:
            return sum(len(x.received) for x in self.listeners) + sum(len(w.received) for w in live)

        grace_used = 0.0
        for _round in range(2):  # read receipts sent late add events: look again once they have settled
            agent_expected, widget_expected = await expectations()
            grace_used += await settle(
                done(agent_expected, widget_expected), progress_count, quiet=args.grace, limit=args.grace_limit
            )
        agent_live = {i: dict(listener.received) for i, listener in enumerate(self.listeners)}
        widget_live = {w.index: dict(w.received) for w in live}
        widget_message_live = {w.index: dict(w.message_at) for w in live}
        message_events = await asyncio.to_thread(message_add_events, agent_cursor)
        memory["after traffic"] = await self.memory()

        progress("  every socket reconnects and resyncs from its last event id (widgets: resume) …")
        resync_failed = 0
        resync_errors: Counter[str] = Counter()

        async def resync_listener(listener: Listener) -> float | None:
            nonlocal resync_failed
            try:
                return await listener.resync(FRAME_TIMEOUT)
            except Exception:
                resync_failed += 1
                return None

        async def resync_widget(widget: Widget) -> float | None:
            nonlocal resync_failed
            try:
                return await widget.resume(FRAME_TIMEOUT)
            except Exception as exc:
                resync_failed += 1
                resync_errors[f"{type(exc).__name__}: {str(exc)[:100]}"] += 1
                return None

        agent_resync = await bounded(self.listeners, CONNECT_CONCURRENCY, resync_listener)
        widget_resync = await bounded(live, CONNECT_CONCURRENCY, resync_widget)
        await self.calm()
        memory["after resync"] = await self.memory()
        agent_final = {i: set(listener.received) for i, listener in enumerate(self.listeners)}
        widget_final = {w.index: set(w.received) for w in live}
        widget_message_final = {w.index: set(w.message_at) for w in live}

        progress("  memory: every widget reconnects once more (growth again would be a per-connection leak) …")
        await bounded(live, CONNECT_CONCURRENCY, resync_widget)
        await self.calm()
        memory["after 2nd reconnect"] = await self.memory()

        progress(f"  baseline again: widget ping → pong at {args.rate:g}/s …")
        ping_after, failed2 = await self.pings(live, args.rate, args.baseline_seconds)

        results = Results(
            visitors=len(self.widgets),
            opened=len(live),
            connect_s=list(connect_s.values()),
            start_s=list(start_s.values()),
            first_ack_s=list(first_ack_s.values()),
            open_failures=failures,
            open_wall=open_wall,
            start_wall=start_wall,
            start_window=start_window,
            memory=memory,
            idle=idle,
            idle_daphne=idle_daphne,
            ping_before=ping_before,
            ping_after=ping_after,
            ping_failed=failed1 + failed2,
            ping_window=ping_window,
            trivial_rtt=trivial_run.answer_times(),
            load_ping=load_ping,
            load_ping_failures=self.load_ping_failures,
            probe_closes=[code for probe in self.probes for code in probe.server_closes],
            sent=sent,
            window_start=window_start,
            window_end=window_end,
            traffic=tw,
            replies_due=dict(reply_run.sent_at),
            replies_to=replies_to,
            reply_ids=reply_ids,
            reply_statuses=reply_run.statuses,
            reply_answered=dict(reply_run.answered),
            reply_failed=reply_run.errors + reply_run.timeouts,
            reply_conversations=len(sample),
            message_events=message_events,
            agent_expected=agent_expected,
            agent_live=agent_live,
            widget_expected=widget_expected,
            widget_live=widget_live,
            widget_message_live=widget_message_live,
            grace_used=grace_used,
            resync_agent_s=[s for s in agent_resync if s is not None],
            resync_widget_s=[s for s in widget_resync if s is not None],
            resync_failed=resync_failed,
            resync_errors=resync_errors,
            drain_seconds=drain_seconds,
            agent_final=agent_final,
            widget_final=widget_final,
            widget_message_final=widget_message_final,
            acks={cid: at for w in live for cid, (at, _mid) in w.acks.items()},
            sockets=SocketStats.of(live, self.listeners),
            lag=lag.between(window_start, window_end),
        )
        results.checks = await asyncio.to_thread(verify, self.world, results, live)
        return results

    async def warm_up(self) -> None:
        """A few chats through every path (start, message, REST reply, read, resume), so lazy imports, the
        pool's connections and Daphne's first threads are in place before any memory is read."""
        warm = [
            Widget(-1 - i, self.port, self.world.public_token, read_receipts=not self.args.no_read)
            for i in range(WARM_WIDGETS)
        ]
        try:
            for widget in warm:
                await widget.connect()
                await widget.start(pre_chat_form(10**7 + widget.index))
                await widget.say_and_wait(f"warm{widget.index}", "Hello?", FRAME_TIMEOUT)
            visits = await asyncio.to_thread(
                visits_of, self.world.inbox_id, {w.index: str(w.visitor_token) for w in warm}
            )
            from bench.http import Connection

            conn = Connection("127.0.0.1", self.port)
            try:
                for widget in warm:
                    visit = visits[widget.index]
                    method, target, body, headers, _ = self.reply_request(
                        visit.conversation_ids[-1], self.answering_agent(visit), "warm-up"
                    )
                    response = await conn.request(method, target, body, headers)
                    if response.status != 201:
                        raise RuntimeError(f"reply refused: {response.status} {response.body[:300]!r}")
                    reply_id = int(json.loads(response.body)["id"])
                    deadline = asyncio.get_running_loop().time() + FRAME_TIMEOUT
                    while reply_id not in widget.message_at and asyncio.get_running_loop().time() < deadline:
                        await asyncio.sleep(0.02)
                    if reply_id not in widget.message_at:
                        raise RuntimeError("warm-up reply never reached its widget")
            finally:
                conn.close()
            for widget in warm:
                await widget.resume(FRAME_TIMEOUT)
                await widget.ping(FRAME_TIMEOUT)
        finally:
            await asyncio.gather(*(w.close() for w in warm), return_exceptions=True)

    async def pings(self, widgets: list[Widget], rate: float, seconds: float) -> tuple[list[float], int]:
        """Open-loop pings, spread over the widgets: ping i is sent at t0 + i/rate."""
        loop = asyncio.get_running_loop()
        tasks: list[asyncio.Task[float]] = []
        t0 = loop.time() + 0.05
        order = self.rng.sample(widgets, len(widgets))
        for i in range(max(1, int(rate * seconds))):
            await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
            tasks.append(asyncio.ensure_future(order[i % len(order)].ping(10)))
        results = await asyncio.gather(*tasks, return_exceptions=True)
        rtts = [r for r in results if isinstance(r, float)]
        self.ping_failures.update(type(r).__name__ for r in results if not isinstance(r, float))
        return rtts, len(results) - len(rtts)

    async def traffic(
        self, live: list[Widget], sample: list[Widget], visits: dict[int, Visit]
    ) -> tuple[float, float, dict[str, Sent], Any, dict[str, int], dict[str, int], Window, list[float]]:
        args, loop = self.args, asyncio.get_running_loop()
        total_seconds = args.warmup + args.seconds
        t0 = loop.time() + 0.1
        window_start, window_end = t0 + args.warmup, t0 + total_seconds
        sent: dict[str, Sent] = {}
        salt = secrets.token_hex(3)

        async def visitors() -> None:
            from websockets.exceptions import ConnectionClosed

            order = self.rng.sample(live, len(live))
            for i in range(max(1, round(args.rate * total_seconds))):
                due = t0 + i / args.rate
                delay = due - loop.time()
                if delay > 0:
                    await asyncio.sleep(delay)
                widget = order[i % len(order)]
                client_id = f"{salt}-{i:07d}"
                sent[client_id] = Sent(widget.index, due)
                try:
                    await widget.say(client_id, f"Can I come on Friday morning instead? 周五上午可以吗？ ({client_id})")
                except (ConnectionClosed, AttributeError):
                    sent[client_id].failed = True

        replies_to: dict[str, int] = {}
        reply_ids: dict[str, int] = {}
        targets = [(w.index, visits[w.index]) for w in self.rng.sample(sample, len(sample))]
        counter = iter(range(10**9))

        def next_reply() -> tuple[Request, str]:
            n = next(counter)
            index, visit = targets[n % len(targets)]
            key = f"reply-{salt}-{n:06d}"
            replies_to[key] = index
            return self.reply_request(visit.conversation_ids[-1], self.answering_agent(visit), key), key

        def on_reply(key: Any, response: Response) -> None:
            if response.status == 201:
                reply_ids[str(key)] = int(json.loads(response.body)["id"])

        load_ping: list[float] = []
        load_ping_failures = self.load_ping_failures

        async def pings_under_load() -> None:
            if args.load_ping_rate <= 0:
                return
            await asyncio.sleep(max(0.0, window_start - loop.time()))
            before = Counter(self.ping_failures)
            rtts, failed = await self.pings(self.probes, args.load_ping_rate, args.seconds)
            load_ping.extend(rtts)
            load_ping.extend([math.inf] * failed)
            load_ping_failures.update(self.ping_failures - before)

        snapshots: list[CpuSnapshot] = []

        async def meter_window() -> None:
            for at in (window_start, window_end):
                await asyncio.sleep(max(0.0, at - loop.time()))
                snapshots.append(self.meter.snapshot())
                if at == window_start:
                    profiler = start_py_spy(args.py_spy, self.daphne_pid, args.seconds)
                    if profiler is not None:
                        self.profilers.append(profiler)

        async def replies() -> Any:
            await asyncio.sleep(max(0.0, t0 - loop.time()))
            return await paced(
                next_reply,
                on_reply,
                host="127.0.0.1",
                port=self.port,
                rate=args.reply_rate,
                seconds=total_seconds,
                pool_size=args.pool,
            )

        _, reply_run, _, _ = await asyncio.gather(visitors(), replies(), pings_under_load(), meter_window())
        window = Window.between(snapshots[0], snapshots[1])
        return window_start, window_end, sent, reply_run, reply_ids, replies_to, window, load_ping


def verify(world: World, r: Results, live: list[Widget]) -> list[tuple[str, bool, str]]:
    """From the database: every acknowledged message and every accepted reply stored exactly once."""
    from django.db import connections
    from django.db.models import Count

    from contactcenter.models import Event, Message, MessageDirection, MessageStatus

    try:
        checks: list[tuple[str, bool, str]] = []
        inbound = Message.objects.filter(inbox_id=world.inbox_id, direction=MessageDirection.INBOUND)
        stored = {
            str(pid).split("-", 2)[2]: mid
            for pid, mid in inbound.filter(provider_message_id__startswith="wc-").values_list(
                "provider_message_id", "id"
            )
        }
        duplicated = inbound.values("provider_message_id").annotate(n=Count("id")).filter(n__gt=1).count()
        acked = {cid: ack[1] for w in live for cid, ack in w.acks.items() if cid in r.sent}
        wrong = sum(1 for cid, mid in acked.items() if stored.get(cid) != mid)
        unacked = [cid for cid in r.sent if cid not in acked]
        stored_unacked = sum(1 for cid in unacked if cid in stored)
        checks.append(
            (
                "visitor messages: every ack names the one stored message, nothing stored twice",
                wrong == 0 and duplicated == 0,
                f"{len(r.sent)} sent, {len(acked)} acked, {wrong} acked but not stored as acked, {duplicated} "
                f"stored twice; not acked {len(unacked)} ({stored_unacked} of them stored)",
            )
        )
        outbound = Message.objects.filter(inbox_id=world.inbox_id, direction=MessageDirection.OUTBOUND)
        ok = set(r.reply_ids.values())
        found = set(outbound.filter(pk__in=ok).values_list("id", flat=True))
        checks.append(
            (
                "replies: every reply answered 201 stored, no other answer",
                found == ok and set(r.reply_statuses) <= {201},
                f"{len(r.replies_due)} posted, {len(ok)} answered 201 and stored {len(found)}; other answers "
                f"{dict(r.reply_statuses - Counter({201: r.reply_statuses[201]})) or 0}; unanswered within 15 s "
                f"{r.reply_failed} (a MISS above, not an error)",
            )
        )
        statuses = Counter(outbound.filter(pk__in=ok).values_list("status", flat=True))
        unsettled = sum(n for status, n in statuses.items() if status in (MessageStatus.QUEUED, MessageStatus.SENDING))
        checks.append(
            (
                "replies: every reply delivered (none left queued or sending)",
                unsettled == 0,
                f"statuses of the {len(ok)} replies: {dict(sorted(statuses.items()))}",
            )
        )
        messages = Message.objects.filter(inbox_id=world.inbox_id).count()
        adds = Event.objects.filter(type="message", op="add", inbox_id=world.inbox_id).count()
        checks.append(("message.add events = messages", adds == messages, f"{adds} events, {messages} messages"))
        return checks
    finally:
        connections.close_all()


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def fmt_ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    if math.isnan(value):
        return "n/a"
    return "∞" if math.isinf(value) else f"{value:.1f} ms"


def ratio(a: float, b: float) -> str:
    if not b or math.isnan(a) or math.isnan(b) or math.isinf(b):
        return ""
    return "∞" if math.isinf(a) else f"{a / b:.1f}×"


def kib(n: float) -> str:
    return f"{n / 1024:.1f} KiB"


def table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  " + "  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def postgres_problems(path: Path) -> list[str]:
    """ERROR lines of PostgreSQL's log (deadlocks, serialization failures), with their DETAIL lines."""
    if not path.exists():
        return []
    found: list[str] = []
    for line in path.read_text(errors="replace").splitlines():
        if line.startswith("\t") or any(f" {k}: " in line for k in ("ERROR", "DETAIL", "CONTEXT", "STATEMENT")):
            found.append(line.strip()[:300])
    return found


def print_report(
    r: Results, world: World, args: argparse.Namespace, daphne_log: Path, pg_log: Path, worker_log: Path
) -> bool:
    cpus = os.cpu_count() or 1
    n_agents = sum(1 for s in world.staff if not s.supervisor)
    n_sup = len(world.staff) - n_agents

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    def in_window(due: float) -> bool:
        return r.window_start <= due < r.window_end

    # Visitor → agents: one latency per (agent socket, message) pair; a pair that never arrived is ∞, so an
    # overloaded server is not flattered by its survivors.
    client_of_event = {
        event_id: provider_id.split("-", 2)[2]
        for event_id, _mid, direction, provider_id in r.message_events
        if direction == "in" and provider_id.startswith("wc-") and provider_id.count("-") >= 2
    }
    visitor_lat: list[float] = []
    agent_pairs = agent_missing_live = agent_missing_after = 0
    messages_missing_live: set[str] = set()
    messages_missing_after: set[str] = set()
    for i, ids in r.agent_expected.items():
        agent_pairs += len(ids)
        for event_id in ids:
            at = r.agent_live[i].get(event_id)
            cid = client_of_event.get(event_id)
            if at is None:
                agent_missing_live += 1
                if cid is not None:
                    messages_missing_live.add(cid)
            if event_id not in r.agent_final[i]:
                agent_missing_after += 1
                if cid is not None:
                    messages_missing_after.add(cid)
            if cid is not None and cid in r.sent and in_window(r.sent[cid].due):
                visitor_lat.append(math.inf if at is None else 1000 * (at - r.sent[cid].due))
    stored_cids = set(client_of_event.values())
    measured = [cid for cid, s in r.sent.items() if in_window(s.due)]
    visitor_lat += [math.inf] * (sum(1 for cid in measured if cid not in stored_cids) * len(world.staff))
    ack_lat = [1000 * (r.acks[cid] - r.sent[cid].due) if cid in r.acks else math.inf for cid in measured]
    not_acked = sum(1 for cid in r.sent if cid not in r.acks)

    # Agent reply → the visitor's widget.
    reply_lat: list[float] = []
    answer_lat: list[float] = []
    replies_missing_live = replies_missing_after = 0
    for key, due in r.replies_due.items():
        mid = r.reply_ids.get(key)
        index = r.replies_to[key]
        at = r.widget_message_live[index].get(mid) if mid is not None else None
        if mid is not None and at is None:
            replies_missing_live += 1
        if mid is not None and mid not in r.widget_message_final[index]:
            replies_missing_after += 1
        if in_window(due):
            reply_lat.append(math.inf if at is None else 1000 * (at - due))
            answer_lat.append(1000 * (r.reply_answered[key] - due) if key in r.reply_answered else math.inf)
    replies_accepted = len(r.reply_ids)
    replies_measured = sum(1 for due in r.replies_due.values() if in_window(due))

    widget_pairs = sum(len(ids) for ids in r.widget_expected.values())
    widget_missing_live = sum(len(ids - r.widget_live[i].keys()) for i, ids in r.widget_expected.items())
    widget_missing_after = sum(len(ids - r.widget_final[i]) for i, ids in r.widget_expected.items())

    ping_ms = [1000 * x for x in r.ping_before + r.ping_after]
    before_ms, after_ms = [1000 * x for x in r.ping_before], [1000 * x for x in r.ping_after]
    trivial_ms = [1000 * x for x in r.trivial_rtt]
    load_ping_ms = [1000 * x for x in r.load_ping]

    print()
    print(
        f"Web chat — {r.opened} of {r.visitors} widget sockets (pre-chat form and a first message each) and "
        f"{len(world.staff)} agent sockets ({n_agents} agents of the inbox's team, capacity {world.capacity} each; "
        f"{n_sup} supervisor{'s' if n_sup != 1 else ''}) on 1 Daphne process; channels_redis on Redis; PostgreSQL "
        f"(psycopg pool {args.db_pool}); replies delivered "
        + (f"by a Celery worker (concurrency {args.workers})" if args.tasks == "celery" else "inside Daphne's request")
        + f"; {cpus} CPUs shared with whatever else runs"
    )
    print(
        f"load, open loop: visitors' messages at {args.rate:g}/s in all ({args.rate / max(1, r.opened):.3g}/s per "
        f"visitor, round robin); agents' replies through the REST API at {args.reply_rate:g}/s to "
        f"{r.reply_conversations} conversations; read receipts {'off' if args.no_read else 'on'}; "
        f"{args.seconds:g} s measured after {args.warmup:g} s warm-up"
    )
    print(
        f"opening: {r.opened} chats, {CONNECT_CONCURRENCY} at a time — connect → welcome p50 "
        f"{fmt_ms([1000 * x for x in r.connect_s], 50)}, p99 {fmt_ms([1000 * x for x in r.connect_s], 99)} "
        f"({r.open_wall:.1f} s for all); start → ready p50 {fmt_ms([1000 * x for x in r.start_s], 50)}, p99 "
        f"{fmt_ms([1000 * x for x in r.start_s], 99)}; first message → ack p50 "
        f"{fmt_ms([1000 * x for x in r.first_ack_s], 50)}, p99 {fmt_ms([1000 * x for x in r.first_ack_s], 99)} "
        f"({r.start_wall:.1f} s for all: {r.opened / r.start_wall if r.start_wall else 0:.0f} chats/s)"
        + (f"; failures {dict(r.open_failures)}" if r.open_failures else "")
    )
    spread = (
        abs(percentile(after_ms, 50) - percentile(before_ms, 50)) / percentile(ping_ms, 50) if ping_ms else math.nan
    )
    print("baselines, same run, same Daphne, same sockets:")
    print(
        f"  widget ping → pong at {args.rate:g}/s: before p50 {fmt_ms(before_ms, 50)} p99 {fmt_ms(before_ms, 99)}, "
        f"after p50 {fmt_ms(after_ms, 50)} p99 {fmt_ms(after_ms, 99)} (p50 spread {spread:.0%}"
        f"{'  ← unsteady machine: re-run' if spread > 0.3 else ''}; {r.ping_failed} unanswered)"
    )
    print(
        f"  trivial POST with a reply's headers and body ({TRIVIAL_PATH}) at {args.reply_rate:g}/s: p50 "
        f"{fmt_ms(trivial_ms, 50)}, p99 {fmt_ms(trivial_ms, 99)}"
    )
    if load_ping_ms:
        print(
            f"  ping during the measured traffic at {args.load_ping_rate:g}/s on {PROBES} widget sockets without a chat "
            f"(what any frame waits for under the load: Daphne's loop, and whatever thread a frame is handed to): "
            f"p50 {fmt_ms(load_ping_ms, 50)}, p99 {fmt_ms(load_ping_ms, 99)}"
            + (f"; failed {dict(r.load_ping_failures)}" if r.load_ping_failures else "")
            + (f"; probes closed by the server {r.probe_closes}" if r.probe_closes else "")
        )
    print()

    target = args.p99_target_ms
    rows: list[tuple[str, ...]] = []
    for q in (50, 95, 99):
        rows.append(
            (
                f"visitor → agent socket p{q}",
                fmt_ms(visitor_lat, q),
                f"ping {fmt_ms(ping_ms, q)}",
                ratio(percentile(visitor_lat, q), percentile(ping_ms, q)),
                (f"< {target:g} ms  {verdict(percentile(visitor_lat, 99) < target)}" if target else "(no target set)")
                if q == 99
                else "",
            )
        )
    for q in (50, 99):
        rows.append(
            (
                f"visitor message → its ack p{q}",
                fmt_ms(ack_lat, q),
                f"ping {fmt_ms(ping_ms, q)}",
                ratio(percentile(ack_lat, q), percentile(ping_ms, q)),
                "",
            )
        )
    for q in (50, 95, 99):
        rows.append(
            (
                f"agent reply → visitor's widget p{q}",
                fmt_ms(reply_lat, q),
                f"POST {fmt_ms(trivial_ms, q)}",
                ratio(percentile(reply_lat, q), percentile(trivial_ms, q)),
                (f"< {target:g} ms  {verdict(percentile(reply_lat, 99) < target)}" if target else "(no target set)")
                if q == 99
                else "",
            )
        )
    rows += [
        (
            f"dropped visitor → agents, live ({args.grace:g} s quiet)",
            f"{agent_missing_live} / {agent_pairs} pairs",
            f"{len(messages_missing_live)} messages",
            "",
            f"= 0  {verdict(agent_missing_live == 0)}",
        ),
        (
            "  still missing after resync",
            f"{agent_missing_after} / {agent_pairs} pairs",
            f"{len(messages_missing_after)} messages",
            "",
            f"= 0  {verdict(agent_missing_after == 0)}",
        ),
        (
            "dropped replies → widget, live",
            f"{replies_missing_live} / {replies_accepted}",
            "",
            "",
            f"= 0  {verdict(replies_missing_live == 0)}",
        ),
        (
            "  still missing after resume",
            f"{replies_missing_after} / {replies_accepted}",
            "",
            "",
            f"= 0  {verdict(replies_missing_after == 0)}",
        ),
        (
            "widget events (messages, statuses, seen), live",
            f"{widget_missing_live} / {widget_pairs} missing",
            "",
            "",
            f"= 0  {verdict(widget_missing_live == 0)}",
        ),
        (
            "  still missing after resume",
            f"{widget_missing_after} / {widget_pairs}",
            "",
            "",
            f"= 0  {verdict(widget_missing_after == 0)}",
        ),
        (
            "visitor messages not acked",
            f"{not_acked} / {len(r.sent)}",
            "",
            "",
            f"= 0  {verdict(not_acked == 0)}",
        ),
        (
            "replies not answered 201",
            f"{len(r.replies_due) - replies_accepted} / {len(r.replies_due)}",
            "",
            "",
            f"= 0  {verdict(len(r.replies_due) == replies_accepted)}",
        ),
    ]
    table(("figure", "measured", "baseline", "ratio", "target"), rows)
    slices: dict[int, list[float]] = {}
    for i, ids in r.agent_expected.items():
        for event_id in ids:
            cid = client_of_event.get(event_id)
            if cid is None or cid not in r.sent or not in_window(r.sent[cid].due):
                continue
            at = r.agent_live[i].get(event_id)
            slot = int((r.sent[cid].due - r.window_start) // 5)
            slices.setdefault(slot, []).append(math.inf if at is None else 1000 * (at - r.sent[cid].due))
    print(
        "  visitor → agent p95 by 5 s of the window (a spike every 20 s would be the reads without a hint): "
        + ", ".join(fmt_ms(slices[k], 95) for k in sorted(slices))
    )
    seconds = r.window_end - r.window_start
    acked_in_window = sum(1 for at in r.acks.values() if r.window_start <= at < r.window_end)
    answered_in_window = sum(1 for at in r.reply_answered.values() if r.window_start <= at < r.window_end)
    done_in_window = acked_in_window + answered_in_window  # under overload, not what was due in it
    acked_rate, answered_rate = acked_in_window / seconds, answered_in_window / seconds
    behind = acked_rate < 0.95 * args.rate or answered_rate < 0.95 * args.reply_rate
    print(
        f"  throughput in the window: {acked_rate:.1f} visitor messages acked/s of {args.rate:g}/s offered, "
        f"{answered_rate:.1f} replies answered/s of {args.reply_rate:g}/s"
        + ("  ← the server fell behind: the latencies above are mostly queueing" if behind else "")
        + (f"; its backlog took {r.drain_seconds:.0f} s to drain after the traffic" if r.drain_seconds >= 1 else "")
    )
    if target:
        # Issue 15, goal 4: what one Daphne process sustains with the agents' screens still live.
        goal = acked_rate >= GOAL_RATE and percentile(visitor_lat, 99) < target
        print(
            f"  goal: ≥ {GOAL_RATE:g} visitor messages acked/s per Daphne process with p99 visitor → agent < "
            f"{target:g} ms: {acked_rate:.1f}/s, p99 {fmt_ms(visitor_lat, 99)}  "
            + (verdict(goal) if args.rate >= GOAL_RATE else f"(offered {args.rate:g}/s: below the goal's rate)")
        )
    print(
        f"  ({len(measured)} visitor messages and {replies_measured} replies due in the window; drops count every "
        f"one sent, warm-up included; reply HTTP answer p50 {fmt_ms(answer_lat, 50)}, p99 {fmt_ms(answer_lat, 99)})"
    )
    print()

    m = r.memory
    n = max(1, r.opened)
    idle = m["idle"]
    print("memory: Daphne's VmRSS from /proc; Redis's used_memory_dataset (channel layer groups, cache keys)")
    mrows: list[tuple[str, ...]] = []
    for name, label in (
        ("idle", "idle (agents connected, warm-up done)"),
        ("connected", f"{r.opened} sockets connected (welcome only)"),
        ("started", f"{r.opened} chats started (form + first message)"),
        ("after traffic", "after the traffic"),
        ("after resync", "after every socket reconnected once"),
        ("after 2nd reconnect", "after every widget reconnected again"),
    ):
        if name not in m:
            continue
        mrows.append(
            (
                label,
                f"{m[name].daphne / MiB:.1f} MiB",
                f"{(m[name].daphne - idle.daphne) / n / 1024:+.1f} KiB/socket" if name != "idle" else "",
                f"{m[name].redis / MiB:.2f} MiB",
                f"{(m[name].redis - idle.redis) / n / 1024:+.2f} KiB/socket" if name != "idle" else "",
            )
        )
    table(("stage", "Daphne RSS", "vs idle", "Redis", "vs idle"), mrows)
    per_connected = (m["connected"].daphne - idle.daphne) / n
    per_started = (m["started"].daphne - idle.daphne) / n
    growth1 = (m["after resync"].daphne - m["after traffic"].daphne) / n
    growth2 = (m["after 2nd reconnect"].daphne - m["after resync"].daphne) / n
    print(
        f"  → Daphne memory per connection: {kib(per_started)} with a chat started, {kib(per_connected)} for a bare "
        f"connected widget (ratio {ratio(per_started, per_connected) or 'n/a'}); each round of reconnecting every "
        f"widget grew it by {kib(growth1)}, then {kib(growth2)} per socket (a leak keeps growing round after round; "
        f"allocator high-water marks do not)"
    )
    print()

    print("CPU: cores busy in each stretch, and CPU ms per unit of work (client = this load generator)")
    sides = ["daphne", "postgres", "redis", *(["worker"] if args.tasks == "celery" else []), "client"]
    crow: list[tuple[str, ...]] = []
    windows: list[tuple[str, Window, float, str]] = [
        ("start flow", r.start_window, r.opened, "chat started"),
        ("idle", r.idle, r.opened * r.idle.seconds / 60 if r.idle.seconds else 0, "open chat per minute"),
        ("ping baseline", r.ping_window, len(r.ping_before), "ping"),
        ("traffic", r.traffic, done_in_window, "chat message done (acked or answered)"),
    ]
    for name, w, count, unit in windows:
        if w.seconds <= 0:
            continue
        cores = [f"{w.cores(s):.2f}" for s in sides]
        per = [f"{1000 * w.cpu.get(s, 0.0) / count:.2f}" if count else "" for s in sides]
        crow.append((name, f"{w.seconds:.0f} s", *cores, f"{sum(w.cpu.values()) / w.seconds:.2f}", "cores"))
        crow.append(("", "", *per, f"{1000 * sum(w.cpu.values()) / count:.2f}" if count else "", f"ms per {unit}"))
    table(("stretch", "length", *sides, "total", ""), crow)
    idle_cores = r.idle.servers() / r.idle.seconds if r.idle.seconds else 0.0
    if r.idle_daphne:
        busiest = max(r.idle_daphne)
        print(
            f"  idle, second by second: Daphne {min(r.idle_daphne):.2f}–{busiest:.2f} cores (mean "
            f"{statistics.mean(r.idle_daphne):.2f}); {sum(1 for x in r.idle_daphne if x > 0.25)} of "
            f"{len(r.idle_daphne)} seconds above 0.25 (reads without a hint, every 20 s: by each widget from when it "
            f"connected, or by the process for all of them at once)"
        )

    def net_per(w: Window, count: int) -> float:
        return 1000 * max(0.0, w.servers() - idle_cores * w.seconds) / count if count else math.nan

    per_message = net_per(r.traffic, done_in_window)
    per_ping = net_per(r.ping_window, len(r.ping_before))
    print(
        f"  → servers' CPU net of the idle load ({idle_cores:.2f} cores with every chat open): {per_message:.2f} ms "
        f"per chat message, {per_ping:.3f} ms per ping: a message costs {ratio(per_message, per_ping) or 'n/a'} pings"
    )
    others = [w.other / w.seconds for _n, w, _c, _u in windows if w.seconds > 0]
    print(
        f"other work on this machine (processes this run did not start): {' / '.join(f'{o:.2f}' for o in others)} "
        f"CPUs (start / idle / ping / traffic)" + ("  ← busy: figures are noisy" if max(others) > 0.25 * cpus else "")
    )
    lag_ms = [1000 * x for x in r.lag]
    print(
        f"client event loop lag in the window (this process; adds to every latency): p50 {fmt_ms(lag_ms, 50)}, "
        f"p99 {fmt_ms(lag_ms, 99)}, max {fmt_ms(lag_ms, 100)}"
    )
    st = r.sockets
    resync = [1000 * x for x in r.resync_widget_s]
    print(
        f"sockets: {st.frames} frames received; events twice {st.duplicates}, out of order {st.out_of_order}; "
        f"read receipts sent {st.reads_sent}; closed by the server {sum(st.closes.values())}"
        f"{f' {dict(st.closes)}' if st.closes else ''}; error frames {dict(st.errors) if st.errors else 0}; "
        f"resume p50 {fmt_ms(resync, 50)}, p99 {fmt_ms(resync, 99)}, {r.resync_failed} failed"
        f"{f' {dict(r.resync_errors)}' if r.resync_errors else ''}; waited {r.grace_used:.1f} s for live deliveries"
    )
    problems = log_problems([daphne_log, worker_log])
    print(
        f"Daphne and worker logs: {len(problems)} errors; channels_redis messages dropped on full channels: "
        f"{over_capacity(daphne_log) + over_capacity(worker_log)}"
    )
    for line in sorted(set(problems))[:8]:
        print(f"  {line}")
    pg_problems = postgres_problems(pg_log)
    deadlocks = sum(1 for line in pg_problems if "deadlock detected" in line)
    print(f"PostgreSQL log: {sum(1 for x in pg_problems if 'ERROR' in x)} errors, of which {deadlocks} deadlocks")
    for line in pg_problems[:12]:
        print(f"  {line}")
    print()
    server_errors = len(problems) + sum(1 for x in pg_problems if " ERROR: " in x) + st.closes.total()
    r.checks.append(
        (
            "servers: no tracebacks, no PostgreSQL errors, no socket closed by the server",
            server_errors == 0,
            f"{len(problems)} log errors, {deadlocks} deadlocks, {st.closes.total()} sockets closed by the server",
        )
    )
    for name, ok, detail in r.checks:
        print(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")
    complete = agent_missing_after == 0 and replies_missing_after == 0 and widget_missing_after == 0
    return complete and st.duplicates == 0 and st.out_of_order == 0 and all(ok for _n, ok, _d in r.checks)


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.webchat",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Figures and how to read them: bench/README.md.",
    )
    parser.add_argument("--visitors", type=int, default=500, help="widget sockets, each with its own chat (500)")
    parser.add_argument(
        "--rate", type=float, default=25.0, help="visitor messages per second, all together (25: issue 15's goal)"
    )
    parser.add_argument(
        "--seconds",
        type=float,
        default=20.0,
        help="measured seconds of traffic (20; keep the windows multiples of 20 s, the widgets' idle catch-up "
        "period, so the idle load's share in them is what the idle window measured)",
    )
    parser.add_argument("--warmup", type=float, default=5.0, help="traffic seconds before the window (5)")
    parser.add_argument(
        "--reply-rate",
        type=float,
        help="agent replies per second through the REST API, all agents together (rate / 25: 2/s for 4 agents)",
    )
    parser.add_argument("--reply-share", type=float, default=0.2, help="share of conversations replied to (0.2)")
    parser.add_argument("--agents", type=int, default=4, help="online agents of the inbox's team (4)")
    parser.add_argument("--supervisors", type=int, default=1, help="supervisors, who see every event (1)")
    parser.add_argument(
        "--agent-capacity", type=int, help="open conversations per agent (default: room for every visitor)"
    )
    parser.add_argument("--idle-seconds", type=float, default=20.0, help="idle window with every chat open (20)")
    parser.add_argument("--baseline-seconds", type=float, default=20.0, help="ping and trivial POST seconds (20)")
    parser.add_argument(
        "--load-ping-rate", type=float, default=5.0, help="pings per second during the traffic, 0 for none (5)"
    )
    parser.add_argument("--grace", type=float, default=5.0, help="live deliveries end after this many quiet s (5)")
    parser.add_argument(
        "--grace-limit",
        type=float,
        default=300.0,
        help="and at the latest after this, s (300: a backlog still draining is late, not lost)",
    )
    parser.add_argument(
        "--drain-limit", type=float, default=900.0, help="longest wait for an overloaded server's backlog, s (900)"
    )
    parser.add_argument(
        "--p99-target-ms", type=float, default=500.0, help="latency target for both p99 figures (500; 0: none)"
    )
    parser.add_argument("--pool", type=int, default=16, help="HTTP connections for replies (16)")
    parser.add_argument(
        "--db-pool",
        type=int,
        default=10,
        help="DB_POOL_MAX_SIZE for Daphne and the worker (10, as docs/production.md sets it; 0: no pool)",
    )
    parser.add_argument(
        "--tasks",
        choices=("celery", "immediate"),
        default="celery",
        help="where replies are delivered: a Celery worker as in production (celery), or on commit inside "
        "Daphne's request (immediate, as the other benchmarks run)",
    )
    parser.add_argument("--workers", type=int, default=1, help="Celery worker processes (1)")
    parser.add_argument("--no-read", action="store_true", help="widgets send no read receipts")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--py-spy", metavar="FILE", help="profile Daphne with py-spy during the measured traffic")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory (Daphne's log)")
    parser.add_argument(
        "--quick", action="store_true", help="a smoke run: 60 widgets, 5 msg/s, 8 s measured, short phases"
    )
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(
            visitors=60,
            rate=5.0,
            reply_rate=1.0,
            seconds=8.0,
            warmup=2.0,
            idle_seconds=5.0,
            baseline_seconds=4.0,
            grace=3.0,
        )
    args = parser.parse_args(argv)
    if args.reply_rate is None:
        args.reply_rate = args.rate / 25
    if args.visitors < 1 or args.agents < 1 or args.supervisors < 0:
        parser.error("--visitors and --agents must be at least 1, --supervisors at least 0")
    if args.rate <= 0 or args.seconds <= 0 or args.reply_rate <= 0 or not 0 < args.reply_share <= 1:
        parser.error("--rate, --seconds and --reply-rate must be positive, --reply-share in (0, 1]")
    if args.agent_capacity is None:
        args.agent_capacity = min(32767, -(-(args.visitors + WARM_WIDGETS) // args.agents))
    return args


def _terminate(signum: int, _frame: Any) -> None:
    # SIGTERM and SIGHUP unwind like Ctrl-C, through every finally block that stops a process.
    raise KeyboardInterrupt(signal.Signals(signum).name)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    for signum in (signal.SIGTERM, signal.SIGHUP):
        if signal.getsignal(signum) is not signal.SIG_IGN:  # nohup stays nohup
            signal.signal(signum, _terminate)
    try:
        return _run(args)
    except KeyboardInterrupt:
        print("\ninterrupted; everything this run started is stopped and removed", file=sys.stderr)
        return 130


def _close_django_connections() -> None:
    if "django.db" in sys.modules:
        from django.db import connections

        connections.close_all()


def _per_visitor_limit(args: argparse.Namespace) -> int:
    """The product's per-visitor limit, unless the offered rate needs more (first message included)."""
    per_minute = 60 * args.rate / args.visitors + 2
    return PRODUCT_VISITOR_LIMIT if per_minute * 1.5 <= PRODUCT_VISITOR_LIMIT else math.ceil(per_minute * 2)


def _run(args: argparse.Namespace) -> int:
    from tests.services import PostgresServer, RedisServer, free_port

    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    needed = 2 * (args.visitors + WARM_WIDGETS) + 500
    if soft != resource.RLIM_INFINITY and soft < needed:  # both ends of every socket, Daphne inherits it
        resource.setrlimit(
            resource.RLIMIT_NOFILE, (hard if hard == resource.RLIM_INFINITY else min(hard, needed), hard)
        )

    work = Path(tempfile.mkdtemp(prefix="bench-webchat-"))
    log = work / "daphne.log"
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    daphne: Daphne | None = None
    worker: CeleryWorker | None = None
    try:
        progress("starting PostgreSQL and Redis on loopback …")
        pg = PostgresServer()
        database_url = pg.start()
        redis = RedisServer()
        redis_url = redis.start()
        port = free_port()
        env = bench_env(
            port=port, database_url=database_url, redis_url=redis_url, token=secrets.token_hex(16), data_dir=str(work)
        )
        visitor_limit = _per_visitor_limit(args)
        env |= {
            "DB_CONN_MAX_AGE": "0",
            "TASK_RUNNER": args.tasks,
            "DB_POOL_MAX_SIZE": str(args.db_pool),
            # Every client is 127.0.0.1: per-IP limits would otherwise throttle the whole crowd as one visitor.
            "WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP": UNLIMITED,
            "WEBCHAT_MESSAGES_PER_MINUTE_PER_IP": UNLIMITED,
            "WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR": str(visitor_limit),
        }
        os.environ.update(env)
        progress("migrating …")
        migrate({**os.environ, **env}, work / "migrate.log")

        import django

        django.setup()
        import logging

        logging.getLogger().setLevel(logging.WARNING)  # this process only; Daphne logs as in production
        warnings.filterwarnings("ignore", message="No directory at", module="django.core.handlers.base")
        world = create_world(agents=args.agents, supervisors=args.supervisors, capacity=args.agent_capacity)
        _close_django_connections()

        progress(f"serving config.asgi with Daphne on 127.0.0.1:{port} …")
        daphne = Daphne(port=port, env={**os.environ, **env}, cwd=ROOT, log=log)
        daphne.start()
        assert pg.proc is not None and redis.proc is not None
        roots = {"daphne": daphne.pid, "postgres": postmaster_pid(pg.data), "redis": redis.proc.pid}
        if args.tasks == "celery":
            progress(f"starting a Celery worker (concurrency {args.workers}) …")
            worker = CeleryWorker(concurrency=args.workers, env={**os.environ, **env}, log=work / "celery.log")
            worker.start()
            roots["worker"] = worker.pid
        meter = CpuMeter(roots)
        results = asyncio.run(Run(world, port, args, meter, redis_url, daphne.pid).run())
        ok = print_report(results, world, args, log, pg.root / "postgres.log", work / "celery.log")
        if visitor_limit != PRODUCT_VISITOR_LIMIT:
            print(f"(per-visitor limit raised to {visitor_limit}/min for the offered rate; the product's is 20)")
        print(f"\n(total {time.monotonic() - _STARTED:.0f} s; logs {work if args.keep_logs else 'removed'})")
        return 0 if ok else 1
    finally:
        # Each step on its own, and deaf to a second Ctrl-C: one failing stop must not leave the others running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for stop in (
            (lambda: daphne.stop(3.0)) if daphne is not None else None,
            worker.stop if worker is not None else None,
            _close_django_connections,  # PostgreSQL's TERM is a smart shutdown: it would wait for our session
            redis.stop if redis is not None else None,
            (lambda: fast_stop_postgres(pg.data)) if pg is not None else None,
            (lambda: shutil.copy(pg.root / "postgres.log", work)) if pg is not None and args.keep_logs else None,
            pg.stop if pg is not None else None,
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as exc:
                print(f"cleanup: {exc!r}", file=sys.stderr)
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


_STARTED = time.monotonic()

if __name__ == "__main__":
    sys.exit(main())

"""Twilio SMS webhooks under load, as ratios to a trivial view served by the same Daphne in the same run.

    .venv/bin/python -m bench.sms_inbound              # from the repository root; about 3 minutes
    .venv/bin/python -m bench.sms_inbound --scale 1,2  # throughput of 1 and 2 Daphnes on one port

Starts its own PostgreSQL and Redis on loopback (tests/services.py), migrates, creates a team, an SMS
inbox (auto-assign on), online agents and a supervisor, serves config.asgi with `--daphnes` Daphne
processes sharing one listening socket (`daphne --fd`, as docs/production.md's socket activation) and
a Celery worker as docs/production.md runs them (bench.settings only adds /bench/trivial/), drives
them with an asyncio HTTP/1.1 client, and stops everything it started, on errors and Ctrl-C too.

A webhook answers once its record is stored (one INSERT); the worker turns it into the message. So a
message counts as stored when its row is committed, every check first waits for the queue to drain,
and the worker's CPU is counted with the rest. Figures:

1. inbound messages stored/s (window's commits) ÷ trivial POSTs/s, closed loop at a fixed concurrency
   (target ≥ 0.5), and the CPU of every process per message, window start → queue drained (≤ 15 ms);
2. POST → a listening agent's /ws/agent/ socket, p50 and p99, for message.add at a paced 200
   webhooks/s (target p99 < 50 ms, nothing dropped, every webhook answered 200), beside the round
   trip of trivial POSTs at the same pace; and the drain lag, answer → message committed;
3. signed status callbacks/s (sent → delivered) ÷ the same trivial baseline (target ≥ 0.5);
4. SQL statements per inbound, in-process: the webhook request and the worker's processing per message
   at batch sizes 1 and 50 (target ≤ 10 in all for a known sender);
5. overload: paced at 10× figure 1's capacity for 30 s, every webhook answered 200 within 15 s or
   refused with a retryable status, nothing stored twice or half, the backlog drained afterwards.

With --scale 1,2 it instead measures figure 1 (trivial and inbound closed loops) for each number of
Daphnes in turn, on the same port, database and worker. See bench/README.md for how to read it. Exit
status: 0 when the run completed and every consistency check passed (targets may still be missed: the
report says MISS), 1 when a check failed, 130 when interrupted.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import math
import os
import random
import re
import secrets
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import warnings
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

from bench.http import Response
from bench.load import (
    TWILIO_TIMEOUT,
    AgentSocket,
    Paced,
    Request,
    Throughput,
    closed_loop,
    ignore,
    paced,
    percentile,
    quiesce,
    start_py_spy,
)
from bench.procs import (
    CeleryWorker,
    CpuMeter,
    CpuSnapshot,
    DaphnesOnOnePort,
    fast_stop_postgres,
    postmaster_pid,
    thread_count,
)

if TYPE_CHECKING:
    from tests.services import PostgresServer

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "channels_adapters" / "sms" / "fixtures"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
STATUS_PATH = "/webhooks/twilio/sms/status/"
TRIVIAL_PATH = "/bench/trivial/"
INBOX_NUMBER = "+8610123456780"
FORM = "application/x-www-form-urlencoded"
TOKEN_RE = re.compile(r"bench-([0-9a-f]{16})")
THROUGHPUT_TARGET = 0.5  # webhooks/s ÷ trivial POSTs/s, inbound and status alike
LATENCY_TARGET_MS = 50.0  # p99 POST → agent socket at --rate
CPU_TARGET_MS = 15.0  # CPU per inbound message, every server process together (issue 15)
SQL_TARGET = 10  # statements per inbound message from a known sender, request and processing together
RETRYABLE = (429, 503)  # with Retry-After: the provider tries again later; nothing may have been stored
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# Set-up: services, environment, schema, fixtures (synchronous, before and between the load phases)
# ---------------------------------------------------------------------------------------------------


@dataclass
class World:
    base: str
    port: int
    token: str
    account_sid: str
    inbox_id: int
    agent_cookie: str  # session of the agent whose socket is timed (a member of the inbox's team)
    senders: list[str]
    agents: int
    capacity: int


def bench_env(*, port: int, database_url: str, redis_url: str, token: str, data_dir: str) -> dict[str, str]:
    """Production mode (PostgreSQL + Redis, Celery tasks), the Twilio simulator."""
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(40),
        # As in production: the webhook stores its record and a Celery worker turns it into the message.
        "TASK_RUNNER": "celery",
        "TWILIO_TRANSPORT": "simulator",
        "TWILIO_AUTH_TOKEN": token,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATA_DIR": data_dir,
        "DEBUG": "false",
        "SIMULATOR_ENABLED": "false",
    }


def enable_commit_timestamps(pg: PostgresServer, database_url: str) -> None:
    """track_commit_timestamp on (a restart), so each message's commit time can be read back (drain lag).

    A message row carries the webhook's receive time, not when the worker committed it;
    pg_xact_commit_timestamp(xmin) is exactly the moment it became visible to everyone.
    """
    import psycopg

    with psycopg.connect(database_url, autocommit=True) as conn:
        conn.execute("ALTER SYSTEM SET track_commit_timestamp = on")
    pg.restart_fast()
    with psycopg.connect(database_url, autocommit=True) as conn:
        row = conn.execute("SHOW track_commit_timestamp").fetchone()
    if not row or row[0] != "on":
        raise RuntimeError(f"track_commit_timestamp did not take effect: {row}")


def migrate(env: dict[str, str], log: Path) -> None:
    with open(log, "ab") as out:
        subprocess.run(
            [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
            cwd=ROOT,
            env=env,
            check=True,
            stdout=out,
            stderr=subprocess.STDOUT,
        )


def create_world(*, port: int, token: str, senders: int, agents: int, capacity: int | None) -> World:
    """A team with an SMS inbox (auto-assign on), online agents, a supervisor, and an agent's session."""
    from django.contrib.auth.models import User
    from django.test import Client

    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
    from contactcenter.models import AgentProfile, Availability, Role, Team

    team = Team.objects.create(code="bench-outpatients", name="Outpatient service desk", name_zh="门诊服务台")
    account_sid = "AC" + secrets.token_hex(16)
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Outpatient SMS",
            team=team,
            account_sid=account_sid,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[INBOX_NUMBER],
            messaging_service_sid="",
            auto_assign=True,
        ),
    )
    profiles: list[AgentProfile] = []
    for i in range(max(1, agents)):
        user = User.objects.create_user(f"bench-agent{i}", password=secrets.token_urlsafe(12))
        profile = AgentProfile(user=user, role=Role.AGENT, availability=Availability.ONLINE, display_name=f"Agent {i}")
        if capacity is not None:
            profile.capacity = capacity
        profile.save()
        profile.teams.add(team)
        profiles.append(profile)
    supervisor = User.objects.create_user("bench-supervisor", password=secrets.token_urlsafe(12))
    AgentProfile.objects.create(user=supervisor, role=Role.SUPERVISOR, display_name="Supervisor")
    client = Client()
    client.force_login(profiles[0].user)
    cookie = client.cookies["sessionid"].value
    # Distinct valid mainland mobile numbers; each first message creates a patient and a conversation.
    numbers = [f"+86138{10_000_000 + i * 7919:08d}" for i in range(senders)]
    return World(
        base=f"http://127.0.0.1:{port}",
        port=port,
        token=token,
        account_sid=account_sid,
        inbox_id=inbox.pk,
        agent_cookie=cookie,
        senders=numbers,
        agents=len(profiles),
        capacity=profiles[0].capacity,
    )


def precreate_outbound(world: World, count: int) -> list[tuple[int, str]]:
    """Outbound messages already handed to Twilio ("sent", with provider SIDs), spread over conversations."""
    from django.utils import timezone

    from contactcenter.models import Conversation, Message, MessageDirection, MessageStatus, SenderKind

    conversations = list(Conversation.objects.filter(inbox_id=world.inbox_id).values_list("id", flat=True))
    if not conversations:
        raise RuntimeError("no conversations to attach outbound messages to")
    now = timezone.now()
    rows = [
        Message(
            conversation_id=conversations[i % len(conversations)],
            inbox_id=world.inbox_id,
            direction=MessageDirection.OUTBOUND,
            sender_kind=SenderKind.AGENT,
            body="Your appointment is confirmed for Friday 09:30, clinic 3.",
            status=MessageStatus.SENT,
            provider_message_id="SM" + secrets.token_hex(16),
            sent_at=now,
            created_at=now,
            status_changed_at=now,
        )
        for i in range(count)
    ]
    created = Message.objects.bulk_create(rows, batch_size=2000)
    return [(m.pk, str(m.provider_message_id)) for m in created]


# ---------------------------------------------------------------------------------------------------
# Twilio-shaped requests
# ---------------------------------------------------------------------------------------------------


class Twilio:
    """Builds signed webhook posts exactly as Twilio would send them to PUBLIC_BASE_URL."""

    def __init__(self, world: World, seed: int = 7, *, close: bool = False) -> None:
        from twilio.request_validator import RequestValidator

        self.world = world
        # A new connection per request (Connection: close), as behind a proxy that does not keep its upstream
        # connections: the kernel then spreads them over Daphnes sharing a port as they come, instead of
        # each keep-alive connection staying with whichever process accepted it at the start.
        self.close = close
        self.validator = RequestValidator(world.token)
        self.rng = random.Random(seed)
        self.inbound_template = json.loads((FIXTURES / "inbound_plain_text.json").read_text())
        self.status_template = json.loads((FIXTURES / "status_delivered.json").read_text())

    def _post(self, target: str, params: dict[str, str], tag: Any) -> Request:
        signature = self.validator.compute_signature(self.world.base + target, params)
        headers = [
            ("Content-Type", FORM),
            ("X-Twilio-Signature", signature),
            ("User-Agent", "TwilioProxy/1.1"),
            ("I-Twilio-Idempotency-Token", secrets.token_hex(16)),
        ]
        if self.close:
            headers.append(("Connection", "close"))
        return "POST", target, urllib.parse.urlencode(params).encode(), headers, tag

    def inbound(self, *, sender: str | None = None, target: str = INBOUND_PATH) -> tuple[Request, str, str]:
        """A new signed inbound message; returns the request, its MessageSid and its body token."""
        sid = "SM" + secrets.token_hex(16)
        token = secrets.token_hex(8)
        params = dict(self.inbound_template)
        params.update(
            MessageSid=sid,
            SmsSid=sid,
            SmsMessageSid=sid,
            AccountSid=self.world.account_sid,
            From=sender or self.rng.choice(self.world.senders),
            To=INBOX_NUMBER,
            Body=f"Hi, can I move my appointment to Friday? (ref bench-{token})",
        )
        return self._post(target, params, sid), sid, token

    def status(self, message_id: int, sid: str, status: str = "delivered") -> Request:
        params = dict(self.status_template)
        params.update(
            MessageSid=sid,
            SmsSid=sid,
            MessageStatus=status,
            SmsStatus=status,
            AccountSid=self.world.account_sid,
            From=INBOX_NUMBER,
        )
        # Twilio calls back exactly the StatusCallback URL we gave it, our message id included.
        return self._post(f"{STATUS_PATH}?message={message_id}", params, message_id)


_STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:5.1f} s] {text}", flush=True)


def trivial_request(twilio: Twilio) -> Request:
    """The same signed form POST as an inbound webhook (body, headers, signing cost), to the trivial view."""
    request, _sid, _token = twilio.inbound(target=TRIVIAL_PATH)
    return request


# ---------------------------------------------------------------------------------------------------
# The run
# ---------------------------------------------------------------------------------------------------


@dataclass
class Sent:
    """What the client saw of one phase's inbound webhooks, to check against the database afterwards."""

    name: str
    ok: set[str] = field(default_factory=set)  # answered 200
    answered_at: dict[str, float] = field(default_factory=dict)  # MessageSid → time.time() of its 200
    refused: set[str] = field(default_factory=set)  # a retryable status with Retry-After: must store nothing
    other: dict[str, int] = field(default_factory=dict)  # MessageSid → any other status
    in_doubt: set[str] = field(default_factory=set)  # sent, never answered (15 s, or connection lost)

    def on_response(self, sid: Any, response: Response) -> None:
        if response.status == 200:
            self.ok.add(sid)
            self.answered_at[sid] = time.time()
        elif response.status in RETRYABLE and "retry-after" in response.headers:
            self.refused.add(sid)
        else:
            self.other[sid] = response.status

    def other_statuses(self) -> Counter[int]:
        return Counter(self.other.values())


@dataclass
class StatusSent:
    posted: set[int] = field(default_factory=set)
    ok: set[int] = field(default_factory=set)
    other: Counter[int] = field(default_factory=Counter)

    def on_response(self, message_id: Any, response: Response) -> None:
        if response.status == 204:
            self.ok.add(message_id)
        else:
            self.other[response.status] += 1


@dataclass
class Drain:
    """Waiting for the worker to empty the inbound queue."""

    waiting_at_start: int
    seconds: float
    waiting_left: int  # above 0 when the deadline came first
    parked: int

    @property
    def ok(self) -> bool:
        return self.waiting_left == 0 and self.parked == 0


@dataclass
class EndToEnd:
    """A closed loop's webhooks followed to their messages: from the window's start until the queue is empty."""

    stored_in_window: int  # inbound messages committed inside the measured window
    window_seconds: float
    stored_to_drained: int  # … from the window's start until the queue was empty
    seconds_to_drained: float
    cpu: dict[str, float]  # CPU seconds per side over the same stretch
    drain: Drain  # after the window (in-flight answers, then the backlog)

    @property
    def rate(self) -> float:
        """Messages stored per second from the window's start until the queue was empty: figure 1.

        Not the window's own commits alone: the worker commits up to a batch (50) at once, so a window of a few
        seconds sees none, one or two batches; and when the worker is the slower side, the backlog the window
        left behind is part of what its webhooks cost.
        """
        return self.stored_to_drained / self.seconds_to_drained if self.seconds_to_drained > 0 else 0.0

    @property
    def window_rate(self) -> float:
        return self.stored_in_window / self.window_seconds if self.window_seconds > 0 else 0.0

    def cpu_ms_per_message(self) -> dict[str, float]:
        n = max(self.stored_to_drained, 1)
        return {side: 1000 * seconds / n for side, seconds in self.cpu.items()}


@dataclass
class Latency:
    """The paced run: POST due time → HTTP answer, → message committed, and → message.add on the agent's socket."""

    sent: int
    failed: int  # not answered 200 (error status, connection lost, or not answered within 15 s)
    dropped: int  # answered 200 but never seen on the socket
    socket_ms: list[float]
    answer_ms: list[float]
    drain_lag_ms: list[float]  # 200 answer → its message committed
    frames: int
    trivial_rtt_ms: list[float]  # trivial POSTs at the same pace, for scale
    drain: Drain


@dataclass
class Overload:
    rate: float  # scheduled webhooks/s
    capacity: float  # figure 1's stored/s it is a multiple of (0: --overload-rate given)
    seconds: float
    pool: int
    scheduled: int
    issued_rate: float  # how fast the generator actually issued them
    never_sent: int  # waited 15 s for a free connection: the server never saw them
    sent: Sent
    backlog: int  # rows waiting when the last answer came
    drain: Drain
    drain_lag_ms: list[float]
    cpu: dict[str, float]  # CPU seconds per side, phase start → drained
    busy_seconds: float


@dataclass
class Results:
    trivial: list[Throughput]
    inbound: Throughput
    end_to_end: EndToEnd
    closed_lag_ms: list[float]
    status: Throughput
    latency: Latency
    overload: Overload | None
    checks: list[tuple[str, bool, str]]
    probe: dict[str, float]
    config: dict[str, Any]
    world: World
    db_connections: str
    daphnes: int


class RecordingMeter(CpuMeter):
    """A CpuMeter that keeps its snapshots: a closed loop's window start is then the start of an end-to-end figure."""

    def __init__(self, roots: dict[str, int]) -> None:
        super().__init__(roots)
        self.taken: list[CpuSnapshot] = []

    def snapshot(self) -> CpuSnapshot:
        shot = super().snapshot()
        self.taken.append(shot)
        return shot


SIDES = ("daphne", "worker", "postgres", "redis", "client")
SERVER_SIDES = ("daphne", "worker", "postgres", "redis")


def by_side(values: dict[str, float]) -> dict[str, float]:
    """Per-process figures with every Daphne (daphne1, daphne2 …) summed into one "daphne" side."""
    merged = dict.fromkeys(SIDES, 0.0)
    for name, value in values.items():
        side = "daphne" if name.startswith("daphne") else name
        merged[side] = merged.get(side, 0.0) + value
    return merged


@dataclass
class Servers:
    daphnes: DaphnesOnOnePort
    worker: CeleryWorker
    postgres: int
    redis: int

    def meter(self) -> RecordingMeter:
        roots = {f"daphne{n}": pid for n, pid in enumerate(self.daphnes.pids, 1)}
        return RecordingMeter({**roots, "worker": self.worker.pid, "postgres": self.postgres, "redis": self.redis})


class Db:
    """The ORM from the event loop: calls run on one thread of their own (Django refuses them on the loop)."""

    def __init__(self) -> None:
        self.executor = ThreadPoolExecutor(1, thread_name_prefix="bench-db")

    async def run(self, fn: Callable[..., T], *args: Any) -> T:
        return await asyncio.get_running_loop().run_in_executor(self.executor, fn, *args)

    def close(self) -> None:
        try:
            self.executor.submit(_close_django_connections).result(10)
        finally:
            self.executor.shutdown(wait=False)


def queue_rows() -> tuple[int, int]:
    """Inbound webhooks (waiting, parked) in the queue."""
    from contactcenter.models import InboundWebhook

    waiting = InboundWebhook.objects.filter(parked_at__isnull=True).count()
    return waiting, InboundWebhook.objects.filter(parked_at__isnull=False).count()


async def wait_drained(db: Db, deadline: float) -> Drain:
    """Until the worker has turned every stored webhook into its message, or `deadline` seconds passed."""
    loop = asyncio.get_running_loop()
    started = loop.time()
    waiting, parked = await db.run(queue_rows)
    first = waiting
    while waiting and loop.time() - started < deadline:
        await asyncio.sleep(0.1)
        waiting, parked = await db.run(queue_rows)
    return Drain(first, loop.time() - started, waiting, parked)


def _inbound_sql(select: str, where: str = "") -> str:
    from contactcenter.models import Message

    return f"SELECT {select} FROM {Message._meta.db_table} WHERE inbox_id = %s AND direction = %s {where}"


def committed_between(inbox_id: int, since: float, until: float) -> int:
    """Inbound messages committed between two time.time() moments."""
    from django.db import connection

    from contactcenter.models import MessageDirection

    sql = _inbound_sql("count(*)", "AND pg_xact_commit_timestamp(xmin) BETWEEN to_timestamp(%s) AND to_timestamp(%s)")
    with connection.cursor() as cursor:
        cursor.execute(sql, [inbox_id, MessageDirection.INBOUND, since, until])
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def commit_times(inbox_id: int, sids: list[str]) -> dict[str, float]:
    """MessageSid → when its message was committed (seconds since the epoch)."""
    from django.db import connection

    from contactcenter.models import MessageDirection

    sql = _inbound_sql(
        "provider_message_id, extract(epoch FROM pg_xact_commit_timestamp(xmin))", "AND provider_message_id = ANY(%s)"
    )
    with connection.cursor() as cursor:
        cursor.execute(sql, [inbox_id, MessageDirection.INBOUND, sids])
        return {sid: float(at) for sid, at in cursor.fetchall() if at is not None}


async def drain_lags(db: Db, world: World, sent: Sent, sids: list[str]) -> list[float]:
    """Milliseconds from each 200 answer to its message's commit."""
    commits = await db.run(commit_times, world.inbox_id, sids)
    return [1000 * (commits[sid] - sent.answered_at[sid]) for sid in sids if sid in commits]


def closed_loop_options(world: World, meter: CpuMeter, args: argparse.Namespace) -> dict[str, Any]:
    return {
        "host": "127.0.0.1",
        "port": world.port,
        "concurrency": args.concurrency,
        "warmup": args.warmup,
        "duration": args.duration,
        "meter": meter,
    }


class DaphneIdle:
    """True when every Daphne holds about as many threads as when idle.

    Daphne runs each sync request on a thread of its own, and a request whose client gave up (Twilio's
    15 s) still runs, possibly blocked on a lock or a connection pool without using CPU. Long-lived
    threads appear after the first load too (a psycopg pool's workers, the event loop's executor), hence
    the margin: a backlog worth waiting for is dozens of threads.
    """

    MARGIN = 12

    def __init__(self, pids: list[int]) -> None:
        self.pids = pids
        self.baseline: dict[int, int] = {}

    def calibrate(self) -> None:
        self.baseline = {pid: thread_count(pid) for pid in self.pids}

    def __call__(self) -> bool:
        return all(thread_count(pid) <= self.baseline.get(pid, 10**6) + self.MARGIN for pid in self.pids)


def start_worker_py_spy(output: str | None, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """Sample the Celery worker and its prefork children (where the drains run) like start_py_spy samples Daphne."""
    if not output:
        return None
    binary = Path(sys.executable).with_name("py-spy")
    if not binary.exists() and shutil.which("py-spy") is None:
        return None
    fmt = "raw" if output.endswith(".txt") else "speedscope" if output.endswith(".json") else "flamegraph"
    command = [str(binary) if binary.exists() else "py-spy", "record", "--pid", str(pid), "--subprocesses"]
    command += ["--duration", str(max(1, round(seconds))), "--rate", "200", "--nonblocking", "--gil"]
    command += ["--format", fmt, "--output", output]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def worker_profile_path(output: str) -> str:
    path = Path(output)
    return str(path.with_name(f"{path.stem}.worker{path.suffix}"))


async def inbound_closed_loop(
    world: World,
    twilio: Twilio,
    sent: Sent,
    meter: RecordingMeter,
    db: Db,
    args: argparse.Namespace,
) -> tuple[Throughput, EndToEnd]:
    """The inbound closed loop, then the queue drained: answered/s, and stored/s with the CPU per message."""

    def next_inbound() -> Request:
        request, _sid, _token = twilio.inbound()
        return request

    meter.taken.clear()
    throughput = await closed_loop("inbound", next_inbound, sent.on_response, **closed_loop_options(world, meter, args))
    sent.in_doubt.update(throughput.in_doubt)
    if len(meter.taken) < 2:
        raise RuntimeError("the closed loop took no CPU snapshots: nothing was measured")
    start, end = meter.taken[0], meter.taken[1]
    drain = await wait_drained(db, args.drain_deadline)
    done = meter.snapshot()
    in_window = await db.run(committed_between, world.inbox_id, start.wall, end.wall)
    to_drained = await db.run(committed_between, world.inbox_id, start.wall, done.wall)
    end_to_end = EndToEnd(
        stored_in_window=in_window,
        window_seconds=end.at - start.at,
        stored_to_drained=to_drained,
        seconds_to_drained=done.at - start.at,
        cpu=done.minus(start),
        drain=drain,
    )
    return throughput, end_to_end


async def warm_up(world: World, twilio: Twilio, sent: Sent, db: Db, args: argparse.Namespace) -> None:
    """A few webhooks through the whole path before anything is measured, spread out so that each lands in a
    drain of its own: every worker child's first task loads what it needs (and Daphne's first webhook too)."""

    def make() -> tuple[Request, str]:
        request, sid, _token = twilio.inbound()
        return request, sid

    run = await paced(make, sent.on_response, host="127.0.0.1", port=world.port, rate=10, seconds=3, pool_size=4)
    sent.in_doubt.update(run.in_doubt)
    await wait_drained(db, args.drain_deadline)


@dataclass
class InboundPhases:
    trivial: Throughput
    inbound: Throughput
    end_to_end: EndToEnd
    closed_lag_ms: list[float]
    latency: Latency


async def run_inbound_phases(
    world: World,
    twilio: Twilio,
    closed: Sent,
    paced_sent: Sent,
    meter: RecordingMeter,
    db: Db,
    args: argparse.Namespace,
    idle: DaphneIdle,
    profilers: list[subprocess.Popen[bytes]],
) -> InboundPhases:
    common = closed_loop_options(world, meter, args)
    progress("  trivial POSTs, closed loop …")
    trivial = await closed_loop("trivial", lambda: trivial_request(twilio), ignore, **common)
    await quiesce(meter)
    idle.calibrate()

    progress("  signed inbound webhooks, closed loop, then the queue drained …")
    spied = args.warmup + args.duration + 2
    for profiler in (
        start_py_spy(args.py_spy, meter.roots["daphne1"], spied),
        # The worker goes on after the window, with the backlog: a little longer.
        start_worker_py_spy(args.py_spy and worker_profile_path(args.py_spy), meter.roots["worker"], spied + 8),
    ):
        if profiler is not None:
            profilers.append(profiler)
    inbound, end_to_end = await inbound_closed_loop(world, twilio, closed, meter, db, args)
    for profiler in profilers:
        await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
    closed_lag = await drain_lags(db, world, closed, list(closed.ok))
    await quiesce(meter, idle=idle)

    progress(f"  trivial POSTs paced at {args.rate:g}/s …")
    pace: dict[str, Any] = {"host": "127.0.0.1", "port": world.port, "rate": args.rate, "pool_size": args.pool}

    def paced_trivial() -> tuple[Request, str]:
        return trivial_request(twilio), secrets.token_hex(8)

    trivial_paced = await paced(paced_trivial, ignore, seconds=args.baseline_pace_seconds, **pace)
    await quiesce(meter, idle=idle)

    progress(f"  inbound webhooks paced at {args.rate:g}/s to a listening agent's socket …")
    socket = AgentSocket(
        url=f"ws://127.0.0.1:{world.port}/ws/agent/",
        origin=world.base,
        session_cookie=world.agent_cookie,
        token_re=TOKEN_RE,
    )
    await socket.open()
    sid_of: dict[str, str] = {}  # body token → MessageSid
    try:

        def paced_inbound() -> tuple[Request, str]:
            request, sid, token = twilio.inbound()
            sid_of[token] = sid
            return request, token

        # One uninterrupted paced stream; its first --warmup seconds warm the path (connections, consumer,
        # caches) and are left out of the figures, so the measured stretch starts under steady load.
        run = await paced(paced_inbound, paced_sent.on_response, seconds=args.warmup + args.latency_seconds, **pace)
        paced_sent.in_doubt.update(run.in_doubt)
        cut = min(run.sent_at.values(), default=0.0) + args.warmup
        measured = {t: due for t, due in run.sent_at.items() if due >= cut}
        accepted = [t for t in measured if run.ok.get(t)]
        # A message reaches the socket after the worker stored it: wait for the queue, then for the last frames.
        drain = await wait_drained(db, args.drain_deadline)
        await socket.wait_for(accepted, args.drain)
    finally:
        await socket.close()
    lags = await drain_lags(db, world, paced_sent, [sid_of[t] for t in accepted])
    await quiesce(meter, idle=idle)
    latency = Latency(
        sent=len(measured),
        failed=len(measured) - len(accepted),
        dropped=sum(1 for t in accepted if t not in socket.received),
        socket_ms=[1000 * (socket.received[t] - due) for t, due in measured.items() if t in socket.received],
        answer_ms=[1000 * (run.answered[t] - due) for t, due in measured.items() if t in run.answered],
        drain_lag_ms=lags,
        frames=socket.frames,
        trivial_rtt_ms=[1000 * x for x in trivial_paced.answer_times()],
        drain=drain,
    )
    return InboundPhases(trivial, inbound, end_to_end, closed_lag, latency)


async def run_status_phases(
    world: World,
    twilio: Twilio,
    status_sent: StatusSent,
    meter: CpuMeter,
    args: argparse.Namespace,
    idle: DaphneIdle,
    outbound: list[tuple[int, str]],
) -> tuple[Throughput, Throughput]:
    pending: Iterator[tuple[int, str]] = iter(outbound)

    def next_status() -> Request | None:
        item = next(pending, None)
        if item is None:
            return None
        status_sent.posted.add(item[0])
        return twilio.status(*item)

    common = closed_loop_options(world, meter, args)
    progress("  signed status callbacks (sent → delivered), closed loop …")
    status = await closed_loop("status", next_status, status_sent.on_response, **common)
    await quiesce(meter, idle=idle)
    progress("  trivial POSTs again, closed loop …")
    trivial = await closed_loop("trivial", lambda: trivial_request(twilio), ignore, **common)
    return status, trivial


async def run_overload(
    world: World,
    twilio: Twilio,
    sent: Sent,
    meter: CpuMeter,
    db: Db,
    args: argparse.Namespace,
    idle: DaphneIdle,
    capacity: float,
) -> Overload:
    """Paced far above capacity: every webhook answered 200 in time or refused retryably, then the backlog drained."""
    rate = args.overload_rate or args.overload_factor * capacity
    if rate <= 0:
        raise RuntimeError("no inbound capacity measured to overload; pass --overload-rate")
    count = max(1, int(rate * args.overload_seconds))
    progress(f"  signing {count} webhooks for the overload (ahead, so signing does not slow the generator) …")
    prepared = [twilio.inbound()[:2] for _ in range(count)]
    loop = asyncio.get_running_loop()
    issued: list[float] = []
    queue = iter(prepared)

    def next_prepared() -> tuple[Request, str]:
        request, sid = next(queue)
        issued.append(loop.time())
        return request, sid

    progress(f"  overload: inbound webhooks paced at {rate:.0f}/s for {args.overload_seconds:g} s …")
    before = meter.snapshot()
    run: Paced = await paced(
        next_prepared,
        sent.on_response,
        host="127.0.0.1",
        port=world.port,
        rate=rate,
        seconds=args.overload_seconds,
        pool_size=args.overload_pool,
    )
    sent.in_doubt.update(run.in_doubt)
    backlog, _parked = await db.run(queue_rows)
    progress(f"  overload over; {backlog} webhooks waiting: draining …")
    drain = await wait_drained(db, args.drain_deadline)
    after = meter.snapshot()
    lags = await drain_lags(db, world, sent, list(sent.ok))
    await quiesce(meter, idle=idle)
    span = (issued[-1] - issued[0]) if len(issued) > 1 else 0.0
    return Overload(
        rate=rate,
        capacity=0.0 if args.overload_rate else capacity,
        seconds=args.overload_seconds,
        pool=args.overload_pool,
        scheduled=count,
        issued_rate=(len(issued) - 1) / span if span > 0 else 0.0,
        never_sent=run.timeouts + run.errors - len(run.in_doubt),
        sent=sent,
        backlog=backlog,
        drain=drain,
        drain_lag_ms=lags,
        cpu=after.minus(before),
        busy_seconds=after.at - before.at,
    )


@dataclass
class ScalePoint:
    daphnes: int
    trivial: Throughput
    inbound: Throughput
    end_to_end: EndToEnd


async def run_scale_point(
    daphnes: int,
    world: World,
    twilio: Twilio,
    sent: Sent,
    meter: RecordingMeter,
    db: Db,
    args: argparse.Namespace,
    idle: DaphneIdle,
) -> ScalePoint:
    common = closed_loop_options(world, meter, args)
    await quiesce(meter)
    idle.calibrate()
    progress(f"  {daphnes} Daphne(s): trivial POSTs, closed loop …")
    trivial = await closed_loop("trivial", lambda: trivial_request(twilio), ignore, **common)
    await quiesce(meter, idle=idle)
    progress(f"  {daphnes} Daphne(s): signed inbound webhooks, closed loop, then the queue drained …")
    inbound, end_to_end = await inbound_closed_loop(world, twilio, sent, meter, db, args)
    await quiesce(meter, idle=idle)
    return ScalePoint(daphnes, trivial, inbound, end_to_end)


# ---------------------------------------------------------------------------------------------------
# Afterwards: the database against what the client saw, and statements counted in-process
# ---------------------------------------------------------------------------------------------------


def events_per_message(inbox_id: int) -> tuple[int, int, int]:
    """(inbound messages, those without a message.add event, those with more than one)."""
    from django.db import connection

    from contactcenter.models import Event, Message, MessageDirection

    sql = f"""
        WITH adds AS (
            SELECT (payload -> 'message' ->> 'id')::bigint AS message_id, count(*) AS n
            FROM {Event._meta.db_table} WHERE type = 'message' AND op = 'add' GROUP BY 1
        )
        SELECT count(*), count(*) FILTER (WHERE adds.n IS NULL), count(*) FILTER (WHERE adds.n > 1)
        FROM {Message._meta.db_table} m LEFT JOIN adds ON adds.message_id = m.id
        WHERE m.inbox_id = %s AND m.direction = %s
    """
    with connection.cursor() as cursor:
        cursor.execute(sql, [inbox_id, MessageDirection.INBOUND])
        row = cursor.fetchone()
    assert row is not None
    return int(row[0]), int(row[1]), int(row[2])


def verify(world: World, phases: list[Sent], status: StatusSent | None) -> list[tuple[str, bool, str]]:
    """Every 200 stored exactly once, no refused webhook stored, nothing half-stored, the queue empty."""
    from contactcenter.models import Event, Message, MessageDirection, MessageStatus

    checks: list[tuple[str, bool, str]] = []
    inbound = Message.objects.filter(inbox_id=world.inbox_id, direction=MessageDirection.INBOUND)
    stored_list = list(inbound.values_list("provider_message_id", flat=True))
    stored = set(stored_list)
    for sent in phases:
        missing = sent.ok - stored
        refused_stored = sent.refused & stored
        other_stored = set(sent.other) & stored
        late = sent.in_doubt & stored
        checks.append(
            (
                f"inbound, {sent.name}: every 200 stored, no refused one stored",
                not missing and not refused_stored and not sent.other,
                f"{len(sent.ok)} answered 200 ({len(missing)} not stored); {len(sent.refused)} refused with "
                f"{'/'.join(map(str, RETRYABLE))} + Retry-After ({len(refused_stored)} stored); other answers "
                f"{dict(sent.other_statuses()) or 0} ({len(other_stored)} stored); unanswered within "
                f"{TWILIO_TIMEOUT:g} s: {len(sent.in_doubt)} ({len(late)} stored, which is fine once)",
            )
        )
    expected = set().union(*(sent.ok | sent.in_doubt for sent in phases))
    unexpected = stored - expected
    duplicated = len(stored_list) - len(stored)  # the unique constraint should make this impossible
    checks.append(
        (
            "inbound: every message stored once, and only for a webhook answered 200 (or never answered)",
            not duplicated and not unexpected,
            f"{len(stored_list)} inbound messages, {duplicated} duplicated, {len(unexpected)} unexpected",
        )
    )
    messages, without, repeated = events_per_message(world.inbox_id)
    adds = Event.objects.filter(type="message", op="add").count()
    checks.append(
        (
            "inbound: nothing half-stored (each message has exactly one message.add event)",
            not without and not repeated and adds == messages,
            f"{messages} messages, {without} without their event, {repeated} with more than one; "
            f"{adds} message.add events in all",
        )
    )
    waiting, parked = queue_rows()
    checks.append(
        (
            "inbound: the queue drained, nothing parked",
            not waiting and not parked,
            f"{waiting} waiting, {parked} parked",
        )
    )
    if status is not None:
        delivered = Message.objects.filter(pk__in=status.posted, status=MessageStatus.DELIVERED).count()
        updates = Event.objects.filter(type="message", op="update_status").count()
        checks.append(
            (
                "status: every callback answered 204 and moved sent → delivered once",
                delivered == len(status.ok) == len(status.posted) and updates == delivered and not status.other,
                f"{len(status.posted)} posted, {len(status.ok)} answered 204, {delivered} delivered, "
                f"{updates} update_status events; non-204 answers {dict(status.other) or 0}",
            )
        )
    return checks


def probe_queries(world: World, twilio: Twilio, *, show_sql: bool = False) -> dict[str, float]:
    """SQL statements per inbound, in-process through the same view and the worker's own drain.

    The worker is stopped by now, so the webhooks wait in the queue (their drain task sits in Redis) until
    drain_inbound runs here: one webhook at a time (batch 1, a quiet hour) or a full batch at once (a wave).
    With show_sql, prints the statements of the first known sender's webhook and its processing.
    """
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    from contactcenter.actions.inbound_queue import BATCH, drain_inbound

    if queue_rows() != (0, 0):
        raise RuntimeError(f"the queue is not empty before the probe: {queue_rows()}")
    client = Client(HTTP_HOST=f"127.0.0.1:{world.port}")

    shown: list[str] = []

    def show(title: str, ctx: CaptureQueriesContext) -> None:
        if show_sql and len(shown) < 2:
            shown.append(title)
            print(f"\n{title}: {len(ctx.captured_queries)} statements")
            for n, query in enumerate(ctx.captured_queries, 1):
                sql = " ".join(query["sql"].split())
                print(f"  {n:2}. {sql[:220]}{' …' if len(sql) > 220 else ''}")

    def post(request: Request, expect: int) -> int:
        _method, target, body, headers, _tag = request
        with CaptureQueriesContext(connection) as ctx:
            response = client.post(
                target,
                data=body,
                content_type=FORM,
                headers={k: v for k, v in headers if k not in ("Content-Type", "Connection")},
            )
        assert response.status_code == expect, response.status_code
        if expect == 200:
            show("a known sender's webhook request", ctx)
        return len(ctx.captured_queries)

    def batch(senders: list[str]) -> tuple[float, float]:
        """(statements per webhook request, statements of processing per message)."""
        requests = [post(twilio.inbound(sender=sender)[0], 200) for sender in senders]
        with CaptureQueriesContext(connection) as ctx:
            outcome = drain_inbound(inbox_id=world.inbox_id)
        assert outcome.stored == len(senders) and not outcome.failed, outcome
        show("its processing by the worker (drain_inbound, batch of 1)", ctx)
        return statistics.mean(requests), len(ctx.captured_queries) / outcome.stored

    new = [f"+86139{20_000_000 + i:08d}" for i in range(5 + BATCH)]
    known = world.senders[: 5 + BATCH]
    if len(known) < 5 + BATCH:
        raise RuntimeError(f"--senders must be at least {5 + BATCH} for the probe")
    probe: dict[str, float] = {"batch": BATCH}
    for kind, senders in (("known", known), ("new", new)):
        ones = [batch([sender]) for sender in senders[:5]]
        probe[f"{kind}_request"] = statistics.mean(r for r, _p in ones)
        probe[f"{kind}_processing_1"] = statistics.mean(p for _r, p in ones)
        request, processing = batch(senders[5 : 5 + BATCH])
        probe[f"{kind}_request_{BATCH}"] = request
        probe[f"{kind}_processing_{BATCH}"] = processing
    outbound = precreate_outbound(world, 5)
    probe["status_callback"] = statistics.mean(
        post(twilio.status(message_id, sid), 204) for message_id, sid in outbound
    )
    return probe


def postgres_sessions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


# ---------------------------------------------------------------------------------------------------
# The report
# ---------------------------------------------------------------------------------------------------


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:.1f} ms"


def _pct(values: list[float]) -> str:
    return f"p50 {_ms(percentile(values, 50))}, p99 {_ms(percentile(values, 99))}"


def verdict(ok: bool) -> str:
    return "ok" if ok else "MISS"


def print_table(header: tuple[str, ...], rows: list[tuple[str, ...]]) -> None:
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())


def print_cpu_table(rows: list[tuple[str, dict[str, float], str]]) -> None:
    """CPU ms per request by side (every Daphne summed), the servers' total, and a verdict where one applies."""
    print("  " + "phase".ljust(28) + "".join(s.rjust(9) for s in [*SIDES, "servers", "total"]))
    for name, per, note in rows:
        merged = by_side(per)
        servers = sum(merged[s] for s in SERVER_SIDES)
        cells = "".join(f"{merged[s]:9.2f}" for s in SIDES)
        print(
            "  "
            + name.ljust(28)
            + cells
            + f"{servers:9.2f}{servers + merged['client']:9.2f}"
            + (f"  {note}" if note else "")
        )


def drain_line(drain: Drain) -> str:
    left = f"; {drain.waiting_left} STILL WAITING after the deadline" if drain.waiting_left else ""
    parked = f"; {drain.parked} parked" if drain.parked else ""
    return (
        f"{drain.waiting_at_start} waiting when the load stopped, queue empty {drain.seconds:.1f} s later{left}{parked}"
    )


def print_report(r: Results) -> None:
    base_rates = [t.rate for t in r.trivial]
    base = statistics.mean(base_rates)
    spread = (max(base_rates) - min(base_rates)) / base if base else 0.0
    c = r.config
    cpus = os.cpu_count() or 1
    print()
    print(
        f"Twilio SMS webhooks — {r.daphnes} Daphne process(es) on one port, 1 Celery worker (concurrency "
        f"{c['worker_concurrency']}), {r.db_connections}, PostgreSQL + Redis on loopback, {cpus} CPUs; "
        f"{len(r.world.senders)} patients, {r.world.agents} online agents (capacity {r.world.capacity} each); "
        f"closed loops at concurrency {c['concurrency']}, {c['duration']:g} s measured after {c['warmup']:g} s "
        f"warm-up; {c['connections']} connections"
    )
    print(
        f"baseline: trivial POST (same body, headers, client) {base_rates[0]:.0f}/s before, "
        f"{base_rates[1]:.0f}/s after → {base:.0f}/s (spread {spread:.0%})"
    )
    phases = [r.trivial[0], r.inbound, r.status, r.trivial[1]]
    others = [t.other_cpus() for t in phases]
    print(
        f"other work on this machine during the closed loops: {' / '.join(f'{o:.2f}' for o in others)} "
        f"of {cpus} CPUs (trivial / inbound / status / trivial)"
        + ("  ← busy: figures are low and noisy" if max(others) > 0.25 * cpus else "")
    )
    print()

    lat = r.latency
    e2e = r.end_to_end
    answered_ratio = r.inbound.rate / base if base else 0.0
    stored_ratio = e2e.rate / base if base else 0.0
    status_ratio = r.status.rate / base if base else 0.0
    # A webhook that never reached the socket (not answered 200, or dropped) counts as infinitely late:
    # percentiles over the survivors alone would flatter an overloaded server.
    socket_all = lat.socket_ms + [math.inf] * (lat.sent - len(lat.socket_ms))
    answer_all = lat.answer_ms + [math.inf] * (lat.sent - len(lat.answer_ms))
    p50, p99 = percentile(socket_all, 50), percentile(socket_all, 99)
    b50, b99 = percentile(lat.trivial_rtt_ms, 50), percentile(lat.trivial_rtt_ms, 99)
    p99_ok = lat.dropped == 0 and lat.failed == 0 and p99 < LATENCY_TARGET_MS
    rows: list[tuple[str, ...]] = [
        ("1 inbound webhooks/s answered 200", f"{r.inbound.rate:.1f}/s", f"{base:.0f}/s", f"{answered_ratio:.3f}", ""),
        (
            "  inbound messages/s stored (to empty queue)",
            f"{e2e.rate:.1f}/s",
            f"{base:.0f}/s",
            f"{stored_ratio:.3f}",
            f"≥ {THROUGHPUT_TARGET:g}  {verdict(stored_ratio >= THROUGHPUT_TARGET)}",
        ),
        (
            f"2 POST → agent socket p50 @{c['rate']:g}/s",
            _ms(p50),
            f"{b50:.2f} ms RTT",
            f"{p50 / b50:.1f}" if b50 > 0 and math.isfinite(p50) else "",
            "",
        ),
        (
            f"  POST → agent socket p99 @{c['rate']:g}/s",
            _ms(p99),
            f"{b99:.2f} ms RTT",
            f"{p99 / b99:.1f}" if b99 > 0 and math.isfinite(p99) else "",
            f"< {LATENCY_TARGET_MS:g} ms  {verdict(p99_ok)}",
        ),
        ("  answer → message committed p50", _ms(percentile(lat.drain_lag_ms, 50)), "", "", ""),
        ("  answer → message committed p99", _ms(percentile(lat.drain_lag_ms, 99)), "", "", ""),
        (
            "  dropped (200 but never on the socket)",
            f"{lat.dropped} / {lat.sent - lat.failed}",
            "",
            "",
            f"= 0  {verdict(lat.dropped == 0)}",
        ),
        (
            "  webhooks not answered 200 within 15 s",
            f"{lat.failed} / {lat.sent}",
            "",
            "",
            f"= 0  {verdict(lat.failed == 0)}",
        ),
        (
            "3 status callbacks/s (sent → delivered)",
            f"{r.status.rate:.1f}/s",
            f"{base:.0f}/s",
            f"{status_ratio:.3f}",
            f"≥ {THROUGHPUT_TARGET:g}  {verdict(status_ratio >= THROUGHPUT_TARGET)}",
        ),
    ]
    print_table(("figure", "measured", "baseline", "ratio", "target"), rows)
    print()
    print(
        f"closed loop: {e2e.stored_in_window} messages committed in the {e2e.window_seconds:.1f} s window "
        f"({e2e.window_rate:.1f}/s); then {drain_line(e2e.drain)}; figure 1's stored/s: {e2e.stored_to_drained} "
        f"committed from the window's start to the empty queue, {e2e.seconds_to_drained:.1f} s; answer → message "
        f"committed {_pct(r.closed_lag_ms)}"
    )
    print(
        f"paced {c['rate']:g}/s, {c['latency_seconds']:g} s measured: {lat.sent} webhooks, {len(lat.socket_ms)} reached "
        f"the socket (∞ = never: not answered 200, or dropped); webhook HTTP answer p50 {_ms(percentile(answer_all, 50))}, "
        f"p99 {_ms(percentile(answer_all, 99))}; socket max {_ms(max(socket_all, default=math.nan))}; "
        f"{lat.frames} socket frames; {drain_line(lat.drain)}"
    )
    if c["rate"] > e2e.rate:
        print(
            f"  note: {c['rate']:g}/s is above the inbound capacity measured in figure 1 ({e2e.rate:.1f}/s stored): "
            "the paced figures are queueing, not fan-out"
        )
    print(
        "closed-loop answer times (p50 / p99 ms): "
        + ", ".join(
            f"{t.name} {1000 * percentile(t.latencies, 50):.1f} / {1000 * percentile(t.latencies, 99):.1f}"
            for t in [r.trivial[0], r.inbound, r.status]
        )
    )
    print()
    print(
        "CPU ms per request (all processes share the CPUs; daphne = every Daphne, worker = the Celery worker "
        "and its children, servers = all but the client, this load generator)"
    )
    e2e_servers = sum(by_side(e2e.cpu_ms_per_message())[s] for s in SERVER_SIDES)
    print_cpu_table(
        [
            ("trivial", r.trivial[0].cpu_ms_per_request(), ""),
            ("inbound, per 200 in window", r.inbound.cpu_ms_per_request(), ""),
            (
                "inbound, per message stored",
                e2e.cpu_ms_per_message(),
                f"servers ≤ {CPU_TARGET_MS:g}  {verdict(e2e_servers <= CPU_TARGET_MS)}",
            ),
            ("status", r.status.cpu_ms_per_request(), ""),
        ]
    )
    print(
        f"  (per message stored: {e2e.stored_to_drained} messages committed from the window's start until the queue "
        f"was empty, {e2e.seconds_to_drained:.1f} s, all CPU in that stretch)"
    )
    print()
    print_probe(r.probe)
    if "pg_sessions_per_inbound" in r.probe:
        print(
            "PostgreSQL sessions opened per inbound webhook (inbound phases, socket and worker included): "
            f"{r.probe['pg_sessions_per_inbound']:.2f}"
        )
    if r.overload is not None:
        print()
        print_overload(r.overload)
    print()
    for name, ok, detail in r.checks:
        print(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")


def print_probe(probe: dict[str, float]) -> None:
    batch = int(probe["batch"])
    print(
        f"SQL statements per inbound message (in-process probe; target ≤ {SQL_TARGET} for a known sender, "
        "request and processing together):"
    )
    rows: list[tuple[str, ...]] = []
    for kind in ("known", "new"):
        for size in (1, batch):
            request = probe[f"{kind}_request"] if size == 1 else probe[f"{kind}_request_{size}"]
            processing = probe[f"{kind}_processing_{size}"]
            total = request + processing
            target = f"≤ {SQL_TARGET}  {verdict(total <= SQL_TARGET)}" if kind == "known" else ""
            rows.append(
                (f"  {kind} sender, batch {size}", f"{request:.1f}", f"{processing:.1f}", f"{total:.1f}", target)
            )
    print_table(("", "webhook request", "processing per message", "total", "target"), rows)
    print(f"  status callback: {probe['status_callback']:.0f} per request")


def print_overload(o: Overload) -> None:
    sent = o.sent
    answered = len(sent.ok) + len(sent.refused) + len(sent.other)
    offered = o.scheduled - o.never_sent
    source = f"{o.rate / o.capacity:g} × figure 1's {o.capacity:.1f}/s" if o.capacity else "--overload-rate"
    print(
        f"5 overload: {o.scheduled} webhooks scheduled at {o.rate:.0f}/s ({source}) for {o.seconds:g} s over up to "
        f"{o.pool} connections"
    )
    print(
        f"  actually offered: the generator issued them at {o.issued_rate:.0f}/s; {o.never_sent} found no free "
        f"connection within {TWILIO_TIMEOUT:g} s and were never sent; {offered} reached the server "
        f"({offered / o.seconds:.0f}/s over the phase)"
    )
    unanswered = len(sent.in_doubt)
    rows: list[tuple[str, ...]] = [
        ("  answered 200 within 15 s", f"{len(sent.ok)}", f"{len(sent.ok) / o.seconds:.0f}/s", ""),
        (
            "  refused, retryable (503/429 + Retry-After)",
            f"{len(sent.refused)}",
            f"{len(sent.refused) / o.seconds:.0f}/s",
            "",
        ),
        (
            "  other answers",
            f"{len(sent.other)} {dict(sent.other_statuses()) or ''}".rstrip(),
            "",
            f"= 0  {verdict(not sent.other)}",
        ),
        ("  sent but not answered within 15 s", f"{unanswered}", "", f"= 0  {verdict(not unanswered)}"),
        ("  answered in all", f"{answered} / {offered}", "", ""),
    ]
    print_table(("", "count", "rate", "target"), rows)
    print(
        f"  backlog: {drain_line(o.drain)} ({o.backlog / o.drain.seconds:.0f}/s)"
        if o.drain.seconds > 0
        else f"  backlog: {drain_line(o.drain)}"
    )
    print(f"  answer → message committed {_pct(o.drain_lag_ms)}")
    cpu = by_side(o.cpu)
    print(
        f"  CPU over the phase and the drain ({o.busy_seconds:.1f} s): "
        + ", ".join(f"{side} {cpu[side]:.1f} s" for side in SIDES)
    )
    goal = not sent.other and not unanswered and o.drain.ok
    print(
        f"  every webhook answered 200 within 15 s or refused retryably, the backlog drained: {verdict(goal)} "
        "(storage checks below)"
    )


def print_scale(points: list[ScalePoint], args: argparse.Namespace, checks: list[tuple[str, bool, str]]) -> None:
    cpus = os.cpu_count() or 1
    print()
    print(
        f"Scaling out: N Daphne processes sharing one listening socket (`daphne --fd`), 1 Celery worker "
        f"(concurrency {args.worker_concurrency}), PostgreSQL + Redis on loopback, {cpus} CPUs; closed loops at "
        f"concurrency {args.concurrency}, {args.duration:g} s after {args.warmup:g} s warm-up; {args.connections} "
        "connections; each N has its own trivial baseline"
    )
    rows: list[tuple[str, ...]] = []
    for p in points:
        base = p.trivial.rate
        e2e = p.end_to_end
        per = by_side(e2e.cpu_ms_per_message())
        servers = sum(per[s] for s in SERVER_SIDES)
        daphnes = [v for k, v in sorted(e2e.cpu.items()) if k.startswith("daphne")]
        total = sum(daphnes) or 1.0
        busy = {side: by_side(e2e.cpu)[side] / e2e.seconds_to_drained for side in SERVER_SIDES}
        rows.append(
            (
                str(p.daphnes),
                f"{base:.0f}/s",
                f"{p.inbound.rate:.1f}/s",
                f"{e2e.rate:.1f}/s",
                f"{e2e.rate / base:.3f}" if base else "",
                f"{e2e.rate / p.daphnes:.1f}/s",
                f"{servers:.1f} ms",
                " / ".join(f"{v / total:.0%}" for v in daphnes),
                " ".join(f"{side[0]}{busy[side]:.2f}" for side in SERVER_SIDES),
                f"{p.trivial.other_cpus():.2f} / {p.inbound.other_cpus():.2f}",
            )
        )
    print_table(
        (
            "daphnes",
            "trivial",
            "inbound answered",
            "stored",
            "ratio",
            "stored per process",
            "CPU/message",
            "Daphne CPU split",
            "CPUs busy (d w p r)",
            "other work",
        ),
        rows,
    )
    if len(points) > 1:
        first, last = points[0], points[-1]
        print(
            f"{last.daphnes} vs {first.daphnes} Daphnes: trivial ×{last.trivial.rate / max(first.trivial.rate, 1e-9):.2f}, "
            f"inbound answered ×{last.inbound.rate / max(first.inbound.rate, 1e-9):.2f}, "
            f"stored ×{last.end_to_end.rate / max(first.end_to_end.rate, 1e-9):.2f}"
        )
    for p in points:
        print(f"  {p.daphnes} Daphne(s): {drain_line(p.end_to_end.drain)}")
    print()
    for name, ok, detail in checks:
        print(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")


# ---------------------------------------------------------------------------------------------------
# Command line, set-up and tear-down
# ---------------------------------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sms_inbound",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Figures and how to read them: bench/README.md.",
    )
    parser.add_argument("--daphnes", type=int, default=1, help="Daphne processes sharing the one port (1)")
    parser.add_argument(
        "--scale", metavar="N,N…", help="instead of the full run: figure 1 for each number of Daphnes, e.g. 1,2"
    )
    parser.add_argument(
        "--connections",
        choices=("keep-alive", "per-request"),
        help="client connections: kept alive (the full run's default) or a new one per request (--scale's default)",
    )
    parser.add_argument("--worker-concurrency", type=int, default=4, help="Celery worker processes (4)")
    parser.add_argument("--concurrency", type=int, default=16, help="connections in closed-loop runs (16)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per closed-loop run (8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run (2)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced webhooks per second (200)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="measured paced seconds (10)")
    parser.add_argument("--baseline-pace-seconds", type=float, default=4.0, help="paced trivial seconds (4)")
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for the last socket events (10)")
    parser.add_argument(
        "--drain-deadline", type=float, default=300.0, help="max wait for the worker to empty the queue (300)"
    )
    parser.add_argument("--pool", type=int, default=64, help="connections available to paced runs (64)")
    parser.add_argument(
        "--overload-factor", type=float, default=10.0, help="overload rate as a multiple of figure 1's stored/s (10)"
    )
    parser.add_argument("--overload-rate", type=float, help="overload rate in webhooks/s (instead of the factor)")
    parser.add_argument("--overload-seconds", type=float, default=30.0, help="overload duration, 0 to skip it (30)")
    parser.add_argument("--overload-pool", type=int, default=256, help="connections the overload may use (256)")
    parser.add_argument("--senders", type=int, default=300, help="distinct patient numbers (300)")
    parser.add_argument("--agents", type=int, default=4, help="online agents for round robin (4)")
    parser.add_argument(
        "--agent-capacity", type=int, help="open conversations per agent (the product's default, 8, if not given)"
    )
    parser.add_argument("--status-messages", type=int, default=8000, help="outbound messages to call back (8000)")
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="DB_CONN_MAX_AGE (0: the default connection pool, DB_POOL_MAX_SIZE)"
    )
    parser.add_argument(
        "--py-spy", metavar="FILE", help="profile Daphne (FILE) and the worker (FILE's stem + .worker) in figure 1"
    )
    parser.add_argument("--keep-logs", action="store_true", help="keep the Daphne and worker logs")
    parser.add_argument(
        "--show-sql", action="store_true", help="print the statements of one known sender's webhook and processing"
    )
    args = parser.parse_args(argv)
    try:
        args.scale_counts = [int(n) for n in args.scale.split(",")] if args.scale else []
    except ValueError:
        parser.error("--scale takes numbers of Daphnes separated by commas, e.g. 1,2")
    if any(n < 1 for n in [args.daphnes, *args.scale_counts]):
        parser.error("a number of Daphnes is at least 1")
    if args.connections is None:
        args.connections = "per-request" if args.scale_counts else "keep-alive"
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


def _run(args: argparse.Namespace) -> int:
    from tests.services import PostgresServer, RedisServer

    work = Path(tempfile.mkdtemp(prefix="bench-sms-"))
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    daphnes: DaphnesOnOnePort | None = None
    worker: CeleryWorker | None = None
    db: Db | None = None
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        progress("starting PostgreSQL and Redis on loopback …")
        pg = PostgresServer()
        database_url = pg.start()
        enable_commit_timestamps(pg, database_url)
        redis = RedisServer()
        redis_url = redis.start()
        token = secrets.token_hex(16)
        env = {**os.environ, "DB_CONN_MAX_AGE": str(args.conn_max_age)}
        # The socket first: its port goes into PUBLIC_BASE_URL, which Twilio signs.
        daphnes = DaphnesOnOnePort(
            env=env, cwd=ROOT, log_dir=work, count=args.scale_counts[0] if args.scale_counts else args.daphnes
        )
        env |= bench_env(
            port=daphnes.port, database_url=database_url, redis_url=redis_url, token=token, data_dir=str(work)
        )
        daphnes.env = env
        os.environ.update(env)
        progress("migrating …")
        migrate(env, work / "migrate.log")

        import django

        django.setup()
        import logging

        # This process only (Daphne and the worker log as in production). A level, not the root's: Celery's
        # Django fixup sets Django up again on the probe's first enqueue, and LOGGING with it.
        logging.disable(logging.INFO)
        warnings.filterwarnings("ignore", message="No directory at", module="django.core.handlers.base")
        world = create_world(
            port=daphnes.port, token=token, senders=args.senders, agents=args.agents, capacity=args.agent_capacity
        )
        twilio = Twilio(world, close=args.connections == "per-request")
        db = Db()

        progress(f"starting a Celery worker (concurrency {args.worker_concurrency}) …")
        worker = CeleryWorker(concurrency=args.worker_concurrency, env=env, cwd=ROOT, log=work / "worker.log")
        worker.start()
        progress(f"serving config.asgi with {daphnes.count} Daphne(s) on 127.0.0.1:{daphnes.port} (one socket) …")
        daphnes.start()
        assert redis.proc is not None
        servers = Servers(daphnes, worker, postmaster_pid(pg.data), redis.proc.pid)
        if args.scale_counts:
            return _scale(args, world, twilio, servers, db)
        return _full(args, world, twilio, servers, db, profilers)
    finally:
        # Each step on its own, and deaf to a second Ctrl-C: one failing stop must not leave the others running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for stop in (
            *(p.kill for p in profilers if p.poll() is None),
            # Idle after a completed run; after an interrupt they may be mid-request, and the database goes next.
            (lambda: daphnes.close(3.0)) if daphnes is not None else None,
            (lambda: worker.stop(5.0)) if worker is not None else None,
            db.close if db is not None else None,
            # PostgreSQL's TERM is a smart shutdown: it would wait for this process's own session.
            _close_django_connections,
            redis.stop if redis is not None else None,
            (lambda: fast_stop_postgres(pg.data)) if pg is not None else None,
            pg.stop if pg is not None else None,
        ):
            if stop is None:
                continue
            try:
                stop()
            except Exception as exc:
                print(f"cleanup: {exc!r}", file=sys.stderr)
        if args.keep_logs:
            print(f"logs kept in {work}", file=sys.stderr)
        else:
            shutil.rmtree(work, ignore_errors=True)


def _full(
    args: argparse.Namespace,
    world: World,
    twilio: Twilio,
    servers: Servers,
    db: Db,
    profilers: list[subprocess.Popen[bytes]],
) -> int:
    meter = servers.meter()
    idle = DaphneIdle(servers.daphnes.pids)
    warm, closed, paced_sent, overload_sent = Sent("warm-up"), Sent("figure 1"), Sent("figure 2"), Sent("overload")
    status_sent = StatusSent()
    progress("  warming up: 30 webhooks through Daphne and the worker …")
    asyncio.run(warm_up(world, twilio, warm, db, args))

    sessions_before = postgres_sessions()
    inbound = asyncio.run(run_inbound_phases(world, twilio, closed, paced_sent, meter, db, args, idle, profilers))
    sessions_after = postgres_sessions()
    # Webhooks the server worked through in those phases, whatever their answer.
    inbound_requests = sum(len(s.ok) + len(s.refused) + len(s.other) + len(s.in_doubt) for s in (closed, paced_sent))

    progress(f"  pre-creating {args.status_messages} sent outbound messages …")
    outbound = precreate_outbound(world, args.status_messages)
    status, trivial2 = asyncio.run(run_status_phases(world, twilio, status_sent, meter, args, idle, outbound))
    overload: Overload | None = None
    if args.overload_seconds > 0:
        overload = asyncio.run(
            run_overload(
                world,
                twilio,
                overload_sent,
                meter,
                db,
                args,
                idle,
                inbound.end_to_end.rate,
            )
        )
    progress("verifying; stopping the worker and counting statements in-process …")
    checks = verify(world, [warm, closed, paced_sent, *([overload_sent] if overload else [])], status_sent)
    servers.worker.stop()
    probe = probe_queries(world, twilio, show_sql=args.show_sql)
    probe["pg_sessions_per_inbound"] = (sessions_after - sessions_before) / max(1, inbound_requests)
    from django.db import connection

    pool = getattr(connection, "pool", None)  # psycopg's pool, when settings turned it on
    pooled = int(pool.max_size) if pool is not None else 0
    print_report(
        Results(
            trivial=[inbound.trivial, trivial2],
            inbound=inbound.inbound,
            end_to_end=inbound.end_to_end,
            closed_lag_ms=inbound.closed_lag_ms,
            status=status,
            latency=inbound.latency,
            overload=overload,
            checks=checks,
            probe=probe,
            config=vars(args),
            world=world,
            db_connections=f"DB pool of {pooled} per process" if pooled else f"DB_CONN_MAX_AGE={args.conn_max_age}",
            daphnes=servers.daphnes.count,
        )
    )
    if args.py_spy:
        print(f"\nprofiles: Daphne {args.py_spy}, worker {worker_profile_path(args.py_spy)}")
    print(f"\n(total {time.monotonic() - _STARTED:.0f} s)")
    return 0 if all(ok for _n, ok, _d in checks) else 1


def _scale(args: argparse.Namespace, world: World, twilio: Twilio, servers: Servers, db: Db) -> int:
    points: list[ScalePoint] = []
    phases: list[Sent] = [Sent("warm-up")]
    progress("  warming up: 30 webhooks through Daphne and the worker …")
    asyncio.run(warm_up(world, twilio, phases[0], db, args))
    for n, count in enumerate(args.scale_counts):
        if n:
            progress(f"restarting with {count} Daphne(s) on the same port …")
            servers.daphnes.restart(count)
        sent = Sent(f"{count} Daphne(s)")
        phases.append(sent)
        points.append(
            asyncio.run(
                run_scale_point(count, world, twilio, sent, servers.meter(), db, args, DaphneIdle(servers.daphnes.pids))
            )
        )
    progress("verifying …")
    checks = verify(world, phases, None)
    print_scale(points, args, checks)
    print(f"\n(total {time.monotonic() - _STARTED:.0f} s)")
    return 0 if all(ok for _n, ok, _d in checks) else 1


if __name__ == "__main__":
    sys.exit(main())

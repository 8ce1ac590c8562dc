"""Twilio SMS webhooks under load, as ratios to a trivial view served by the same Daphne in the same run.

    .venv/bin/python -m bench.sms_inbound            # from the repository root; about 2½ minutes

Starts its own PostgreSQL and Redis on loopback (tests/services.py), migrates, creates a team, an SMS
inbox (auto-assign on), online agents and a supervisor, serves config.asgi with one Daphne process as
docs/production.md runs it (bench.settings only adds /bench/trivial/), drives it with an asyncio
HTTP/1.1 keep-alive client, and stops everything it started, on errors and Ctrl-C too. Figures:

1. signed inbound webhooks/s (stored + published) ÷ trivial POSTs/s, closed loop at a fixed
   concurrency (target ≥ 0.5); afterwards every MessageSid must be stored exactly once with exactly
   one message.add event;
2. POST → a listening agent's /ws/agent/ socket, p50 and p99, for message.add at a paced 200
   webhooks/s (target p99 < 50 ms, nothing dropped, every webhook answered 200), beside the round
   trip of trivial POSTs at the same pace;
3. signed status callbacks/s (sent → delivered) ÷ the same trivial baseline (target ≥ 0.5).

See bench/README.md for what is measured and how to read it. Exit status: 0 when the run completed
and every consistency check passed (targets may still be missed: the report says MISS), 1 when a
check failed, 130 when interrupted.
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
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http import Response
from bench.load import (
    TWILIO_TIMEOUT,
    AgentSocket,
    Request,
    Throughput,
    closed_loop,
    ignore,
    paced,
    percentile,
    quiesce,
    start_py_spy,
)
from bench.procs import CpuMeter, Daphne, fast_stop_postgres, postmaster_pid, thread_count

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
    """Production mode (PostgreSQL + Redis), tasks run on commit in the caller, the Twilio simulator."""
    return {
        "DJANGO_SETTINGS_MODULE": "bench.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": redis_url,
        "SECRET_KEY": secrets.token_urlsafe(40),
        # Inbound work runs in the request either way; only a HELP reply would queue a send.
        "TASK_RUNNER": "immediate",
        "TWILIO_TRANSPORT": "simulator",
        "TWILIO_AUTH_TOKEN": token,
        "PUBLIC_BASE_URL": f"http://127.0.0.1:{port}",
        "ALLOWED_HOSTS": "127.0.0.1,localhost",
        "DATA_DIR": data_dir,
        "DEBUG": "false",
        "SIMULATOR_ENABLED": "false",
    }


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

    def __init__(self, world: World, seed: int = 7) -> None:
        from twilio.request_validator import RequestValidator

        self.world = world
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
class Ledger:
    """What the client saw accepted, to check against the database afterwards."""

    inbound_ok: set[str] = field(default_factory=set)
    inbound_other: Counter[int] = field(default_factory=Counter)
    inbound_in_doubt: set[str] = field(default_factory=set)  # sent, never answered: stored at most once
    status_posted: set[int] = field(default_factory=set)
    status_ok: set[int] = field(default_factory=set)
    status_other: Counter[int] = field(default_factory=Counter)

    def on_inbound(self, sid: Any, response: Response) -> None:
        if response.status == 200:
            self.inbound_ok.add(sid)
        else:
            self.inbound_other[response.status] += 1

    def on_status(self, message_id: Any, response: Response) -> None:
        if response.status == 204:
            self.status_ok.add(message_id)
        else:
            self.status_other[response.status] += 1


@dataclass
class Latency:
    """The paced run: POST due time → HTTP answer, and → message.add on the agent's socket."""

    sent: int
    failed: int  # not answered 200 (error status, connection lost, or not answered within 15 s)
    dropped: int  # answered 200 but never seen on the socket
    socket_ms: list[float]
    answer_ms: list[float]
    frames: int
    trivial_rtt_ms: list[float]  # trivial POSTs at the same pace, for scale


@dataclass
class Results:
    trivial: list[Throughput]
    inbound: Throughput
    status: Throughput
    latency: Latency
    checks: list[tuple[str, bool, str]]
    probe: dict[str, float]
    config: dict[str, Any]
    world: World
    conn_max_age: str


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
    """True when Daphne holds about as many threads as when idle.

    Daphne runs each sync request on a thread of its own, and a request whose client gave up (Twilio's
    15 s) still runs, possibly blocked on a lock or a connection pool without using CPU. Long-lived
    threads appear after the first load too (a psycopg pool's workers, the event loop's executor), hence
    the margin: a backlog worth waiting for is dozens of threads.
    """

    MARGIN = 12

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.baseline: int | None = None

    def calibrate(self) -> None:
        self.baseline = thread_count(self.pid)

    def __call__(self) -> bool:
        return self.baseline is None or thread_count(self.pid) <= self.baseline + self.MARGIN


async def run_inbound_phases(
    world: World,
    twilio: Twilio,
    ledger: Ledger,
    meter: CpuMeter,
    args: argparse.Namespace,
    idle: DaphneIdle,
    profilers: list[subprocess.Popen[bytes]],
) -> tuple[Throughput, Throughput, Latency]:
    common = closed_loop_options(world, meter, args)
    progress("  trivial POSTs, closed loop …")
    trivial = await closed_loop("trivial", lambda: trivial_request(twilio), ignore, **common)
    await quiesce(meter)
    idle.calibrate()

    def next_inbound() -> Request:
        request, _sid, _token = twilio.inbound()
        return request

    progress("  signed inbound webhooks, closed loop …")
    profiler = start_py_spy(args.py_spy, meter.roots["daphne"], args.warmup + args.duration)
    if profiler is not None:
        profilers.append(profiler)
    inbound = await closed_loop("inbound", next_inbound, ledger.on_inbound, **common)
    ledger.inbound_in_doubt.update(inbound.in_doubt)
    if profiler is not None:
        await asyncio.get_running_loop().run_in_executor(None, profiler.wait)
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
    try:

        def paced_inbound() -> tuple[Request, str]:
            request, _sid, token = twilio.inbound()
            return request, token

        # One uninterrupted paced stream; its first --warmup seconds warm the path (connections, consumer,
        # caches) and are left out of the figures, so the measured stretch starts under steady load.
        run = await paced(paced_inbound, ledger.on_inbound, seconds=args.warmup + args.latency_seconds, **pace)
        ledger.inbound_in_doubt.update(run.in_doubt)
        cut = min(run.sent_at.values(), default=0.0) + args.warmup
        measured = {t: due for t, due in run.sent_at.items() if due >= cut}
        accepted = [t for t in measured if run.ok.get(t)]
        await socket.wait_for(accepted, args.drain)
    finally:
        await socket.close()
    await quiesce(meter, idle=idle)
    latency = Latency(
        sent=len(measured),
        failed=len(measured) - len(accepted),
        dropped=sum(1 for t in accepted if t not in socket.received),
        socket_ms=[1000 * (socket.received[t] - due) for t, due in measured.items() if t in socket.received],
        answer_ms=[1000 * (run.answered[t] - due) for t, due in measured.items() if t in run.answered],
        frames=socket.frames,
        trivial_rtt_ms=[1000 * x for x in trivial_paced.answer_times()],
    )
    return trivial, inbound, latency


async def run_status_phases(
    world: World,
    twilio: Twilio,
    ledger: Ledger,
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
        ledger.status_posted.add(item[0])
        return twilio.status(*item)

    common = closed_loop_options(world, meter, args)
    progress("  signed status callbacks (sent → delivered), closed loop …")
    status = await closed_loop("status", next_status, ledger.on_status, **common)
    await quiesce(meter, idle=idle)
    progress("  trivial POSTs again, closed loop …")
    trivial = await closed_loop("trivial", lambda: trivial_request(twilio), ignore, **common)
    return status, trivial


def verify(world: World, ledger: Ledger) -> list[tuple[str, bool, str]]:
    """Every accepted webhook stored exactly once, with exactly one event each."""
    from django.db.models import Count

    from contactcenter.models import Event, Message, MessageDirection, MessageStatus

    checks: list[tuple[str, bool, str]] = []
    inbound = Message.objects.filter(inbox_id=world.inbox_id, direction=MessageDirection.INBOUND)
    stored = list(inbound.values_list("provider_message_id", flat=True))
    duplicates = (
        inbound.values("provider_message_id").annotate(n=Count("id")).filter(n__gt=1).count()
    )  # the unique constraint should make this impossible
    missing = ledger.inbound_ok - set(stored)
    extra = set(stored) - ledger.inbound_ok - ledger.inbound_in_doubt
    late = len(set(stored) & ledger.inbound_in_doubt)
    checks.append(
        (
            "inbound: every webhook answered 200 and stored exactly once",
            not missing
            and not extra
            and not duplicates
            and len(stored) == len(ledger.inbound_ok) + late
            and not ledger.inbound_other
            and not ledger.inbound_in_doubt,
            f"{len(ledger.inbound_ok)} answered 200, {len(stored)} stored, {len(missing)} missing, "
            f"{len(extra)} unexpected, {duplicates} duplicated; answered non-200: "
            f"{dict(ledger.inbound_other) or 0} (none of them stored unless counted unexpected); "
            f"unanswered within {TWILIO_TIMEOUT:g} s: {len(ledger.inbound_in_doubt)} ({late} stored late)",
        )
    )
    adds = Event.objects.filter(type="message", op="add").count()
    checks.append(
        ("inbound: message.add events = messages", adds == len(stored), f"{adds} events, {len(stored)} messages")
    )
    status_posted = ledger.status_posted
    delivered = Message.objects.filter(pk__in=status_posted, status=MessageStatus.DELIVERED).count()
    updates = Event.objects.filter(type="message", op="update_status").count()
    checks.append(
        (
            "status: every callback answered 204 and moved sent → delivered once",
            delivered == len(ledger.status_ok) == len(status_posted)
            and updates == delivered
            and not ledger.status_other,
            f"{len(status_posted)} posted, {len(ledger.status_ok)} answered 204, {delivered} delivered, "
            f"{updates} update_status events; non-204 answers {dict(ledger.status_other) or 0}",
        )
    )
    return checks


def probe_queries(world: World, twilio: Twilio) -> dict[str, float]:
    """SQL statements per request, counted in-process through the same views (Django test client)."""
    from django.db import connection
    from django.test import Client
    from django.test.utils import CaptureQueriesContext

    client = Client(HTTP_HOST=f"127.0.0.1:{world.port}")

    def count(request: Request) -> int:
        _method, target, body, headers, _tag = request
        with CaptureQueriesContext(connection) as ctx:
            response = client.post(
                target, data=body, content_type=FORM, headers={k: v for k, v in headers if k != "Content-Type"}
            )
        assert response.status_code in (200, 204), response.status_code
        return len(ctx.captured_queries)

    new = [count(twilio.inbound(sender=f"+86139{20_000_000 + i:08d}")[0]) for i in range(5)]
    existing = [count(twilio.inbound(sender=world.senders[i])[0]) for i in range(5)]
    outbound = precreate_outbound(world, 5)
    status = [count(twilio.status(message_id, sid)) for message_id, sid in outbound]
    return {
        "inbound_new_sender": statistics.mean(new),
        "inbound_existing_sender": statistics.mean(existing),
        "status_callback": statistics.mean(status),
    }


def inbound_stored(world: World) -> int:
    from contactcenter.models import Message, MessageDirection

    return Message.objects.filter(inbox_id=world.inbox_id, direction=MessageDirection.INBOUND).count()


def postgres_sessions() -> int:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("SELECT coalesce(sum(sessions), 0) FROM pg_stat_database")
        row = cursor.fetchone()
    return int(row[0]) if row else 0


def _ms(value: float) -> str:
    if math.isnan(value):
        return "—"
    return "∞" if math.isinf(value) else f"{value:.1f} ms"


def print_report(r: Results) -> None:
    base_rates = [t.rate for t in r.trivial]
    base = statistics.mean(base_rates)
    spread = (max(base_rates) - min(base_rates)) / base if base else 0.0
    c = r.config
    cpus = os.cpu_count() or 1
    print()
    print(
        f"Twilio SMS webhooks — 1 Daphne process (DB_CONN_MAX_AGE={r.conn_max_age}), PostgreSQL + Redis on "
        f"loopback, {cpus} CPUs; {len(r.world.senders)} patients, {r.world.agents} online agents "
        f"(capacity {r.world.capacity} each); closed loops at concurrency {c['concurrency']}, "
        f"{c['duration']:g} s measured after {c['warmup']:g} s warm-up"
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

    def verdict(ok: bool) -> str:
        return "ok" if ok else "MISS"

    lat = r.latency
    inbound_ratio = r.inbound.rate / base if base else 0.0
    status_ratio = r.status.rate / base if base else 0.0
    # A webhook that never reached the socket (not answered 200, or dropped) counts as infinitely late:
    # percentiles over the survivors alone would flatter an overloaded server.
    socket_all = lat.socket_ms + [math.inf] * (lat.sent - len(lat.socket_ms))
    answer_all = lat.answer_ms + [math.inf] * (lat.sent - len(lat.answer_ms))
    p50, p99 = percentile(socket_all, 50), percentile(socket_all, 99)
    b50, b99 = percentile(lat.trivial_rtt_ms, 50), percentile(lat.trivial_rtt_ms, 99)
    p99_ok = lat.dropped == 0 and lat.failed == 0 and p99 < LATENCY_TARGET_MS
    rows: list[tuple[str, str, str, str, str]] = [
        (
            "1 inbound webhooks/s (stored + published)",
            f"{r.inbound.rate:.1f}/s",
            f"{base:.0f}/s",
            f"{inbound_ratio:.3f}",
            f"≥ {THROUGHPUT_TARGET:g}  {verdict(inbound_ratio >= THROUGHPUT_TARGET)}",
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
    header = ("figure", "measured", "baseline", "ratio", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(5)]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())
    print()
    print(
        f"paced {c['rate']:g}/s, {c['latency_seconds']:g} s measured: {lat.sent} webhooks, {len(lat.socket_ms)} reached "
        f"the socket (∞ = never: not answered 200, or dropped); webhook HTTP answer p50 {_ms(percentile(answer_all, 50))}, "
        f"p99 {_ms(percentile(answer_all, 99))}; socket max {_ms(max(socket_all, default=math.nan))}; "
        f"{lat.frames} socket frames"
    )
    if c["rate"] > r.inbound.rate:
        print(
            f"  note: {c['rate']:g}/s is above the inbound capacity measured in figure 1 ({r.inbound.rate:.1f}/s): "
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
    print("CPU ms per request (all processes share the CPUs; client = this load generator)")
    sides = ["daphne", "postgres", "redis", "client"]
    print("  " + "phase".ljust(10) + "".join(s.rjust(10) for s in [*sides, "total"]))
    for t in [r.trivial[0], r.inbound, r.status]:
        per = t.cpu_ms_per_request()
        total = sum(per.get(s, 0.0) for s in sides)
        print("  " + t.name.ljust(10) + "".join(f"{per.get(s, 0.0):10.2f}" for s in sides) + f"{total:10.2f}")
    print()
    print(
        "SQL statements per request (in-process probe): "
        + ", ".join(f"{k.replace('_', ' ')} {v:.0f}" for k, v in r.probe.items() if not k.startswith("pg_"))
    )
    if "pg_sessions_per_inbound" in r.probe:
        print(
            "PostgreSQL sessions opened per inbound webhook (inbound phases, socket included): "
            f"{r.probe['pg_sessions_per_inbound']:.2f}"
        )
    print()
    for name, ok, detail in r.checks:
        print(f"check {'ok  ' if ok else 'FAIL'} {name}: {detail}")


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m bench.sms_inbound",
        description=(__doc__ or "").split("\n\n")[0],
        epilog="Figures and how to read them: bench/README.md.",
    )
    parser.add_argument("--concurrency", type=int, default=16, help="connections in closed-loop runs (16)")
    parser.add_argument("--duration", type=float, default=8.0, help="measured seconds per closed-loop run (8)")
    parser.add_argument("--warmup", type=float, default=2.0, help="warm-up seconds before each run (2)")
    parser.add_argument("--rate", type=float, default=200.0, help="paced webhooks per second (200)")
    parser.add_argument("--latency-seconds", type=float, default=10.0, help="measured paced seconds (10)")
    parser.add_argument("--baseline-pace-seconds", type=float, default=4.0, help="paced trivial seconds (4)")
    parser.add_argument("--drain", type=float, default=10.0, help="max wait for the last socket events (10)")
    parser.add_argument("--pool", type=int, default=64, help="connections available to paced runs (64)")
    parser.add_argument("--senders", type=int, default=300, help="distinct patient numbers (300)")
    parser.add_argument("--agents", type=int, default=4, help="online agents for round robin (4)")
    parser.add_argument(
        "--agent-capacity", type=int, help="open conversations per agent (the product's default, 8, if not given)"
    )
    parser.add_argument("--status-messages", type=int, default=8000, help="outbound messages to call back (8000)")
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="DB_CONN_MAX_AGE (0: the default connection pool, DB_POOL_MAX_SIZE)"
    )
    parser.add_argument("--py-spy", metavar="FILE", help="profile Daphne with py-spy during the inbound run")
    parser.add_argument("--keep-logs", action="store_true", help="keep Daphne's log directory")
    return parser.parse_args(argv)


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
    from tests.services import PostgresServer, RedisServer, free_port

    work = Path(tempfile.mkdtemp(prefix="bench-sms-"))
    log = work / "daphne.log"
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    daphne: Daphne | None = None
    profilers: list[subprocess.Popen[bytes]] = []
    try:
        progress("starting PostgreSQL and Redis on loopback …")
        pg = PostgresServer()
        database_url = pg.start()
        redis = RedisServer()
        redis_url = redis.start()
        port = free_port()
        token = secrets.token_hex(16)
        env = bench_env(port=port, database_url=database_url, redis_url=redis_url, token=token, data_dir=str(work))
        env["DB_CONN_MAX_AGE"] = str(args.conn_max_age)
        os.environ.update(env)
        progress("migrating …")
        migrate({**os.environ, **env}, work / "migrate.log")

        import django

        django.setup()
        import logging

        logging.getLogger().setLevel(logging.WARNING)  # this process only; Daphne logs as in production
        warnings.filterwarnings("ignore", message="No directory at", module="django.core.handlers.base")
        world = create_world(
            port=port, token=token, senders=args.senders, agents=args.agents, capacity=args.agent_capacity
        )
        twilio = Twilio(world)
        ledger = Ledger()

        progress(f"serving config.asgi with Daphne on 127.0.0.1:{port} …")
        daphne = Daphne(port=port, env={**os.environ, **env}, cwd=ROOT, log=log)
        daphne.start()
        assert pg.proc is not None and redis.proc is not None
        meter = CpuMeter({"daphne": daphne.pid, "postgres": postmaster_pid(pg.data), "redis": redis.proc.pid})
        idle = DaphneIdle(daphne.pid)

        sessions_before = postgres_sessions()
        trivial1, inbound, latency = asyncio.run(
            run_inbound_phases(world, twilio, ledger, meter, args, idle, profilers)
        )
        sessions_after = postgres_sessions()
        # Webhooks the server worked through: stored ones (answered or not) plus those answered with an error.
        inbound_requests = inbound_stored(world) + sum(ledger.inbound_other.values())

        progress(f"  pre-creating {args.status_messages} sent outbound messages …")
        outbound = precreate_outbound(world, args.status_messages)
        status, trivial2 = asyncio.run(run_status_phases(world, twilio, ledger, meter, args, idle, outbound))
        progress("verifying and probing queries in-process …")
        checks = verify(world, ledger)
        probe = probe_queries(world, twilio)
        probe["pg_sessions_per_inbound"] = (sessions_after - sessions_before) / max(1, inbound_requests)
        print_report(
            Results(
                trivial=[trivial1, trivial2],
                inbound=inbound,
                status=status,
                latency=latency,
                checks=checks,
                probe=probe,
                config=vars(args),
                world=world,
                conn_max_age=env["DB_CONN_MAX_AGE"],
            )
        )
        print(f"\n(total {time.monotonic() - _STARTED:.0f} s; Daphne log {log if args.keep_logs else 'removed'})")
        return 0 if all(ok for _n, ok, _d in checks) else 1
    finally:
        # Each step on its own, and deaf to a second Ctrl-C: one failing stop must not leave the others running.
        for signum in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
            signal.signal(signum, signal.SIG_IGN)
        for stop in (
            *(p.kill for p in profilers if p.poll() is None),
            # Idle after a completed run; after an interrupt it may be mid-request, and the database goes next.
            (lambda: daphne.stop(3.0)) if daphne is not None else None,
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
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

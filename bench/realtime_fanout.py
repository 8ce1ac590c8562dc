"""Real-time fan-out: events from receive_inbound to hundreds of agent websockets on 2 Daphne processes.

    .venv/bin/python -m bench.realtime_fanout                  # 500 sockets, 30 msg/s; ~3 minutes
    .venv/bin/python -m bench.realtime_fanout --quick          # 200 sockets, short phases; ~2 minutes
    .venv/bin/python -m bench.realtime_fanout --curve 100,200,300,400,500   # cost per event by sockets; ~6 min

Starts its own PostgreSQL and Redis on loopback (tests/services.py), migrates, creates teams (one SMS
inbox each, auto-assign on), agents spread over the teams (some in two) and supervisors, logs each in
through the session engine, opens one conversation per patient, serves config.asgi with 2 Daphne
processes (channels_redis layer) and opens one /ws/agent/ socket per user, spread over the Daphnes.
Separate publisher processes then run `receive_inbound` at a steady rate (each call commits a
conversation.update + message.add and publishes one hint after commit, to every process's event hub:
contactcenter.fanout); every socket timestamps every event it receives. Stops everything it started,
also on error or Ctrl-C.

Figures, with ratios to baselines taken in the same run on the same sockets and Daphnes:
- commit → socket latency p50/p95/p99 per (socket, event) pair, target p99 < 250 ms;
- dropped: (socket, event) pairs the socket may see (the event's audience and its conversation's placement,
  as access.EventVisibility.delivery rules) that had not arrived on the live path once nothing more
  arrived for --grace seconds, and those still missing after every socket reconnects and resyncs by its
  last event id (as inbox/socket.js does); target 0;
- baselines: a raw channel-layer group_send → receive round trip, a websocket echo ({"op": "ping"} →
  pong) on the same Daphnes, and a layer broadcast through the same consumers without the database
  (typing.signal to a conversation every socket of a team watches, one copy per recipient, from the same
  publishers at the rate the events were actually committed);
- cost: CPU ms per message and per event by side, PostgreSQL transactions and event-table reads per message.

--curve N1,N2,… runs the load once per socket count in one run (the sockets of each step stay open for the
next) and prints, per step, latency, dropped/duplicate/out-of-order pairs and the cost per event: Daphne CPU
per committed event and per delivered (socket, event) pair, PostgreSQL CPU, transactions and event-table
reads per message. The hub design's claim is that only the websocket writes grow with the sockets.

Exit status 0 when the run completed with nothing missing after resync, no event twice or out of order
on a socket and no failed receive_inbound (a missed latency target is reported as MISS, not an error),
1 otherwise, 130 on Ctrl-C, 143 on SIGTERM. See bench/README.md for how to read the figures.
"""

from __future__ import annotations

import argparse
import asyncio
import bisect
import json
import os
import random
import re
import resource
import secrets
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter, deque
from collections.abc import Awaitable, Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

from bench.load import percentile, quiesce, start_py_spy
from bench.procs import CpuMeter, CpuSnapshot, Daphne, fast_stop_postgres, postmaster_pid
from bench.sms_inbound import bench_env, migrate

ROOT = Path(__file__).resolve().parent.parent
FIXTURE = ROOT / "channels_adapters" / "sms" / "fixtures" / "inbound_plain_text.json"
TARGET_P99_MS = 250.0
CONNECT_CONCURRENCY = 25  # sockets opening (or resyncing) at once
# A PostgreSQL backend that goes idle less than a second after its last statistics flush reports the rest up to
# 10 s later (PGSTAT_IDLE_INTERVAL): the sockets' opening reads must be in before a window's first reading.
PG_STATS_SETTLE_SECONDS = 11.0
T = TypeVar("T")


# ---------------------------------------------------------------------------------------------------
# The world: teams with inboxes, agents and supervisors with sessions
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredEvent:
    """An event row's audience, and where its conversation is now (None: no conversation, or it is gone)."""

    id: int
    type: str
    inbox_id: int | None
    team_id: int | None
    user_id: int | None
    conversation_id: int | None
    placement: tuple[int, int] | None  # (inbox, team) of the conversation when the run ended


@dataclass(frozen=True)
class Staff:
    user_id: int
    supervisor: bool
    team_ids: frozenset[int]
    inbox_ids: frozenset[int]
    cookie: str
    home_team: int  # the team whose conversation this socket watches in the broadcast baseline

    def sees(self, event: StoredEvent) -> bool:
        """Whether a socket of this user gets the event (sent, or withdrawn by id), by the rule
        docs/architecture.md states, written out here rather than taken from access.py: supervisors get every
        event; others get events addressed to them (by inbox, team or user) that are about no conversation or
        about one they may see now (its inbox or team is theirs); an addressed conversation event about one
        they may no longer see still reaches its assignee, as a removal with the event's id (the server sends
        one removal per conversation and frame; no conversation moves in this bench, so none is sent)."""
        if self.supervisor:
            return True
        addressed = (
            (event.inbox_id is not None and event.inbox_id in self.inbox_ids)
            or (event.team_id is not None and event.team_id in self.team_ids)
            or (event.user_id is not None and event.user_id == self.user_id)
        )
        if not addressed:
            return False
        if event.conversation_id is None:
            return True
        if event.placement is not None and (
            event.placement[0] in self.inbox_ids or event.placement[1] in self.team_ids
        ):
            return True
        return event.user_id == self.user_id and event.type == "conversation"


@dataclass(frozen=True)
class TeamPlan:
    team_id: int
    inbox_id: int
    senders: list[str]
    # One of the team's conversations: its sockets watch it for the broadcast baseline (set once primed).
    watched_conversation: int = 0


@dataclass(frozen=True)
class World:
    staff: list[Staff]
    teams: list[TeamPlan]


def create_world(*, agents: int, supervisors: int, teams: int, senders_per_team: int) -> World:
    """Teams with an auto-assigning SMS inbox each; online agents round robin over teams, every 8th in two."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
    from contactcenter.models import AgentProfile, Availability, Role, Team

    team_rows: list[tuple[int, int]] = []
    for t in range(teams):
        team = Team.objects.create(code=f"bench-desk-{t}", name=f"Service desk {t}", name_zh=f"服务台 {t}")
        inbox = save_sms_inbox(
            inbox=None,
            settings=SmsInboxSettings(
                name=f"Desk {t} SMS",
                team=team,
                account_sid="AC" + secrets.token_hex(16),
                auth_token_env="TWILIO_AUTH_TOKEN",
                phone_numbers=[f"+86101234{t:05d}"],
                messaging_service_sid="",
                auto_assign=True,
            ),
        )
        team_rows.append((team.pk, inbox.pk))

    # No password hashing (PBKDF2 would take minutes for 250 users): sessions are made directly below.
    unusable = make_password(None)
    users = User.objects.bulk_create(
        [User(username=f"bench-agent{i}", password=unusable) for i in range(agents)]
        + [User(username=f"bench-supervisor{i}", password=unusable) for i in range(supervisors)]
    )
    profiles = AgentProfile.objects.bulk_create(
        [
            AgentProfile(
                user=user,
                role=Role.AGENT if i < agents else Role.SUPERVISOR,
                availability=Availability.ONLINE,
                display_name=f"Agent {i}" if i < agents else f"Supervisor {i - agents}",
            )
            for i, user in enumerate(users)
        ]
    )
    memberships: dict[int, set[int]] = {}
    through = AgentProfile.teams.through
    links: list[Any] = []
    for i, profile in enumerate(profiles[:agents]):
        member_of = {i % teams} | ({(i + 1) % teams} if i % 8 == 7 and teams > 1 else set())
        memberships[profile.user_id] = {team_rows[t][0] for t in member_of}
        links.extend(through(agentprofile_id=profile.pk, team_id=team_rows[t][0]) for t in member_of)
    through.objects.bulk_create(links)

    inbox_of_team = dict(team_rows)
    staff = [
        Staff(
            user_id=user.pk,
            supervisor=i >= agents,
            team_ids=frozenset(memberships.get(user.pk, set())),
            inbox_ids=frozenset(inbox_of_team[t] for t in memberships.get(user.pk, set())),
            cookie=session_cookie(user),
            # An agent's first team; supervisors spread over the teams.
            home_team=team_rows[i % teams][0] if i < agents else team_rows[(i - agents) % teams][0],
        )
        for i, user in enumerate(users)
    ]
    plans = [
        TeamPlan(
            team_id=team_id,
            inbox_id=inbox_id,
            # Distinct valid mainland mobiles; a sender's first message opens a conversation.
            senders=[f"+86139{t:02d}{k:06d}" for k in range(senders_per_team)],
        )
        for t, (team_id, inbox_id) in enumerate(team_rows)
    ]
    return World(staff=staff, teams=plans)


def prime_conversations(world: World) -> World:
    """One message from every sender before any socket connects, so the run sees what a contact center
    mostly sees: follow-ups in open, assigned conversations (first contacts: --new-share). Returns the world
    with each team's watched conversation."""
    from channels_adapters.base import InboundMessage, Sender
    from contactcenter import events
    from contactcenter.actions.inbound import receive_inbound
    from contactcenter.models import IdentityKind

    def no_hint(event_id: int, groups: list[str]) -> None:
        return None  # nobody listens yet

    real_publish_hint = events.publish_hint
    events.publish_hint = no_hint
    try:
        for team in world.teams:
            for n, sender in enumerate(team.senders):
                receive_inbound(
                    InboundMessage(
                        inbox_id=team.inbox_id,
                        sender=Sender(kind=IdentityKind.PHONE, value=sender),
                        body="Hello, I have a question about my appointment.",
                        provider_message_id=f"SMprime{team.inbox_id:04d}{n:06d}",
                    )
                )
    finally:
        events.publish_hint = real_publish_hint
    from contactcenter.models import Conversation

    watched = [
        Conversation.objects.filter(inbox_id=team.inbox_id).order_by("id").values_list("id", flat=True).first()
        for team in world.teams
    ]
    return World(
        staff=world.staff,
        teams=[replace(team, watched_conversation=c or 0) for team, c in zip(world.teams, watched, strict=True)],
    )


def session_cookie(user: Any) -> str:
    """A logged-in session as django.contrib.auth.login would store it, without a request."""
    from importlib import import_module

    from django.conf import settings
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    store[SESSION_KEY] = str(user.pk)
    store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
    store[HASH_SESSION_KEY] = user.get_session_auth_hash()
    store.create()
    return str(store.session_key)


def pg_counters() -> dict[str, int]:
    """Cumulative PostgreSQL counters of the bench database: transactions (each autocommit query is one) and
    reads of the event table (index or sequential scans of contactcenter_event: the hubs' reads, and any
    socket's own catch-up, whose audience filter is one scan per index it uses; the publishers only insert)."""
    from django.db import connection, connections

    try:
        with connection.cursor() as cursor:
            cursor.execute(
                "SELECT xact_commit + xact_rollback FROM pg_stat_database WHERE datname = current_database()"
            )
            row = cursor.fetchone()
            cursor.execute(
                "SELECT coalesce(idx_scan, 0) + coalesce(seq_scan, 0) FROM pg_stat_user_tables "
                "WHERE relname = 'contactcenter_event'"
            )
            scans = cursor.fetchone()
            return {"transactions": int(row[0]) if row else 0, "event_reads": int(scans[0]) if scans else 0}
    finally:
        connections.close_all()


def max_event_id() -> int:
    from django.db import connections

    from contactcenter.models import Event

    try:
        return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    finally:
        connections.close_all()


def events_after(after_id: int) -> list[StoredEvent]:
    """Every stored event after `after_id`, with its conversation's placement now; in a worker thread."""
    from django.db import connections

    from contactcenter.models import Conversation, Event

    try:
        rows = list(
            Event.objects.filter(id__gt=after_id)
            .order_by("id")
            .values_list("id", "type", "inbox_id", "team_id", "user_id", "conversation_id")
        )
        placements = {
            pk: (inbox, team)
            for pk, inbox, team in Conversation.objects.filter(
                pk__in={row[5] for row in rows if row[5] is not None}
            ).values_list("pk", "inbox_id", "team_id")
        }
        return [
            StoredEvent(
                pk, type_, inbox, team, user, conversation, placements.get(conversation) if conversation else None
            )
            for pk, type_, inbox, team, user, conversation in rows
        ]
    finally:
        connections.close_all()


# ---------------------------------------------------------------------------------------------------
# The publisher: a separate process, as a Celery worker or another app server would be
# ---------------------------------------------------------------------------------------------------


def publisher_main(plan_path: str) -> int:
    """Paced open loop: job i is due at t0 + i/rate whatever happened to the earlier ones.

    mode "inbound": receive_inbound, timestamped when its transaction commits (the first after-commit
    hint publication starts) and when its last hint went out; mode "events": only the events it records.
    mode "broadcast": a typing.signal to a conversation group the consumers forward as is, no database
    involved: the fan-out baseline.
    """
    plan = json.loads(Path(plan_path).read_text())
    import django

    django.setup()
    from asgiref.sync import async_to_sync
    from channels.layers import get_channel_layer
    from django.db import connections

    from channels_adapters.base import InboundMessage, Sender
    from contactcenter import events
    from contactcenter.actions.inbound import receive_inbound
    from contactcenter.models import IdentityKind

    teams: list[dict[str, Any]] = plan["teams"]
    rate: float = plan["rate"]
    total = max(1, round(rate * (plan["warmup"] + plan["seconds"])))
    # A publisher that fell this far behind stops starting jobs: the run stays bounded.
    late_limit: float = plan["late_limit"]
    rng = random.Random(plan["seed"])
    template: dict[str, str] = json.loads(FIXTURE.read_text())
    records: list[dict[str, Any]] = []
    tls = threading.local()
    real_publish_hint = events.publish_hint

    def timed_publish_hint(event_id: int, groups: list[str]) -> None:
        # on_commit callbacks run right after COMMIT, in order: the first one marks the commit. A transaction
        # sends one hint, with its newest event id (commit_times finds the others).
        if tls.commit_at is None:
            tls.commit_at = time.monotonic()
        tls.hints.append(event_id)
        real_publish_hint(event_id, groups)

    events.publish_hint = timed_publish_hint

    def inbound(i: int, due: float, team_index: int, sender: str) -> None:
        if time.monotonic() - due > late_limit:
            records.append({"due": due, "commit": None, "published": None, "hints": [], "error": None, "skipped": True})
            return
        tls.commit_at, tls.hints = None, []
        team = teams[team_index]
        sid = f"SM{plan['salt']}{i:012d}"
        body = f"Hi, can I move my appointment to Friday? (ref bench-{i})"
        payload = {**template, "MessageSid": sid, "SmsSid": sid, "SmsMessageSid": sid, "From": sender, "Body": body}
        error = None
        try:
            receive_inbound(
                InboundMessage(
                    inbox_id=team["inbox_id"],
                    sender=Sender(kind=IdentityKind.PHONE, value=sender),
                    body=body,
                    provider_message_id=sid,
                    provider_payload=payload,
                )
            )
        except Exception as exc:
            error = repr(exc)
        records.append(
            {"due": due, "commit": tls.commit_at, "published": time.monotonic(), "hints": tls.hints, "error": error}
        )

    layer = get_channel_layer()
    assert layer is not None

    def broadcast(i: int, due: float, team_index: int, _sender: str) -> None:
        team = teams[team_index]
        # Every socket whose home is this team watches this conversation (the "watch" op): one group_send and
        # one copy per recipient through the layer, which is how the sockets themselves received hints before
        # the event hub. Sockets join no inbox or team group any more, so this is the layer-only fan-out.
        groups = [events.conversation_group(team["watched_conversation"])]
        if time.monotonic() - due > late_limit:
            records.append(
                {"due": due, "commit": None, "published": None, "seqs": [], "team": team_index, "skipped": True}
            )
            return
        start, error = time.monotonic(), None
        seqs = [2 * i, 2 * i + 1]  # two per tick, as receive_inbound records two events
        try:
            for seq in seqs:
                message = {"type": "typing.signal", "conversation_id": 0, "state": "start", "who": "bench", "seq": seq}
                for group in groups:
                    async_to_sync(layer.group_send)(group, message)
        except Exception as exc:
            error = repr(exc)
        records.append(
            {
                "due": due,
                "commit": start,
                "published": time.monotonic(),
                "seqs": seqs,
                "team": team_index,
                "error": error,
            }
        )

    # --source events: the two events receive_inbound records for a follow-up, with its payloads and audience,
    # written in one transaction by events.record_many and nothing else: the fan-out's load without the
    # webhook's own work, which production does on other machines (sms_inbound measures it).
    replay: dict[int, list[tuple[dict[str, Any], dict[str, Any], events.Audience]]] = {}
    if plan["mode"] == "events":
        from django.db import transaction

        from contactcenter.actions.conversations import audience_of
        from contactcenter.api.shapes import conversation_data, message_data
        from contactcenter.models import Conversation, Message

        for team_index, team in enumerate(teams):
            conversations = list(
                Conversation.objects.filter(inbox_id=team["inbox_id"]).select_related("inbox", "patient").order_by("id")
            )
            replay[team_index] = []
            for conversation in conversations:
                latest = Message.objects.filter(conversation=conversation).order_by("-id").first()
                assert latest is not None
                replay[team_index].append(
                    (conversation_data(conversation), message_data(latest), audience_of(conversation))
                )
        connections.close_all()

    def recorded(i: int, due: float, team_index: int, sender: str) -> None:
        if time.monotonic() - due > late_limit:
            records.append({"due": due, "commit": None, "published": None, "hints": [], "error": None, "skipped": True})
            return
        tls.commit_at, tls.hints = None, []
        choices = replay[team_index]
        conversation, message, audience = choices[teams[team_index]["senders"].index(sender) % len(choices)]
        error = None
        try:
            with transaction.atomic():
                events.record_many(
                    [
                        (
                            events.ConversationUpdated(
                                conversation=conversation, changed=["last_message_at", "unread_count"]
                            ),
                            audience,
                        ),
                        (events.MessageAdded(message=message), audience),
                    ]
                )
        except Exception as exc:
            error = repr(exc)
        records.append(
            {"due": due, "commit": tls.commit_at, "published": time.monotonic(), "hints": tls.hints, "error": error}
        )

    job: Callable[[int, float, int, str], None] = {"inbound": inbound, "events": recorded}.get(plan["mode"], broadcast)
    pool = ThreadPoolExecutor(plan["threads"], thread_name_prefix="publisher")
    plan_items: list[tuple[int, int, str]] = []
    for i in range(total):
        team_index = rng.randrange(len(teams))
        if rng.random() < plan["new_share"]:
            # A first contact: new patient, new conversation, round-robin assignment.
            sender = f"+86137{plan['seed'] % 100:02d}{i:06d}"
        else:
            sender = rng.choice(teams[team_index]["senders"])
        if i % plan["parts"] == plan["part"]:
            plan_items.append((i, team_index, sender))
    # Every publisher process starts on the same clock: "ready", then the orchestrator's "go T0".
    print("ready", flush=True)
    go = sys.stdin.readline().split()
    if len(go) != 2 or go[0] != "go":
        return 2
    t0 = float(go[1])
    schedule = [(i, t0 + i / rate, team_index, sender) for i, team_index, sender in plan_items]
    if plan["publish_from"] == "server":
        # As Daphne serves a webhook: the action in a worker thread under a running event loop. publish_hint
        # sends through contactcenter.publishing's own loop and Redis pool from either kind of thread.
        from asgiref.sync import sync_to_async

        async def paced() -> None:
            tasks: list[asyncio.Future[None]] = []
            for item in schedule:
                await asyncio.sleep(max(0.0, item[1] - time.monotonic()))
                tasks.append(asyncio.ensure_future(sync_to_async(job, thread_sensitive=False, executor=pool)(*item)))
            await asyncio.gather(*tasks)

        asyncio.run(paced())
    else:
        # As a Celery worker would: plain threads, no event loop of their own.
        for item in schedule:
            time.sleep(max(0.0, item[1] - time.monotonic()))
            pool.submit(job, *item)
    pool.shutdown(wait=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    result = {"t0": t0, "records": records, "cpu": usage.ru_utime + usage.ru_stime}
    connections.close_all()
    Path(plan["output"]).write_text(json.dumps(result))
    return 0


@dataclass
class Published:
    t0: float
    window_start: float
    window_end: float
    records: list[dict[str, Any]]
    cpu: dict[str, float]  # CPU seconds per side during the measured window
    log: Path
    # PostgreSQL counters' growth in the measured window (pg_counters; statistics are flushed lazily: approximate).
    pg: dict[str, int]
    other_cpu: float  # CPU seconds spent in the window by processes this run did not start

    def measured(self) -> list[dict[str, Any]]:
        """Jobs committed (or broadcast) inside the window, whenever they were due."""
        return [
            r for r in self.records if r["commit"] is not None and self.window_start <= r["commit"] < self.window_end
        ]

    def skipped(self) -> int:
        return sum(1 for r in self.records if r.get("skipped"))

    def commits_in_window(self, stored: list[StoredEvent]) -> dict[int, float]:
        """Event id → commit time, for the stored events committed inside the window.

        A transaction's events have consecutive ids and commit together (events.record_many's advisory lock
        hands out ids in commit order) and its one hint carries the newest: an event belongs to the first
        hint at or after it."""
        hints = sorted((h, r["commit"]) for r in self.records if r["commit"] is not None for h in r["hints"])
        keys = [h for h, _ in hints]
        found: dict[int, float] = {}
        for event in stored:
            k = bisect.bisect_left(keys, event.id)
            if k < len(keys) and self.window_start <= hints[k][1] < self.window_end:
                found[event.id] = hints[k][1]
        return found

    def errors(self) -> list[str]:
        return [r["error"] for r in self.records if r.get("error")]


class Children:
    """Subprocesses started during the run, stopped whatever happens."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[bytes]] = []

    def add(self, proc: subprocess.Popen[bytes]) -> subprocess.Popen[bytes]:
        self.procs.append(proc)
        return proc

    def stop(self) -> None:
        while self.procs:
            proc = self.procs.pop()
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(10)
                except subprocess.TimeoutExpired:
                    proc.kill()
                    proc.wait(5)
            for pipe in (proc.stdin, proc.stdout):
                if pipe is not None and not pipe.closed:
                    pipe.close()


async def run_publisher(
    *,
    mode: str,
    world: World,
    args: argparse.Namespace,
    rate: float,
    seconds: float,
    warmup: float,
    env: dict[str, str],
    work: Path,
    children: Children,
    roots: dict[str, int],
    seed: int | None = None,
    profile: str | None = None,
) -> Published:
    """Publishers paced at `rate` for `warmup` + `seconds`; CPU and PostgreSQL counters over the measured seconds.
    `profile`: py-spy output for Daphne #1 over the measured seconds."""
    loop = asyncio.get_running_loop()
    log = work / f"{mode}.publisher.log"
    procs: list[subprocess.Popen[bytes]] = []
    outputs: list[Path] = []
    for part in range(args.publishers):
        plan_path, output = work / f"{mode}.plan{part}.json", work / f"{mode}.out{part}.json"
        plan = {
            "mode": mode,
            "part": part,
            "parts": args.publishers,
            "rate": rate,
            "warmup": warmup,
            "seconds": seconds,
            "threads": args.publisher_threads,
            "publish_from": args.publish_from,
            "new_share": args.new_share if mode == "inbound" else 0.0,
            "late_limit": args.late_limit,
            "seed": args.seed if seed is None else seed,
            "salt": secrets.token_hex(4),
            "output": str(output),
            "teams": [vars(t) for t in world.teams],
        }
        plan_path.write_text(json.dumps(plan))
        outputs.append(output)
        with open(log, "ab") as err:
            procs.append(
                children.add(
                    subprocess.Popen(
                        [sys.executable, "-m", "bench.realtime_fanout", "--publisher", str(plan_path)],
                        cwd=ROOT,
                        env=env,
                        stdout=subprocess.PIPE,
                        stderr=err,
                        stdin=subprocess.PIPE,
                    )
                )
            )
    for proc in procs:
        assert proc.stdout is not None
        if (await asyncio.to_thread(proc.stdout.readline)).strip() != b"ready":
            await asyncio.to_thread(proc.wait)
            raise RuntimeError(f"publisher failed to start:\n{log.read_text(errors='replace')[-3000:]}")
    t0 = loop.time() + 0.2
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.write(f"go {t0!r}\n".encode())
        proc.stdin.close()
    window_start, window_end = t0 + warmup, t0 + warmup + seconds
    meter = CpuMeter({**roots, **{f"publisher{n}": proc.pid for n, proc in enumerate(procs, 1)}})
    snapshots: list[CpuSnapshot] = []
    counters: list[dict[str, int]] = []
    for at in (window_start, window_end):
        await asyncio.sleep(max(0.0, at - loop.time()))
        snapshots.append(meter.snapshot())
        counters.append(await asyncio.to_thread(pg_counters))
        if profile and len(snapshots) == 1:
            spy = start_py_spy(profile, roots["daphne1"], seconds)
            if spy is not None:
                children.add(spy)
    records: list[dict[str, Any]] = []
    for proc, output in zip(procs, outputs, strict=True):
        code = await asyncio.to_thread(proc.wait)
        if code != 0 or not output.exists():
            raise RuntimeError(f"publisher exited with {code}:\n{log.read_text(errors='replace')[-3000:]}")
        records.extend(json.loads(output.read_text())["records"])
    cpu = snapshots[1].minus(snapshots[0])
    other = max(0.0, snapshots[1].machine - snapshots[0].machine - sum(cpu.values()))
    pg = {key: counters[1][key] - counters[0][key] for key in counters[0]}
    return Published(t0, window_start, window_end, records, cpu, log, pg, other)


# ---------------------------------------------------------------------------------------------------
# Websocket clients
# ---------------------------------------------------------------------------------------------------


class Listener:
    """One agent's /ws/agent/ socket: timestamps every event id and every broadcast seq on arrival."""

    def __init__(self, staff: Staff, port: int) -> None:
        self.staff = staff
        self.url = f"ws://127.0.0.1:{port}/ws/agent/"
        self.origin = f"http://127.0.0.1:{port}"
        self.start_cursor: int | None = None
        self.last_event_id = 0  # as socket.js keeps it: the highest id applied or announced
        self.max_seen = 0
        self.received: dict[int, float] = {}
        self.resynced: set[int] = set()
        self.in_resync = False
        self.duplicates = 0
        self.out_of_order = 0
        self.frames = 0
        self.typing: dict[int, float] = {}
        self.typing_duplicates = 0
        self.server_closes: list[int | None] = []
        self.errors: list[dict[str, Any]] = []
        self._ws: Any = None
        self._task: asyncio.Task[None] | None = None
        self._pongs: deque[asyncio.Future[float]] = deque()  # pongs come back in order
        self._closing = False

    async def open(self, last_event_id: int | None) -> None:
        """Connect, resync from `last_event_id` (None: from now) and start reading after "ready"."""
        from websockets.asyncio.client import connect
        from websockets.typing import Origin

        self._closing = False
        ws = await connect(
            self.url,
            origin=Origin(self.origin),
            additional_headers={"Cookie": f"sessionid={self.staff.cookie}"},
            compression=None,
            max_size=None,
            ping_interval=None,  # browsers send no protocol pings; socket.js pings with {"op": "ping"}
            open_timeout=60,
        )
        self._ws = ws
        await ws.send(json.dumps({"op": "resync", "last_event_id": last_event_id}))
        while True:
            frame = json.loads(await asyncio.wait_for(ws.recv(), 60))
            if frame.get("type") == "ready":
                if self.start_cursor is None:
                    self.start_cursor = int(frame["last_event_id"])
                    self.last_event_id = self.max_seen = self.start_cursor
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"agent socket refused resync: {frame}")
        self._task = asyncio.ensure_future(self._read(ws))

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
                    for event in frame["events"]:
                        self._on_event(int(event["id"]), now)
                    last = frame.get("last_event_id")
                    if isinstance(last, int) and last > self.last_event_id:
                        self.last_event_id = last
                elif kind == "typing":
                    seq = frame.get("seq")
                    if isinstance(seq, int):
                        if seq in self.typing:
                            self.typing_duplicates += 1
                        else:
                            self.typing[seq] = now
                elif kind == "pong":
                    if self._pongs:
                        waiter = self._pongs.popleft()
                        if not waiter.done():
                            waiter.set_result(now)
                elif kind == "error":
                    self.errors.append(frame)
        except ConnectionClosed:
            pass
        finally:
            if not self._closing:
                self.server_closes.append(ws.close_code)
            while self._pongs:
                waiter = self._pongs.popleft()
                if not waiter.done():
                    waiter.set_exception(ConnectionError("socket closed"))

    def _on_event(self, event_id: int, now: float) -> None:
        if event_id in self.received:
            self.duplicates += 1
            return
        if event_id < self.max_seen:
            self.out_of_order += 1
        self.max_seen = max(self.max_seen, event_id)
        self.last_event_id = max(self.last_event_id, event_id)
        self.received[event_id] = now
        if self.in_resync:
            self.resynced.add(event_id)

    async def ping(self, timeout: float) -> float:
        """{"op": "ping"} → pong round trip, seconds. Frames are handled in order, so the pong also
        means every op sent before it (a resync and its whole catch-up) is done."""
        loop = asyncio.get_running_loop()
        waiter: asyncio.Future[float] = loop.create_future()
        waiter.add_done_callback(lambda f: f.cancelled() or f.exception())  # a late pong's fate is retrieved
        self._pongs.append(waiter)
        sent = loop.time()
        await self._ws.send('{"op": "ping"}')
        answered = await asyncio.wait_for(asyncio.shield(waiter), timeout)
        return answered - sent

    async def watch(self, conversation_id: int, timeout: float) -> None:
        """{"op": "watch"}: typing signals for the conversation from now on. Confirmed by the pong that
        follows it (frames are handled in order), refused by an error frame."""
        errors = len(self.errors)
        await self._ws.send(json.dumps({"op": "watch", "conversation_id": conversation_id}))
        await self.ping(timeout)
        if len(self.errors) > errors:
            raise RuntimeError(f"agent socket refused to watch conversation {conversation_id}: {self.errors[-1]}")

    async def resync(self, timeout: float) -> float:
        """Reconnect and resync from the last event id, as inbox/socket.js does after any close."""
        loop = asyncio.get_running_loop()
        started = loop.time()
        await self.close()
        self.in_resync = True
        await self.open(self.last_event_id)
        await self.ping(timeout)
        return loop.time() - started

    async def close(self) -> None:
        self._closing = True
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)
        self._ws = self._task = None


async def bounded(items: Iterable[T], limit: int, fn: Callable[[T], Awaitable[Any]]) -> list[Any]:
    semaphore = asyncio.Semaphore(limit)

    async def one(item: T) -> Any:
        async with semaphore:
            return await fn(item)

    return await asyncio.gather(*(one(item) for item in items))


class LoopLag:
    """How late this process's event loop wakes up: the clients' own share of any latency."""

    def __init__(self, interval: float = 0.02) -> None:
        self.interval = interval
        self.samples: list[tuple[float, float]] = []
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            before = loop.time()
            await asyncio.sleep(self.interval)
            self.samples.append((before, loop.time() - before - self.interval))

    def between(self, start: float, end: float) -> list[float]:
        return [lag for at, lag in self.samples if start <= at <= end]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


# ---------------------------------------------------------------------------------------------------
# The phases
# ---------------------------------------------------------------------------------------------------


@dataclass
class Phases:
    listeners: list[Listener]
    connect_seconds: float
    raw_rtt: list[float]
    echo_rtt: list[float]
    echo_failed: int
    broadcast: Published
    broadcast_expected: dict[int, set[int]]  # listener index → seqs it should get
    events: Published
    stored: list[StoredEvent]
    expected: dict[int, set[int]]  # listener index → event ids it may see
    live: dict[int, dict[int, float]]  # listener index → event id → receive time, at the end of the grace
    grace_used: float
    resync_seconds: list[float]
    resync_failed: int
    lag: list[float]
    broadcast_rate: float

    @property
    def raw_rtt_ms(self) -> list[float]:
        return [1000 * s for s in self.raw_rtt]

    @property
    def echo_ms(self) -> list[float]:
        return [1000 * s for s in self.echo_rtt]


async def raw_layer_rtt(count: int) -> list[float]:
    """group_send → receive on the same channels_redis layer, one channel in this process."""
    from channels.layers import get_channel_layer

    layer = get_channel_layer()
    assert layer is not None
    loop = asyncio.get_running_loop()
    channel = await layer.new_channel()
    await layer.group_add("bench.rtt", channel)
    rtts: list[float] = []
    try:
        for _ in range(count):
            sent = loop.time()
            await layer.group_send("bench.rtt", {"type": "bench.ping"})
            await layer.receive(channel)
            rtts.append(loop.time() - sent)
    finally:
        await layer.group_discard("bench.rtt", channel)
        close_pools = getattr(layer, "close_pools", None)
        if close_pools is not None:
            await close_pools()
    return rtts


async def echo_rtts(listeners: list[Listener], *, rounds: int, rate: float) -> tuple[list[float], int]:
    """Paced pings, each socket once per round, spread over all sockets and Daphnes."""
    loop = asyncio.get_running_loop()
    tasks: list[asyncio.Task[float]] = []
    t0 = loop.time()
    order = [listener for _ in range(rounds) for listener in listeners]
    for i, listener in enumerate(order):
        await asyncio.sleep(max(0.0, t0 + i / rate - loop.time()))
        tasks.append(asyncio.ensure_future(listener.ping(10)))
    results = await asyncio.gather(*tasks, return_exceptions=True)
    rtts = [r for r in results if isinstance(r, float)]
    return rtts, len(results) - len(rtts)


def expected_events(listeners: list[Listener], stored: list[StoredEvent]) -> dict[int, set[int]]:
    """Listener index → the ids of the stored events after its first cursor that it gets."""
    return {
        i: {e.id for e in stored if e.id > (listener.start_cursor or 0) and listener.staff.sees(e)}
        for i, listener in enumerate(listeners)
    }


def all_arrived(listeners: list[Listener], expected: dict[int, set[int]]) -> bool:
    return all(ids <= listeners[i].received.keys() for i, ids in expected.items())


def received_count(listeners: list[Listener]) -> int:
    return sum(len(listener.received) for listener in listeners)


async def settle(done: Callable[[], bool], progress: Callable[[], int], *, quiet: float, limit: float) -> float:
    """Wait until everything arrived, or nothing more arrived for `quiet` seconds (a backlog still
    draining is late, not lost), or `limit` seconds passed. Returns the seconds waited."""
    loop = asyncio.get_running_loop()
    start = last_change = loop.time()
    last = progress()
    while not done() and loop.time() - start < limit:
        await asyncio.sleep(0.2)
        now = progress()
        if now != last:
            last, last_change = now, loop.time()
        elif loop.time() - last_change >= quiet:
            break
    return loop.time() - start


async def run_phases(
    world: World, ports: list[int], args: argparse.Namespace, env: dict[str, str], work: Path, roots: dict[str, int]
) -> Phases:
    loop = asyncio.get_running_loop()
    listeners = [Listener(staff, ports[i % len(ports)]) for i, staff in enumerate(world.staff)]
    lag = LoopLag()
    lag.start()
    children = Children()
    meter = CpuMeter(roots)
    try:
        print(f"  opening {len(listeners)} agent sockets …", flush=True)
        started = loop.time()

        await bounded(listeners, CONNECT_CONCURRENCY, lambda listener: listener.open(None))
        connect_seconds = loop.time() - started
        opened_at = loop.time()
        await quiesce(meter)

        print("  baseline: raw channel-layer round trips …", flush=True)
        raw = await raw_layer_rtt(args.raw_count)
        print("  baseline: websocket echo (ping → pong) on every socket …", flush=True)
        echo, echo_failed = await echo_rtts(listeners, rounds=args.echo_rounds, rate=args.echo_rate)
        await quiesce(meter)
        await asyncio.sleep(max(0.0, opened_at + PG_STATS_SETTLE_SECONDS - args.warmup - loop.time()))

        common: dict[str, Any] = {
            "world": world,
            "args": args,
            "env": env,
            "work": work,
            "children": children,
            "roots": roots,
        }
        print(
            f"  {source_name(args)} at {args.rate:g}/s for {args.warmup:g} s warm-up + {args.seconds:g} s measured …",
            flush=True,
        )
        published = await run_publisher(
            mode=args.source,
            rate=args.rate,
            seconds=args.seconds,
            warmup=args.warmup,
            profile=args.py_spy,
            **common,
        )
        after = min(listener.start_cursor or 0 for listener in listeners)
        stored = await asyncio.to_thread(events_after, after)
        expected = expected_events(listeners, stored)

        def events_done() -> bool:
            return all(ids <= listeners[i].received.keys() for i, ids in expected.items())

        print(f"  waiting for the last deliveries (until {args.grace:g} s without any) …", flush=True)
        grace_used = await settle(
            events_done,
            lambda: sum(len(listener.received) for listener in listeners),
            quiet=args.grace,
            limit=args.grace_limit,
        )
        live = {i: dict(listener.received) for i, listener in enumerate(listeners)}

        print("  every socket reconnects and resyncs from its last event id …", flush=True)

        async def resync_one(listener: Listener) -> float | None:
            try:
                return await listener.resync(60)
            except (OSError, TimeoutError, RuntimeError, ConnectionError):
                return None

        resyncs = await bounded(listeners, CONNECT_CONCURRENCY, resync_one)
        resync_seconds = [r for r in resyncs if r is not None]
        await quiesce(meter)

        # At the rate the events were actually committed: the same fan-out work per second, minus the database.
        committed = len(published.measured()) / args.seconds
        broadcast_rate = max(1.0, min(args.rate, committed))
        print("  every socket watches a conversation of its home team …", flush=True)
        watched = {t.team_id: t.watched_conversation for t in world.teams}
        await bounded(listeners, CONNECT_CONCURRENCY, lambda x: x.watch(watched[x.staff.home_team], 60))
        print(f"  baseline: layer broadcast through the consumers at {broadcast_rate:.3g}/s …", flush=True)
        broadcast = await run_publisher(
            mode="broadcast", rate=broadcast_rate, seconds=args.baseline_seconds, warmup=1.0, **common
        )
        recipients = {
            t.team_id: {i for i, listener in enumerate(listeners) if listener.staff.home_team == t.team_id}
            for t in world.teams
        }
        broadcast_expected: dict[int, set[int]] = {i: set() for i in range(len(listeners))}
        for record in broadcast.records:
            for i in recipients[world.teams[record["team"]].team_id]:
                broadcast_expected[i].update(record["seqs"])

        def broadcast_done() -> bool:
            return all(seqs <= listeners[i].typing.keys() for i, seqs in broadcast_expected.items())

        await settle(
            broadcast_done,
            lambda: sum(len(listener.typing) for listener in listeners),
            quiet=args.grace,
            limit=args.grace_limit,
        )
        return Phases(
            listeners=listeners,
            connect_seconds=connect_seconds,
            raw_rtt=raw,
            echo_rtt=echo,
            echo_failed=echo_failed,
            broadcast=broadcast,
            broadcast_expected=broadcast_expected,
            events=published,
            stored=stored,
            expected=expected,
            live=live,
            grace_used=grace_used,
            resync_seconds=resync_seconds,
            resync_failed=len(resyncs) - len(resync_seconds),
            lag=lag.between(published.window_start, published.window_end),
            broadcast_rate=broadcast_rate,
        )
    finally:
        children.stop()
        await lag.stop()
        await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


@dataclass
class Delivery:
    latencies_ms: list[float]
    completion_ms: list[float]  # per item: until its last expected socket had it (items all got)
    expected_pairs: int
    live_missing: int


def deliveries(
    commit_of: dict[int, float], expected: dict[int, set[int]], received: dict[int, dict[int, float]]
) -> Delivery:
    """Latency per (socket, item) for items in `commit_of`; missing over every expected pair."""
    latencies: list[float] = []
    last: dict[int, float] = {}
    incomplete: set[int] = set()
    pairs = missing = 0
    for i, items in expected.items():
        got = received[i]
        pairs += len(items)
        for item in items:
            at = got.get(item)
            if at is None:
                missing += 1
                incomplete.add(item)
                continue
            committed = commit_of.get(item)
            if committed is not None:
                ms = 1000 * (at - committed)
                latencies.append(ms)
                last[item] = max(last.get(item, 0.0), ms)
    completion = [ms for item, ms in last.items() if item not in incomplete]
    return Delivery(latencies, completion, pairs, missing)


def log_problems(paths: Iterable[Path]) -> list[str]:
    """Error lines and tracebacks' last lines in the servers' logs (Django logs to stderr)."""
    found: list[str] = []
    for path in paths:
        if not path.exists():
            continue
        lines = path.read_text(errors="replace").splitlines()
        for n, line in enumerate(lines):
            if " ERROR " in line or " CRITICAL " in line or line.startswith("Traceback"):
                tail = next((x for x in lines[n + 1 : n + 80] if re.match(r"^\w+(\.\w+)*(Error|Exception)\b", x)), "")
                found.append(f"{path.name}: {line.strip()[:160]}{' → ' + tail[:160] if tail else ''}")
    return found


def over_capacity(path: Path) -> int:
    """Hints channels_redis dropped because a consumer's channel was full (it only logs that at INFO)."""
    if not path.exists():
        return 0
    total = 0
    for line in path.read_text(errors="replace").splitlines():
        found = re.search(r"(\d+) of \d+ channels over capacity", line)
        if found:
            total += int(found.group(1))
    return total


def ms(values: list[float], q: float) -> str:
    value = percentile(values, q)
    return "n/a" if value != value else f"{value:.1f} ms"


def ratio(a: float, b: float) -> str:
    return f"{a / b:.1f}×" if b and a == a and b == b else "n/a"


def source_name(args: argparse.Namespace) -> str:
    return "receive_inbound" if args.source == "inbound" else "receive_inbound's two events (--source events)"


def side_cpu(cpu: dict[str, float], side: str) -> float:
    """CPU seconds of one side, summed over its processes (daphne1, daphne2, … are the side "daphne")."""
    return sum(v for k, v in cpu.items() if k.rstrip("0123456789") == side)


def print_report(p: Phases, world: World, args: argparse.Namespace, daphne_logs: list[Path]) -> bool:
    listeners = p.listeners
    n_sup = sum(1 for s in world.staff if s.supervisor)
    n_multi = sum(1 for s in world.staff if len(s.team_ids) > 1)
    ev, bc = p.events, p.broadcast
    measured = ev.measured()
    commit_of = ev.commits_in_window(p.stored)
    events = deliveries(commit_of, p.expected, p.live)
    missing_after = sum(len(ids - listeners[i].received.keys()) for i, ids in p.expected.items())
    seq_at = {seq: r["commit"] for r in bc.measured() for seq in r["seqs"]}
    base = deliveries(seq_at, p.broadcast_expected, {i: listener.typing for i, listener in enumerate(listeners)})
    fanout = events.expected_pairs / max(1, len(p.stored))
    seconds = ev.window_end - ev.window_start
    committed_rate = len(measured) / seconds
    events_in_window = len(commit_of)

    print()
    print(
        f"Real-time fan-out — {len(listeners)} agent sockets ({len(listeners) - n_sup} agents in {len(world.teams)} "
        f"teams, {n_multi} of them in two; {n_sup} supervisors) over {args.daphnes} Daphne process(es); channels_redis "
        f"on Redis; PostgreSQL; {os.cpu_count()} CPUs shared with whatever else runs"
    )
    print(
        f"load: {source_name(args)} offered at {args.rate:g}/s (follow-ups in {args.teams * args.senders_per_team} open, "
        f"assigned conversations; {args.new_share:.0%} first contacts) by {args.publishers} publisher "
        f"process(es) × {args.publisher_threads} thread(s), {args.publish_from}-style; {args.seconds:g} s measured after "
        f"{args.warmup:g} s warm-up; DB_CONN_MAX_AGE={args.conn_max_age}"
    )
    print(
        f"      committed in the window: {len(measured)} messages = {committed_rate:.1f}/s, {events_in_window} events; "
        f"{fanout:.1f} sockets per event"
        + ("" if committed_rate >= 0.95 * args.rate else "  ← the publisher fell behind: figures are for this rate")
    )
    print("baselines, same run, same sockets and Daphnes:")
    print(
        f"  raw channel layer group_send → receive (this process, 1 channel): p50 {ms(p.raw_rtt_ms, 50)}, "
        f"p99 {ms(p.raw_rtt_ms, 99)}"
    )
    print(
        f'  websocket echo ({{"op": "ping"}} → pong): p50 {ms(p.echo_ms, 50)}, p99 {ms(p.echo_ms, 99)} '
        f"({len(p.echo_rtt)} pings{f', {p.echo_failed} unanswered' if p.echo_failed else ''})"
    )
    seqs = sum(len(r["seqs"]) for r in bc.records if not r.get("skipped"))
    print(
        f"  broadcast: typing.signal to the conversation each team's sockets watch, from the same publishers at "
        f"the rate the events were committed ({p.broadcast_rate:.3g}/s × 2), forwarded by the same consumers "
        f"without the database (one layer copy per recipient, {base.expected_pairs / max(1, seqs):.1f} sockets "
        f"per signal); {len(bc.measured())} ticks in {bc.window_end - bc.window_start:.0f} s"
    )
    print()

    def verdict(ok: bool) -> str:
        return "PASS" if ok else "MISS"

    lat, blat, echo = events.latencies_ms, base.latencies_ms, p.echo_ms
    rows: list[tuple[str, ...]] = []
    for q in (50, 95, 99, 100):
        rows.append(
            (
                f"commit → socket {'max' if q == 100 else f'p{q}'}",
                ms(lat, q),
                ms(blat, q),
                ratio(percentile(lat, q), percentile(blat, q)),
                ratio(percentile(lat, q), percentile(echo, q)) if q < 100 else "",
                f"< {TARGET_P99_MS:g} ms  {verdict(percentile(lat, 99) < TARGET_P99_MS)}" if q == 99 else "",
            )
        )
    rows.append(
        (
            "commit → last socket, p99 of events",
            ms(events.completion_ms, 99),
            ms(base.completion_ms, 99),
            ratio(percentile(events.completion_ms, 99), percentile(base.completion_ms, 99)),
            "",
            "",
        )
    )
    rows.append(
        (
            f"dropped on the live path ({args.grace:g} s quiet)",
            f"{events.live_missing} / {events.expected_pairs}",
            f"{base.live_missing} / {base.expected_pairs}",
            "",
            "",
            f"= 0  {verdict(events.live_missing == 0)}",
        )
    )
    rows.append(
        (
            "missing after resync by last id",
            f"{missing_after} / {events.expected_pairs}",
            "",
            "",
            "",
            f"= 0  {verdict(missing_after == 0)}",
        )
    )
    header = ("(socket, event) pairs", "measured", "broadcast", "ratio", "÷ echo", "target")
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.ljust(widths[i]) for i, cell in enumerate(row)).rstrip())

    print()
    behind = [1000 * (r["commit"] - r["due"]) for r in measured]
    publish = [1000 * (r["published"] - r["commit"]) for r in measured]
    bpublish = [1000 * (r["published"] - r["commit"]) for r in bc.measured()]
    print(
        f"publisher: commit behind schedule p50 {ms(behind, 50)}, p99 {ms(behind, 99)}, max {ms(behind, 100)}; "
        f"commit → last hint sent p50 {ms(publish, 50)}, p99 {ms(publish, 99)} (broadcast p50 {ms(bpublish, 50)}, "
        f"p99 {ms(bpublish, 99)}); skipped {ev.skipped()} jobs over {args.late_limit:g} s late; "
        f"failed {len(ev.errors())}" + (f", e.g. {ev.errors()[0][:240]!r}" if ev.errors() else "")
    )
    frames = sum(listener.frames for listener in listeners)
    dups = sum(listener.duplicates for listener in listeners)
    ooo = sum(listener.out_of_order for listener in listeners)
    closes = Counter(code for listener in listeners for code in listener.server_closes)
    errors = Counter(str(e.get("code")) for listener in listeners for e in listener.errors)
    print(
        f"sockets: opened in {p.connect_seconds:.1f} s; {frames} frames received; events received twice {dups}, "
        f"out of order {ooo}; closed by the server {sum(closes.values())}{f' {dict(closes)}' if closes else ''}; "
        f"error frames {dict(errors) if errors else 0}; broadcast copies received twice "
        f"{sum(listener.typing_duplicates for listener in listeners)}"
    )
    resync_ms = [1000 * s for s in p.resync_seconds]
    print(
        f"resync: {len(resync_ms)} sockets reconnected and caught up, p50 {ms(resync_ms, 50)}, p99 {ms(resync_ms, 99)}; "
        f"{p.resync_failed} failed; pairs recovered {events.live_missing - missing_after}; "
        f"waited {p.grace_used:.1f} s after the publishers finished for live deliveries"
    )
    lag_ms = [1000 * x for x in p.lag]
    print(
        f"client event loop lag in the window (this process; adds to every latency): p50 {ms(lag_ms, 50)}, "
        f"p99 {ms(lag_ms, 99)}, max {ms(lag_ms, 100)}"
    )
    print()
    sides = ["daphne", "postgres", "redis", "publisher", "client"]
    cores = side_cpu
    per = max(1, len(measured))
    print(f"CPU in the measured window ({seconds:.0f} s): cores busy, and ms per inbound message (sums over processes)")
    titles = {"daphne": "Daphnes", "postgres": "PostgreSQL", "redis": "Redis", "publisher": "publishers"}
    print("  " + "".join(titles.get(side, side).rjust(11) for side in sides) + "total".rjust(11))
    total = sum(cores(ev.cpu, side) for side in sides)
    print("  " + "".join(f"{cores(ev.cpu, side) / seconds:11.2f}" for side in sides) + f"{total / seconds:11.2f}")
    print("  " + "".join(f"{1000 * cores(ev.cpu, side) / per:11.1f}" for side in sides) + f"{1000 * total / per:11.1f}")
    print(
        f"  Daphnes per committed event {1000 * cores(ev.cpu, 'daphne') / max(1, events_in_window):.2f} ms, per "
        f"delivered (socket, event) pair {1e6 * cores(ev.cpu, 'daphne') / max(1, len(events.latencies_ms)):.0f} µs "
        f"({len(events.latencies_ms)} pairs of events committed in the window)"
    )
    bseconds = bc.window_end - bc.window_start
    print(
        f"  broadcast baseline: {sum(cores(bc.cpu, side) for side in sides) / bseconds:.2f} cores, of which "
        f"Daphnes {cores(bc.cpu, 'daphne') / bseconds:.2f}"
    )
    print(
        f"other work on this machine (processes this run did not start): {ev.other_cpu / seconds:.2f} CPUs in "
        f"the window, {bc.other_cpu / bseconds:.2f} during the broadcast baseline"
    )
    transactions, reads = ev.pg["transactions"], ev.pg["event_reads"]
    hints = sum(len(r["hints"]) for r in measured)
    print(
        f"PostgreSQL in the window (statistics are flushed lazily: approximate): {transactions} transactions "
        f"(autocommit reads included) = {transactions / per:.1f} per inbound message; {reads} reads of the event "
        f"table = {reads / per:.2f} per message for {fanout:.1f} sockets per event, and {hints / per:.2f} hints "
        f"per message (each hint reaches one event hub per Daphne, which reads the new events once for all its "
        f"sockets; a socket reads on its own only when it is further behind than the hub's buffer)"
    )
    problems = log_problems([*daphne_logs, ev.log, bc.log])
    print(
        f"channels_redis messages dropped on full channels (it logs them at INFO): {over_capacity(ev.log)}; "
        f"broadcast {over_capacity(bc.log)}"
    )
    print(f"server log errors: {len(problems)}")
    for line in sorted(set(problems))[:8]:
        print(f"  {line}")
    return missing_after == 0 and dups == 0 and ooo == 0 and not ev.errors()


# ---------------------------------------------------------------------------------------------------
# The curve: the same load at growing socket counts, in one run
# ---------------------------------------------------------------------------------------------------


def curve_order(staff: list[Staff]) -> list[Staff]:
    """Supervisors spread evenly among the agents (who go round the teams), so each step's sockets have the
    whole run's mix of roles and teams."""
    agents = [s for s in staff if not s.supervisor]
    supervisors = [s for s in staff if s.supervisor]
    keyed = [((n + 0.5) / len(agents), 0, n) for n in range(len(agents))]
    keyed += [((n + 0.5) / len(supervisors), 1, n) for n in range(len(supervisors))]
    return [(supervisors if kind else agents)[n] for _, kind, n in sorted(keyed)]


@dataclass
class CurveStep:
    sockets: int
    events: Published
    stored: list[StoredEvent]
    expected: dict[int, set[int]]  # listener index → ids of this step's events it gets
    live: dict[int, dict[int, float]]  # listener index → this step's event id → receive time, after the grace
    duplicates: int
    out_of_order: int
    frames: int  # frames the sockets received during the step
    lag: list[float]


@dataclass
class Curve:
    steps: list[CurveStep]
    listeners: list[Listener]
    missing_after: int
    resync_failed: int


async def run_curve(
    world: World, ports: list[int], args: argparse.Namespace, env: dict[str, str], work: Path, roots: dict[str, int]
) -> Curve:
    loop = asyncio.get_running_loop()
    listeners = [Listener(staff, ports[i % len(ports)]) for i, staff in enumerate(curve_order(world.staff))]
    lag = LoopLag()
    lag.start()
    children = Children()
    meter = CpuMeter(roots)
    common: dict[str, Any] = {"world": world, "args": args, "env": env, "work": work, "children": children}
    steps: list[CurveStep] = []
    opened = 0
    try:
        for n, count in enumerate(args.curve):
            print(f"  step {n + 1}/{len(args.curve)}: {count} sockets (opening {count - opened}) …", flush=True)
            await bounded(listeners[opened:count], CONNECT_CONCURRENCY, lambda listener: listener.open(None))
            opened_at = loop.time()
            opened = count
            active = listeners[:count]
            await quiesce(meter)
            await asyncio.sleep(max(0.0, opened_at + PG_STATS_SETTLE_SECONDS - args.warmup - loop.time()))
            before = await asyncio.to_thread(max_event_id)
            counts = [(x.duplicates, x.out_of_order, x.frames) for x in active]
            last = n == len(args.curve) - 1
            published = await run_publisher(
                mode=args.source,
                rate=args.rate,
                seconds=args.seconds,
                warmup=args.warmup,
                roots=roots,
                seed=args.seed + n,  # first contacts (--new-share) are new senders at every step
                profile=args.py_spy if last else None,
                **common,
            )
            stored = await asyncio.to_thread(events_after, before)
            expected = expected_events(active, stored)
            await settle(
                partial(all_arrived, active, expected),
                partial(received_count, active),
                quiet=args.grace,
                limit=args.grace_limit,
            )
            live = {
                i: {e: active[i].received[e] for e in ids if e in active[i].received} for i, ids in expected.items()
            }
            steps.append(
                CurveStep(
                    sockets=count,
                    events=published,
                    stored=stored,
                    expected=expected,
                    live=live,
                    duplicates=sum(x.duplicates for x in active) - sum(c[0] for c in counts),
                    out_of_order=sum(x.out_of_order for x in active) - sum(c[1] for c in counts),
                    frames=sum(x.frames for x in active) - sum(c[2] for c in counts),
                    lag=lag.between(published.window_start, published.window_end),
                )
            )
        print("  every socket reconnects and resyncs from its last event id …", flush=True)

        async def resync_one(listener: Listener) -> bool:
            try:
                await listener.resync(60)
                return True
            except (OSError, TimeoutError, RuntimeError, ConnectionError):
                return False

        resynced = await bounded(listeners[:opened], CONNECT_CONCURRENCY, resync_one)
        missing_after = sum(
            len(ids - listeners[i].received.keys()) for step in steps for i, ids in step.expected.items()
        )
        return Curve(steps, listeners, missing_after, resynced.count(False))
    finally:
        children.stop()
        await lag.stop()
        await asyncio.gather(*(listener.close() for listener in listeners), return_exceptions=True)


def linear_fit(xs: list[float], ys: list[float]) -> tuple[float, float]:
    """Least squares y = a + b·x."""
    n = len(xs)
    mx, my = sum(xs) / n, sum(ys) / n
    sxx = sum((x - mx) ** 2 for x in xs)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sxx if sxx else 0.0
    return my - b * mx, b


def print_curve(curve: Curve, world: World, args: argparse.Namespace, daphne_logs: list[Path]) -> bool:
    n_sup = sum(1 for s in world.staff if s.supervisor)
    print()
    print(
        f"Real-time fan-out curve — up to {len(world.staff)} agent sockets ({len(world.staff) - n_sup} agents in "
        f"{len(world.teams)} teams, {n_sup} supervisors, each step the same mix) over {args.daphnes} Daphne "
        f"process(es); {source_name(args)} offered at {args.rate:g}/s by {args.publishers} publisher process(es); "
        f"{args.seconds:g} s measured after {args.warmup:g} s warm-up per step; {os.cpu_count()} CPUs shared"
    )
    header = (
        "sockets",
        "msg/s",
        "sockets/event",
        "p50",
        "p99",
        "dropped",
        "dup",
        "out of order",
        "Daphne ms/event",
        "Daphne µs/pair",
        "PG ms/event",
        "PG xact/msg",
        "event reads/msg",
        "events/frame",
        "client lag p99",
        "other CPUs",
    )
    rows: list[tuple[str, ...]] = []
    figures: list[dict[str, float]] = []
    hints: list[str] = []
    ok = curve.missing_after == 0
    for step in curve.steps:
        ev = step.events
        measured = ev.measured()
        seconds = ev.window_end - ev.window_start
        commit_of = ev.commits_in_window(step.stored)
        d = deliveries(commit_of, step.expected, step.live)
        n_events = max(1, len(commit_of))
        per = max(1, len(measured))
        daphne = side_cpu(ev.cpu, "daphne")
        fig = {
            "sockets": step.sockets,
            "fanout": d.expected_pairs / max(1, len(step.stored)),
            "daphne_ms": 1000 * daphne / n_events,
            "pair_us": 1e6 * daphne / max(1, len(d.latencies_ms)),
            "pg_ms": 1000 * side_cpu(ev.cpu, "postgres") / n_events,
            "xacts": ev.pg["transactions"] / per,
            "reads": ev.pg["event_reads"] / per,
        }
        figures.append(fig)
        hints.append(f"{sum(len(r['hints']) for r in measured) / per:.2f}")
        ok = ok and step.duplicates == 0 and step.out_of_order == 0 and not ev.errors()
        rows.append(
            (
                str(step.sockets),
                f"{len(measured) / seconds:.1f}",
                f"{fig['fanout']:.1f}",
                ms(d.latencies_ms, 50),
                ms(d.latencies_ms, 99) + (" ✓" if percentile(d.latencies_ms, 99) < TARGET_P99_MS else " ✗"),
                f"{d.live_missing}/{d.expected_pairs}",
                str(step.duplicates),
                str(step.out_of_order),
                f"{fig['daphne_ms']:.2f}",
                f"{fig['pair_us']:.0f}",
                f"{fig['pg_ms']:.2f}",
                f"{fig['xacts']:.1f}",
                f"{fig['reads']:.2f}",
                f"{sum(len(ids) for ids in step.live.values()) / max(1, step.frames):.1f}",
                ms([1000 * x for x in step.lag], 99),
                f"{ev.other_cpu / seconds:.2f}",
            )
        )
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    for row in [header, *rows]:
        print("  ".join(cell.rjust(widths[i]) for i, cell in enumerate(row)))
    print(
        f"(p99 ✓ under {TARGET_P99_MS:g} ms; dropped: pairs not arrived after {args.grace:g} s quiet; Daphne ms per "
        f"committed event and µs per delivered (socket, event) pair; PostgreSQL CPU per event, transactions and "
        f"event-table reads per message (hints per message: {' '.join(hints)}); events per frame a socket "
        f"received; client lag: this "
        f"load generator's event loop, which adds to every latency; other: CPUs taken by processes this run did "
        f"not start)"
    )
    first, end = figures[0], figures[-1]

    def growth(key: str) -> str:
        return f"×{end[key] / first[key]:.2f}" if first[key] else "n/a"

    print(
        f"from {first['sockets']:.0f} to {end['sockets']:.0f} sockets (sockets per event {growth('fanout')}): Daphne CPU "
        f"per event {growth('daphne_ms')}, per delivered pair {growth('pair_us')}; PostgreSQL CPU per event "
        f"{growth('pg_ms')}, transactions per message {growth('xacts')}, event-table reads per message "
        f"{growth('reads')}"
    )
    if len(figures) > 1:
        a, b = linear_fit([f["sockets"] for f in figures], [f["daphne_ms"] for f in figures])
        print(
            f"Daphne CPU per event ≈ {a:.2f} ms + {1000 * b:.1f} µs × open sockets (least squares over the steps): "
            f"the first term is the once-per-process part (read, placements, JSON), the second every socket's "
            f"in-memory check and websocket write"
        )
    last_listeners = curve.listeners[: curve.steps[-1].sockets] if curve.steps else []
    closes = Counter(code for x in last_listeners for code in x.server_closes)
    print(
        f"after the last step every socket reconnected and resynced from its last event id: missing "
        f"{curve.missing_after}, resyncs failed {curve.resync_failed}; server closes "
        f"{dict(closes) if closes else 0}; publisher jobs failed "
        f"{sum(len(step.events.errors()) for step in curve.steps)}, skipped (late) "
        f"{sum(step.events.skipped() for step in curve.steps)}"
    )
    problems = log_problems([*daphne_logs, *{step.events.log for step in curve.steps}])
    print(f"server log errors: {len(problems)}")
    for line in sorted(set(problems))[:8]:
        print(f"  {line}")
    return ok and curve.resync_failed == 0


# ---------------------------------------------------------------------------------------------------
# Main
# ---------------------------------------------------------------------------------------------------


def socket_counts(text: str) -> list[int]:
    try:
        counts = [int(part) for part in text.split(",")]
    except ValueError:
        raise argparse.ArgumentTypeError("socket counts are whole numbers separated by commas") from None
    if not counts or counts != sorted(set(counts)) or counts[0] < 2:
        raise argparse.ArgumentTypeError("socket counts grow from step to step, from at least 2")
    return counts


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.realtime_fanout", description=__doc__.split("\n\n")[0])
    # The defaults are issue 15's goal: 500 agent sockets on 2 Daphnes at 30 messages/s.
    parser.add_argument("--clients", type=int, default=500, help="agent sockets, supervisors included (500)")
    parser.add_argument("--rate", type=float, default=30.0, help="receive_inbound calls per second (30)")
    parser.add_argument("--seconds", type=float, default=20.0, help="measured seconds of publishing (20)")
    parser.add_argument("--warmup", type=float, default=3.0, help="publishing seconds before the window (3)")
    parser.add_argument(
        "--quick", action="store_true", help="defaults for a smoke run: 200 sockets, 6 s measured, short baselines"
    )
    parser.add_argument("--daphnes", type=int, default=2, choices=(1, 2, 3, 4), help="Daphne processes (2)")
    parser.add_argument("--teams", type=int, default=5, help="teams, one SMS inbox each (5)")
    parser.add_argument("--supervisors", type=int, help="of the clients, supervisors (clients / 25, at least 2)")
    parser.add_argument("--senders-per-team", type=int, default=40, help="patients writing to each inbox (40)")
    parser.add_argument(
        "--new-share",
        type=float,
        default=0.0,
        help="share of messages from first-time senders: new patient, conversation, auto-assignment (0)",
    )
    parser.add_argument(
        "--late-limit", type=float, default=15.0, help="publisher skips jobs this many seconds overdue (15)"
    )
    parser.add_argument(
        "--source",
        choices=("inbound", "events"),
        default="inbound",
        help="what the publishers commit: receive_inbound for each message (inbound), or only the two events it "
        "records, with the same payloads and audience, in one transaction (events: the fan-out's load without the "
        "webhook's work, for a machine too small to run both)",
    )
    parser.add_argument("--publishers", type=int, default=2, help="publisher processes (2)")
    parser.add_argument(
        "--publisher-threads",
        type=int,
        default=1,
        help="threads per publisher calling receive_inbound (1: more only add GIL convoys to hint publishing)",
    )
    parser.add_argument(
        "--publish-from",
        choices=("server", "worker"),
        default="server",
        help="publisher threads under an event loop like Daphne serving webhooks (server), or plain like a "
        "Celery worker (worker); hints go through contactcenter.publishing's one loop and Redis pool either way",
    )
    parser.add_argument(
        "--grace", type=float, default=5.0, help="live deliveries end after this many seconds without any (5)"
    )
    parser.add_argument("--grace-limit", type=float, default=90.0, help="and at the latest after this, s (90)")
    parser.add_argument("--baseline-seconds", type=float, default=8.0, help="measured broadcast seconds (8)")
    parser.add_argument("--echo-rounds", type=int, default=2, help="pings per socket for the echo baseline (2)")
    parser.add_argument("--echo-rate", type=float, default=250.0, help="pings per second overall (250)")
    parser.add_argument("--raw-count", type=int, default=300, help="raw layer round trips (300)")
    parser.add_argument(
        "--conn-max-age", type=int, default=0, help="DB_CONN_MAX_AGE (0: the default connection pool, DB_POOL_MAX_SIZE)"
    )
    parser.add_argument(
        "--curve",
        type=socket_counts,
        help="socket counts, e.g. 100,200,300,400,500: the load once per count in one run (the clients are the "
        "largest count), with latency, drops and cost per event for each; no baselines",
    )
    parser.add_argument(
        "--py-spy",
        metavar="OUT",
        help="sample Daphne #1 with py-spy over the measured seconds (the curve's last step): .txt raw, .json "
        "speedscope, else svg",
    )
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory (logs)")
    parser.add_argument("--publisher", help=argparse.SUPPRESS)
    if "--quick" in (sys.argv[1:] if argv is None else argv):
        parser.set_defaults(clients=200, seconds=6.0, warmup=2.0, baseline_seconds=4.0, echo_rounds=1)
    args = parser.parse_args(argv)
    if args.curve:
        args.clients = args.curve[-1]
    if args.supervisors is None:
        args.supervisors = max(2, args.clients // 25)
    if not 0 < args.supervisors < args.clients:
        parser.error("--supervisors must leave at least one agent")
    if min(args.teams, args.publishers, args.publisher_threads, args.senders_per_team) < 1:
        parser.error("--teams, --publishers, --publisher-threads and --senders-per-team must be at least 1")
    if args.rate <= 0 or args.seconds <= 0 or not 0 <= args.new_share <= 1:
        parser.error("--rate and --seconds must be positive, --new-share between 0 and 1")
    if args.source == "events" and args.new_share:
        parser.error("--new-share needs --source inbound (first contacts open conversations)")
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    if args.publisher:
        return publisher_main(args.publisher)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from tests.services import PostgresServer, RedisServer, free_port

    work = Path(tempfile.mkdtemp(prefix="bench-fanout-"))
    started = time.monotonic()
    pg, redis = PostgresServer(), RedisServer()
    daphnes: list[Daphne] = []
    try:
        print("starting PostgreSQL and Redis on loopback …", flush=True)
        database_url, redis_url = pg.start(), redis.start()
        ports = [free_port() for _ in range(args.daphnes)]
        env = bench_env(
            port=ports[0],
            database_url=database_url,
            redis_url=redis_url,
            token=secrets.token_hex(16),
            data_dir=str(work),
        )
        env["DB_CONN_MAX_AGE"] = str(args.conn_max_age)
        os.environ.update(env)
        full_env = {**os.environ, **env}
        print("migrating …", flush=True)
        migrate(full_env, work / "migrate.log")

        import django

        django.setup()
        import logging

        logging.getLogger().setLevel(logging.WARNING)  # this process only; the servers log as in production
        print(f"creating {args.teams} teams, {args.clients} staff and their sessions …", flush=True)
        world = create_world(
            agents=args.clients - args.supervisors,
            supervisors=args.supervisors,
            teams=args.teams,
            senders_per_team=args.senders_per_team,
        )
        print(f"opening {args.teams * args.senders_per_team} conversations (one message each) …", flush=True)
        world = prime_conversations(world)
        from django.db import connections

        connections.close_all()
        for n, port in enumerate(ports, 1):
            print(f"serving config.asgi with Daphne #{n} on 127.0.0.1:{port} …", flush=True)
            daphne = Daphne(port=port, env=full_env, cwd=ROOT, log=work / f"daphne{n}.log")
            daphnes.append(daphne)
            daphne.start()
        assert pg.proc is not None and redis.proc is not None
        roots = {f"daphne{n}": d.pid for n, d in enumerate(daphnes, 1)}
        roots |= {"postgres": postmaster_pid(pg.data), "redis": redis.proc.pid}
        if args.curve:
            curve = asyncio.run(run_curve(world, ports, args, full_env, work, roots))
            ok = print_curve(curve, world, args, [d.log for d in daphnes])
        else:
            phases = asyncio.run(run_phases(world, ports, args, full_env, work, roots))
            ok = print_report(phases, world, args, [d.log for d in daphnes])
        print(f"\n(total {time.monotonic() - started:.0f} s; logs {work if args.keep_logs else 'removed'})")
        return 0 if ok else 1
    except KeyboardInterrupt:
        print("interrupted; stopping everything this run started …", file=sys.stderr, flush=True)
        return 130
    finally:
        if "django.db" in sys.modules:  # Django set up: let PostgreSQL's smart shutdown find no sessions
            from django.db import connections

            connections.close_all()
        for daphne in daphnes:
            daphne.stop()
        redis.stop()
        if pg.proc is not None:
            fast_stop_postgres(pg.data)  # its SIGTERM (smart shutdown) would wait for every session to leave
        pg.stop()
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

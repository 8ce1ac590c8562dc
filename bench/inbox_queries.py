"""Inbox reads at hospital scale, as ratios to a primary-key lookup timed in the same run.

    .venv/bin/python -m bench.inbox_queries            # from the repository root; 1M messages, ~5 minutes
    .venv/bin/python -m bench.inbox_queries --quick    # 50k messages / 5k conversations, under a minute

Starts its own PostgreSQL on loopback (tests/services.py), migrates, creates teams, inboxes, agents and
supervisors through the ORM, bulk-loads patients, conversations and messages with COPY and
generate_series (skewed: a few threads with thousands of messages, most with a handful), VACUUM
ANALYZEs, then times the product's own selectors with random parameters, interleaved with
`Message.objects.get(pk=…)`:

1. the conversation list (mine / unassigned / all, status and inbox filters, paged like the API);
2. a message page: conversation_for + message_page_for (latest 50, and an older page);
3. unread counts: unread_counts_for (mine / unassigned / per visible inbox).

Each runs as a team agent and as a supervisor. It prints EXPLAIN (ANALYZE, BUFFERS) of each one's p95
run, fails any plan (over random samples) that sequentially scans a table of 10,000 rows or more,
checks unread_counts_for and message_page_for against the list selector and a plain ordered read, and
prints PASS/MISS for p95 < 50 ms. Everything it started (PostgreSQL, temporary directories) is
stopped, Ctrl-C included.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
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
from collections import defaultdict
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from django.contrib.auth.models import User

    from tests.services import PostgresServer

TARGET_MS = 50.0
# A sequential scan of a table this big is a missing index, not the planner's sensible choice for a small one.
LARGE_TABLE_ROWS = 10_000
SEQ_SCAN_RE = re.compile(r"Seq Scan on (\w+)")

TEAMS = [
    ("outpatient", "Outpatient service desk", "门诊服务台"),
    ("inpatient", "Inpatient care", "住院部"),
    ("health-check", "Health check centre", "体检中心"),
    ("pediatrics", "Pediatrics", "儿科"),
    ("obstetrics", "Obstetrics", "产科"),
    ("billing", "Billing and insurance", "收费与医保"),
]
CHANNELS = ["sms", "webchat"]
LABELS = ["appointment", "refill", "billing", "complaint", "vip", "follow-up", "lab-results", "insurance"]
# Status mix of a contact centre a year in: most threads long resolved, a working set still live.
STATUS_WEIGHTS = {"resolved": 0.74, "open": 0.16, "pending": 0.06, "snoozed": 0.04}
PRIORITY_WEIGHTS = {0: 0.70, 1: 0.12, 2: 0.10, 3: 0.06, 4: 0.02}
# What agents pick in the list's filters (the UI defaults to "open").
LIST_STATUS_WEIGHTS = {"open": 0.60, "pending": 0.10, "snoozed": 0.05, "resolved": 0.10, "any": 0.15}
INBOUND_BODIES = [
    "我想预约下周三上午的门诊",
    "请问体检报告什么时候可以拿到？",
    "Can I change my appointment to Friday?",
    "孩子发烧38.5度，需要挂急诊吗",
    "医保报销需要带哪些材料",
    "药快吃完了，可以续方吗",
    "Thanks, see you tomorrow",
    "住院押金可以微信支付吗",
    "检查前需要空腹吗？",
    "好的，谢谢医生",
]
OUTBOUND_BODIES = [
    "您好，已为您预约周三上午9:30，请提前15分钟到达。",
    "体检报告将在3个工作日内发送至您的手机。",
    "Your appointment is confirmed for Friday 09:30, clinic 3.",
    "请携带身份证和医保卡到一楼收费处办理。",
    "检查前8小时请勿进食，可少量饮水。",
    "如症状加重请立即前往急诊。",
    "已为您转接药房，请稍候。",
    "不客气，祝您早日康复！",
]


# ---------------------------------------------------------------------------------------------------
# Services and schema
# ---------------------------------------------------------------------------------------------------


def bench_env(*, database_url: str, data_dir: str) -> dict[str, str]:
    """Production settings on PostgreSQL; no Redis because nothing here publishes or queues."""
    return {
        "DJANGO_SETTINGS_MODULE": "config.settings",
        "DATABASE_URL": database_url,
        "REDIS_URL": "",
        "SECRET_KEY": secrets.token_urlsafe(40),
        "TASK_RUNNER": "immediate",
        "DATA_DIR": data_dir,
        "DEBUG": "false",
        "SIMULATOR_ENABLED": "false",
    }


def stop_postgres(pg: PostgresServer) -> None:
    """Fast shutdown of the postmaster itself, then the helper's own stop (process and directory).

    The helper's SIGTERM is PostgreSQL's *smart* shutdown, which waits for clients, and its fallback
    SIGKILL hits runuser rather than the postmaster; either could leave a server running.
    """
    from bench.procs import postmaster_pid

    try:
        pid = postmaster_pid(pg.data)
    except (OSError, ValueError):
        pid = None
    if pid is not None and pg.proc is not None and pg.proc.poll() is None:
        try:
            os.kill(pid, signal.SIGINT)
            pg.proc.wait(30)
        except (ProcessLookupError, subprocess.TimeoutExpired):
            pass
    pg.stop()


def sql(statement: str, params: Sequence[Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params)
        return list(cursor.fetchall()) if cursor.description else []


# ---------------------------------------------------------------------------------------------------
# Data: staff through the ORM, the bulk through COPY and generate_series
# ---------------------------------------------------------------------------------------------------


@dataclass
class World:
    team_ids: list[int]
    inbox_team: dict[int, int]
    agent_ids: list[int]
    teams_of: dict[int, list[int]]
    supervisor_ids: list[int]
    label_names: list[str]
    # Conversation ids an agent of each team may open.
    by_team: dict[int, list[int]] = field(default_factory=dict)
    live_by_team: dict[int, list[int]] = field(default_factory=dict)
    heavy_by_team: dict[int, list[int]] = field(default_factory=dict)
    heavy: list[int] = field(default_factory=list)
    message_counts: dict[int, int] = field(default_factory=dict)
    max_message_id: int = 0


def create_staff(rng: random.Random, agents: int) -> World:
    """Teams with an SMS and a web-chat inbox each, agents in one or two teams, two supervisors."""
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User

    from contactcenter.models import AgentProfile, Availability, Inbox, Label, Role, Team

    teams = [Team.objects.create(code=code, name=name, name_zh=zh) for code, name, zh in TEAMS]
    inbox_team: dict[int, int] = {}
    for team in teams:
        for channel in CHANNELS:
            inbox = Inbox.objects.create(name=f"{team.name} {channel}", channel_type=channel, team=team)
            inbox_team[inbox.pk] = team.pk
    Label.objects.bulk_create([Label(name=name) for name in LABELS])
    unusable = make_password(None)  # hashing a real password 50 times would dominate set-up
    users = User.objects.bulk_create(
        [User(username=f"agent{i:02d}", password=unusable) for i in range(agents)]
        + [User(username=f"supervisor{i}", password=unusable) for i in range(2)]
    )
    agent_users, supervisors = users[:agents], users[agents:]
    teams_of: dict[int, list[int]] = {}
    for i, user in enumerate(agent_users):
        profile = AgentProfile.objects.create(
            user=user, role=Role.AGENT, availability=Availability.ONLINE, display_name=f"Agent {i}"
        )
        mine = [teams[i % len(teams)]]
        if rng.random() < 0.2:  # some agents cover a second desk
            mine.append(rng.choice([t for t in teams if t not in mine]))
        profile.teams.set(mine)
        teams_of[user.pk] = [t.pk for t in mine]
    for i, user in enumerate(supervisors):
        AgentProfile.objects.create(user=user, role=Role.SUPERVISOR, display_name=f"Supervisor {i}")
    return World(
        team_ids=[t.pk for t in teams],
        inbox_team=inbox_team,
        agent_ids=[u.pk for u in agent_users],
        teams_of=teams_of,
        supervisor_ids=[u.pk for u in supervisors],
        label_names=list(LABELS),
    )


def message_counts(rng: random.Random, *, messages: int, conversations: int) -> list[int]:
    """Messages per conversation summing to exactly `messages`: 1 in 1000 threads hold a tenth of them
    (Pareto, thousands each), the rest are log-normal around the remaining mean (most have a few)."""
    heavy_n = max(1, conversations // 1000)
    heavy_total = messages // 10
    rest_n = conversations - heavy_n
    rest_total = messages - heavy_total
    if rest_n < 1 or rest_total < 2 * rest_n:
        raise SystemExit("need at least 2 messages per conversation (and more than one conversation)")
    heavy_w = [min(rng.paretovariate(1.2), 20.0) for _ in range(heavy_n)]
    heavy = [max(200, round(w / sum(heavy_w) * heavy_total)) for w in heavy_w]
    rest_w = [rng.lognormvariate(0.0, 1.1) for _ in range(rest_n)]
    scale = rest_total / sum(rest_w)
    rest = [max(1, round(w * scale)) for w in rest_w]
    counts = heavy + rest
    diff = messages - sum(counts)
    while diff:
        i = rng.randrange(heavy_n, conversations)
        if diff > 0:
            counts[i] += 1
            diff -= 1
        elif counts[i] > 1:
            counts[i] -= 1
            diff += 1
    rng.shuffle(counts)
    return counts


def weighted(rng: random.Random, weights: dict[Any, float]) -> Any:
    return rng.choices(list(weights), weights=list(weights.values()))[0]


def inbound_at(cid: int, k: int, n: int, last_in: bool) -> bool:
    """Direction of the k-th of n messages; SQL_INBOUND computes the same so the preview matches."""
    if k == n:
        return last_in
    return k == 1 or (cid * 1103515245 + k * 12345) % 100 < 55


SQL_INBOUND = (
    "CASE WHEN s.k = s.n THEN s.last_in WHEN s.k = 1 THEN true "
    "ELSE (s.conversation_id * 1103515245 + s.k * 12345) % 100 < 55 END"
)


def body_of(cid: int, k: int, inbound: bool) -> str:
    bodies = INBOUND_BODIES if inbound else OUTBOUND_BODIES
    return bodies[(cid * 31 + k) % len(bodies)]


def copy_rows(table: str, columns: Sequence[str], rows: Iterator[Sequence[Any]]) -> None:
    from django.db import connection

    with connection.cursor() as cursor, cursor.copy(f"COPY {table} ({', '.join(columns)}) FROM STDIN") as copy:
        for row in rows:
            copy.write_row(row)


def load(world: World, rng: random.Random, *, messages: int, conversations: int, patients: int) -> None:
    from django.db import connection
    from django.utils import timezone

    from contactcenter.models import Conversation, Label

    now = timezone.now().replace(microsecond=0)
    inboxes = sorted(world.inbox_team)
    if conversations > patients * len(inboxes):
        raise SystemExit("too few patients for one live conversation per patient and inbox")
    agents_by_team: dict[int, list[int]] = defaultdict(list)
    for user_id, team_ids in world.teams_of.items():
        for team_id in team_ids:
            agents_by_team[team_id].append(user_id)

    with connection.cursor() as cursor:
        # Loader session only: bigger sorts in memory, and no per-row foreign-key triggers (the rows
        # are consistent by construction), as pg_restore would do.
        cursor.execute("SET work_mem = '256MB'")
        cursor.execute("SET maintenance_work_mem = '512MB'")
        cursor.execute("SET session_replication_role = replica")

    t = time.monotonic()
    sql(
        """
        INSERT INTO contactcenter_patient (id, name, given_name, gender, birth_date, region, city, language,
            time_zone, vip_tier, custom_attributes, merged_into_id, created_at, updated_at)
        SELECT g,
            (ARRAY['王','李','张','刘','陈','杨','黄','赵','吴','周'])[1 + g %% 10]
                || (ARRAY['伟','芳','娜','敏','静','丽','强','磊','洋','艳','勇','军'])[1 + (g / 10) %% 12],
            (ARRAY['伟','芳','娜','敏','静','丽','强','磊','洋','艳','勇','军'])[1 + (g / 10) %% 12],
            (ARRAY['female','male','unknown'])[1 + g %% 3],
            DATE '1940-01-01' + (g * 7919) %% 30000,
            (ARRAY['朝阳区','海淀区','东城区','西城区','丰台区'])[1 + g %% 5], '北京',
            'zh-hans', 'Asia/Shanghai',
            CASE WHEN g %% 97 = 0 THEN 'gold' WHEN g %% 31 = 0 THEN 'silver' ELSE 'none' END,
            '{}'::jsonb, NULL, %s - (g %% 700) * interval '1 day', %s
        FROM generate_series(1, %s) AS g
        """,
        [now, now, patients],
    )
    print(f"  {patients:,} patients ({time.monotonic() - t:.1f} s)", flush=True)

    t = time.monotonic()
    counts = message_counts(rng, messages=messages, conversations=conversations)
    heavy_cut = sorted(counts, reverse=True)[max(1, conversations // 1000) - 1]
    conv_rows: list[tuple[Any, ...]] = []
    plan_rows: list[tuple[Any, ...]] = []
    label_rows: list[tuple[int, int]] = []
    label_ids = list(Label.objects.values_list("id", flat=True))
    for i in range(conversations):
        cid = i + 1
        n = counts[i]
        p = i % patients
        # Distinct (patient, inbox) for every conversation, so live ones never break the
        # one-live-thread-per-patient-and-inbox constraint.
        inbox_id = inboxes[(p * 7 + i // patients) % len(inboxes)]
        team_id = world.inbox_team[inbox_id]
        if rng.random() < 0.05:  # transferred to another desk
            team_id = rng.choice(world.team_ids)
        status = weighted(rng, STATUS_WEIGHTS)
        live = status != "resolved"
        if n >= heavy_cut:  # a long-running thread started most of a year ago
            created = now - dt.timedelta(days=rng.uniform(200, 360))
            last = now - dt.timedelta(hours=rng.expovariate(1 / 24)) if live else now - dt.timedelta(days=1)
        elif live:
            last = now - dt.timedelta(hours=min(rng.expovariate(1 / 48), 24 * 30))
            created = last - dt.timedelta(hours=rng.expovariate(1 / 24) + n * 0.05)
        else:
            created = now - dt.timedelta(days=rng.uniform(2, 365))
            last = min(created + dt.timedelta(hours=rng.expovariate(1 / 6) + n * 0.05), now - dt.timedelta(hours=1))
        assigned = rng.random() < {"open": 0.85, "pending": 0.95, "snoozed": 0.95, "resolved": 0.97}[status]
        assignee: int | None = None
        if assigned:
            team_agents = agents_by_team.get(team_id) or world.agent_ids
            assignee = rng.choice(world.supervisor_ids) if rng.random() < 0.005 else rng.choice(team_agents)
        unread = 0
        if live and rng.random() < 0.45:
            unread = min(1 + int(rng.expovariate(0.5)), n)
        last_in = unread > 0 or (not live and rng.random() < 0.3)
        conv_rows.append(
            (
                cid,
                p + 1,
                inbox_id,
                team_id,
                status,
                assignee,
                weighted(rng, PRIORITY_WEIGHTS),
                unread,
                "",
                now + dt.timedelta(hours=rng.uniform(1, 72)) if status == "snoozed" else None,
                last,
                body_of(cid, n, inbound_at(cid, n, n, last_in))[:140],
                created,
                None if live else min(last + dt.timedelta(hours=rng.uniform(0, 24)), now),
            )
        )
        plan_rows.append((cid, inbox_id, p + 1, assignee, n, created, last, last_in))
        if rng.random() < 0.12:
            label_rows.extend((cid, label) for label in rng.sample(label_ids, rng.choice([1, 1, 2])))
        if n >= heavy_cut:
            world.heavy.append(cid)
        world.message_counts[cid] = n
        visible_to = {world.inbox_team[inbox_id], team_id}
        for team in visible_to:
            world.by_team.setdefault(team, []).append(cid)
            if live:
                world.live_by_team.setdefault(team, []).append(cid)
            if n >= heavy_cut:
                world.heavy_by_team.setdefault(team, []).append(cid)
    copy_rows(
        Conversation._meta.db_table,
        [
            "id",
            "patient_id",
            "inbox_id",
            "team_id",
            "status",
            "assignee_id",
            "priority",
            "unread_count",
            "subject",
            "snoozed_until",
            "last_message_at",
            "last_message_preview",
            "created_at",
            "resolved_at",
        ],
        iter(conv_rows),
    )
    copy_rows(Conversation.labels.through._meta.db_table, ["conversation_id", "label_id"], iter(label_rows))
    print(f"  {conversations:,} conversations, {len(label_rows):,} labels ({time.monotonic() - t:.1f} s)", flush=True)

    t = time.monotonic()
    sql(
        """
        CREATE TEMP TABLE bench_plan (conversation_id bigint, inbox_id bigint, patient_id bigint,
            assignee_id integer, n integer, first_at timestamptz, last_at timestamptz, last_in boolean)
        """
    )
    copy_rows(
        "bench_plan",
        ["conversation_id", "inbox_id", "patient_id", "assignee_id", "n", "first_at", "last_at", "last_in"],
        iter(plan_rows),
    )
    inbound_bodies = "ARRAY[" + ",".join(f"'{b}'" for b in INBOUND_BODIES) + "]"
    outbound_bodies = "ARRAY[" + ",".join(f"'{b}'" for b in OUTBOUND_BODIES) + "]"
    # Rows go in by time, as production writes them: a thread's messages are scattered over the heap
    # and the id order is the arrival order, not grouped by conversation (which would flatter reads).
    sql(
        f"""
        INSERT INTO contactcenter_message (conversation_id, inbox_id, direction, sender_kind, author_id, body,
            attachments, status, provider_message_id, error_code, error_message, flags, provider_payload,
            created_at, sent_at, delivered_at, read_at, status_changed_at)
        SELECT m.conversation_id, m.inbox_id,
            CASE WHEN m.inbound THEN 'in' ELSE 'out' END,
            CASE WHEN m.inbound THEN 'patient' WHEN m.assignee_id IS NULL THEN 'system' ELSE 'agent' END,
            CASE WHEN m.inbound THEN NULL ELSE m.assignee_id END,
            m.body, '[]'::jsonb,
            CASE WHEN m.inbound THEN 'received' WHEN m.h < 3 THEN 'failed' WHEN m.h < 40 THEN 'read'
                ELSE 'delivered' END,
            m.sid, '', '', '[]'::jsonb,
            CASE WHEN m.inbound THEN jsonb_build_object(
                'MessageSid', m.sid, 'SmsSid', m.sid, 'AccountSid', 'AC5ef8732a3c49700934481addd5ce1659',
                'From', '+86138' || lpad(m.patient_id::text, 8, '0'), 'To', '+8610123456780',
                'Body', m.body, 'NumMedia', '0', 'NumSegments', '1', 'SmsStatus', 'received',
                'ApiVersion', '2010-04-01', 'FromCountry', 'CN', 'ToCountry', 'CN')
                ELSE '{{}}'::jsonb END,
            m.at,
            CASE WHEN m.inbound THEN NULL ELSE m.at + interval '1 second' END,
            CASE WHEN m.inbound OR m.h < 3 THEN NULL ELSE m.at + interval '4 seconds' END,
            NULL, m.at
        FROM (
            SELECT s.*, {SQL_INBOUND} AS inbound,
                CASE WHEN {SQL_INBOUND}
                    THEN ({inbound_bodies})[1 + (s.conversation_id * 31 + s.k) % {len(INBOUND_BODIES)}]
                    ELSE ({outbound_bodies})[1 + (s.conversation_id * 31 + s.k) % {len(OUTBOUND_BODIES)}]
                END AS body,
                'SM' || md5(s.conversation_id::text || ':' || s.k::text) AS sid,
                (s.conversation_id * 7 + s.k * 13) % 100 AS h
            FROM (
                SELECT p.conversation_id, p.inbox_id, p.patient_id, p.assignee_id, p.n, p.last_in, g.k,
                    CASE WHEN p.n = 1 THEN p.last_at
                        ELSE p.first_at + (p.last_at - p.first_at) * ((g.k - 1)::float8 / (p.n - 1)) END AS at
                FROM bench_plan p CROSS JOIN LATERAL generate_series(1, p.n) AS g(k)
                ORDER BY at
            ) s
        ) m
        """
    )
    sql("DROP TABLE bench_plan")
    print(f"  {messages:,} messages ({time.monotonic() - t:.1f} s)", flush=True)

    for table in ["contactcenter_patient", "contactcenter_conversation", "contactcenter_message"]:
        sql(f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), (SELECT max(id) FROM {table}))")
    with connection.cursor() as cursor:
        cursor.execute("SET session_replication_role = origin")
    t = time.monotonic()
    # As autovacuum would have by now: statistics for the planner and an all-visible map, which
    # index-only scans need (and the planner's costs assume). An autoanalyze the bulk load set off
    # holds a snapshot that can keep VACUUM from marking pages all-visible, so repeat until it has.
    visible = 0.0
    for _ in range(10):
        sql("VACUUM (ANALYZE)")
        rows = sql(
            "SELECT min(relallvisible::float8 / greatest(relpages, 1)) FROM pg_class "
            "WHERE relname IN ('contactcenter_conversation', 'contactcenter_message', 'contactcenter_patient')"
        )
        visible = float(rows[0][0])
        if visible >= 0.99:
            break
        time.sleep(3)
    sql("CHECKPOINT")
    print(f"  VACUUM ANALYZE ({time.monotonic() - t:.1f} s, {visible:.0%} of pages all-visible)", flush=True)
    world.max_message_id = int(sql("SELECT max(id) FROM contactcenter_message")[0][0])


# ---------------------------------------------------------------------------------------------------
# The operations: the product's selectors, each call one request's worth of reads
# ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Case:
    describe: str
    run: Callable[[], object]


@dataclass
class Op:
    label: str
    pick: Callable[[random.Random], Case]
    target: bool = True
    ms: list[float] = field(default_factory=list)
    # This process's CPU time per run: the ORM's share of the wall time, which waiting on the server
    # (or on other tenants of the CPUs) is not.
    cpu_ms: list[float] = field(default_factory=list)
    cases: list[Case] = field(default_factory=list)
    # The run nearest the p95, re-run under EXPLAIN (ANALYZE, BUFFERS): (statement, plan) each.
    p95_index: int = 0
    p95_plans: list[tuple[str, str]] = field(default_factory=list)


class Ops:
    """Builds the timed operations over a loaded World."""

    def __init__(self, world: World) -> None:
        from django.conf import settings
        from django.contrib.auth.models import User
        from django.test import RequestFactory
        from rest_framework.pagination import LimitOffsetPagination
        from rest_framework.request import Request

        from contactcenter.api.inputs import MessagePageInput

        self.world = world
        # The page sizes the API serves when the inbox UI asks without a limit.
        rest: dict[str, Any] = settings.REST_FRAMEWORK
        self.list_page: int = rest["PAGE_SIZE"]
        message_limit = MessagePageInput().fields["limit"].default
        assert isinstance(message_limit, int), message_limit
        self.message_page_size = message_limit
        # Threads with more than a page, for "load earlier".
        self.long_by_team = {
            team: [c for c in ids if world.message_counts[c] > self.message_page_size]
            for team, ids in world.by_team.items()
        }
        # Users as a request holds them: its first access check reads the profile, which the user object
        # then caches, so it is cached here too; team membership is still queried on every call.
        self.users = {u.pk: u for u in User.objects.select_related("agent_profile")}
        self.factory = RequestFactory()
        self.paginator_class = LimitOffsetPagination
        self.request_class = Request
        self._visible: dict[tuple[tuple[int, ...], tuple[int, ...]], list[int]] = {}

    def user(self, rng: random.Random, role: str) -> User:
        ids = self.world.agent_ids if role == "agent" else self.world.supervisor_ids
        return self.users[rng.choice(ids)]

    def visible(self, user: User, *pools: dict[int, list[int]]) -> list[int]:
        """Conversation ids the user may open from the first of `pools` that has any (supervisors: every
        team); small data sets may give an agent's teams no long thread."""
        teams = tuple(self.world.teams_of.get(user.pk, self.world.team_ids))
        key = (tuple(id(pool) for pool in pools), teams)
        if key not in self._visible:
            # A conversation in two of the user's teams is listed twice; it is only drawn more often.
            found: list[int] = []
            for pool in pools:
                found = found or [cid for team in teams for cid in pool.get(team, [])]
            self._visible[key] = found
        return self._visible[key]

    def conversation_list(self, role: str, view: str) -> Callable[[random.Random], Case]:
        from contactcenter import selectors

        def pick(rng: random.Random) -> Case:
            user = self.user(rng, role)
            status = weighted(rng, LIST_STATUS_WEIGHTS)
            teams = self.world.teams_of.get(user.pk, self.world.team_ids)
            inboxes = [i for i, t in self.world.inbox_team.items() if t in teams]
            inbox_id = rng.choice(inboxes) if rng.random() < 0.3 else None
            label = rng.choice(self.world.label_names) if rng.random() < 0.1 else None
            offset = self.list_page * weighted(rng, {0: 0.8, 1: 0.15, 2: 0.03, 4: 0.02})

            def run() -> object:
                qs = selectors.conversation_list_for(
                    user=user, view=view, status=status, inbox_id=inbox_id, label=label
                )
                # The API's own paginator: a COUNT(*) for the total, then the slice, then the labels.
                request = self.request_class(self.factory.get("/", {"offset": offset}))
                return self.paginator_class().paginate_queryset(qs, request)

            return Case(
                f"user={user.username} view={view} status={status} inbox={inbox_id} label={label} offset={offset}", run
            )

        return pick

    def pick_conversation(self, rng: random.Random, user: User) -> int:
        """Mostly live threads (what agents work on), some from history, a fifth the longest threads."""
        w = self.world
        r = rng.random()
        if r < 0.2:
            return rng.choice(self.visible(user, w.heavy_by_team, self.long_by_team, w.by_team))
        if r < 0.7:
            return rng.choice(self.visible(user, w.live_by_team, w.by_team))
        return rng.choice(self.visible(user, w.by_team))

    def message_page(self, role: str, *, older: bool = False) -> Callable[[random.Random], Case]:
        from contactcenter import selectors
        from contactcenter.models import Message

        def pick(rng: random.Random) -> Case:
            user = self.user(rng, role)
            before_id: int | None = None
            if older:
                # "Load earlier" from somewhere inside a thread longer than a page; in a small data set
                # some agents' teams have none, so draw another agent.
                for _ in range(1000):
                    if self.visible(user, self.long_by_team):
                        break
                    user = self.user(rng, role)
                else:
                    raise SystemExit(f"no {role} sees a thread longer than {self.message_page_size} messages")
                cid = rng.choice(self.visible(user, self.long_by_team))
                position = rng.randrange(self.message_page_size, self.world.message_counts[cid])
                ids = (
                    Message.objects.filter(conversation_id=cid)
                    .order_by("created_at", "id")
                    .values_list("id", flat=True)
                )
                before_id = ids[position]
            else:
                cid = self.pick_conversation(rng, user)

            def run() -> object:
                conversation = selectors.conversation_for(user=user, conversation_id=cid)
                assert conversation is not None, cid
                return selectors.message_page_for(
                    conversation=conversation, limit=self.message_page_size, before_id=before_id
                )

            return Case(
                f"user={user.username} conversation={cid} ({self.world.message_counts[cid]} messages) before_id={before_id}",
                run,
            )

        return pick

    def unread_counts(self, role: str) -> Callable[[random.Random], Case]:
        from contactcenter import selectors

        def pick(rng: random.Random) -> Case:
            user = self.user(rng, role)
            return Case(f"user={user.username}", lambda: selectors.unread_counts_for(user=user))

        return pick

    def pk_lookup(self) -> Callable[[random.Random], Case]:
        from contactcenter.models import Message

        def pick(rng: random.Random) -> Case:
            pk = rng.randint(1, self.world.max_message_id)
            return Case(f"pk={pk}", lambda: Message.objects.get(pk=pk))

        return pick

    def all(self) -> list[Op]:
        ops = [Op("primary-key lookup (baseline)", self.pk_lookup(), target=False)]
        for role in ["agent", "supervisor"]:
            for view in ["mine", "unassigned", "all"]:
                ops.append(Op(f"conversation list {view:<10} {role}", self.conversation_list(role, view)))
        for role in ["agent", "supervisor"]:
            ops.append(Op(f"message page latest     {role}", self.message_page(role)))
        ops.append(Op("message page older      agent", self.message_page("agent", older=True)))
        for role in ["agent", "supervisor"]:
            ops.append(Op(f"unread counts           {role}", self.unread_counts(role)))
        return ops


# ---------------------------------------------------------------------------------------------------
# Timing, plans, report
# ---------------------------------------------------------------------------------------------------


def percentile(values: Sequence[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = max(0, math.ceil(p / 100 * len(ordered)) - 1)
    return ordered[rank]


def measure(ops: list[Op], rng: random.Random, *, iterations: int, warmup: int) -> None:
    """Every op `iterations` times with fresh random parameters, all interleaved in one shuffled
    schedule so drift (other tenants' CPU, autovacuum, cache) lands on every op alike."""
    schedule = [i for i in range(len(ops)) for _ in range(iterations)]
    rng.shuffle(schedule)
    for op in ops:
        for _ in range(warmup):
            op.pick(rng).run()
    gc.collect()
    started = time.monotonic()
    for done, index in enumerate(schedule, 1):
        op = ops[index]
        case = op.pick(rng)
        c0, t0 = time.process_time(), time.perf_counter()
        case.run()
        t1, c1 = time.perf_counter(), time.process_time()
        op.ms.append((t1 - t0) * 1000)
        op.cpu_ms.append((c1 - c0) * 1000)
        op.cases.append(case)
        if done % 1000 == 0:
            print(f"  {done:,} / {len(schedule):,} ({time.monotonic() - started:.0f} s)", flush=True)


def statements_of(case: Case) -> list[str]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        case.run()
    return [q["sql"] for q in ctx.captured_queries]


def explain(statement: str, *, analyze: bool) -> str:
    options = "ANALYZE, BUFFERS" if analyze else "COSTS OFF"
    return "\n".join(row[0] for row in sql(f"EXPLAIN ({options}) {statement}"))


def large_tables() -> frozenset[str]:
    rows = sql(
        "SELECT relname FROM pg_class WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace "
        "AND reltuples >= %s",
        [LARGE_TABLE_ROWS],
    )
    return frozenset(name for (name,) in rows)


def seq_scans(plan: str, tables: frozenset[str]) -> list[str]:
    return sorted({t for t in SEQ_SCAN_RE.findall(plan) if t in tables})


def short_sql(statement: str, width: int = 400) -> str:
    # The select lists of select_related queries run to dozens of columns; the shape is in FROM/WHERE.
    text = re.sub(r"^SELECT .*? FROM ", "SELECT … FROM ", statement, count=1, flags=re.S)
    return text if len(text) <= width else text[: width - 1] + "…"


@dataclass
class PlanCheck:
    op: Op
    checked: int = 0
    offenders: list[tuple[str, list[str]]] = field(default_factory=list)


def verify_selectors(o: Ops, rng: random.Random, samples: int) -> list[tuple[str, bool, str]]:
    """The two selectors this benchmark brought in, against the product's own list and a plain read.

    unread_counts_for must count what conversation_list_for lists; message_page_for must return the
    slice of the whole thread, in (created_at, id) order, that ends just before before_id.
    """
    from contactcenter import selectors
    from contactcenter.models import Conversation, Message

    unread_wrong: list[str] = []
    for _ in range(samples):
        user = o.user(rng, rng.choice(["agent", "supervisor"]))
        status = weighted(rng, LIST_STATUS_WEIGHTS)
        counts = selectors.unread_counts_for(user=user, status=status)

        def listed(view: str, inbox_id: int | None = None, *, u: User = user, st: str = status) -> int:
            qs = selectors.conversation_list_for(user=u, view=view, status=st, inbox_id=inbox_id)
            return qs.filter(unread_count__gt=0).count()

        inbox_id = rng.choice(sorted(o.world.inbox_team))
        expected = (listed("mine"), listed("unassigned"), listed("all"), listed("all", inbox_id))
        got = (counts.mine, counts.unassigned, counts.total, counts.by_inbox.get(inbox_id, 0))
        if got != expected:
            unread_wrong.append(f"{user.username} {status}: {got} != {expected}")
    page_wrong: list[str] = []
    limit = o.message_page_size
    for _ in range(samples):
        cid = rng.choice(o.world.heavy if rng.random() < 0.5 else list(o.world.message_counts))
        thread = list(
            Message.objects.filter(conversation_id=cid).order_by("created_at", "id").values_list("id", flat=True)
        )
        end = rng.randrange(1, len(thread) + 1)
        before_id = thread[end] if end < len(thread) else None
        conversation = Conversation.objects.get(pk=cid)
        page = [m.pk for m in selectors.message_page_for(conversation=conversation, limit=limit, before_id=before_id)]
        if page != thread[max(0, end - limit) : end]:
            page_wrong.append(f"conversation {cid} before {before_id}")
    return [
        (
            "unread_counts_for = conversation_list_for(...).filter(unread_count > 0).count()",
            not unread_wrong,
            f"{samples} users × mine/unassigned/all/one inbox; wrong: {unread_wrong[:3] or 0}",
        ),
        (
            "message_page_for = the thread's slice just before before_id, oldest first",
            not page_wrong,
            f"{samples} threads at random positions, {limit} per page; wrong: {page_wrong[:3] or 0}",
        ),
    ]


def check_plans(ops: list[Op], rng: random.Random, samples: int) -> list[PlanCheck]:
    """Plans (no ANALYZE) of every distinct statement over `samples` random cases per op."""
    results = []
    large = large_tables()
    for op in ops:
        check = PlanCheck(op)
        seen: set[str] = set()
        for _ in range(samples):
            case = op.pick(rng)
            for statement in statements_of(case):
                if statement in seen:
                    continue
                seen.add(statement)
                check.checked += 1
                tables = seq_scans(explain(statement, analyze=False), large)
                if tables:
                    check.offenders.append((f"{case.describe}: {short_sql(statement, 200)}", tables))
        results.append(check)
    return results


def explain_p95(ops: list[Op]) -> None:
    for op in ops:
        p95 = percentile(op.ms, 95)
        op.p95_index = min(range(len(op.ms)), key=lambda i: abs(op.ms[i] - p95))
        op.p95_plans = [(st, explain(st, analyze=True)) for st in statements_of(op.cases[op.p95_index])]


def server_ms(plan: str) -> float:
    """Planning plus execution time PostgreSQL itself reports for one EXPLAIN ANALYZE."""
    return sum(float(ms) for ms in re.findall(r"(?:Planning|Execution) Time: ([\d.]+) ms", plan))


def print_p95_plans(ops: list[Op]) -> None:
    for op in ops:
        case = op.cases[op.p95_index]
        print(
            f"\n=== {' '.join(op.label.split())} — p95 run ({op.ms[op.p95_index]:.2f} ms when timed): {case.describe}"
        )
        for n, (statement, plan) in enumerate(op.p95_plans, 1):
            print(f"--- statement {n}: {short_sql(statement)}")
            print("    " + plan.replace("\n", "\n    "))


def print_report(ops: list[Op], checks: list[PlanCheck], header: list[str]) -> bool:
    base = ops[0]
    b50, b95, b99 = (percentile(base.ms, p) for p in (50, 95, 99))
    print()
    for line in header:
        print(line)
    print(
        f"baseline: Message.objects.get(pk=…) p50 {b50:.3f} ms, p95 {b95:.3f} ms, p99 {b99:.3f} ms ({len(base.ms)} runs)"
    )
    print()
    head = (
        "operation",
        "n",
        "p50 ms",
        "p95 ms",
        "p99 ms",
        "p50 ×pk",
        "p95 ×pk",
        "p99 ×pk",
        "CPU p50",
        "SQL",
        "DB ms",
        "p95 < 50 ms",
    )
    rows = [head]
    ok = True
    for op in ops:
        p50, p95, p99 = (percentile(op.ms, p) for p in (50, 95, 99))
        verdict = ("PASS" if p95 < TARGET_MS else "MISS") if op.target else "(info)"
        if op.target and p95 >= TARGET_MS:
            ok = False
        rows.append(
            (
                op.label,
                str(len(op.ms)),
                f"{p50:.2f}",
                f"{p95:.2f}",
                f"{p99:.2f}",
                f"{p50 / b50:.1f}",
                f"{p95 / b95:.1f}",
                f"{p99 / b99:.1f}",
                f"{percentile(op.cpu_ms, 50):.2f}",
                str(len(op.p95_plans)),
                f"{sum(server_ms(plan) for _st, plan in op.p95_plans):.2f}",
                verdict,
            )
        )
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    for r in rows:
        print("  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r)))
    print(
        "CPU p50 = this process's CPU ms per run (Django, DRF, psycopg); SQL = statements in the p95 run; "
        "DB ms = PostgreSQL's planning + execution time for them under EXPLAIN ANALYZE"
    )
    print()
    large = ", ".join(sorted(large_tables()))
    print(f"plans: sequential scans of tables over {LARGE_TABLE_ROWS:,} rows ({large})")
    for check in checks:
        label = " ".join(check.op.label.split())
        if check.offenders:
            ok = ok and not check.op.target
            print(f"  SEQ SCAN {label}: {len(check.offenders)} of {check.checked} distinct statements")
            for describe, tables in check.offenders[:5]:
                print(f"      {', '.join(tables)} ← {describe}")
        else:
            print(f"  index    {label}: none in {check.checked} distinct statements")
    return ok


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.inbox_queries", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000, help="messages to load (1,000,000)")
    parser.add_argument("--conversations", type=int, default=100_000, help="conversations to load (100,000)")
    parser.add_argument("--patients", type=int, help="patients to load (default: conversations / 2)")
    parser.add_argument("--agents", type=int, default=50, help="agents across the teams (50)")
    parser.add_argument("--iterations", type=int, default=400, help="timed runs per operation (400)")
    parser.add_argument("--warmup", type=int, default=20, help="untimed runs per operation first (20)")
    parser.add_argument(
        "--plan-samples", type=int, default=40, help="random cases per operation whose plans are checked (40)"
    )
    parser.add_argument("--seed", type=int, default=20240611, help="random seed for data and parameters")
    parser.add_argument("--no-plans", action="store_true", help="skip printing the EXPLAIN ANALYZE plans")
    parser.add_argument(
        "--quick", action="store_true", help="50k messages, 5k conversations, 100 runs each (a smoke test)"
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.conversations, args.iterations, args.plan_samples = 50_000, 5_000, 100, 10
    args.patients = args.patients or max(1, args.conversations // 2)
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    # SIGTERM (a CI timeout, kill) unwinds through `finally` like Ctrl-C does.
    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from tests.services import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-inbox-"))
    pg: PostgresServer | None = None
    started = time.monotonic()
    try:
        pg = PostgresServer()
        print("starting PostgreSQL on loopback …", flush=True)
        database_url = pg.start()
        os.environ.update(bench_env(database_url=database_url, data_dir=str(work)))
        import django

        django.setup()
        from django.core.management import call_command

        print("migrating …", flush=True)
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        rng = random.Random(args.seed)
        print(
            f"loading {args.messages:,} messages / {args.conversations:,} conversations / {args.patients:,} patients …",
            flush=True,
        )
        t = time.monotonic()
        world = create_staff(rng, args.agents)
        load(world, rng, messages=args.messages, conversations=args.conversations, patients=args.patients)
        load_seconds = time.monotonic() - t
        version = sql("SHOW server_version")[0][0]
        sizes = sql(
            "SELECT relname, pg_size_pretty(pg_total_relation_size(oid)) FROM pg_class "
            "WHERE relname IN ('contactcenter_message', 'contactcenter_conversation') ORDER BY relname"
        )
        longest = max(world.message_counts.values())
        median = statistics.median(world.message_counts.values())

        builder = Ops(world)
        ops = builder.all()
        print(f"timing {len(ops)} operations × {args.iterations} runs, interleaved …", flush=True)
        load_before = os.getloadavg()[0]
        measure(ops, rng, iterations=args.iterations, warmup=args.warmup)
        load_after = os.getloadavg()[0]
        print("checking plans …", flush=True)
        checks = check_plans(ops, rng, args.plan_samples)
        explain_p95(ops)
        print("checking the new selectors' answers …", flush=True)
        verified = verify_selectors(builder, rng, args.plan_samples)
        if not args.no_plans:
            print("\nEXPLAIN (ANALYZE, BUFFERS) of each operation's p95 sample")
            print_p95_plans(ops)
        header = [
            f"Inbox queries — PostgreSQL {version} on loopback, {os.cpu_count()} CPUs, one Django connection in-process",
            f"data: {args.messages:,} messages / {args.conversations:,} conversations / {args.patients:,} patients, "
            f"{len(world.inbox_team)} inboxes, {len(world.team_ids)} teams, {args.agents} agents; messages per thread: "
            f"median {median:g}, max {longest:,}, {len(world.heavy)} threads ≥ {min(world.message_counts[c] for c in world.heavy):,}",
            "sizes (with indexes): "
            + ", ".join(f"{name} {size}" for name, size in sizes)
            + f"; loaded in {load_seconds:.0f} s",
            f"{args.iterations} timed runs per operation after {args.warmup} warm-up, random parameters, shuffled together; "
            "ms = wall time of the selector call(s) incl. ORM, no serialization",
            f"1-minute load average {load_before:.1f} before timing, {load_after:.1f} after: other work on these "
            "CPUs inflates every figure alike, which the ×pk ratios cancel",
        ]
        ok = print_report(ops, checks, header)
        print()
        for name, passed, detail in verified:
            print(f"check {'ok  ' if passed else 'FAIL'} {name}: {detail}")
            ok = ok and passed
        print(
            f"\noverall: {'PASS' if ok else 'MISS'} (every target p95 < {TARGET_MS:g} ms, no sequential scan of a large table, checks ok)"
        )
        print(f"(total {time.monotonic() - started:.0f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, Exception):
        if not stopped_by:
            raise
        # A terminal's Ctrl-C reaches PostgreSQL too (same process group), so the query in flight
        # may fail with "terminating connection" before the KeyboardInterrupt: both mean stopped.
        print(f"\n{signal.Signals(stopped_by[0]).name}: stopping PostgreSQL and removing {work} …", file=sys.stderr)
        return 128 + stopped_by[0]
    finally:
        # A second Ctrl-C must not abandon a half-stopped server.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "django.db" in sys.modules:
            from django.db import connections

            try:
                connections.close_all()
            except Exception as exc:  # settings never loaded, or the server already gone
                print(f"(closing database connections: {exc})", file=sys.stderr)
        if pg is not None:
            stop_postgres(pg)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

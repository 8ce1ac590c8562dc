"""What the database says after a fault, set against what the load was told: the invariants, and the server log
lines that explain a failure. The query functions are synchronous (Django ORM); the runner calls them in a
thread through `db()`, which also rides out the runner's own connection dying in a PostgreSQL restart."""

from __future__ import annotations

import asyncio
import functools
import re
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

from bench.chaos.load import Answer, ChaosSocket
from bench.realtime_fanout import Staff

T = TypeVar("T")
STUCK = ("queued", "sending")


async def db(fn: Callable[..., T], *args: Any, timeout: float = 60.0, **kwargs: Any) -> T:
    """fn(*args, **kwargs) in a worker thread on a fresh connection, again every half second while the database
    is away (a restart cuts the runner's connections too)."""
    from django.db import InterfaceError, OperationalError

    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        try:
            return await asyncio.to_thread(_closing, functools.partial(fn, *args, **kwargs))
        except (OperationalError, InterfaceError):
            if loop.time() > deadline:
                raise
            await asyncio.sleep(0.5)


def _closing(fn: Callable[[], T]) -> T:
    from django.db import connections

    try:
        return fn()
    finally:
        connections.close_all()


# --- queries ------------------------------------------------------------------------------------------


def max_event_id() -> int:
    from contactcenter.models import Event

    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def unsettled_outbound(older_than: float = 0.0, *, before: float | None = None) -> list[dict[str, Any]]:
    """Outbound messages still queued or sending that were created more than `older_than` seconds ago, or before
    the wall-clock time `before` (the fault's end: everything written up to then must get out)."""
    import datetime as dt

    from django.utils import timezone

    from contactcenter.models import Message, MessageDirection

    now = timezone.now()
    cutoff = now - dt.timedelta(seconds=older_than)
    if before is not None:
        cutoff = max(cutoff, dt.datetime.fromtimestamp(before, tz=dt.UTC))
    rows = Message.objects.filter(
        direction=MessageDirection.OUTBOUND, status__in=STUCK, created_at__lt=cutoff
    ).values_list("id", "status", "provider_message_id", "created_at", "status_changed_at", "error_message")
    return [
        {
            "id": pk,
            "status": status,
            "provider_id": bool(sid),
            "age_s": round((now - created).total_seconds(), 1),
            "status_age_s": round((now - changed).total_seconds(), 1),
            "error": (error or "")[:120],
        }
        for pk, status, sid, created, changed, error in rows
    ]


def delivered_since(since: float) -> bool:
    """Whether an outbound message written after the wall-clock time `since` has reached the provider."""
    import datetime as dt

    from contactcenter.models import Message, MessageDirection

    return Message.objects.filter(
        direction=MessageDirection.OUTBOUND,
        created_at__gt=dt.datetime.fromtimestamp(since, tz=dt.UTC),
        status__in=("sent", "delivered", "read"),
    ).exists()


def database_activity() -> list[str]:
    """What every other PostgreSQL session is doing (not idle ones): for a system that did not settle."""
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT pid, state, coalesce(wait_event_type || ':' || wait_event, ''), "
            "round(extract(epoch FROM now() - xact_start)::numeric, 1), "
            "left(regexp_replace(query, '\\s+', ' ', 'g'), 160) "
            "FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid() "
            "AND state IS DISTINCT FROM 'idle' ORDER BY xact_start NULLS LAST"
        )
        return [
            f"pg {pid} {state} {wait or '-'} xact {age} s: {query}"
            for pid, state, wait, age, query in cursor.fetchall()
        ]


def events_upto(after: int, upto: int) -> list[tuple[int, int | None, int | None, int | None, float]]:
    """(id, inbox, team, user, created as a Unix time) of the events in (after, upto]."""
    from contactcenter.models import Event

    rows = Event.objects.filter(id__gt=after, id__lte=upto).order_by("id")
    return [
        (i, inbox, team, user, at.timestamp())
        for i, inbox, team, user, at in rows.values_list("id", "inbox_id", "team_id", "user_id", "created_at")
    ]


def stored_inbound(sids: list[str]) -> Counter[str]:
    from django.db.models import Count

    from contactcenter.models import Message, MessageDirection

    rows = (
        Message.objects.filter(direction=MessageDirection.INBOUND, provider_message_id__in=sids)
        .values("provider_message_id")
        .annotate(n=Count("id"))
    )
    return Counter({str(r["provider_message_id"]): int(r["n"]) for r in rows})


def stored_replies(bodies: list[str]) -> dict[str, list[tuple[int, str]]]:
    """body → [(id, status)] of the outbound messages with that body."""
    from contactcenter.models import Message, MessageDirection

    found: dict[str, list[tuple[int, str]]] = {}
    rows = Message.objects.filter(direction=MessageDirection.OUTBOUND, body__in=bodies).order_by("id")
    for pk, body, status in rows.values_list("id", "body", "status"):
        found.setdefault(body, []).append((pk, status))
    return found


def provider_sends(bodies: list[str]) -> Counter[str]:
    """How often the simulated Twilio accepted each body (SimulatedDelivery rows)."""
    from channels_adapters.simulator.models import SimulatedDelivery

    return Counter(SimulatedDelivery.objects.filter(body__in=bodies).values_list("body", flat=True))


# --- invariants ---------------------------------------------------------------------------------------


@dataclass
class Invariants:
    lost: list[str] = field(default_factory=list)  # "webhook SM…" / "reply 12 (…)" answered 2xx, not stored
    duplicated: list[str] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)  # one per socket
    stranded: list[dict[str, Any]] = field(default_factory=list)
    # Not invariants, but what a patient or an agent would notice.
    inbound_refused_not_stored: int = 0  # non-2xx and not stored: lost unless Twilio retries it
    inbound_refused_but_stored: int = 0  # non-2xx yet stored: Twilio's retry (if any) is deduplicated
    replies_refused_but_saved: list[str] = field(default_factory=list)  # an agent who retypes texts twice
    replies_failed: list[int] = field(default_factory=list)  # stored, then failed by delivery

    @property
    def sockets_complete(self) -> int:
        return sum(1 for s in self.sockets if s["complete"])


def check_messages(answers: list[Answer]) -> Invariants:
    """Inbound and replies: nothing answered 2xx lost, nothing stored or sent twice (synchronous)."""
    result = Invariants()
    inbound = [a for a in answers if a.kind == "inbound"]
    stored = stored_inbound([a.key for a in inbound])
    for a in inbound:
        n = stored.get(a.key, 0)
        if a.ok and n == 0:
            result.lost.append(f"webhook {a.key} (answered {a.status})")
        if n > 1:
            result.duplicated.append(f"webhook {a.key} stored {n} times")
        if not a.ok:
            if n:
                result.inbound_refused_but_stored += 1
            else:
                result.inbound_refused_not_stored += 1
    replies = [a for a in answers if a.kind == "reply"]
    bodies = [a.key for a in replies]
    rows = stored_replies(bodies)
    sends = provider_sends(bodies)
    for a in replies:
        saved = rows.get(a.key, [])
        tag = a.key.rsplit("(", 1)[-1].rstrip(")")
        if a.status == 201 and not any(pk == a.message_id for pk, _ in saved):
            result.lost.append(f"reply {a.message_id} ({tag}) answered 201, not stored")
        if len(saved) > 1:
            result.duplicated.append(f"reply {tag} stored {len(saved)} times: {[pk for pk, _ in saved]}")
        if sends[a.key] > 1:
            result.duplicated.append(
                f"reply {[pk for pk, _ in saved]} ({tag}) sent to the provider {sends[a.key]} times"
            )
        if saved and a.status != 201:
            answer = a.status or a.error
            result.replies_refused_but_saved.extend(f"message {pk} (answered {answer})" for pk, _ in saved)
        for pk, status in saved:
            if status in ("sent", "delivered", "read") and sends[a.key] == 0:
                result.lost.append(f"reply {pk} ({tag}) is {status} but the provider never got it")
            if status in ("failed", "undelivered"):
                result.replies_failed.append(pk)
    return result


@dataclass(frozen=True)
class SocketHeld:
    """What one socket held when checked: taken on the event loop, so the check can run in a thread."""

    staff: Staff
    start_cursor: int | None
    received: frozenset[int]
    duplicates: int
    resync_error: str

    @classmethod
    def of(cls, socket: ChaosSocket, *, duplicates_before: int, resync_error: str) -> SocketHeld:
        return cls(
            socket.staff,
            socket.start_cursor,
            frozenset(socket.received),
            socket.duplicates - duplicates_before,
            resync_error,
        )


def check_sockets(
    held: list[SocketHeld], *, after: int, upto: int, older_than: float | None = None
) -> list[dict[str, Any]]:
    """Each socket, after its final resync, holds exactly the events in (after, upto] its user may see: by the
    event's audience columns (docs/architecture.md), not by contactcenter.access, so the two are compared.
    `older_than` (a Unix time): only events created before it count (the live path's, still in flight, excepted)."""
    rows = [r for r in events_upto(after, upto) if older_than is None or r[4] < older_than]
    outcomes: list[dict[str, Any]] = []
    for socket in held:
        staff = socket.staff
        lower = max(after, socket.start_cursor if socket.start_cursor is not None else upto)
        expected = {i for i, inbox, team, user, _at in rows if i > lower and staff.may_see(inbox, team, user)}
        considered = {r[0] for r in rows}
        have = {i for i in socket.received if lower < i <= upto and (older_than is None or i in considered)}
        missing, extra = sorted(expected - have), sorted(have - expected)
        # Complete: the set of events held is the set the user may see. Events received twice are counted but
        # not held against it: socket.js drops any id at or below the last one it applied.
        complete = not missing and not extra and not socket.resync_error and socket.start_cursor is not None
        outcomes.append(
            {
                "user_id": staff.user_id,
                "supervisor": staff.supervisor,
                "complete": complete,
                "expected": len(expected),
                "missing": missing[:20],
                "missing_count": len(missing),
                "extra": extra[:20],
                "duplicates": socket.duplicates,
                "resync_error": socket.resync_error,
            }
        )
    return outcomes


# --- server logs --------------------------------------------------------------------------------------

# A log record starts with a timestamp (Django's and Celery's formats, PostgreSQL's, the proxy's epoch seconds)
# or is a Daphne access line; anything else (a traceback) continues the record before it.
RECORD_START = re.compile(r"^(\[?\d{4}-\d\d-\d\d[ T][\d:,.]+|\d{10}\.\d+ |\S+:\d+ - - \[)")
STAMP = re.compile(r"^\[?\d{4}-\d\d-\d\d[ T][\d:,.]+(:| UTC)?\]?\s*|^\d{10}\.\d+\s*")
LEVELS = {"CRITICAL": 0, "PANIC": 0, "ERROR": 1, "FATAL": 1, "WARNING": 2, "refused": 3}
LEVEL = re.compile(r"\b(CRITICAL|PANIC|ERROR|FATAL|WARNING)\b|\brefused\b")
FRAME = re.compile(r'^\s*File "([^"]+)", line (\d+), in (\S+)')
EXCEPTION = re.compile(r"^[\w.]+(Error|Exception|Shutdown|Timeout|Closed)\w*(: .*)?$")
# Frames of the plumbing a failure passes through on its way up; the last frame outside them says where it hit us.
PLUMBING = (
    "/redis/",
    "/kombu/",
    "/psycopg",
    "/asyncio/",
    "/billiard/",
    "/channels_redis/",
    "/django/db/",
    "/socket.py",
    "/selectors.py",
    "/contextlib.py",
    "/asgiref/",
    "/concurrent/",
    "/threading.py",
    "/django/core/cache/",
)
# The runner's own probes: /readyz answering 503 during an outage is the point, not a finding.
PROBE_NOISE = ("/readyz",)


def log_sizes(logs: dict[str, Path]) -> dict[str, int]:
    return {name: (path.stat().st_size if path.exists() else 0) for name, path in logs.items()}


def _records(text: str) -> list[list[str]]:
    records: list[list[str]] = []
    for line in text.splitlines():
        if RECORD_START.match(line) or not records:
            records.append([line])
        else:
            records[-1].append(line)
    return records


def _short(path: str) -> str:
    for marker in ("site-packages/", "/work/main/"):
        if marker in path:
            return path.split(marker, 1)[1]
    return path.rsplit("/", 1)[-1]


def _summary(record: list[str]) -> tuple[int, str] | None:
    """(severity, "LEVEL message ← exception (at file:line in function)") of a noteworthy record, else None."""
    head = STAMP.sub("", record[0].strip())
    level = LEVEL.search(head)
    if level is None or any(noise in head for noise in PROBE_NOISE):
        return None
    text = head
    exceptions = [line.strip() for line in record[1:] if EXCEPTION.match(line.strip())]
    frames = [m.groups() for line in record[1:] if (m := FRAME.match(line))]
    if exceptions:
        text += f" ← {exceptions[-1]}"
    ours = [f for f in frames if not any(p in f[0] for p in PLUMBING)]
    if ours:
        path, line, function = ours[-1]
        text += f" (at {_short(path)}:{line} in {function})"
    return LEVELS[level.group(0)], text


def log_excerpts(logs: dict[str, Path], since: dict[str, int], limit: int = 14) -> list[str]:
    """The noteworthy records each log gained since `since`, grouped with numbers folded, the most severe and then
    the most frequent first, e.g. "daphne1 ×7 ERROR django.request Internal Server Error: /… ← redis…Error: …
    (at …)"."""
    groups: Counter[tuple[int, str, str]] = Counter()
    example: dict[tuple[int, str, str], str] = {}
    for name, path in logs.items():
        if not path.exists():
            continue
        with open(path, "rb") as f:
            f.seek(since.get(name, 0))
            text = f.read().decode(errors="replace")
        for record in _records(text):
            found = _summary(record)
            if found is None:
                continue
            severity, line = found
            folded = re.sub(r"\d+", "N", re.sub(r"events\.[\w.]+", "events.*", line))
            key = (severity, name, folded[:200])
            groups[key] += 1
            example.setdefault(key, line[:400])
    ordered = sorted(groups.items(), key=lambda item: (item[0][0], -item[1]))
    return [f"{key[1]} ×{n} {example[key]}" for key, n in ordered[:limit]]

"""What /readyz, the admins' status page and the Celery workers' heartbeat share: checks that tell the truth.

Each check answers in about a second at worst (short connect and read timeouts), names what is wrong in
words an operator can act on, and never includes patient data. "Serving" checks are the ones this process
needs to answer requests (the database, Redis for the channel layer); the others are the machinery behind
it (workers, the periodic dispatcher and its steps) — a monitor alerts on those, a load balancer does not
take a web process out of rotation for them.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from typing import Any

from django.conf import settings
from django.db import DatabaseError, connection
from django.utils import timezone

logger = logging.getLogger(__name__)

OK, FAILING, STALE, DISABLED = "ok", "failing", "stale", "disabled"
# Workers refresh their key every HEARTBEAT_SECONDS; a key lives for three beats.
HEARTBEAT_SECONDS = 5
HEARTBEAT_TTL_SECONDS = 3 * HEARTBEAT_SECONDS
HEARTBEAT_PREFIX = "hospital:celery-worker:"
REDIS_TIMEOUT_SECONDS = 1.0


@dataclass
class Check:
    name: str
    status: str
    detail: str = ""
    serving: bool = False
    data: dict[str, Any] = field(default_factory=dict)

    @property
    def ok(self) -> bool:
        return self.status in (OK, DISABLED)


@dataclass
class Report:
    checks: list[Check]

    @property
    def ready(self) -> bool:
        """Can this process serve requests: every serving check passes."""
        return all(c.ok for c in self.checks if c.serving)

    @property
    def ok(self) -> bool:
        return all(c.ok for c in self.checks)

    def failing(self) -> list[str]:
        return [c.name for c in self.checks if not c.ok]

    def as_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "ready": self.ready,
            "failing": self.failing(),
            "checks": {c.name: {k: v for k, v in asdict(c).items() if k != "name"} for c in self.checks},
        }


def report() -> Report:
    checks = [check_database(), check_redis()]
    checks.append(check_workers(redis_ok=checks[1].ok))
    checks.extend(check_dispatcher(database_ok=checks[0].ok))
    checks.append(check_inbound_queue(database_ok=checks[0].ok))
    return Report(checks)


def check_database() -> Check:
    started = time.monotonic()
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1")
    except DatabaseError as exc:
        # A dead pooled or persistent connection must not stay this process's connection.
        connection.close_if_unusable_or_obsolete()
        return Check("database", FAILING, f"{connection.vendor} unreachable: {type(exc).__name__}", serving=True)
    return Check("database", OK, connection.vendor, serving=True, data={"ms": _ms(started)})


# One client (and its connection pool) per process and URL: every probe and heartbeat would otherwise open and
# close a connection of its own.
_clients: dict[tuple[int, str], Any] = {}


def redis_client() -> Any:
    """This process's client for REDIS_URL (its pool is shared by every thread), with short timeouts."""
    import redis

    key = (os.getpid(), settings.REDIS_URL)
    client = _clients.get(key)
    if client is None:
        client = _clients[key] = redis.Redis.from_url(
            settings.REDIS_URL, socket_timeout=REDIS_TIMEOUT_SECONDS, socket_connect_timeout=REDIS_TIMEOUT_SECONDS
        )
    return client


def check_redis() -> Check:
    if not settings.REDIS_URL:
        return Check("redis", DISABLED, "not used: in-memory channel layer and in-process tasks", serving=True)
    started = time.monotonic()
    try:
        redis_client().ping()
    except Exception as exc:
        return Check("redis", FAILING, f"unreachable: {type(exc).__name__}", serving=True)
    return Check("redis", OK, "channel layer and task broker", serving=True, data={"ms": _ms(started)})


def check_workers(*, redis_ok: bool) -> Check:
    """Celery workers are alive when their heartbeat keys are fresh (written by WorkerHeartbeat below)."""
    if settings.TASK_RUNNER != "celery":
        return Check("workers", OK, f"tasks run {settings.TASK_RUNNER}")
    if not redis_ok:
        return Check("workers", FAILING, "the broker is unreachable, so no worker can take tasks")
    try:
        names = sorted(k.decode()[len(HEARTBEAT_PREFIX) :] for k in redis_client().scan_iter(f"{HEARTBEAT_PREFIX}*"))
    except Exception as exc:
        return Check("workers", FAILING, f"heartbeats unreadable: {type(exc).__name__}")
    if not names:
        return Check("workers", FAILING, f"no Celery worker has sent a heartbeat in {HEARTBEAT_TTL_SECONDS} s")
    return Check("workers", OK, f"{len(names)} worker(s) alive", data={"workers": names})


def check_dispatcher(*, database_ok: bool, now: dt.datetime | None = None) -> list[Check]:
    """The periodic run is recent (beat, or the embedded loop, is alive) and no step keeps failing."""
    from contactcenter.models import DueWorkStep

    if not database_ok:
        return [Check("dispatcher", FAILING, "unknown: the database is unreachable")]
    now = now or timezone.now()
    rows = {row.name: row for row in DueWorkStep.objects.all()}
    run = rows.pop(DueWorkStep.RUN, None)
    allowed = dt.timedelta(seconds=max(60, 6 * settings.DISPATCH_INTERVAL_SECONDS))
    if run is None or run.last_finished_at is None:
        dispatcher = Check("dispatcher", STALE, "has not run yet")
    elif now - run.last_finished_at > allowed:
        age = int((now - run.last_finished_at).total_seconds())
        dispatcher = Check(
            "dispatcher", STALE, f"last run {age} s ago (expected every {settings.DISPATCH_INTERVAL_SECONDS} s)"
        )
    else:
        dispatcher = Check("dispatcher", OK, "running", data={"last_run": run.last_finished_at.isoformat()})
    failing = {name: row for name, row in rows.items() if row.consecutive_failures}
    steps = Check(
        "dispatcher_steps",
        FAILING if failing else OK,
        ", ".join(
            f"{name} failed {row.consecutive_failures}× ({row.last_error})" for name, row in sorted(failing.items())
        )
        or f"{len(rows)} step(s) healthy",
        data={
            "errors_total": sum(row.failures_total for row in rows.values()),
            "failing": sorted(failing),
        },
    )
    return [dispatcher, steps]


# Inbound webhooks waiting longer than this mean no worker is draining them.
INBOUND_WAIT_STALE_SECONDS = 60


def check_inbound_queue(*, database_ok: bool) -> Check:
    """Inbound webhooks stored but not yet turned into messages (contactcenter.actions.inbound_queue)."""
    from contactcenter.actions.inbound_queue import queue_state

    if not database_ok:
        return Check("inbound_queue", FAILING, "unknown: the database is unreachable")
    state = queue_state()
    if state["parked"]:
        return Check("inbound_queue", FAILING, f"{state['parked']} inbound message(s) parked after failing", data=state)
    if state["oldest_seconds"] > INBOUND_WAIT_STALE_SECONDS:
        age = int(state["oldest_seconds"])
        return Check("inbound_queue", STALE, f"{state['waiting']} waiting, the oldest for {age} s", data=state)
    return Check("inbound_queue", OK, f"{state['waiting']} waiting", data=state)


def _ms(started: float) -> int:
    return round((time.monotonic() - started) * 1000)


# --- The workers' side ------------------------------------------------------------------------------


def write_worker_heartbeat(hostname: str) -> None:
    """Called by each Celery worker every HEARTBEAT_SECONDS; /readyz counts the keys still alive."""
    try:
        redis_client().set(f"{HEARTBEAT_PREFIX}{hostname}", timezone.now().isoformat(), ex=HEARTBEAT_TTL_SECONDS)
    except Exception as exc:
        # The broker being away is reported by /readyz from the other side; the worker keeps going.
        logger.warning("worker heartbeat not written: %s", type(exc).__name__)


def clear_worker_heartbeat(hostname: str) -> None:
    try:
        redis_client().delete(f"{HEARTBEAT_PREFIX}{hostname}")
    except Exception:
        logger.warning("worker heartbeat not cleared for a stopping worker")

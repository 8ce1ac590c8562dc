"""One fault after another under steady load: inject, wait (bounded) for the system to settle, check.

For each fault: fresh load (inbound webhooks and replies) runs `before` seconds, the fault is injected, the
runner polls until everything has settled (or `settle` seconds pass), the load goes on `after` seconds more and
stops, the last outbound messages are given `final` seconds to leave queued/sending, every socket resyncs once
more, and the invariants are checked against the database. The sockets stay open across faults, reconnecting
whenever they are closed, as the inbox's do.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from bench.chaos import checks
from bench.chaos.checks import db
from bench.chaos.layout import Layout
from bench.chaos.load import Answer, ChaosSocket, InboundLoad, Ledger, ReplyLoad
from bench.chaos.world import ChaosWorld
from bench.http import Connection, HttpError
from bench.sms_inbound import Twilio

# A message younger than this may still be on its normal way (dispatch tick, delivery, the simulator's
# callbacks 0.2 s and 0.6 s after the send); older and still queued/sending, it is stuck.
IN_FLIGHT_SECONDS = 8.0
POLL = 0.5
# Beat's first dispatch, a dead worker's heartbeat expiring (30 s), a failed dispatcher step's next good run.
HEALTHY_WITHIN = 45.0
# An event younger than this when the sockets are looked at may still be on its way over the live path.
LIVE_GRACE = 2.0


@dataclass(frozen=True)
class Profile:
    before: float = 10.0  # steady load before the fault, s
    after: float = 10.0  # steady load after the system settled, s
    settle: float = 100.0  # longest wait for the system to settle after the fault ended, s
    final: float = 20.0  # longest wait, with the load stopped, for the last outbound to leave queued/sending
    inbound_rate: float = 5.0
    reply_rate: float = 1.0
    redis_down: float = 5.0
    worker_down: float = 2.0


@dataclass
class Run:
    layout: Layout
    world: ChaosWorld
    profile: Profile
    sockets: list[ChaosSocket]
    probe: ReadyProbe
    supervisor: Supervisor
    replies: ReplyLoad | None = None
    reported_until: float = 0.0  # process exits up to here were reported with an earlier fault


@dataclass
class FaultReport:
    name: str
    title: str
    note: str = ""
    fault_seconds: float = 0.0
    recovery_s: float | None = None
    not_settled: list[str] = field(default_factory=list)  # what was still wrong when the settle wait ran out
    last_to_clear: list[str] = field(default_factory=list)  # what was still wrong at the poll before it settled
    sent: dict[str, int] = field(default_factory=dict)
    during: dict[str, Any] = field(default_factory=dict)  # failures from the fault's start until settled
    lost: list[str] = field(default_factory=list)
    duplicated: list[str] = field(default_factory=list)
    sockets: list[dict[str, Any]] = field(default_factory=list)
    sockets_complete: int = 0
    stranded: list[dict[str, Any]] = field(default_factory=list)
    inbound_refused_not_stored: int = 0
    inbound_refused_but_stored: int = 0
    replies_refused_but_saved: list[str] = field(default_factory=list)
    replies_failed: list[int] = field(default_factory=list)
    readyz: list[str] = field(default_factory=list)
    diagnosis: list[str] = field(default_factory=list)  # when it did not settle: the database, the worker's stacks
    exits: list[str] = field(default_factory=list)  # server processes that exited on their own (and were restarted)
    # Worker exits with a known upstream cause (KNOWN_WORKER_CRASHES), restarted like the others: reported, not a
    # failure of ours. Production runs workers under a supervisor for exactly this (docs/production.md).
    known_exits: list[str] = field(default_factory=list)
    healthy_before: bool = True  # /readyz?strict=1 said 200 on every Daphne before the fault
    logs: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return (
            not self.lost
            and not self.duplicated
            and self.sockets_complete == len(self.sockets)
            and not self.stranded
            and self.recovery_s is not None
            and not self.exits
        )

    def as_json(self) -> dict[str, Any]:
        return asdict(self) | {"ok": self.ok}


class ReadyProbe:
    """/readyz?strict=1 on each Daphne (directly, not through the proxy) once a second: what health said."""

    def __init__(self, ports: list[int]) -> None:
        self.ports = ports
        self.samples: list[tuple[float, int, str]] = []  # (time, port, "200" / "503 redis,workers" / "down")
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            for port in self.ports:
                self.samples.append((loop.time(), port, await readyz(port, strict=True)))
            await asyncio.sleep(1.0)

    def transitions(self, start: float, end: float, origin: float) -> list[str]:
        """How each Daphne's strict readiness changed in [start, end], times relative to `origin`."""
        lines: list[str] = []
        for port in self.ports:
            last = None
            changes: list[str] = []
            for at, p, state in self.samples:
                if p != port or at > end:
                    continue
                if at < start:
                    last = state
                    continue
                if state != last:
                    changes.append(f"{state} at {at - origin:+.1f} s")
                    last = state
            lines.append(f"daphne :{port} " + (", ".join(changes) if changes else f"{last} throughout"))
        return lines

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


async def readyz(port: int, *, strict: bool = False) -> str:
    conn = Connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(5):
            response = await conn.request("GET", "/readyz?strict=1" if strict else "/readyz")
    except (HttpError, OSError, TimeoutError):
        return "down"
    finally:
        conn.close()
    if response.status == 200:
        return "200"
    with contextlib.suppress(ValueError, KeyError, TypeError):
        return f"{response.status} " + ",".join(json.loads(response.body)["failing"])
    return str(response.status)


# Worker crashes that are Celery's, not ours, recognised by the line the worker logs as it dies:
# celery/celery#9250, a late acknowledgement on the broker connection Redis has just closed.
KNOWN_WORKER_CRASHES = {
    b"Unrecoverable error: AttributeError(\"'NoneType' object has no attribute 'hostname'\")": "celery#9250",
}


def known_crash(proc: Any) -> str | None:
    """The upstream issue a worker's exit is known to be, from its log since it started, or None."""
    try:
        with open(proc.log, "rb") as f:
            f.seek(proc.started_at_offset)
            tail = f.read()
    except OSError:
        return None
    return next((issue for line, issue in KNOWN_WORKER_CRASHES.items() if line in tail), None)


class Supervisor:
    """Restarts a server process that exited on its own, as systemd (Restart=always) would in production, and
    records it: a crash is a finding even when the restart hides it from the users. Faults hold `lock` while
    they kill and restart processes themselves."""

    RESTART_AFTER = 1.0  # systemd's RestartSec would be of this order

    def __init__(self, layout: Layout) -> None:
        self.layout = layout
        self.lock = asyncio.Lock()
        self.exits: list[tuple[float, str]] = []  # (time, "worker1 exited with 1")
        self.known: list[tuple[float, str]] = []  # the same, for exits with a known upstream cause
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._task = asyncio.ensure_future(self._run())

    def _exited(self) -> list[tuple[str, Callable[[], None], str | None]]:
        """(what exited, how to start it again, its known upstream cause) for every process no longer running."""
        layout = self.layout
        found: list[tuple[str, Callable[[], None], str | None]] = []
        for proc, restart in ((layout.worker, layout.restart_worker), (layout.beat, None), (layout.proxy, None)):
            if proc is not None and proc.proc is not None and proc.proc.poll() is not None:
                known = known_crash(proc) if proc is layout.worker else None
                found.append((f"{proc.name} exited with {proc.proc.returncode}", restart or proc.start, known))
        for n, daphne in enumerate(layout.daphnes):
            if daphne.proc is not None and daphne.proc.poll() is not None:
                found.append((f"daphne :{daphne.port} exited with {daphne.proc.returncode}", _restart(layout, n), None))
        return found

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            await asyncio.sleep(POLL)
            async with self.lock:
                for what, restart, known in self._exited():
                    if known:
                        self.known.append((loop.time(), f"{what} ({known})"))
                    else:
                        self.exits.append((loop.time(), what))
                    await asyncio.sleep(self.RESTART_AFTER)
                    await asyncio.to_thread(restart)

    def between(self, start: float, end: float, origin: float, *, known: bool = False) -> list[str]:
        return [
            f"{what} {at - origin:+.1f} s after the fault began (restarted by the runner, as systemd would)"
            for at, what in (self.known if known else self.exits)
            if start <= at <= end
        ]

    async def stop(self) -> None:
        if self._task is not None:
            self._task.cancel()
            await asyncio.gather(self._task, return_exceptions=True)


def _restart(layout: Layout, index: int) -> Callable[[], None]:
    def restart() -> None:
        layout.daphnes[index].proc = None
        layout.start_daphne(index)

    return restart


# --- the faults ---------------------------------------------------------------------------------------


async def redis_down(run: Run) -> str:
    await asyncio.to_thread(run.layout.stop_redis)
    await asyncio.sleep(run.profile.redis_down)  # the outage itself, not a wait for anything
    await asyncio.to_thread(run.layout.start_redis)
    return f"Redis stopped for {run.profile.redis_down:g} s, then started on the same port (empty: no persistence)"


async def worker_kill(run: Run) -> str:
    assert run.replies is not None
    # Right after a reply's 201 its delivery task has just been published: the kill lands on it.
    run.replies.created.clear()
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(run.replies.created.wait(), 15)
    await asyncio.to_thread(run.layout.kill_worker)
    at_kill = await db(checks.unsettled_outbound)
    await asyncio.sleep(run.profile.worker_down)  # no worker for a while, as before a supervisor restarts one
    await asyncio.to_thread(run.layout.start_worker)
    states = {s: sum(1 for r in at_kill if r["status"] == s) for s in checks.STUCK}
    return (
        f"worker and its pool killed (SIGKILL to the group) with outbound queued {states['queued']}, sending "
        f"{states['sending']}; a new worker started {run.profile.worker_down:g} s later"
    )


async def postgres_restart(run: Run) -> str:
    await asyncio.to_thread(run.layout.restart_postgres)
    return "pg_ctl restart -m fast (same data directory and port)"


async def daphne_kill(run: Run) -> str:
    await asyncio.to_thread(run.layout.kill_daphne, 0)
    await asyncio.to_thread(run.layout.start_daphne, 0)
    return f"Daphne :{run.layout.daphne_ports[0]} killed (SIGKILL) and started again"


async def redis_flush(run: Run) -> str:
    await asyncio.to_thread(run.layout.flush_redis)
    return "FLUSHALL: broker queues, unacknowledged tasks, channel-layer groups, cache, heartbeats gone"


FAULTS: dict[str, tuple[str, Callable[[Run], Awaitable[str]]]] = {
    "redis-down": ("Redis stopped 5 s", redis_down),
    "worker-kill": ("Celery worker kill -9", worker_kill),
    "postgres-restart": ("PostgreSQL fast restart", postgres_restart),
    "daphne-kill": ("Daphne kill -9", daphne_kill),
    "redis-flush": ("Redis FLUSHALL", redis_flush),
}


async def wait_healthy(ports: list[int], timeout: float) -> list[str]:
    """Until every Daphne's /readyz?strict=1 answers 200 (worker heartbeats, beat's dispatcher, its steps) or
    `timeout`; returns what was still failing ([] when healthy). A fault lands on a healthy system."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        states = [await readyz(port, strict=True) for port in ports]
        failing = [f":{port} {state}" for port, state in zip(ports, states, strict=True) if state != "200"]
        if not failing or loop.time() >= deadline:
            return failing
        await asyncio.sleep(POLL)


# --- settling -----------------------------------------------------------------------------------------


async def unsettled(run: Run, answers: list[Answer], since: float, since_wall: float) -> list[str]:
    """What is not back to normal yet ([] when everything is): both Daphnes ready, the newest webhook and reply
    sent after `since` answered 2xx, a reply written since then delivered to the provider, every socket connected,
    and no outbound message queued or sending that was written before the fault ended (`since_wall`) or longer ago
    than a normal delivery takes."""
    problems: list[str] = []
    for port in run.layout.daphne_ports:
        state = await readyz(port)
        if state != "200":
            problems.append(f"daphne :{port} /readyz {state}")
    for kind in ("inbound", "reply"):
        latest = [a for a in answers if a.kind == kind and a.sent >= since and a.answered is not None]
        if not latest:
            problems.append(f"no {kind} answered since the fault ended")
        elif not latest[-1].ok:
            problems.append(f"newest {kind} answered {latest[-1].status or latest[-1].error}")
    down = [s.staff.user_id for s in run.sockets if not s.up]
    if down:
        problems.append(f"{len(down)} sockets not connected")
    try:
        stuck = await db(checks.unsettled_outbound, IN_FLIGHT_SECONDS, before=since_wall, timeout=5)
        delivering = await db(checks.delivered_since, since_wall, timeout=5)
    except Exception as exc:
        problems.append(f"database unreadable ({type(exc).__name__})")
    else:
        if stuck:
            problems.append(f"{len(stuck)} outbound stuck queued/sending: {[r['id'] for r in stuck][:10]}")
        if not delivering:
            problems.append("no reply written since the fault ended has reached the provider")
    return problems


async def wait_settled(
    run: Run, answers: list[Answer], since: float, since_wall: float
) -> tuple[float | None, list[str]]:
    """Until nothing is unsettled: (the time it happened, what was the last to clear), or at the bound (None, what
    was still wrong)."""
    loop = asyncio.get_running_loop()
    deadline = since + run.profile.settle
    problems: list[str] = []
    while loop.time() < deadline:
        found = await unsettled(run, answers, since, since_wall)
        if not found:
            return loop.time(), problems
        problems = found
        await asyncio.sleep(POLL)
    return None, problems


async def wait_outbound_done(timeout: float) -> list[dict[str, Any]]:
    """With the load stopped: until no outbound message is queued or sending, or `timeout`; what is left."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout
    while True:
        left = await db(checks.unsettled_outbound)
        if not left or loop.time() >= deadline:
            return left
        await asyncio.sleep(POLL)


async def diagnose(run: Run) -> list[str]:
    """For a system that did not settle: what the database sessions are doing, and where the worker's processes
    are (py-spy, if installed in the virtualenv: investigation only, not a dependency)."""
    lines: list[str] = []
    try:
        lines.extend(await db(checks.database_activity, timeout=10))
    except Exception as exc:
        lines.append(f"pg_stat_activity unreadable: {type(exc).__name__}")
    worker = run.layout.worker
    spy = Path(sys.executable).with_name("py-spy")
    if worker is None or not worker.alive() or not spy.exists():
        return lines
    for pid in [worker.pid, *children_of(worker.pid)]:
        try:
            dump = await asyncio.to_thread(
                subprocess.run,
                [str(spy), "dump", "--nonblocking", "--pid", str(pid)],
                capture_output=True,
                text=True,
                timeout=20,
            )
        except subprocess.TimeoutExpired:
            lines.append(f"py-spy dump of {pid} timed out")
            continue
        lines.append(f"worker process {pid}: " + busy_threads(dump.stdout))
    return lines


def busy_threads(dump: str, depth: int = 14) -> str:
    """The threads of a py-spy dump that are not idle, each with its innermost frames; or "all threads idle"."""
    threads: list[list[str]] = []
    for line in dump.splitlines():
        if line.startswith("Thread "):
            threads.append([line.strip()])
        elif threads and line.startswith(" "):
            threads[-1].append(line.strip())
    busy = [thread[: depth + 1] for thread in threads if "(idle)" not in thread[0]]
    if not busy:
        return "all threads idle"
    return "".join("\n      " + "\n        ".join(thread) for thread in busy)


def children_of(pid: int) -> list[int]:
    found: list[int] = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            with contextlib.suppress(OSError, IndexError, ValueError):
                stat = (entry / "stat").read_text()
                if int(stat[stat.rindex(")") + 2 :].split()[1]) == pid:
                    found.append(int(entry.name))
    return found


# --- one fault ----------------------------------------------------------------------------------------


async def run_fault(run: Run, name: str, progress: Callable[[str], None]) -> FaultReport:
    loop = asyncio.get_running_loop()
    title, inject = FAULTS[name]
    report = FaultReport(name=name, title=title)
    profile, layout = run.profile, run.layout
    first_event = await db(checks.max_event_id)
    marks = checks.log_sizes(layout.logs())
    duplicates_before = {id(s): s.duplicates for s in run.sockets}
    ledger = Ledger()
    twilio = Twilio(run.world.sms)
    inbound = InboundLoad(twilio, rate=profile.inbound_rate, port=layout.proxy_port, ledger=ledger)
    replies = ReplyLoad(
        token=run.world.reply_token,
        conversation_ids=run.world.conversation_ids,
        label=name,
        rate=profile.reply_rate,
        port=layout.proxy_port,
        ledger=ledger,
    )
    run.replies = replies
    inbound.start()
    replies.start()
    progress(f"{name}: steady load for {profile.before:g} s")
    await asyncio.sleep(profile.before)  # the load paces itself; this is its length, not a wait for anything
    progress(f"{name}: injecting the fault")
    fault_start = loop.time()
    async with run.supervisor.lock:
        report.note = await inject(run)
    fault_end, fault_end_wall = loop.time(), time.time()
    report.fault_seconds = round(fault_end - fault_start, 1)
    progress(f"{name}: fault over after {report.fault_seconds} s; waiting for the system to settle")
    settled_at, problems = await wait_settled(run, ledger.answers, fault_end, fault_end_wall)
    if settled_at is not None:
        report.last_to_clear = problems
    else:
        report.not_settled = problems
        report.diagnosis = await diagnose(run)
    report.recovery_s = None if settled_at is None else round(settled_at - fault_end, 1)
    window_end = settled_at if settled_at is not None else loop.time()
    progress(f"{name}: {'settled' if settled_at else 'NOT settled'}; load for {profile.after:g} s more")
    await asyncio.sleep(profile.after)
    await inbound.stop()
    await replies.stop()
    left = await wait_outbound_done(profile.final)
    report.stranded = left

    upto = await db(checks.max_event_id)
    report.sockets = await check_sockets(run, after=first_event, upto=upto, duplicates_before=duplicates_before)
    if any(s["missing_count"] for s in report.sockets):
        # An event committed after `upto` was read but with a lower id would look missing: a second resync
        # fetches it if so. (An event the socket's cursor already passed stays missing: that is the bug.)
        report.sockets = await check_sockets(run, after=first_event, upto=upto, duplicates_before=duplicates_before)
    report.sockets_complete = sum(1 for s in report.sockets if s["complete"])
    found = await db(checks.check_messages, ledger.answers)
    report.lost, report.duplicated = found.lost, found.duplicated
    report.inbound_refused_not_stored = found.inbound_refused_not_stored
    report.inbound_refused_but_stored = found.inbound_refused_but_stored
    report.replies_refused_but_saved = found.replies_refused_but_saved
    report.replies_failed = found.replies_failed

    report.sent = {
        "inbound": len(ledger.of("inbound")),
        "inbound_2xx": sum(1 for a in ledger.of("inbound") if a.ok),
        "replies": len(ledger.of("reply")),
        "replies_201": sum(1 for a in ledger.of("reply") if a.status == 201),
    }
    report.during = during_fault(run, ledger.answers, fault_start, window_end)
    report.readyz = run.probe.transitions(fault_start - 2.0, window_end, fault_start)
    report.exits = run.supervisor.between(run.reported_until, loop.time(), fault_start)
    report.known_exits = run.supervisor.between(run.reported_until, loop.time(), fault_start, known=True)
    run.reported_until = loop.time()
    report.logs = checks.log_excerpts(layout.logs(), marks)
    return report


async def check_sockets(run: Run, *, after: int, upto: int, duplicates_before: dict[int, int]) -> list[dict[str, Any]]:
    """Every socket resyncs once more from its last event id, then holds what it may see in (after, upto]."""
    live = [checks.SocketHeld.of(s, duplicates_before=duplicates_before[id(s)], resync_error="") for s in run.sockets]
    live_at = time.time()
    resync = await asyncio.gather(*(s.final_resync(30) for s in run.sockets))
    held = [
        checks.SocketHeld.of(s, duplicates_before=duplicates_before[id(s)], resync_error=error)
        for s, error in zip(run.sockets, resync, strict=True)
    ]
    outcomes = await db(checks.check_sockets, held, after=after, upto=upto)
    # What each socket had on the live path alone (hints), before that resync: not an invariant, the
    # "reconnecting" a browser shows, or the catch-up it waits for when hints are lost.
    before = await db(checks.check_sockets, live, after=after, upto=upto, older_than=live_at - LIVE_GRACE)
    for outcome, live_outcome in zip(outcomes, before, strict=True):
        outcome["missing_live"] = live_outcome["missing_count"]
    return outcomes


def during_fault(run: Run, answers: list[Answer], start: float, end: float) -> dict[str, Any]:
    """Failures seen (answered, or given up on) from the fault's start until the system settled, per kind."""

    def tally(kind: str) -> dict[str, int]:
        seen: dict[str, int] = {}
        for a in answers:
            at = a.answered if a.answered is not None else a.sent
            if a.kind == kind and start <= at <= end and not a.ok:
                key = str(a.status) if a.status is not None else a.error.split(" (")[0]
                seen[key] = seen.get(key, 0) + 1
        return seen

    failures: dict[str, int] = {}
    closes: dict[str, int] = {}
    for s in run.sockets:
        for f in s.failures:
            if start <= f.at <= end:
                failures[f.what] = failures.get(f.what, 0) + 1
        for c in s.closes:
            if start <= c.at <= end:
                closes[c.what] = closes.get(c.what, 0) + 1
    inbound, replies = tally("inbound"), tally("reply")
    failed = sorted(
        (a.answered if a.answered is not None else a.sent) - start
        for a in answers
        if not a.ok and start <= (a.answered if a.answered is not None else a.sent) <= end
    )
    return {
        "failures_between": [round(failed[0], 1), round(failed[-1], 1)] if failed else [],
        "inbound": inbound,
        "replies": replies,
        "socket_handshakes_failed": failures,
        "socket_closes": closes,
        "inbound_failed": sum(inbound.values()),
        "replies_failed": sum(replies.values()),
        "socket_failures": sum(failures.values()),
    }


async def run_all(
    layout: Layout, world: ChaosWorld, profile: Profile, faults: list[str], progress: Callable[[str], None]
) -> list[FaultReport]:
    """Open the sockets, then each fault in turn; the sockets stay open (and reconnect) throughout."""
    sockets = [ChaosSocket(staff, layout.proxy_port) for staff in world.staff]
    for socket in sockets:
        socket.start()
    probe = ReadyProbe(layout.daphne_ports)
    supervisor = Supervisor(layout)
    try:
        up = await asyncio.gather(*(s.wait_up(60) for s in sockets))
        if not all(up):
            raise RuntimeError(f"{up.count(False)} of {len(sockets)} sockets never connected: {sockets[0].failures}")
        probe.start()
        supervisor.start()
        run = Run(layout, world, profile, sockets, probe, supervisor)
        reports: list[FaultReport] = []
        for name in faults:
            health = await wait_healthy(layout.daphne_ports, HEALTHY_WITHIN)
            if health:
                progress(f"{name}: not healthy before the fault after {HEALTHY_WITHIN:g} s: {health}")
            report = await run_fault(run, name, progress)
            report.healthy_before = not health
            reports.append(report)
        return reports
    finally:
        await supervisor.stop()
        await probe.stop()
        await asyncio.gather(*(s.stop() for s in sockets))

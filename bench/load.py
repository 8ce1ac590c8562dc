"""Load shapes: a closed loop at fixed concurrency, an open (paced) loop, and an agent-socket listener.

All times are the event loop's clock (monotonic), in seconds.
"""

from __future__ import annotations

import asyncio
import json
import re
import shutil
import subprocess
import sys
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.http import Connection, HttpError, Response
from bench.procs import CpuMeter, CpuSnapshot

# Twilio gives up on a webhook after 15 s (error 11205); so does this client.
TWILIO_TIMEOUT = 15.0

# A request to make: method, target (path + query), body, headers, and a tag handed back with the answer.
Request = tuple[str, str, bytes, list[tuple[str, str]], Any]
MakeRequest = Callable[[], Request | None]
OnResponse = Callable[[Any, Response], None]


def ignore(_tag: Any, _response: Response) -> None:
    return None


def percentile(values: list[float], q: float) -> float:
    """Nearest-rank percentile; NaN for no values."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(q / 100 * len(ordered)) - 1))
    return ordered[index]


@dataclass
class Throughput:
    name: str
    completed: int
    seconds: float
    latencies: list[float]
    statuses: Counter[int]
    errors: int
    cpu: dict[str, float]
    in_doubt: list[Any] = field(default_factory=list)  # tags sent but never answered
    machine_cpu: float = 0.0  # CPU seconds of the whole machine in the window (0.0 where unknown)

    @property
    def rate(self) -> float:
        return self.completed / self.seconds if self.seconds > 0 else 0.0

    def cpu_ms_per_request(self) -> dict[str, float]:
        n = max(self.completed, 1)
        return {side: 1000 * seconds / n for side, seconds in self.cpu.items()}

    def other_cpus(self) -> float:
        """CPUs kept busy, on average over the window, by processes outside the metered sides."""
        if self.seconds <= 0 or not self.machine_cpu:
            return 0.0
        return max(0.0, self.machine_cpu - sum(self.cpu.values())) / self.seconds


async def closed_loop(
    name: str,
    make: MakeRequest,
    on_response: OnResponse,
    *,
    host: str,
    port: int,
    concurrency: int,
    warmup: float,
    duration: float,
    meter: CpuMeter,
) -> Throughput:
    """`concurrency` connections, each sending its next request as soon as the last is answered.

    Only answers completed inside the measured window count; a generator that runs dry (make() returns
    None) ends the window early.
    """
    loop = asyncio.get_running_loop()
    start = loop.time()
    window_start, window_end = start + warmup, start + warmup + duration
    measured: list[float] = []
    statuses: Counter[int] = Counter()
    errors = 0
    in_doubt: list[Any] = []
    dry_at: float | None = None
    snapshots: dict[str, CpuSnapshot] = {}

    async def take(at: float, key: str) -> None:
        await asyncio.sleep(max(0.0, at - loop.time()))
        if key == "end" and dry_at is not None and dry_at < window_end:
            return
        snapshots[key] = meter.snapshot()

    async def worker() -> None:
        nonlocal errors, dry_at
        conn = Connection(host, port)
        try:
            while loop.time() < window_end:
                request = make()
                if request is None:
                    if dry_at is None:
                        dry_at = loop.time()
                        snapshots.setdefault("end", meter.snapshot())
                    return
                method, target, body, headers, tag = request
                sent = loop.time()
                try:
                    async with asyncio.timeout(TWILIO_TIMEOUT):
                        response = await conn.request(method, target, body, headers)
                except (HttpError, TimeoutError):
                    # Sent but unanswered: the server may still store it (Twilio would retry it).
                    conn.close()
                    errors += 1
                    in_doubt.append(tag)
                    continue
                done = loop.time()
                on_response(tag, response)
                if window_start <= done <= window_end:
                    statuses[response.status] += 1
                    measured.append(done - sent)
        finally:
            conn.close()

    timers = [asyncio.ensure_future(take(window_start, "start")), asyncio.ensure_future(take(window_end, "end"))]
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    await asyncio.gather(*timers)
    end = min(window_end, dry_at) if dry_at is not None else window_end
    seconds = max(0.0, end - window_start)
    cpu: dict[str, float] = {}
    machine = 0.0
    if "start" in snapshots and "end" in snapshots and snapshots["end"].at > snapshots["start"].at:
        cpu = snapshots["end"].minus(snapshots["start"])
        machine = snapshots["end"].machine - snapshots["start"].machine
    return Throughput(name, len(measured), seconds, measured, statuses, errors, cpu, in_doubt, machine)


@dataclass
class Paced:
    sent_at: dict[str, float] = field(default_factory=dict)  # key → due (scheduled) time
    answered: dict[str, float] = field(default_factory=dict)  # key → HTTP answer time
    ok: dict[str, bool] = field(default_factory=dict)  # key → answered 2xx
    statuses: Counter[int] = field(default_factory=Counter)
    errors: int = 0
    timeouts: int = 0
    in_doubt: list[Any] = field(default_factory=list)  # tags sent but not answered in time

    def answer_times(self) -> list[float]:
        return [self.answered[k] - due for k, due in self.sent_at.items() if k in self.answered]


async def paced(
    make: Callable[[], tuple[Request, str]],
    on_response: OnResponse,
    *,
    host: str,
    port: int,
    rate: float,
    seconds: float,
    pool_size: int,
) -> Paced:
    """Open loop: request i is due at t0 + i/rate whatever happened to the earlier ones.

    Latencies count from the due time, so a server that falls behind shows up as queueing delay
    instead of silently lowering the offered rate (no coordinated omission). At most `pool_size`
    requests are in flight; the rest wait for a connection, and give up (as Twilio would) 15 s
    after they were due.
    """
    loop = asyncio.get_running_loop()
    pool: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(pool_size):
        pool.put_nowait(Connection(host, port))
    result = Paced()
    tasks: list[asyncio.Task[None]] = []

    async def send(request: Request, key: str, due: float) -> None:
        method, target, body, headers, tag = request
        conn: Connection | None = None
        try:
            async with asyncio.timeout_at(due + TWILIO_TIMEOUT):
                conn = await pool.get()
                response = await conn.request(method, target, body, headers)
        except (HttpError, TimeoutError) as exc:
            if conn is not None:
                conn.close()
                result.in_doubt.append(tag)
            result.timeouts += isinstance(exc, TimeoutError)
            result.errors += isinstance(exc, HttpError)
            return
        finally:
            if conn is not None:
                pool.put_nowait(conn)
        result.answered[key] = loop.time()
        result.ok[key] = 200 <= response.status < 300
        result.statuses[response.status] += 1
        on_response(tag, response)

    total = max(1, int(rate * seconds))
    t0 = loop.time() + 0.05
    for i in range(total):
        due = t0 + i / rate
        delay = due - loop.time()
        if delay > 0:
            await asyncio.sleep(delay)
        request, key = make()
        result.sent_at[key] = due
        tasks.append(asyncio.ensure_future(send(request, key, due)))
    await asyncio.gather(*tasks)
    while not pool.empty():
        pool.get_nowait().close()
    return result


class AgentSocket:
    """An agent's /ws/agent/ connection that timestamps each message.add by a token found in its body."""

    def __init__(self, *, url: str, origin: str, session_cookie: str, token_re: re.Pattern[str]) -> None:
        self.url = url
        self.origin = origin
        self.session_cookie = session_cookie
        self.token_re = token_re
        self.received: dict[str, float] = {}
        self.frames = 0
        self._task: asyncio.Task[None] | None = None
        self._ws: Any = None

    async def open(self) -> None:
        """Connect with the session cookie and an allowed Origin, resync from now, start reading."""
        from websockets.asyncio.client import connect

        self._ws = await connect(
            self.url,
            origin=self.origin,  # type: ignore[arg-type]
            additional_headers={"Cookie": f"sessionid={self.session_cookie}"},
            compression=None,
            max_size=None,
        )
        await self._ws.send(json.dumps({"op": "resync", "last_event_id": None}))
        while True:
            frame = json.loads(await asyncio.wait_for(self._ws.recv(), 10))
            if frame.get("type") == "ready":
                break
            if frame.get("type") == "error":
                raise RuntimeError(f"agent socket refused resync: {frame}")
        self._task = asyncio.ensure_future(self._read())

    async def _read(self) -> None:
        loop = asyncio.get_running_loop()
        async for raw in self._ws:
            now = loop.time()
            self.frames += 1
            frame = json.loads(raw)
            if frame.get("type") != "events":
                continue
            for event in frame["events"]:
                if event.get("type") == "message" and event.get("op") == "add":
                    found = self.token_re.search(str(event.get("message", {}).get("body", "")))
                    if found:
                        self.received.setdefault(found.group(1), now)

    async def wait_for(self, tokens: list[str], timeout: float) -> None:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while loop.time() < deadline and not all(t in self.received for t in tokens):
            await asyncio.sleep(0.05)

    async def close(self) -> None:
        if self._ws is not None:
            await self._ws.close()
        if self._task is not None:
            await asyncio.gather(self._task, return_exceptions=True)


async def quiesce(meter: CpuMeter, *, limit: float = 60.0, idle: Callable[[], bool] | None = None) -> None:
    """Wait until the servers have worked off any backlog, so it does not leak into the next figure.

    Idle means under a tenth of a CPU between them, and `idle()` true if given: requests abandoned by a
    timed-out client may still be queued in the server without burning CPU (blocked on a lock or a pool).
    """
    loop = asyncio.get_running_loop()
    deadline = loop.time() + limit
    last = meter.snapshot()
    while loop.time() < deadline:
        await asyncio.sleep(0.5)
        now = meter.snapshot()
        busy = sum(v for k, v in now.minus(last).items() if k != "client") / (now.at - last.at)
        last = now
        if busy < 0.1 and (idle is None or idle()):
            return


def start_py_spy(output: str | None, pid: int, seconds: float) -> subprocess.Popen[bytes] | None:
    """Sample `pid` with py-spy for `seconds` (output by extension: .txt raw, .json speedscope, else svg)."""
    if not output:
        return None
    venv_py_spy = Path(sys.executable).with_name("py-spy")
    binary = str(venv_py_spy) if venv_py_spy.exists() else shutil.which("py-spy")
    if binary is None:
        print("  (py-spy not installed: `.venv/bin/pip install py-spy`; profiling skipped)", flush=True)
        return None
    fmt = "raw" if output.endswith(".txt") else "speedscope" if output.endswith(".json") else "flamegraph"
    # Non-blocking: by default py-spy pauses the process for every sample, which cripples a 20-thread server.
    # --gil: only the thread holding the GIL, i.e. where this one process's Python CPU goes.
    command = [binary, "record", "--pid", str(pid), "--duration", str(max(1, round(seconds)))]
    command += ["--rate", "200", "--nonblocking", "--gil", "--format", fmt, "--output", output]
    return subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

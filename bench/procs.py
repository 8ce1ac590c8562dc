"""The processes a benchmark starts (Daphne) and the CPU time each side spends, read from /proc.

On a 2-core machine the client, Daphne, PostgreSQL and Redis all compete for the same CPUs, so CPU
milliseconds per request say more about where the time goes than wall-clock rates alone.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def _stat(pid: int) -> tuple[int, float, float] | None:
    """(ppid, own cpu seconds, reaped children's cpu seconds) or None if the process is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # The command name is in parentheses and may contain spaces; fields after it are positional.
    fields = raw[raw.rindex(")") + 2 :].split()
    ppid = int(fields[1])
    utime, stime, cutime, cstime = (int(f) for f in fields[11:15])
    return ppid, (utime + stime) / CLOCK_TICKS, (cutime + cstime) / CLOCK_TICKS


def _children() -> dict[int, list[int]]:
    tree: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if entry.name.isdigit():
            stat = _stat(int(entry.name))
            if stat is not None:
                tree.setdefault(stat[0], []).append(int(entry.name))
    return tree


def tree_cpu_seconds(root: int, tree: dict[int, list[int]] | None = None) -> float:
    """CPU of a process, its live descendants and every descendant already reaped (cutime)."""
    tree = tree if tree is not None else _children()
    stat = _stat(root)
    if stat is None:
        return 0.0
    return stat[1] + stat[2] + sum(tree_cpu_seconds(child, tree) for child in tree.get(root, []))


def self_cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def machine_cpu_seconds() -> float:
    """CPU seconds every process on the machine has spent since boot (all CPUs; idle and iowait excluded).

    Set against the sides a meter follows, the difference is other work competing for the same CPUs.
    """
    try:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except (OSError, ValueError):
        return 0.0
    # user nice system idle iowait irq softirq steal [guest guest_nice: already counted in user and nice]
    return (sum(fields[:8]) - fields[3] - fields[4]) / CLOCK_TICKS


def thread_count(pid: int) -> int:
    """Threads of a live process (0 if it is gone). Daphne runs each sync request on a thread of its own."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("Threads:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        pass
    return 0


@dataclass(frozen=True)
class CpuSnapshot:
    at: float
    by_side: dict[str, float]
    machine: float = 0.0  # machine_cpu_seconds() at the same moment (0.0 where unknown)

    def minus(self, earlier: CpuSnapshot) -> dict[str, float]:
        return {side: self.by_side[side] - earlier.by_side.get(side, 0.0) for side in self.by_side}


class CpuMeter:
    """Snapshots of CPU seconds for named process trees plus this (client) process."""

    def __init__(self, roots: dict[str, int]) -> None:
        self.roots = roots

    def snapshot(self) -> CpuSnapshot:
        tree = _children()
        sides = {name: tree_cpu_seconds(pid, tree) for name, pid in self.roots.items()}
        sides["client"] = self_cpu_seconds()
        return CpuSnapshot(time.perf_counter(), sides, machine_cpu_seconds())


def wait_for_port(port: int, *, timeout: float, proc: subprocess.Popen[bytes] | None = None, log: Path) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            break
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"nothing listens on port {port}:\n{tail}")


class Daphne:
    """`python -m daphne -b 127.0.0.1 -p PORT config.asgi:application`, as production runs it."""

    def __init__(self, *, port: int, env: dict[str, str], cwd: Path, log: Path) -> None:
        self.port = port
        self.env = env
        self.cwd = cwd
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        import sys

        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child for its whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", "-b", "127.0.0.1", "-p", str(self.port), "config.asgi:application"],
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
        )
        out.close()
        wait_for_port(self.port, timeout=60, proc=self.proc, log=self.log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds (it waits for open requests)."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)
        self.proc = None


def postmaster_pid(data_dir: Path) -> int:
    return int((data_dir / "postmaster.pid").read_text().split("\n", 1)[0])


def fast_stop_postgres(data_dir: Path, *, timeout: float = 10.0) -> None:
    """Ask the postmaster for a fast shutdown (SIGINT: end sessions, checkpoint, exit) and wait for it.

    Its SIGTERM is a smart shutdown, which waits for every client to leave, and tests.services reaches
    it only through runuser; calling this first makes PostgresServer.stop() quick. Best effort.
    """
    try:
        pid = postmaster_pid(data_dir)
        os.kill(pid, signal.SIGINT)
    except (OSError, ValueError):
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.kill(pid, 0)
        except OSError:
            return
        time.sleep(0.05)

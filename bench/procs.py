"""The processes a benchmark starts (Daphne, Celery) and the CPU time each side spends, read from /proc.

On a 2-core machine the client, Daphne, PostgreSQL and Redis all compete for the same CPUs, so CPU
milliseconds per request say more about where the time goes than wall-clock rates alone.

Daphnes run as docs/production.md describes: each on a port of its own (`Daphne(port=…)`, behind a proxy), or
N of them behind one port (`DaphnesOnOnePort`): the listening socket is made here and inherited by every Daphne
(`daphne --fd N`), as systemd socket activation does it.
"""

from __future__ import annotations

import os
import resource
import signal
import socket
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
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
    wall: float = 0.0  # time.time() at the same moment, to set against timestamps the database wrote

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
        return CpuSnapshot(time.perf_counter(), sides, machine_cpu_seconds(), time.time())


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
    """`python -m daphne -b 127.0.0.1 -p PORT config.asgi:application`, as production runs it.

    With `fd`, it serves a listening socket it inherits instead (`daphne --fd FD`): several Daphnes given the
    same socket share one port, each accepting the connections it gets to first.
    """

    def __init__(self, *, port: int, env: dict[str, str], cwd: Path, log: Path, fd: int | None = None) -> None:
        self.port = port
        self.env = env
        self.cwd = cwd
        self.log = log
        self.fd = fd
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        listen = ["-b", "127.0.0.1", "-p", str(self.port)] if self.fd is None else ["--fd", str(self.fd)]
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child for its whole life
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "daphne", *listen, "config.asgi:application"],
            cwd=self.cwd,
            env=self.env,
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            pass_fds=() if self.fd is None else (self.fd,),
        )
        out.close()
        if self.fd is None:
            wait_for_port(self.port, timeout=timeout, proc=self.proc, log=self.log)
        else:
            wait_for_adoption(self.proc, self.fd, timeout=timeout, log=self.log)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM, then SIGKILL if it has not exited within `timeout` seconds (it waits for open requests)."""
        _stop(self.proc, timeout)
        self.proc = None


def wait_for_adoption(proc: subprocess.Popen[bytes], fd: int, *, timeout: float, log: Path) -> None:
    """Wait until a Daphne started with `--fd FD` serves the socket it inherited.

    The socket listens already (the kernel queues connections for whoever accepts them), so a connection
    proves nothing, and Daphne's own "Listening on" line is below the log level production sets. Twisted
    adopts the socket by duplicating the descriptor and closing FD (AdoptedStreamServerEndpoint.listen), just
    before its reactor starts: FD no longer naming the inherited socket is the sign.
    """
    inherited = f"socket:[{os.fstat(fd).st_ino}]"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        try:
            if os.readlink(f"/proc/{proc.pid}/fd/{fd}") != inherited:
                return
        except OSError:
            return
        time.sleep(0.05)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"Daphne (pid {proc.pid}) did not take up socket fd {fd}:\n{tail}")


def wait_for_line(
    log: Path, text: str, *, timeout: float, proc: subprocess.Popen[bytes] | None = None, after: int = 0
) -> None:
    """Wait until `text` appears in `log` past byte offset `after`; fail early if `proc` exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if log.exists():
            with open(log, "rb") as f:
                f.seek(after)
                if text.encode() in f.read():
                    return
        if proc is not None and proc.poll() is not None:
            break
        time.sleep(0.1)
    tail = log.read_text(errors="replace")[-3000:] if log.exists() else ""
    raise RuntimeError(f"{text!r} never appeared in {log.name}:\n{tail}")


def _stop(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is not None and proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(5)


def listening_socket(*, host: str = "127.0.0.1", port: int = 0, backlog: int = 1024) -> socket.socket:
    """A bound, listening TCP socket for Daphnes to inherit; port 0 picks a free one (see getsockname())."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(backlog)
    except OSError:
        sock.close()
        raise
    return sock


class DaphnesOnOnePort:
    """N Daphne processes serving one port: the socket is made and bound here, and each Daphne inherits it.

    The same layout as systemd socket activation (a .socket unit hands fd 3 to `daphne --fd 3`): no proxy
    in between, the kernel queues connections on the one socket and whichever process is free accepts the
    next. Processes can be stopped and started again (`restart(count)`) on the same port, which stays bound
    for the whole life of this object.
    """

    def __init__(self, *, env: dict[str, str], cwd: Path, log_dir: Path, port: int = 0, count: int = 1) -> None:
        self.sock = listening_socket(port=port)
        self.port: int = self.sock.getsockname()[1]
        self.env = env
        self.cwd = cwd
        self.log_dir = log_dir
        self.count = count
        self.daphnes: list[Daphne] = []

    def start(self) -> None:
        fd = self.sock.fileno()
        self.daphnes = [
            Daphne(port=self.port, env=self.env, cwd=self.cwd, log=self.log_dir / f"daphne{n}.log", fd=fd)
            for n in range(1, self.count + 1)
        ]
        # Each one loads Django for a few seconds: start them side by side.
        with ThreadPoolExecutor(len(self.daphnes)) as pool:
            for started in [pool.submit(d.start) for d in self.daphnes]:
                started.result()

    def restart(self, count: int) -> None:
        self.stop()
        self.count = count
        self.start()

    @property
    def pids(self) -> list[int]:
        return [d.pid for d in self.daphnes]

    @property
    def logs(self) -> list[Path]:
        return [d.log for d in self.daphnes]

    def stop(self, timeout: float = 10.0) -> None:
        for daphne in self.daphnes:
            if daphne.proc is not None and daphne.proc.poll() is None:
                daphne.proc.terminate()  # all at once: each waits for its open requests
        for daphne in self.daphnes:
            daphne.stop(timeout)
        self.daphnes = []

    def close(self, timeout: float = 10.0) -> None:
        """Stop every Daphne and release the port."""
        self.stop(timeout)
        self.sock.close()


class CeleryWorker:
    """`celery -A config worker -l info --concurrency C`, as docs/production.md runs it (prefork)."""

    READY = " ready."

    def __init__(self, *, concurrency: int, env: dict[str, str], cwd: Path, log: Path, name: str = "") -> None:
        self.concurrency = concurrency
        self.env = env
        self.cwd = cwd
        self.log = log
        self.name = name
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60.0) -> None:
        already = self.log.stat().st_size if self.log.exists() else 0
        command = [sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info"]
        # Gossip and mingle only talk to other workers; without them start-up is quicker and idle is quieter.
        command += ["--concurrency", str(self.concurrency), "--without-gossip", "--without-mingle"]
        if self.name:
            command += ["-n", self.name]
        out = open(self.log, "ab")  # noqa: SIM115 - handed to the child for its whole life
        self.proc = subprocess.Popen(
            command, cwd=self.cwd, env=self.env, stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
        out.close()
        wait_for_line(self.log, self.READY, timeout=timeout, proc=self.proc, after=already)

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def stop(self, timeout: float = 10.0) -> None:
        """SIGTERM (a warm shutdown: the tasks at hand finish), then SIGKILL after `timeout` seconds."""
        _stop(self.proc, timeout)
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

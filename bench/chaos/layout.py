"""The production layout on loopback, and the faults injected into it.

PostgreSQL and Redis (tests/services.py, restartable in place), two Daphnes behind a round-robin proxy
(bench/chaos/proxy.py), one Celery worker and beat, all with the settings docs/production.md gives, the Twilio
simulator as the provider and short dispatcher intervals. Every child runs in its own process group with its
output in a log file under the run's work directory; stop() ends them all, whatever state a fault left.
"""

from __future__ import annotations

import contextlib
import os
import re
import secrets
import shutil
import signal
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from bench.procs import Daphne, fast_stop_postgres, wait_for_port
from tests.services import PostgresServer, RedisServer, free_port

ROOT = Path(__file__).resolve().parents[2]
# Variables of the caller's own services (a test run's, a developer's) that must not leak into this layout.
FOREIGN = ("DATABASE_URL", "REDIS_URL", "TASK_RUNNER", "PUBLIC_BASE_URL", "DJANGO_SETTINGS_MODULE", "DATA_DIR")
WORKER_READY = re.compile(rb"\S+@\S+ ready\.")
# Not part of a snapshot of the code: environments, caches, data, artifacts.
NOT_CODE = (
    ".venv",
    ".git",
    "var",
    "test-artifacts",
    "staticfiles",
    "node_modules",
    "*_cache",
    ".hypothesis",
    "__pycache__",
)


def snapshot(work: Path) -> Path:
    """A copy of the code for the servers to run from, so edits made to the working tree during a run (it takes
    minutes) do not reach a process restarted mid-run."""
    src = work / "src"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(*NOT_CODE), symlinks=True)
    return src


class Proc:
    """A long-running child in its own process group (so kill -9 reaches its pool children too)."""

    def __init__(self, name: str, command: list[str], *, env: dict[str, str], log: Path, cwd: Path) -> None:
        self.name = name
        self.cwd = cwd
        self.command = command
        self.env = env
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.started_at_offset = 0  # log size when started: a readiness line must come after it

    def start(self) -> None:
        self.started_at_offset = self.log.stat().st_size if self.log.exists() else 0
        with open(self.log, "ab") as out:
            self.proc = subprocess.Popen(
                self.command,
                cwd=self.cwd,
                env=self.env,
                stdout=out,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        assert self.proc is not None
        return self.proc.pid

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def wait_for_line(self, pattern: re.Pattern[bytes], *, timeout: float) -> None:
        """Until the log shows `pattern` after this start, or raise (with the log's tail) at the deadline."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with open(self.log, "rb") as f:
                f.seek(self.started_at_offset)
                if pattern.search(f.read()):
                    return
            if not self.alive():
                break
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} not ready:\n{self.log.read_text(errors='replace')[-3000:]}")

    def kill_group(self) -> None:
        """SIGKILL to the whole process group: the process and its children die at once, nothing cleans up."""
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc.wait(10)

    def stop(self, timeout: float = 10.0) -> None:
        if self.proc is None:
            return
        if self.proc.poll() is None:
            try:
                os.killpg(self.proc.pid, signal.SIGTERM)
                self.proc.wait(timeout)
            except ProcessLookupError:
                pass
            except subprocess.TimeoutExpired:
                self.kill_group()
        # Pool children that outlived their parent (a killed worker's) are in the same group.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        self.proc = None


class Layout:
    """The processes of one run. start() brings everything up; the fault methods below break one part."""

    def __init__(
        self, work: Path, *, daphnes: int = 2, worker_concurrency: int = 2, db_pool: int = 10, src: Path = ROOT
    ) -> None:
        self.work = work
        self.src = src  # the code the servers run (ROOT, or a snapshot of it)
        self.pg = PostgresServer()
        self.redis = RedisServer()
        self.proxy_port = free_port()
        self.daphne_ports = [free_port() for _ in range(daphnes)]
        self.worker_concurrency = worker_concurrency
        self.db_pool = db_pool
        self.token = secrets.token_hex(16)
        self.env: dict[str, str] = {}
        self.daphnes: list[Daphne] = []
        self.proxy: Proc | None = None
        self.beat: Proc | None = None
        self.worker: Proc | None = None
        self.workers_started = 0
        self.retired: list[Proc] = []  # killed workers, stopped again at the end in case a child survived

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.proxy_port}"

    # --- bring-up ---------------------------------------------------------------------------------------

    def start_services(self) -> dict[str, str]:
        """PostgreSQL, Redis, the environment every process shares, and the migrated schema."""
        database_url, redis_url = self.pg.start(), self.redis.start()
        data_dir = self.work / "data"
        data_dir.mkdir(exist_ok=True)
        inherited = {k: v for k, v in os.environ.items() if k not in FOREIGN}
        self.env = inherited | {
            "DJANGO_SETTINGS_MODULE": "config.settings",
            "DATABASE_URL": database_url,
            "REDIS_URL": redis_url,
            "SECRET_KEY": secrets.token_urlsafe(40),
            "TASK_RUNNER": "celery",
            "TWILIO_TRANSPORT": "simulator",
            "TWILIO_AUTH_TOKEN": self.token,
            "PUBLIC_BASE_URL": self.base,
            "ALLOWED_HOSTS": "127.0.0.1,localhost",
            "DATA_DIR": str(data_dir),
            "DEBUG": "false",
            "SIMULATOR_ENABLED": "false",
            "EMAIL_TRANSPORT": "off",
            "LOG_LEVEL": "INFO",
            "PYTHONUNBUFFERED": "1",
            # docs/production.md's pool; the short intervals make the sweeps visible within a run.
            "DB_POOL_MAX_SIZE": str(self.db_pool),
            "DB_CONN_MAX_AGE": "0",
            "DISPATCH_INTERVAL_SECONDS": "2",
            "DELIVERY_STALLED_SECONDS": "5",
            "DELIVERY_UNCONFIRMED_MINUTES": "1",
            # The simulated Twilio posts its status callbacks from the process that sent the message: a worker
            # killed after Twilio took a message (its id saved) takes them with it, where real Twilio would still
            # send them. The status poll is what settles such a message in production too; here within a run.
            "DELIVERY_STATUS_POLL_MINUTES": "1",
        }
        try:
            with open(self.work / "migrate.log", "ab") as out:
                subprocess.run(
                    [sys.executable, "manage.py", "migrate", "--noinput", "-v", "0"],
                    cwd=self.src,
                    env=self.env,
                    check=True,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
        except subprocess.CalledProcessError:
            tail = (self.work / "migrate.log").read_text(errors="replace")[-3000:]
            raise RuntimeError(f"manage.py migrate failed with this layout's settings:\n{tail}") from None
        return self.env

    def start_processes(self) -> None:
        """The Daphnes (together), the proxy, a worker and beat; each waited for until it serves."""
        self.daphnes = [
            Daphne(port=port, env=self.env, cwd=self.src, log=self.work / f"daphne{n}.log")
            for n, port in enumerate(self.daphne_ports, 1)
        ]
        with ThreadPoolExecutor(len(self.daphnes)) as pool:
            list(pool.map(lambda d: d.start(), self.daphnes))
        command = [sys.executable, "-m", "bench.chaos.proxy", "--port", str(self.proxy_port)]
        for port in self.daphne_ports:
            command += ["--backend", str(port)]
        self.proxy = Proc("proxy", command, env=self.env, log=self.work / "proxy.log", cwd=self.src)
        self.proxy.start()
        wait_for_port(self.proxy_port, timeout=30, proc=self.proxy.proc, log=self.proxy.log)
        self.start_worker()
        self.beat = Proc(
            "beat",
            [
                *[sys.executable, "-m", "celery", "-A", "config", "beat", "-l", "info"],
                *["-s", str(self.work / "celerybeat-schedule")],
            ],
            env=self.env,
            log=self.work / "beat.log",
            cwd=self.src,
        )
        self.beat.start()

    def start_worker(self, *, timeout: float = 90.0) -> None:
        """A Celery worker as docs/production.md runs it (prefork), waited for until it says it is ready."""
        self.workers_started += 1
        self.worker = Proc(
            f"worker{self.workers_started}",
            [
                *[sys.executable, "-m", "celery", "-A", "config", "worker", "-l", "info"],
                *["--concurrency", str(self.worker_concurrency), "-n", f"chaos{self.workers_started}@%h"],
            ],
            env=self.env,
            log=self.work / f"worker{self.workers_started}.log",
            cwd=self.src,
        )
        self.worker.start()
        self.worker.wait_for_line(WORKER_READY, timeout=timeout)

    def logs(self) -> dict[str, Path]:
        """Every log this run writes, by a short name."""
        found = {p.stem: p for p in sorted(self.work.glob("*.log")) if p.stem != "migrate"}
        found["redis"] = self.redis.root / "redis.log"
        found["postgres"] = self.pg.root / "postgres.log"
        found["postgres-restarted"] = self.pg.root / "postgres-restarted.log"
        return found

    def stop(self) -> None:
        for proc in [self.beat, self.worker, *self.retired, self.proxy]:
            if proc is not None:
                proc.stop()
        for daphne in self.daphnes:
            daphne.stop()
        self.redis.stop()
        if self.pg.proc is not None and not self.pg.restarted:
            fast_stop_postgres(self.pg.data)  # its SIGTERM (smart shutdown) would wait for every session
        self.pg.stop()

    # --- faults (blocking; the runner calls them in a thread) -------------------------------------------

    def kill_worker(self) -> None:
        """kill -9 of the worker and its pool processes together, as the OOM killer or a lost host would."""
        assert self.worker is not None
        self.worker.kill_group()
        self.retired.append(self.worker)
        self.worker = None

    def restart_worker(self) -> None:
        """After the worker exited on its own: a new one, as its supervisor would start."""
        if self.worker is not None:
            self.worker.stop()
            self.retired.append(self.worker)
        self.start_worker()

    def kill_daphne(self, index: int) -> None:
        daphne = self.daphnes[index]
        assert daphne.proc is not None
        os.kill(daphne.proc.pid, signal.SIGKILL)
        daphne.proc.wait(10)
        daphne.proc = None

    def start_daphne(self, index: int) -> None:
        self.daphnes[index].start()

    def restart_postgres(self) -> None:
        self.pg.restart_fast()

    def stop_redis(self) -> None:
        self.redis.halt()

    def start_redis(self) -> None:
        self.redis.start()

    def flush_redis(self) -> None:
        import redis

        client = redis.Redis.from_url(self.env["REDIS_URL"])
        try:
            client.flushall()
        finally:
            client.close()

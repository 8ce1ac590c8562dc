"""Real PostgreSQL and Redis on loopback for one test (or benchmark) run.

Loaded early by pytest (`-p tests.services` in pytest.ini) so DATABASE_URL and REDIS_URL are set before
Django reads its settings. If they are already set (a developer's own servers), nothing is started.
"""

from __future__ import annotations

import atexit
import os
import shutil
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest

PG_BIN_DIRS = ["/usr/lib/postgresql/17/bin", "/usr/lib/postgresql/16/bin", "/usr/lib/postgresql/15/bin"]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _pg_bin(name: str) -> str:
    for directory in PG_BIN_DIRS:
        candidate = Path(directory) / name
        if candidate.exists():
            return str(candidate)
    found = shutil.which(name)
    if found:
        return found
    raise RuntimeError(f"PostgreSQL's {name} not found; install postgresql (see .ci/run)")


def _as_postgres_user() -> list[str]:
    # initdb and postgres refuse to run as root; CI and these machines run as root.
    return ["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else []


class PostgresServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hospital-pg-"))
        self.data = self.root / "data"
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None
        self.restarted = False  # by restart_fast(): the postmaster is then pg_ctl's child, not ours

    def start(self) -> str:
        if os.geteuid() == 0:
            shutil.chown(self.root, "postgres", "postgres")
        subprocess.run(
            [
                *_as_postgres_user(),
                _pg_bin("initdb"),
                "-D",
                str(self.data),
                "-U",
                "postgres",
                "-A",
                "trust",
                "-E",
                "UTF8",
                "--locale=C.UTF-8",
                "--no-sync",
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        self.proc = subprocess.Popen(
            [
                *_as_postgres_user(),
                _pg_bin("postgres"),
                "-D",
                str(self.data),
                "-p",
                str(self.port),
                "-h",
                "127.0.0.1",
                "-k",
                str(self.root),
                "-c",
                "fsync=off",
                "-c",
                "synchronous_commit=off",
                "-c",
                "full_page_writes=off",
                "-c",
                "max_connections=300",
                "-c",
                "shared_buffers=256MB",
            ],
            stdout=subprocess.DEVNULL,
            stderr=open(self.root / "postgres.log", "wb"),
        )
        _wait_for_port(self.port, what="PostgreSQL", log=self.root / "postgres.log")
        for _ in range(50):
            ok = subprocess.run(
                [
                    _pg_bin("psql"),
                    "-h",
                    "127.0.0.1",
                    "-p",
                    str(self.port),
                    "-U",
                    "postgres",
                    "-c",
                    "CREATE DATABASE hospital",
                ],
                capture_output=True,
            )
            if ok.returncode == 0:
                break
            time.sleep(0.1)
        return f"postgres://postgres@127.0.0.1:{self.port}/hospital"

    def restart_fast(self, *, timeout: float = 60.0) -> None:
        """`pg_ctl restart -m fast` on the same data directory and port, as an operator would restart it.

        Every session is cut (clients see their connections die) and the server comes back with the options
        it was started with (pg_ctl reuses postmaster.opts). The new postmaster is pg_ctl's, not ours: stop()
        then stops it through pg_ctl too.
        """
        subprocess.run(
            [
                *_as_postgres_user(),
                _pg_bin("pg_ctl"),
                "restart",
                "-m",
                "fast",
                "-D",
                str(self.data),
                "-w",
                "-t",
                str(round(timeout)),
                # Its own file: postgres.log belongs to whoever started the first server.
                "-l",
                str(self.root / "postgres-restarted.log"),
            ],
            check=True,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
            timeout=timeout + 10,
        )
        if self.proc is not None:
            self.proc.wait(10)  # the first postmaster (our child) has exited: reap it
        self.restarted = True

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        if self.restarted:
            subprocess.run(
                [*_as_postgres_user(), _pg_bin("pg_ctl"), "stop", "-m", "fast", "-D", str(self.data), "-w"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                timeout=70,
            )
        shutil.rmtree(self.root, ignore_errors=True)


class RedisServer:
    def __init__(self) -> None:
        self.root = Path(tempfile.mkdtemp(prefix="hospital-redis-"))
        self.port = free_port()
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> str:
        binary = shutil.which("redis-server")
        if binary is None:
            raise RuntimeError("redis-server not found; install it (apt-get install redis-server, see .ci/run)")
        self.proc = subprocess.Popen(
            [
                binary,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.root),
                "--protected-mode",
                "yes",
            ],
            # Appended: start() again after halt() keeps the earlier server's log.
            stdout=open(self.root / "redis.log", "ab"),
            stderr=subprocess.STDOUT,
        )
        _wait_for_port(self.port, what="Redis", log=self.root / "redis.log")
        return f"redis://127.0.0.1:{self.port}/0"

    def halt(self) -> None:
        """Stop the server but keep its port and directory: start() brings it back at the same address.

        Nothing is persisted (no RDB, no AOF), so what it held is gone, as after a crash of an unpersisted Redis.
        """
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(5)

    def stop(self) -> None:
        self.halt()
        shutil.rmtree(self.root, ignore_errors=True)


def _wait_for_port(port: int, *, what: str, log: Path, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise RuntimeError(f"{what} did not start on port {port}: {log.read_text(errors='replace')[-2000:]}")


_started: list[PostgresServer | RedisServer] = []


def start_services() -> dict[str, str]:
    """Start whatever the environment does not already point at; returns the variables set."""
    env: dict[str, str] = {}
    if not os.environ.get("DATABASE_URL"):
        pg = PostgresServer()
        _started.append(pg)
        env["DATABASE_URL"] = pg.start()
    if not os.environ.get("REDIS_URL"):
        redis = RedisServer()
        _started.append(redis)
        env["REDIS_URL"] = redis.start()
    os.environ.update(env)
    atexit.register(stop_services)
    return env


def stop_services() -> None:
    while _started:
        _started.pop().stop()


@pytest.hookimpl(tryfirst=True)
def pytest_load_initial_conftests(early_config: Any, parser: Any, args: list[str]) -> None:
    start_services()
    os.environ.setdefault("SECRET_KEY", "test-only-secret-key")
    os.environ.setdefault("TASK_RUNNER", "immediate")
    os.environ.setdefault("SIMULATOR_ENABLED", "true")
    # Never the real Twilio: tests swap the SDK's HTTP client for a recording fake, and anything that
    # forgets to lands in the in-platform simulator instead of on the internet.
    os.environ.setdefault("TWILIO_TRANSPORT", "simulator")
    # A developer's own SMTP settings must never make a test send real mail.
    os.environ.setdefault("EMAIL_TRANSPORT", "off")
    # Django's test client calls itself "testserver"; signed webhook URLs then match what tests post.
    os.environ.setdefault("PUBLIC_BASE_URL", "http://testserver")
    os.environ.setdefault("DATA_DIR", tempfile.mkdtemp(prefix="hospital-data-"))
    # Production pools connections by default; tests reconnect, point at other ports and kill backends, which a
    # pool would paper over. tests/test_settings.py covers the pool itself, and the benchmarks run with it.
    os.environ.setdefault("DB_POOL_MAX_SIZE", "0")


def pytest_unconfigure(config: Any) -> None:
    stop_services()


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    """Every test's personas are created with real passwords: Django's PBKDF2 (a million iterations, on purpose)
    would cost seconds per test. A test of hashing itself sets PASSWORD_HASHERS back."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]

"""Real Celery workers for the tests that kill one mid-work (tests/test_worker_kill.py, the campaign's
tests/campaigns/test_exactly_once.py): started as subprocesses on this run's PostgreSQL and Redis, with the
twilio SDK's HTTP client replaced by a fake that records every accepted message in Redis, so what every worker
sent, the killed one included, is counted in one place.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import redis
from django.conf import settings
from django.db import connection

from tests.twilio_fake import RecordingTwilioHttpClient, fixture

ROOT = Path(__file__).resolve().parents[1]

# The fake Twilio a worker installs (filled in by recording_twilio()): it takes a while per request, as Twilio
# does, and records a message once it has it, so a kill after the record is "accepted, answer lost".
_RECORDING_TWILIO = """
import json, os, time
import redis
from twilio.http.response import Response
import channels_adapters.twilio.transport as transport
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

shared = redis.Redis.from_url(os.environ["REDIS_URL"])

class SharedRecordingTwilio(RecordingTwilioHttpClient):
    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False):
        time.sleep({latency})
        sid = "SM%032x" % shared.incr({sid_key!r})
        callback = str(data["StatusCallback"])
        shared.rpush({sends_key!r}, json.dumps({{"to": data["To"], "sid": sid, "message": callback.split("message=")[1],
                                                 "body": data["Body"], "from": data.get("From")}}))
        time.sleep({answer_latency})
        created = fixture("api_message_created.json")
        created.update(sid=sid, to=data["To"], body=data["Body"])
        return Response(201, json.dumps(created))

fake = SharedRecordingTwilio()
transport.http_client = lambda: fake
"""


def recording_twilio(*, sends_key: str, sid_key: str, latency: float = 0.0, answer_latency: float = 0.0) -> str:
    """Worker boot code installing the recording fake (see _RECORDING_TWILIO): `latency` before Twilio has the
    message, `answer_latency` between that and its answer (the window a kill leaves a send unconfirmed in)."""
    return _RECORDING_TWILIO.format(
        sends_key=sends_key, sid_key=sid_key, latency=latency, answer_latency=answer_latency
    )


def recorded_sends(shared: redis.Redis, sends_key: str) -> list[dict[str, str]]:
    return [json.loads(raw) for raw in shared.lrange(sends_key, 0, -1)]


class TwilioReadingTheRecord(RecordingTwilioHttpClient):
    """Twilio as the workers left it: its Messages list answers from what the workers' fake recorded."""

    def __init__(self, shared: redis.Redis, sends_key: str) -> None:
        super().__init__()
        self.shared = shared
        self.sends_key = sends_key

    def _page(self, params: dict[str, Any]) -> dict[str, Any]:
        page = fixture("api_message_list.json")
        now = format_datetime(dt.datetime.now(dt.UTC))
        page["messages"] = [
            {
                "sid": s["sid"],
                "to": s["to"],
                "from": s["from"],
                "body": s["body"],
                "status": "queued",
                "date_created": now,
            }
            for s in reversed(recorded_sends(self.shared, self.sends_key))
            if s["to"] == params.get("To")
        ]
        return page


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    """Poll a condition until it holds or the deadline passes (True if it held)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def holds_steady(measure: Callable[[], int], polls: int = 3) -> Callable[[], bool]:
    """A predicate for wait_for: true once `measure` gave the same value `polls` times running (the live workers'
    deliveries in flight have finished, so a sweep that jumps the clock cannot race them)."""
    seen: list[int] = []

    def steady() -> bool:
        seen.append(measure())
        return len(seen) >= polls and len(set(seen[-polls:])) == 1

    return steady


@contextlib.contextmanager
def celery_workers(
    *, boot: str, token: str, log_prefix: str, clear_keys: tuple[str, ...] = ()
) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    """A starter of real workers running `boot` (which ends by calling app.worker_main) against this test's
    database. It starts from an empty queue and with `clear_keys` (the fake's records) deleted. At the end every worker is stopped (its log printed, for a failing test's report), the queue is
    purged and the killed workers' unacknowledged tasks dropped: kombu would put them back after the visibility
    timeout, for a later test's worker to find."""
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "TASK_RUNNER": "celery",
        "TWILIO_AUTH_TOKEN": token,
        "PUBLIC_BASE_URL": "http://testserver",
    }
    started: list[tuple[subprocess.Popen[bytes], Any]] = []
    from config.celery import app

    app.control.purge()
    if clear_keys:
        redis.Redis.from_url(settings.REDIS_URL).delete(*clear_keys)

    def start() -> subprocess.Popen[bytes]:
        log = tempfile.NamedTemporaryFile(prefix=log_prefix, suffix=".log", delete=False)
        proc = subprocess.Popen([sys.executable, "-c", boot], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT)
        started.append((proc, log))
        return proc

    try:
        yield start
    finally:
        for proc, log in started:
            if proc.poll() is None:
                proc.terminate()
                try:
                    proc.wait(15)
                except subprocess.TimeoutExpired:
                    proc.kill()
            log.close()
            print(f"--- {log.name} ---\n" + Path(log.name).read_text(errors="replace")[-4000:])
            os.unlink(log.name)
        app.control.purge()
        redis.Redis.from_url(settings.REDIS_URL).delete("unacked", "unacked_index")

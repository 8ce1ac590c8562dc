"""Production mode end to end: a real Celery worker on Redis delivers what send_outbound queued, and the
beat-driven dispatcher wakes snoozed conversations."""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from django.db import connection
from django.utils import timezone

from contactcenter.actions.outbound import send_outbound
from contactcenter.models import Conversation, ConversationStatus, Message, MessageStatus

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def celery_worker(transactional_db: None, settings) -> Iterator[subprocess.Popen[bytes]]:
    settings.TASK_RUNNER = "celery"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "TASK_RUNNER": "celery",
    }
    from config.celery import app

    # Only this test's tasks: anything an earlier test's workers left in the queue would be run first.
    app.control.purge()
    # A file, not a pipe nobody reads: a chatty worker would block on a full pipe and stop consuming.
    log = tempfile.NamedTemporaryFile(prefix="celery-worker-", suffix=".log", delete=False)
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "config",
            "worker",
            "--pool",
            "solo",
            "--loglevel",
            "INFO",
            "--without-gossip",
            "--without-mingle",
        ],
        cwd=ROOT,
        env=env,
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    yield proc
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
    log.close()
    print(f"--- {log.name} ---\n" + Path(log.name).read_text(errors="replace")[-4000:])
    os.unlink(log.name)


def wait_for(predicate, timeout: float = 30.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


def test_real_worker_delivers_a_queued_reply(celery_worker, world, inbound) -> None:
    conversation = inbound(world.inbox_a, "+8613800138000", "When is my follow-up?").conversation
    message = send_outbound(conversation=conversation, body="Tuesday at 9:00, Cardiology clinic 3.", author=world.alice)
    assert message.status == MessageStatus.QUEUED
    delivered = wait_for(lambda: Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED)
    assert delivered, Message.objects.get(pk=message.pk).status


def test_dispatcher_task_on_a_real_worker_wakes_due_snoozes(celery_worker, world, inbound) -> None:
    from contactcenter.tasks import dispatch_due_work

    conversation = inbound(world.inbox_a, "+8613800138001", "hi").conversation
    Conversation.objects.filter(pk=conversation.pk).update(
        status=ConversationStatus.SNOOZED, snoozed_until=timezone.now() - dt.timedelta(seconds=1)
    )
    dispatch_due_work.delay()
    assert wait_for(lambda: Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.OPEN)

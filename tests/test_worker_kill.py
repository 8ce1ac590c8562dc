"""Agents' replies survive a Celery worker killed (SIGKILL) mid-delivery: nothing lost, nothing sent twice.

The production path: send_outbound writes each reply queued and enqueues its delivery on the real broker; a
real worker (threads pool, so several deliveries are in flight when the kill lands) sends through the twilio
SDK, whose HTTP client is a recording fake that writes every accepted message to Redis (so what both workers
sent is counted in one place) and takes a moment per request, as Twilio does. The kill leaves replies in
every state: queued in the broker and unacknowledged (Celery hands them back after the visibility timeout,
ten minutes: far longer than this test, so only the sweeps below can finish the job), claimed but not yet sent,
and sent with the answer lost. A second worker is started, and
the dispatcher's two sweeps run as beat would run them once they are old enough (the test moves their clock
instead of waiting): redeliver_stalled hands queued replies over again, reconcile_unconfirmed asks Twilio
about unconfirmed ones and adopts or resends them.

Checked: every reply ends with a Twilio SID; Twilio got each reply exactly once (per text and number, since
two identical short replies are indistinguishable at Twilio); no reply is left queued or sending.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.utils import timezone

import channels_adapters.twilio.transport as transport
from channels_adapters.base import InboundMessage, Sender
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.delivery import reconcile_unconfirmed, redeliver_stalled
from contactcenter.actions.inbound import receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.models import IdentityKind, Message, MessageDirection, MessageStatus, Team
from tests.workers import (
    TwilioReadingTheRecord,
    celery_workers,
    holds_steady,
    recorded_sends,
    recording_twilio,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

PATIENTS = 20
THREADS = 4
TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456782"
SENDS_KEY = "test:fake-twilio:reply-sends"
SID_KEY = "test:fake-twilio:reply-sid"

WORKER_BOOT = (
    "import django\ndjango.setup()\n"
    + recording_twilio(sends_key=SENDS_KEY, sid_key=SID_KEY, latency=0.15, answer_latency=0.05)
    + "from config.celery import app\n"
    + f"app.worker_main(['worker', '--pool', 'threads', '--concurrency', '{THREADS}', '--loglevel', 'WARNING',"
    + " '--without-gossip', '--without-mingle', '--without-heartbeat'])\n"
)


@pytest.fixture
def start_worker(settings: Any, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    settings.TASK_RUNNER = "celery"
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    with celery_workers(
        boot=WORKER_BOOT, token=TOKEN, log_prefix="reply-worker-", clear_keys=(SENDS_KEY, SID_KEY)
    ) as start:
        yield start


def test_worker_killed_mid_delivery_loses_and_duplicates_no_reply(
    start_worker: Callable[[], subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:

    shared = redis.Redis.from_url(django_settings.REDIS_URL)
    team = Team.objects.create(code="service", name="Patient service")
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Service SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    conversations = [
        receive_inbound(
            InboundMessage(
                inbox_id=inbox.pk,
                sender=Sender(kind=IdentityKind.PHONE, value=f"+86139{i:08d}"),
                body="Hello?",
                provider_message_id=f"SMin{i:030d}",
            )
        ).conversation
        for i in range(PATIENTS)
    ]

    first = start_worker()
    # Two replies to each patient; every fourth patient gets the same short text twice, which Twilio
    # cannot tell apart (the lookup must not adopt one send for both rows).
    for round_ in range(2):
        for i, conversation in enumerate(conversations):
            body = "OK." if i % 4 == 0 else f"Reply {round_ + 1} to patient {i}: your appointment is at 9:{i:02d}."
            send_outbound(conversation=conversation, body=body, author=None)
    replies = Message.objects.filter(direction=MessageDirection.OUTBOUND, inbox=inbox)
    assert replies.count() == 2 * PATIENTS

    assert wait_for(lambda: shared.llen(SENDS_KEY) >= PATIENTS // 2, timeout=120), "the first worker never got going"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = Counter(replies.values_list("status", flat=True))
    assert at_kill[MessageStatus.QUEUED] > 0, at_kill

    start_worker()

    # What beat would run every few seconds, its clock moved past the thresholds instead of waiting: queued
    # replies whose task died with the worker are handed over again. (The broker hands the dead worker's
    # unacknowledged tasks back only after its visibility timeout, ten minutes; if it did so now, the claim
    # would keep the two from both sending.)
    def queue_drained() -> bool:
        redeliver_stalled(now=timezone.now() + dt.timedelta(seconds=django_settings.DELIVERY_STALLED_SECONDS + 1))
        return not replies.filter(status=MessageStatus.QUEUED).exists()

    assert wait_for(queue_drained, timeout=180, step=2.0), Counter(replies.values_list("status", flat=True))

    unconfirmed = replies.filter(status=MessageStatus.SENDING, provider_message_id__isnull=True)
    assert wait_for(holds_steady(unconfirmed.count), timeout=60, step=1.0)
    left_unconfirmed = unconfirmed.count()
    monkeypatch.setattr(transport, "http_client", lambda: TwilioReadingTheRecord(shared, SENDS_KEY))
    settled = reconcile_unconfirmed(
        now=timezone.now() + dt.timedelta(minutes=django_settings.DELIVERY_UNCONFIRMED_MINUTES + 1)
    )
    assert settled.unknown == 0 and settled.failed == 0, settled
    assert settled.found + settled.requeued == left_unconfirmed

    def all_sent() -> bool:
        return not replies.filter(provider_message_id__isnull=True).exists()

    assert wait_for(all_sent, timeout=120, step=0.5), Counter(replies.values_list("status", flat=True))

    sends = recorded_sends(shared, SENDS_KEY)
    rows = Counter(replies.values_list("conversation__patient__identities__value", "body"))
    sent = Counter((s["to"], s["body"]) for s in sends)
    assert sent == rows
    assert len(sends) == 2 * PATIENTS
    distinct = [s for s in sends if s["body"] != "OK."]
    assert max(Counter(s["message"] for s in distinct).values()) == 1
    sids = list(replies.values_list("provider_message_id", flat=True))
    assert len(set(sids)) == len(sids) == 2 * PATIENTS
    print(
        f"killed with {dict(at_kill)}; {left_unconfirmed} left unconfirmed ({settled.found} found at Twilio, "
        f"{settled.requeued} sent again); {len(sends)} replies reached Twilio once each"
    )

"""Exactly once with real workers: a Celery worker on Redis is killed (SIGKILL) in the middle of a
2,000-recipient campaign, a new worker is started, and the campaign finishes.

Everything is the production path: the run_campaign task on a worker (threads pool, so deliveries run
beside the campaign and the kill lands wherever it lands), deliveries as their own tasks, the twilio SDK
(its HTTP client replaced by a recording fake that writes every accepted message to Redis, so both
workers' sends are counted in one place), Celery's own redelivery of unacknowledged tasks, and the
campaign dispatcher restarting a run whose lease lapsed.

Two numbers in the workers are shortened so the test takes a minute rather than an hour: the broker's
visibility timeout (Celery's redelivery of a dead worker's tasks) and the engine's lease. Neither changes
what happens, only when.

What is promised, and checked: every recipient has exactly one message row; no number is sent to twice;
every message reaches Twilio exactly once. A worker killed mid-block leaves messages "sending" with no
SID, some of which Twilio had accepted and some it never saw: the sweep that asks Twilio about them
(contactcenter.actions.delivery.reconcile_unconfirmed, run as the periodic dispatcher would once they are
old enough) adopts the SIDs of the first and hands the second to delivery again, so none is lost and none
doubled. See campaigns/sending/engine.py.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Callable, Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection
from django.utils import timezone

import channels_adapters.twilio.transport as transport
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState, Segment
from campaigns.sending import engine, throttle
from campaigns.sending.engine import dispatch_due_campaigns
from channels_adapters.base import StatusUpdate
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.delivery import reconcile_unconfirmed, update_message_status
from contactcenter.models import (
    Consent,
    ConsentPurpose,
    ConsentStatus,
    IdentityKind,
    Message,
    MessageStatus,
    Patient,
    PatientIdentity,
    SenderKind,
)
from contactcenter.taskrunner import enqueue
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[2]
# The example: 2,000 recipients.
RECIPIENTS = 2000
THREADS = 4
TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456781"
SENDS_KEY = "test:fake-twilio:sends"
SID_KEY = "test:fake-twilio:sid"
LEASE_SECONDS = 3

# The worker: the real Celery worker, with the recording Twilio fake installed and the two timeouts shortened.
WORKER_BOOT = f"""
import datetime as dt, json, os, sys
import django
django.setup()
import redis
from twilio.http.response import Response
import channels_adapters.twilio.transport as transport
from campaigns.sending import engine
from config.celery import app
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

shared = redis.Redis.from_url(os.environ["REDIS_URL"])

class SharedRecordingTwilio(RecordingTwilioHttpClient):
    def request(self, method, uri, params=None, data=None, headers=None, auth=None, timeout=None, allow_redirects=False):
        sid = "SM%032x" % shared.incr({SID_KEY!r})
        callback = str(data["StatusCallback"])
        # Recorded when Twilio has the message: a kill after this line is "accepted, answer lost".
        shared.rpush({SENDS_KEY!r}, json.dumps({{"to": data["To"], "sid": sid, "message": callback.split("message=")[1],
                                                  "body": data["Body"], "from": data.get("From")}}))
        created = fixture("api_message_created.json")
        created.update(sid=sid, to=data["To"], body=data["Body"])
        return Response(201, json.dumps(created))

fake = SharedRecordingTwilio()
transport.http_client = lambda: fake
engine.LEASE = dt.timedelta(seconds={LEASE_SECONDS})
engine.STALLED_DELIVERY = dt.timedelta(seconds=5)
app.conf.broker_transport_options = {{
    "visibility_timeout": 8, "unacked_restore_interval": 1, "unacked_restore_throttle": 1,
}}
app.worker_main(["worker", "--pool", "threads", "--concurrency", "{THREADS}", "--loglevel", "WARNING",
                 "--without-gossip", "--without-mingle", "--without-heartbeat"])
"""


class TwilioReadingTheRecord(RecordingTwilioHttpClient):
    """Twilio as the workers left it: its Messages list answers from what the workers' fake recorded."""

    def __init__(self, shared: redis.Redis) -> None:
        super().__init__()
        self.shared = shared

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
            for s in reversed(recorded_sends(self.shared))
            if s["to"] == params.get("To")
        ]
        return page


@pytest.fixture
def start_worker(settings: Any) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    settings.TASK_RUNNER = "celery"
    db = connection.settings_dict
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "TASK_RUNNER": "celery",
        "TWILIO_AUTH_TOKEN": TOKEN,
        "PUBLIC_BASE_URL": "http://testserver",
    }
    started: list[tuple[subprocess.Popen[bytes], Any]] = []

    def start() -> subprocess.Popen[bytes]:
        log = tempfile.NamedTemporaryFile(prefix="campaign-worker-", suffix=".log", delete=False)
        proc = subprocess.Popen(
            [sys.executable, "-c", WORKER_BOOT], cwd=ROOT, env=env, stdout=log, stderr=subprocess.STDOUT
        )
        started.append((proc, log))
        return proc

    yield start
    for proc, log in started:
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(15)
            except subprocess.TimeoutExpired:
                proc.kill()
        log.close()
        # Shown by pytest when the test fails.
        print(f"--- {log.name} ---\n" + Path(log.name).read_text(errors="replace")[-4000:])
        os.unlink(log.name)
    # Tasks the workers left in the queue (requeued at shutdown, or held by the killed one) must not be
    # picked up by a later test's worker.
    from config.celery import app

    app.control.purge()


def wait_for(predicate: Callable[[], bool], timeout: float, step: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def recorded_sends(shared: redis.Redis) -> list[dict[str, str]]:
    return [json.loads(raw) for raw in shared.lrange(SENDS_KEY, 0, -1)]


def make_campaign() -> Campaign:
    from contactcenter.models import Team

    team = Team.objects.create(code="marketing", name="Marketing")
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Marketing SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    throttle.reset(throttle.sender_key(inbox))
    patients = Patient.objects.bulk_create(
        Patient(given_name=f"P{i}", name=f"P{i}", language="en") for i in range(RECIPIENTS)
    )
    phones = [f"+8613{i:09d}" for i in range(RECIPIENTS)]
    PatientIdentity.objects.bulk_create(
        PatientIdentity(patient=p, kind=IdentityKind.PHONE, value=phone)
        for p, phone in zip(patients, phones, strict=True)
    )
    # Opted in to marketing, as the default consent policy requires of every recipient.
    Consent.objects.bulk_create(
        Consent(patient=p, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN) for p in patients
    )
    local_now = timezone.localtime()
    campaign = Campaign.objects.create(
        name="Kill test",
        segment=Segment.objects.create(name="Everyone"),
        inbox=inbox,
        body="Hi {{ first_name }}, your check-up is due.",
        status=CampaignStatus.RUNNING,
        # Ten seconds of sending: long enough for the kill to land mid-run (chunks of 100, blocks of 50).
        messages_per_second=200,
        # Quiet hours well away from now: the test must not depend on the time of day it runs at.
        quiet_hours_start=(local_now + dt.timedelta(hours=6)).time().replace(second=0, microsecond=0),
        quiet_hours_end=(local_now + dt.timedelta(hours=7)).time().replace(second=0, microsecond=0),
    )
    CampaignRecipient.objects.bulk_create(
        CampaignRecipient(campaign=campaign, patient=p, phone=phone, time_zone="Asia/Shanghai")
        for p, phone in zip(patients, phones, strict=True)
    )
    return campaign


def test_worker_killed_mid_campaign_and_replaced_sends_every_recipient_exactly_once(
    start_worker: Callable[[], subprocess.Popen[bytes]], monkeypatch: pytest.MonkeyPatch
) -> None:
    from config.celery import app

    shared = redis.Redis.from_url(django_settings.REDIS_URL)
    shared.delete(SENDS_KEY, SID_KEY)
    app.control.purge()
    campaign = make_campaign()

    first = start_worker()
    enqueue("campaigns.tasks.run_campaign", campaign_id=campaign.pk)

    # Mid-run: part of the recipients have their message, part of those reached Twilio, deliveries are queued.
    def mid_run() -> bool:
        sent = CampaignRecipient.objects.filter(campaign=campaign, state=RecipientState.SENT).count()
        return sent >= RECIPIENTS // 4 and shared.llen(SENDS_KEY) >= 20

    assert wait_for(mid_run, timeout=300), "the first worker never got going"
    os.kill(first.pid, signal.SIGKILL)
    first.wait(10)
    at_kill = CampaignRecipient.objects.filter(campaign=campaign, state=RecipientState.SENT).count()
    assert 0 < at_kill < RECIPIENTS, at_kill

    second = start_worker()
    # The run's lease lapses (its worker is dead): the dispatcher starts another. Celery's redelivery of
    # the dead worker's unacknowledged tasks may start one too; either way each recipient is sent once.
    assert wait_for(lambda: dispatch_due_campaigns() > 0, timeout=LEASE_SECONDS + 30, step=0.5)

    # The periodic dispatcher, as it runs every few seconds: it also hands the dead worker's written but
    # undelivered messages over again once they are STALLED_DELIVERY old (shortened here as in the workers).
    monkeypatch.setattr(engine, "STALLED_DELIVERY", dt.timedelta(seconds=5))

    def finished() -> bool:
        dispatch_due_campaigns()
        done = Campaign.objects.filter(pk=campaign.pk, status=CampaignStatus.COMPLETED).exists()
        queued = Message.objects.filter(sender_kind=SenderKind.CAMPAIGN, status=MessageStatus.QUEUED).exists()
        return done and not queued

    assert wait_for(finished, timeout=900, step=1.0), (
        Campaign.objects.get(pk=campaign.pk).status,
        Counter(Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).values_list("status", flat=True)),
    )

    # Messages the killed worker left "sending" with no SID: Twilio is asked about them, as the periodic
    # sweep does once they are DELIVERY_UNCONFIRMED_MINUTES old. Those it has get their SID; the rest go
    # back to the queue, and the live worker delivers them.
    unconfirmed = Message.objects.filter(
        sender_kind=SenderKind.CAMPAIGN, status=MessageStatus.SENDING, provider_message_id__isnull=True
    )
    # The sweep only looks at sends DELIVERY_UNCONFIRMED_MINUTES old, which no live delivery is; the test
    # jumps the clock instead, so it first lets the live worker's deliveries in flight finish.
    seen: list[int] = []

    def settled_down() -> bool:
        seen.append(unconfirmed.count())
        return len(seen) >= 3 and seen[-1] == seen[-2] == seen[-3]

    assert wait_for(settled_down, timeout=60, step=1.0)
    left_unconfirmed = unconfirmed.count()
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setattr(transport, "http_client", lambda: TwilioReadingTheRecord(shared))
    settled = reconcile_unconfirmed(
        now=timezone.now() + dt.timedelta(minutes=django_settings.DELIVERY_UNCONFIRMED_MINUTES + 1)
    )
    assert settled.unknown == 0, settled
    assert settled.found + settled.requeued == left_unconfirmed

    def all_handed_over() -> bool:
        queued = Message.objects.filter(sender_kind=SenderKind.CAMPAIGN, status=MessageStatus.QUEUED).exists()
        return not queued and not unconfirmed.exists()

    assert wait_for(all_handed_over, timeout=120, step=0.5)

    # A warm shutdown lets deliveries in flight finish, so what Twilio recorded is final before it is read.
    second.terminate()
    second.wait(120)

    # Twilio reports each message it accepted.
    sends = recorded_sends(shared)
    for send in sends:
        update_message_status(
            inbox_id=campaign.inbox_id,
            update=StatusUpdate(provider_message_id=send["sid"], status=MessageStatus.DELIVERED),
            message_id=int(send["message"]),
        )

    recipients = list(CampaignRecipient.objects.filter(campaign=campaign).select_related("message"))
    assert len(recipients) == RECIPIENTS
    assert all(r.message is not None for r in recipients)
    assert len({r.message_id for r in recipients}) == RECIPIENTS
    per_patient = Counter(
        Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).values_list("conversation__patient_id", flat=True)
    )
    assert len(per_patient) == RECIPIENTS
    assert max(per_patient.values()) == 1
    per_number = Counter(s["to"] for s in sends)
    assert max(per_number.values()) == 1, [n for n, c in per_number.items() if c > 1][:5]
    per_message = Counter(s["message"] for s in sends)
    assert max(per_message.values()) == 1

    others = [
        (r.pk, r.state, r.error_code, r.message.status, r.message.error_code, r.message.provider_message_id)
        for r in recipients
        if r.state != RecipientState.DELIVERED
    ]
    assert others == []
    assert len(per_number) == len(per_message) == len(sends) == RECIPIENTS
    print(
        f"killed with {at_kill} of {RECIPIENTS} messages written; {left_unconfirmed} left unconfirmed "
        f"({settled.found} found at Twilio, {settled.requeued} sent again); {len(sends)} reached Twilio once each"
    )

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
from tests.workers import (
    TwilioReadingTheRecord,
    celery_workers,
    holds_steady,
    recorded_sends,
    recording_twilio,
    wait_for,
)

pytestmark = pytest.mark.django_db(transaction=True)

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
WORKER_BOOT = (
    "import datetime as dt\nimport django\ndjango.setup()\n"
    + recording_twilio(sends_key=SENDS_KEY, sid_key=SID_KEY)
    + "from campaigns.sending import engine\nfrom config.celery import app\n"
    + f"engine.LEASE = dt.timedelta(seconds={LEASE_SECONDS})\n"
    + "engine.STALLED_DELIVERY = dt.timedelta(seconds=5)\n"
    + "app.conf.broker_transport_options = {'visibility_timeout': 8, 'unacked_restore_interval': 1,"
    + " 'unacked_restore_throttle': 1}\n"
    + f"app.worker_main(['worker', '--pool', 'threads', '--concurrency', '{THREADS}', '--loglevel', 'WARNING',"
    + " '--without-gossip', '--without-mingle', '--without-heartbeat'])\n"
)


@pytest.fixture
def start_worker(settings: Any) -> Iterator[Callable[[], subprocess.Popen[bytes]]]:
    settings.TASK_RUNNER = "celery"
    with celery_workers(
        boot=WORKER_BOOT, token=TOKEN, log_prefix="campaign-worker-", clear_keys=(SENDS_KEY, SID_KEY)
    ) as start:
        yield start


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

    shared = redis.Redis.from_url(django_settings.REDIS_URL)
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
    assert wait_for(holds_steady(unconfirmed.count), timeout=60, step=1.0)
    left_unconfirmed = unconfirmed.count()
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    monkeypatch.setattr(transport, "http_client", lambda: TwilioReadingTheRecord(shared, SENDS_KEY))
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
    sends = recorded_sends(shared, SENDS_KEY)
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

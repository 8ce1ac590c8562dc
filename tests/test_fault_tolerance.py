"""The machinery keeps running when parts of it fail: the dispatcher's steps are isolated and recorded,
unconfirmed sends are always settled, stranded queued messages are delivered, and /readyz tells the truth.

Real PostgreSQL, the real twilio SDK over the recording fake, and (for the broker outage) a real process
whose Redis is a port nobody listens on.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import logging
import os
import subprocess
import sys
from collections.abc import Iterator
from email.utils import format_datetime
from pathlib import Path
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

import channels_adapters.twilio.transport
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter import dispatch, health
from contactcenter.actions.delivery import poll_unsettled_statuses, reconcile_unconfirmed, redeliver_stalled
from contactcenter.actions.inbound import receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.models import (
    Conversation,
    DueWorkStep,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Team,
)
from contactcenter.tasks import dispatch_due_work
from tests.services import free_port
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

# Delivery runs after commit (TASK_RUNNER=immediate), so these tests commit.
pytestmark = pytest.mark.django_db(transaction=True)

ROOT = Path(__file__).resolve().parents[1]
TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
PATIENT = "+8613800138000"


@pytest.fixture(autouse=True)
def quick_passwords(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def sms_inbox(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Inbox:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    team = Team.objects.create(code="patient-service", name="Patient service", name_zh="客服中心")
    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


@pytest.fixture
def twilio(monkeypatch: pytest.MonkeyPatch) -> RecordingTwilioHttpClient:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


def conversation_in(inbox: Inbox, phone: str = PATIENT) -> Conversation:
    from channels_adapters.base import InboundMessage, Sender

    return receive_inbound(
        InboundMessage(
            inbox_id=inbox.pk,
            sender=Sender(kind=IdentityKind.PHONE, value=phone),
            body="When is my appointment?",
            provider_message_id=f"SMin{phone[-6:]}{Message.objects.count()}",
        )
    ).conversation


def unconfirmed(conversation: Conversation, body: str, *, minutes_ago: int = 30) -> Message:
    """A reply a worker claimed (queued → sending) and then died before saving Twilio's answer."""
    with _no_delivery():
        message = send_outbound(conversation=conversation, body=body, author=None)
    Message.objects.filter(pk=message.pk).update(
        status=MessageStatus.SENDING, status_changed_at=timezone.now() - dt.timedelta(minutes=minutes_ago)
    )
    return Message.objects.get(pk=message.pk)


@contextlib.contextmanager
def _no_delivery() -> Iterator[None]:
    """send_outbound whose delivery task is lost: it goes to the real broker, where no worker is listening,
    and is purged afterwards, as if the worker that took it had died."""
    from django.conf import settings

    from config.celery import app

    runner = settings.TASK_RUNNER
    settings.TASK_RUNNER = "celery"
    try:
        yield
    finally:
        settings.TASK_RUNNER = runner
        app.control.purge()


# --- The dispatcher's steps are isolated and recorded -----------------------------------------------


def test_a_failing_step_does_not_stop_the_others_and_is_recorded(
    db: Any, monkeypatch: pytest.MonkeyPatch, world: Any, inbound: Any
) -> None:
    conversation = inbound(world.inbox_a, "+8613800138001", "hi").conversation
    Conversation.objects.filter(pk=conversation.pk).update(
        status="snoozed", snoozed_until=timezone.now() - dt.timedelta(seconds=1)
    )
    steps = dict(dispatch._jobs)

    def broken() -> int:
        raise RuntimeError("the provider's page could not be read")

    # First in the run, as reconcile_unconfirmed was when it stopped every later step.
    monkeypatch.setattr(dispatch, "_jobs", {"broken": broken, **steps})

    results = dispatch_due_work()

    assert results["broken"] == -1
    assert results["snoozed_conversations"] == 1
    assert Conversation.objects.get(pk=conversation.pk).status == "open"
    row = DueWorkStep.objects.get(name="broken")
    assert (row.consecutive_failures, row.failures_total) == (1, 1)
    assert row.last_error == "RuntimeError: the provider's page could not be read"
    assert DueWorkStep.objects.get(name="snoozed_conversations").last_ok_at is not None
    dispatch_due_work()
    assert DueWorkStep.objects.get(name="broken").consecutive_failures == 2

    # Fixed: the next run clears the streak but keeps the total.
    monkeypatch.setattr(dispatch, "_jobs", {"broken": lambda: 0, **steps})
    dispatch_due_work()
    row = DueWorkStep.objects.get(name="broken")
    assert (row.consecutive_failures, row.failures_total) == (0, 2)


def test_a_database_error_in_one_step_leaves_the_next_step_a_working_connection(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def bad_sql() -> int:
        with connection.cursor() as cursor:
            cursor.execute("SELECT * FROM no_such_table_anywhere")
        return 0

    def counts_messages() -> int:
        return Message.objects.count() + 1

    monkeypatch.setattr(dispatch, "_jobs", {"bad_sql": bad_sql, "after": counts_messages})
    results = dispatch.run_due_work()
    assert results == {"bad_sql": -1, "after": 1}
    assert DueWorkStep.objects.get(name="bad_sql").last_error.startswith("ProgrammingError")


# --- Unconfirmed sends are always settled -----------------------------------------------------------


def test_a_twilio_page_error_during_reconcile_is_survived_and_settled_later(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    message = unconfirmed(conversation, "Your results are ready to collect.")
    # Twilio's list answers 500: the SDK raises TwilioException("Unable to fetch page"), not a REST error.
    twilio.script = [(500, {"code": 20500, "message": "Internal Server Error", "status": 500})]

    results = dispatch_due_work()

    assert results["unconfirmed_sends"] == 0
    assert DueWorkStep.objects.get(name="unconfirmed_sends").consecutive_failures == 0
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING
    # Still unanswerable a day later: failed, with a reason staff can act on, not "sending" forever.
    twilio.script = [(500, {"code": 20500, "message": "Internal Server Error", "status": 500})]
    later = timezone.now() + dt.timedelta(hours=settings.DELIVERY_UNCONFIRMED_GIVE_UP_HOURS, minutes=1)
    result = reconcile_unconfirmed(now=later)
    assert result.failed == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "unconfirmed"
    assert "could not confirm" in message.error_message


def test_find_sent_never_adopts_a_twilio_message_attached_to_another_row(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient
) -> None:
    conversation = conversation_in(sms_inbox)
    # The same short reply twice: the first was confirmed (its SID saved), the second's answer was lost
    # before Twilio ever got it.
    confirmed = send_outbound(conversation=conversation, body="OK, see you then.", author=None)
    confirmed.refresh_from_db()
    first_sid = confirmed.provider_message_id
    assert first_sid and len(twilio.accepted) == 1
    lost = unconfirmed(conversation, "OK, see you then.")

    result = reconcile_unconfirmed()

    assert (result.found, result.requeued) == (0, 1)
    lost.refresh_from_db()
    assert lost.provider_message_id not in (None, first_sid)
    # Sent again exactly once: Twilio now has two messages, one per row.
    creates = [r for r in twilio.requests if r.method == "POST"]
    assert len(creates) == 2


def test_two_lost_identical_replies_adopt_two_different_twilio_messages(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient
) -> None:
    conversation = conversation_in(sms_inbox)
    first = unconfirmed(conversation, "Thank you.", minutes_ago=31)
    second = unconfirmed(conversation, "Thank you.", minutes_ago=30)
    # Twilio did get both; only our record of its answers was lost.
    for sid in ("SM" + "1" * 32, "SM" + "2" * 32):
        created = fixture("api_message_created.json")
        created.update(sid=sid, to=PATIENT, body="Thank you.", date_created=format_datetime(dt.datetime.now(dt.UTC)))
        created["from"] = NUMBER
        twilio.accepted.append(created)

    result = reconcile_unconfirmed()

    assert result.found == 2
    sids = set(Message.objects.filter(pk__in=[first.pk, second.pk]).values_list("provider_message_id", flat=True))
    assert sids == {"SM" + "1" * 32, "SM" + "2" * 32}
    assert not [r for r in twilio.requests if r.method == "POST"]


def test_a_channel_that_cannot_look_up_resends_only_when_that_is_harmless(world: Any, inbound: Any) -> None:
    # The simulator's "phone" is a row of ours: sending again is safe, so the message is requeued and delivered.
    conversation = inbound(world.inbox_a, "+8613800138002", "hi").conversation
    message = unconfirmed(conversation, "We will call you tomorrow.")
    result = reconcile_unconfirmed()
    assert result.requeued == 1
    message.refresh_from_db()
    assert message.status in (MessageStatus.SENT, MessageStatus.DELIVERED)
    assert message.provider_message_id


# --- Queued messages whose task was lost are delivered ----------------------------------------------


def test_a_reply_whose_task_was_lost_is_delivered_once_by_the_sweep(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    with _no_delivery():
        message = send_outbound(conversation=conversation, body="Your appointment is confirmed.", author=None)
    assert Message.objects.get(pk=message.pk).status == MessageStatus.QUEUED
    # Too young: its task may still be in the queue.
    assert redeliver_stalled() == 0
    later = timezone.now() + dt.timedelta(seconds=settings.DELIVERY_STALLED_SECONDS + 1)
    assert redeliver_stalled(now=later) == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING and message.provider_message_id
    # The original task turning up late finds it claimed and sends nothing.
    from contactcenter.actions.delivery import deliver_message

    assert deliver_message(message_id=message.pk).status == MessageStatus.SENDING
    assert len([r for r in twilio.requests if r.method == "POST"]) == 1
    assert redeliver_stalled(now=later + dt.timedelta(minutes=5)) == 0


def test_a_message_waiting_on_its_retry_is_left_to_it_until_the_retry_window_passes(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    with _no_delivery():
        message = send_outbound(conversation=conversation, body="Your appointment is confirmed.", author=None)
    Message.objects.filter(pk=message.pk).update(error_message="Twilio answered 503; will retry")
    soon = timezone.now() + dt.timedelta(seconds=settings.DELIVERY_STALLED_SECONDS + 1)
    assert redeliver_stalled(now=soon) == 0
    assert redeliver_stalled(now=timezone.now() + dt.timedelta(minutes=11)) == 1


BROKER_DOWN = """
import json, os, sys
import django
django.setup()
from django.test import Client
from contactcenter.models import Conversation, Message
client = Client()
from django.contrib.auth.models import User
client.force_login(User.objects.get(username="alice"))
conversation = Conversation.objects.get(pk=int(sys.argv[1]))
response = client.post(f"/api/v1/conversations/{conversation.pk}/messages/", {"body": "Tuesday at 9:00."},
                       content_type="application/json")
print(json.dumps({"status": response.status_code, "body": response.json()}))
"""


def test_a_reply_saved_while_the_broker_is_down_answers_201_and_is_delivered_later(
    transactional_db: None, world: Any, inbound: Any, settings: Any
) -> None:
    conversation = inbound(world.inbox_a, "+8613800138003", "When?").conversation
    db = connection.settings_dict
    dead_redis = f"redis://127.0.0.1:{free_port()}/0"
    env = {
        **os.environ,
        "DATABASE_URL": f"postgres://{db['USER']}@{db['HOST']}:{db['PORT']}/{db['NAME']}",
        "REDIS_URL": dead_redis,
        "TASK_RUNNER": "celery",
    }
    done = subprocess.run(
        [sys.executable, "-c", BROKER_DOWN, str(conversation.pk)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    answer = json.loads(done.stdout.strip().splitlines()[-1])
    assert answer["status"] == 201, answer
    message = Message.objects.get(pk=answer["body"]["id"])
    assert message.status == MessageStatus.QUEUED
    # The broker is back (this process's runner); the sweep hands the stranded reply over, once.
    later = timezone.now() + dt.timedelta(seconds=settings.DELIVERY_STALLED_SECONDS + 1)
    assert redeliver_stalled(now=later) == 1
    message.refresh_from_db()
    assert message.status in (MessageStatus.SENT, MessageStatus.DELIVERED)
    assert redeliver_stalled(now=later + dt.timedelta(minutes=5)) == 0


# --- Health that tells the truth --------------------------------------------------------------------


def test_healthz_is_liveness_only(client: Client) -> None:
    assert client.get("/healthz").json() == {"ok": True}


def test_readyz_names_a_dispatcher_that_has_not_run_or_keeps_failing(
    db: Any, client: Client, monkeypatch: pytest.MonkeyPatch
) -> None:
    answer = client.get("/readyz")
    # This process can serve, so a load balancer keeps it; a monitor sees the dispatcher has never run.
    assert answer.status_code == 200
    assert answer.json()["ready"] is True
    assert answer.json()["checks"]["dispatcher"]["status"] == "stale"
    strict = client.get("/readyz?strict=1")
    assert strict.status_code == 503
    assert "dispatcher" in strict.json()["failing"]

    def broken() -> int:
        raise ValueError("boom")

    monkeypatch.setattr(dispatch, "_jobs", {"broken": broken, **dispatch._jobs})
    dispatch.run_due_work()
    strict = client.get("/readyz?strict=1")
    assert strict.status_code == 503
    assert strict.json()["failing"] == ["dispatcher_steps"]
    assert "broken failed 1×" in strict.json()["checks"]["dispatcher_steps"]["detail"]

    monkeypatch.setattr(dispatch, "_jobs", {k: v for k, v in dispatch._jobs.items() if k != "broken"})
    DueWorkStep.objects.filter(name="broken").delete()
    dispatch.run_due_work()
    assert client.get("/readyz?strict=1").status_code == 200


def test_readyz_fails_when_redis_is_unreachable_and_names_it(db: Any, client: Client, settings: Any) -> None:
    dispatch.run_due_work()
    settings.REDIS_URL = f"redis://127.0.0.1:{free_port()}/0"
    settings.TASK_RUNNER = "celery"
    answer = client.get("/readyz")
    assert answer.status_code == 503
    assert answer["Retry-After"] == "5"
    assert set(answer.json()["failing"]) == {"redis", "workers"}


def test_readyz_counts_live_worker_heartbeats(db: Any, client: Client, settings: Any) -> None:
    dispatch.run_due_work()
    settings.TASK_RUNNER = "celery"
    assert client.get("/readyz?strict=1").json()["failing"] == ["workers"]
    health.write_worker_heartbeat("celery@test-host")
    try:
        answer = client.get("/readyz?strict=1")
        assert answer.status_code == 200
        assert answer.json()["checks"]["workers"]["data"]["workers"] == ["celery@test-host"]
    finally:
        health.clear_worker_heartbeat("celery@test-host")
    assert client.get("/readyz?strict=1").status_code == 503


def test_readyz_answers_503_when_the_database_is_unreachable(
    transactional_db: None, client: Client, settings: Any
) -> None:
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        answer = client.get("/readyz")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert answer.status_code == 503
    assert "database" in answer.json()["failing"]


def test_a_view_whose_database_is_gone_answers_503_not_500(transactional_db: None, world: Any) -> None:
    # As a server would answer: the test client otherwise re-raises the exception behind a 5xx.
    client = Client(raise_request_exception=False)
    client.force_login(world.sam)
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        answer = client.get("/api/v1/conversations/")
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert answer.status_code == 503
    assert answer["Retry-After"]


def test_the_status_page_is_for_admins(db: Any, world: Any) -> None:
    client = Client()
    dispatch.run_due_work()
    client.force_login(world.ada)
    page = client.get("/settings/status/")
    assert page.status_code == 200
    assert b'data-step="event_pruning"' in page.content
    client.force_login(world.alice)
    assert client.get("/settings/status/").status_code == 403


def test_the_embedded_simulator_answers_twilio_lookups_so_the_demo_settles_lost_answers(sms_inbox: Inbox) -> None:
    # No fake here: the SMS inbox talks to the in-platform simulator (TWILIO_TRANSPORT=simulator).
    conversation = conversation_in(sms_inbox)
    message = send_outbound(conversation=conversation, body="See you on Tuesday.", author=None)
    message.refresh_from_db()
    sid = message.provider_message_id
    assert sid
    # The worker died after the simulator took it and before the answer was saved.
    Message.objects.filter(pk=message.pk).update(
        provider_message_id=None,
        status=MessageStatus.SENDING,
        status_changed_at=timezone.now() - dt.timedelta(minutes=30),
    )
    result = reconcile_unconfirmed()
    assert (result.found, result.requeued) == (1, 0)
    assert Message.objects.get(pk=message.pk).provider_message_id == sid


# --- Statuses whose callbacks were lost are asked for -----------------------------------------------


def test_a_message_whose_status_callbacks_were_lost_is_settled_by_asking_twilio(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    message = send_outbound(conversation=conversation, body="Your appointment is confirmed.", author=None)
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING and message.provider_message_id
    # Twilio delivered it; its callbacks came while we were restarting and were never retried.
    twilio.accepted[0]["status"] = "delivered"
    assert poll_unsettled_statuses() == 0  # too young: the callbacks may still come
    later = timezone.now() + dt.timedelta(minutes=settings.DELIVERY_STATUS_POLL_MINUTES + 1)
    assert poll_unsettled_statuses(now=later) == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    fetches = [
        r for r in twilio.requests if r.method == "GET" and r.uri.endswith(f"{message.provider_message_id}.json")
    ]
    assert len(fetches) == 1


def test_an_undelivered_status_found_by_asking_carries_twilios_reason(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    message = send_outbound(conversation=conversation, body="Please call the clinic.", author=None)
    twilio.accepted[0].update(status="undelivered", error_code=30003)
    poll_unsettled_statuses(now=timezone.now() + dt.timedelta(minutes=settings.DELIVERY_STATUS_POLL_MINUTES + 1))
    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.UNDELIVERED, "30003")
    assert message.error_message == "The handset is unreachable."


def test_a_message_still_sending_at_twilio_is_asked_about_once_per_interval(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any
) -> None:
    conversation = conversation_in(sms_inbox)
    message = send_outbound(conversation=conversation, body="See you soon.", author=None)
    later = timezone.now() + dt.timedelta(minutes=settings.DELIVERY_STATUS_POLL_MINUTES + 1)
    assert poll_unsettled_statuses(now=later) == 0
    assert poll_unsettled_statuses(now=later) == 0
    fetches = [r for r in twilio.requests if r.method == "GET" and "/Messages/SM" in r.uri]
    assert len(fetches) == 1
    assert Message.objects.get(pk=message.pk).status == MessageStatus.SENDING


# --- A retried send is sent once ----------------------------------------------------------------------


def test_a_reply_sent_again_with_its_client_key_is_written_and_sent_once(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, world: Any
) -> None:
    from contactcenter.models import AgentProfile

    AgentProfile.objects.get(user=world.alice).teams.add(sms_inbox.team)
    conversation = conversation_in(sms_inbox)
    client = Client()
    client.force_login(world.alice)
    url = f"/api/v1/conversations/{conversation.pk}/messages/"
    payload = {"body": "Tuesday at 9:00, clinic 3.", "client_key": "0b6f3c1e-5d7a-4c2b-9e11-2f4a8d9c7b10"}
    first = client.post(url, payload, content_type="application/json")
    # The answer was lost on the way back; the browser sends the same attempt again.
    again = client.post(url, payload, content_type="application/json")
    assert (first.status_code, again.status_code) == (201, 201)
    assert first.json()["id"] == again.json()["id"]
    assert Message.objects.filter(conversation=conversation, direction="out").count() == 1
    assert len([r for r in twilio.requests if r.method == "POST"]) == 1
    # A new attempt (a new key) is a new message, even with the same words.
    other = client.post(url, {**payload, "client_key": "another-attempt-1"}, content_type="application/json")
    assert other.status_code == 201 and other.json()["id"] != first.json()["id"]


def test_a_client_key_that_cannot_be_one_is_refused_naming_the_field(sms_inbox: Inbox, world: Any) -> None:
    from contactcenter.models import AgentProfile

    AgentProfile.objects.get(user=world.alice).teams.add(sms_inbox.team)
    conversation = conversation_in(sms_inbox)
    client = Client()
    client.force_login(world.alice)
    answer = client.post(
        f"/api/v1/conversations/{conversation.pk}/messages/",
        {"body": "Hello", "client_key": "x" * 65},
        content_type="application/json",
    )
    assert answer.status_code == 400
    assert "client_key" in answer.json()
    assert not Message.objects.filter(conversation=conversation, direction="out").exists()


# --- Webhooks ride out a database restart --------------------------------------------------------------


def _signed_post(client: Client, path: str, params: dict[str, str], url: str | None = None) -> Any:
    from urllib.parse import urlencode

    from django.conf import settings as django_settings
    from twilio.request_validator import RequestValidator

    signature = RequestValidator(TOKEN).compute_signature(url or django_settings.PUBLIC_BASE_URL + path, params)
    return client.post(
        path, urlencode(params), content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature
    )


def _inbound_params() -> dict[str, str]:
    params = json.loads((ROOT / "channels_adapters/sms/fixtures/inbound_plain_text.json").read_text())
    params["To"] = NUMBER
    return params


class _RestoreOnFirstFailure(logging.Handler):
    """The database comes back the moment the webhook's first attempt has failed: a restart, seen from the view."""

    def __init__(self, port: str) -> None:
        super().__init__()
        self.port = port
        self.failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        if "database connection failed" in record.getMessage():
            self.failures += 1
            connection.settings_dict["PORT"] = self.port


def test_an_inbound_sms_arriving_while_the_database_restarts_is_stored_not_lost(sms_inbox: Inbox) -> None:
    client = Client(raise_request_exception=False)
    params = _inbound_params()
    real_port = connection.settings_dict["PORT"]
    restore = _RestoreOnFirstFailure(real_port)
    logger = logging.getLogger("contactcenter.resilience")
    logger.addHandler(restore)
    # The database is unreachable when the webhook arrives (a fast restart), and back a moment later.
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        answer = _signed_post(client, "/webhooks/twilio/sms/inbound/", params)
    finally:
        logger.removeHandler(restore)
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert answer.status_code == 200, answer.content
    assert restore.failures >= 1
    assert Message.objects.filter(provider_message_id=params["MessageSid"]).count() == 1


def test_an_inbound_sms_while_the_database_stays_down_is_a_503_twilio_may_retry(
    sms_inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    from contactcenter import resilience

    monkeypatch.setattr(resilience, "RETRY_DELAYS_SECONDS", (0.0, 0.01, 0.01))
    client = Client(raise_request_exception=False)
    params = _inbound_params()
    real_port = connection.settings_dict["PORT"]
    connection.close()
    connection.settings_dict["PORT"] = str(free_port())
    try:
        answer = _signed_post(client, "/webhooks/twilio/sms/inbound/", params)
    finally:
        connection.close()
        connection.settings_dict["PORT"] = real_port
    assert answer.status_code == 503
    assert answer["Retry-After"]
    assert not Message.objects.filter(provider_message_id=params["MessageSid"]).exists()
    # Twilio's retry (the operator's connection override) then stores it once.
    assert _signed_post(client, "/webhooks/twilio/sms/inbound/", params).status_code == 200
    assert Message.objects.filter(provider_message_id=params["MessageSid"]).count() == 1


def test_webhook_urls_carry_the_operators_connection_overrides(
    sms_inbox: Inbox, twilio: RecordingTwilioHttpClient, settings: Any, world: Any
) -> None:
    settings.TWILIO_WEBHOOK_OVERRIDES = "rc=3&rp=5xx"
    client = Client()
    # Signed over the URL Twilio was given, fragment included (accepted with or without it).
    params = _inbound_params()
    url = "http://testserver/webhooks/twilio/sms/inbound/#rc=3&rp=5xx"
    assert _signed_post(client, "/webhooks/twilio/sms/inbound/", params, url=url).status_code == 200
    forged = {**params, "MessageSid": "SM" + "f" * 32}
    bad = "http://testserver/webhooks/twilio/sms/inbound/#rc=9"
    assert _signed_post(client, "/webhooks/twilio/sms/inbound/", forged, url=bad).status_code == 403
    # The settings page shows the URLs to paste, with the overrides; sends carry them on the status callback.
    client.force_login(world.ada)
    page = client.get(f"/settings/inboxes/sms/{sms_inbox.pk}/")
    assert b"/webhooks/twilio/sms/inbound/#rc=3&amp;rp=5xx" in page.content
    conversation = conversation_in(sms_inbox, "+8613800138111")
    send_outbound(conversation=conversation, body="See you on Monday.", author=None)
    callback = next(r for r in twilio.requests if r.method == "POST").data["StatusCallback"]
    sent = Message.objects.filter(direction="out").latest("id")
    assert callback.endswith(f"?message={sent.pk}#rc=3&rp=5xx")

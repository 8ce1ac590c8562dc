"""Inbound webhooks are stored in one INSERT and answered; a drain turns them into messages, in arrival order.

Issue 15, "overload loses nothing": the Twilio SMS webhook verifies the signature, validates the payload (a 400
stores nothing), stores the normalized record once per MessageSid (contactcenter.models.InboundWebhook) and
answers; contactcenter.actions.inbound_queue drains the inbox's rows into messages, a batch per transaction with
its events written once, a failing row taken alone and parked after MAX_ATTEMPTS, and the dispatcher's sweep
scheduling drains for rows left waiting.

Real PostgreSQL and Redis (the drain flag lives in Redis), webhooks signed with the twilio SDK's own
RequestValidator over the fixtures of real payloads. Where a test must see rows waiting, the task runner's
enqueue is replaced by a recorder (the drain then runs when the test calls it, as the task would); the rest run
the real task, synchronously (TASK_RUNNER=immediate), and one runs a real Celery worker on the run's Redis.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
import redis
from django.conf import settings as django_settings
from django.db import connection, transaction
from django.test import Client
from django.test.utils import CaptureQueriesContext
from django.utils import timezone
from twilio.request_validator import RequestValidator

import contactcenter.actions.inbound as inbound_actions
from channels_adapters.sms.adapter import SID_MAX
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter import dispatch, events, inbound_hooks, taskrunner
from contactcenter.actions import inbound_queue
from contactcenter.models import Conversation, Event, InboundWebhook, Inbox, Message, MessageDirection, Team
from tests.twilio_fake import fixture
from tests.workers import celery_workers, wait_for

pytestmark = pytest.mark.django_db

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
FORM = "application/x-www-form-urlencoded"
PATIENTS = ["+8613800138000", "+8613900139000", "+8613700137000"]


def sid(n: int) -> str:
    """A MessageSid shaped as Twilio's: SM and 32 hex digits."""
    return f"SM{n:032x}"


def sms_params(
    message_sid: str, *, phone: str = PATIENTS[0], body: str = "Can I move my appointment?"
) -> dict[str, str]:
    """A real inbound payload (the fixture Twilio posted) for another message."""
    return {
        **fixture("inbound_plain_text.json"),
        "MessageSid": message_sid,
        "SmsMessageSid": message_sid,
        "SmsSid": message_sid,
        "From": phone,
        "Body": body,
    }


def sign(params: dict[str, str], token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(django_settings.PUBLIC_BASE_URL + INBOUND_PATH, params)


def post(client: Client, params: dict[str, str], signature: str | None = None) -> Any:
    """POST as Twilio does, signed over the public URL unless a signature is given."""
    return client.post(
        INBOUND_PATH,
        urlencode(params),
        content_type=FORM,
        HTTP_X_TWILIO_SIGNATURE=sign(params) if signature is None else signature,
    )


def stored() -> tuple[int, int]:
    """(waiting inbound webhooks, messages): the two tables a webhook may write."""
    return InboundWebhook.objects.count(), Message.objects.count()


@pytest.fixture
def sms_inbox(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Iterator[Inbox]:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    team = Team.objects.create(code="patient-service", name="Patient service", name_zh="客服中心")
    inbox = save_sms_inbox(
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
    # The drain flag lives in the run's Redis, which outlives a test: each test starts with none pending.
    inbound_queue._flag_clear(inbox.pk)
    yield inbox
    inbound_queue._flag_clear(inbox.pk)


@dataclass
class Enqueued:
    """What was handed to the task runner, instead of running it."""

    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def drains(self) -> list[int]:
        return [kwargs["inbox_id"] for name, kwargs in self.calls if name == inbound_queue.TASK]


@pytest.fixture
def held_drains(monkeypatch: pytest.MonkeyPatch) -> Enqueued:
    """The task runner records what it is given and runs nothing: webhooks' rows wait until the test drains."""
    enqueued = Enqueued()

    def record(name: str, **kwargs: Any) -> bool:
        enqueued.calls.append((name, kwargs))
        return True

    monkeypatch.setattr(taskrunner, "enqueue", record)
    return enqueued


def messages_in_order(inbox: Inbox) -> list[Message]:
    return list(Message.objects.filter(inbox=inbox, direction=MessageDirection.INBOUND).order_by("id"))


def event_writes(queries: list[dict[str, Any]]) -> int:
    """Statements that write event rows: one INSERT, or (10 rows and more) the ids drawn for one COPY."""
    return sum(
        1
        for q in queries
        if q["sql"].startswith('INSERT INTO "contactcenter_event"')
        or ("pg_get_serial_sequence" in q["sql"] and "contactcenter_event" in q["sql"])
    )


def advisory_locks(queries: list[dict[str, Any]]) -> int:
    return sum(1 for q in queries if "pg_advisory_xact_lock" in q["sql"])


# --- The webhook: answered once stored, stored once ----------------------------------------------------


def test_a_signed_webhook_is_drained_into_its_message_before_the_answer_with_the_immediate_runner(
    client: Client, sms_inbox: Inbox
) -> None:
    params = sms_params(sid(1))

    response = post(client, params)

    assert response.status_code == 200
    # The real task (contactcenter.tasks.process_inbound_webhooks) ran on the runner: nothing left waiting.
    assert stored() == (0, 1)
    message = Message.objects.get()
    assert (message.provider_message_id, message.body, message.inbox_id) == (
        params["MessageSid"],
        params["Body"],
        sms_inbox.pk,
    )
    assert message.provider_payload == params
    assert message.conversation.patient.identities.get(kind="phone").value == PATIENTS[0]


def test_duplicate_message_sid_is_stored_once_before_and_after_the_drain(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    params = sms_params(sid(2))

    assert post(client, params).status_code == 200
    assert stored() == (1, 0)
    # Twilio retries (its answer was late): the row still waiting takes it.
    assert post(client, params).status_code == 200
    assert stored() == (1, 0)

    inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)
    assert stored() == (0, 1)
    events_after_first = Event.objects.count()

    # And a retry arriving after the row became the message is answered 200 and stores nothing new.
    assert post(client, params).status_code == 200
    inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)

    assert stored() == (0, 1)
    assert Message.objects.get().provider_message_id == params["MessageSid"]
    assert Event.objects.count() == events_after_first


def test_a_forged_signature_is_refused_and_stores_no_row_and_no_message(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    params = sms_params(sid(3))
    forged = RequestValidator("someone-elses-token-fedcba987654").compute_signature(
        django_settings.PUBLIC_BASE_URL + INBOUND_PATH, params
    )

    response = post(client, params, signature=forged)

    assert response.status_code == 403
    assert stored() == (0, 0)
    assert held_drains.drains() == []


@pytest.mark.parametrize(
    ("changes", "field_named"),
    [
        ({"MessageSid": "SM1f0c\x00", "SmsMessageSid": "SM1f0c\x00", "SmsSid": "SM1f0c\x00"}, "MessageSid"),
        ({"From": "+86" + "1" * 100}, "From"),
        ({"From": "+8613800138000\x00"}, "From"),
        ({"From": "not-a-number"}, "From"),
        ({"MessageSid": "", "SmsMessageSid": "", "SmsSid": ""}, "MessageSid"),
    ],
    ids=["nul_in_sid", "over_long_from", "nul_in_from", "unparseable_from", "no_sid"],
)
def test_a_malformed_payload_is_a_400_naming_the_field_and_stores_nothing(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued, changes: dict[str, str], field_named: str
) -> None:
    params = {**sms_params(sid(4)), **changes}

    response = post(client, params)

    assert response.status_code == 400
    assert field_named in response.content.decode()
    assert stored() == (0, 0)
    assert held_drains.drains() == []


def test_a_nul_in_the_body_is_queued_cleaned_and_stored_with_a_replacement_character(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    # Text is kept, never refused (a patient's message is not lost for a stray byte); PostgreSQL's jsonb and
    # text refuse NUL, so the queued record must already be clean.
    params = sms_params(sid(5), body="Chest pain\x00 since last night")

    assert post(client, params).status_code == 200
    assert InboundWebhook.objects.get().record["body"] == "Chest pain\ufffd since last night"

    inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)

    assert Message.objects.get().body == "Chest pain\ufffd since last night"


def test_a_message_sid_as_long_as_the_message_column_allows_is_accepted_and_stored(
    sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    # The answer Twilio would get, not the test client's re-raised exception.
    client = Client(raise_request_exception=False)
    # The adapter accepts a MessageSid up to the message column's length (SID_MAX); the queue row must hold
    # every id the adapter accepts, or the webhook fails (a 500) on an id the message itself could store.
    long_sid = "SM" + "7" * (SID_MAX - 2)
    params = sms_params(long_sid)

    response = post(client, params)

    assert response.status_code == 200
    inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)
    assert Message.objects.get().provider_message_id == long_sid


# --- The drain: coalesced, in arrival order, events once per batch ------------------------------------


def test_many_webhooks_wait_for_one_coalesced_drain_which_stores_them_in_arrival_order(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    # Interleaved: three patients, four messages each, in this arrival order.
    arrivals = [(PATIENTS[i % 3], f"message {i} from patient {i % 3}", sid(100 + i)) for i in range(12)]
    for phone, body, message_sid in arrivals:
        assert post(client, sms_params(message_sid, phone=phone, body=body)).status_code == 200

    assert stored() == (len(arrivals), 0)
    # One drain pending for the inbox, however many webhooks arrived meanwhile.
    assert held_drains.drains() == [sms_inbox.pk]
    received_at = dict(InboundWebhook.objects.values_list("provider_message_id", "received_at"))
    first_event = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    with CaptureQueriesContext(connection) as queries:
        outcome = inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)

    assert (outcome.stored, outcome.failed, outcome.parked) == (len(arrivals), 0, 0)
    assert stored() == (0, len(arrivals))
    messages = messages_in_order(sms_inbox)
    assert [m.provider_message_id for m in messages] == [s for _p, _b, s in arrivals]
    assert [m.created_at for m in messages] == sorted(m.created_at for m in messages)
    assert [m.created_at for m in messages] == [received_at[s] for _p, _b, s in arrivals]
    for phone in PATIENTS:
        thread = Conversation.objects.get(inbox=sms_inbox, patient__identities__value=phone)
        assert list(thread.messages.order_by("id").values_list("body", flat=True)) == [
            b for p, b, _s in arrivals if p == phone
        ]
    # The batch's events: one order lock and one write for all of them, in the messages' order.
    assert advisory_locks(queries.captured_queries) == 1
    assert event_writes(queries.captured_queries) == 1
    added = Event.objects.filter(id__gt=first_event, type="message", op="add").order_by("id")
    assert [e.payload["message"]["id"] for e in added] == [m.pk for m in messages]
    assert Event.objects.filter(id__gt=first_event, type="conversation", op="add").count() == len(PATIENTS)

    # The drain cleared the flag as it started: the next webhook schedules a drain again.
    assert post(client, sms_params(sid(200))).status_code == 200
    assert held_drains.drains() == [sms_inbox.pk, sms_inbox.pk]


def test_a_row_that_fails_alone_is_retried_then_parked_and_retry_parked_brings_it_back(
    client: Client,
    sms_inbox: Inbox,
    held_drains: Enqueued,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    sids = [sid(300 + i) for i in range(5)]
    bad = sids[2]
    for i, message_sid in enumerate(sids):
        assert post(client, sms_params(message_sid, phone=PATIENTS[i % 2], body=f"reply {i}")).status_code == 200
    real_receive_new = inbound_actions.receive_new

    def breaks_on_one(record: Any, *, inbox: Inbox | None = None) -> Any:
        if record.provider_message_id == bad:
            raise ValueError("patient detail that must not reach the queue's row")
        return real_receive_new(record, inbox=inbox)

    # Both paths: the batch calls receive_new, the one-by-one fallback receive_inbound (which calls it).
    monkeypatch.setattr(inbound_queue, "receive_new", breaks_on_one)
    monkeypatch.setattr(inbound_actions, "receive_new", breaks_on_one)

    outcome = inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)

    assert (outcome.stored, outcome.failed, outcome.parked) == (4, 1, 0)
    assert [m.provider_message_id for m in messages_in_order(sms_inbox)] == [s for s in sids if s != bad]
    row = InboundWebhook.objects.get()
    assert (row.provider_message_id, row.attempts, row.last_error, row.parked_at) == (bad, 1, "ValueError", None)

    for attempt in range(2, inbound_queue.MAX_ATTEMPTS):
        inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)
        row.refresh_from_db()
        assert (row.attempts, row.parked_at) == (attempt, None)
    last = inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)
    row.refresh_from_db()
    assert (last.failed, last.parked) == (1, 1)
    assert row.attempts == inbound_queue.MAX_ATTEMPTS
    assert row.parked_at is not None
    assert inbound_queue.queue_state()["waiting"] == 0
    assert inbound_queue.queue_state()["parked"] == 1

    # Parked, it holds nothing up: a later message goes through the batch, untried.
    assert post(client, sms_params(sid(399), body="later")).status_code == 200
    later = inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)
    assert (later.stored, later.failed) == (1, 0)
    row.refresh_from_db()
    assert row.attempts == inbound_queue.MAX_ATTEMPTS

    # The cause is fixed; an admin puts the row back, which schedules a drain once committed.
    monkeypatch.setattr(inbound_queue, "receive_new", real_receive_new)
    monkeypatch.setattr(inbound_actions, "receive_new", real_receive_new)
    drains_before = len(held_drains.drains())
    with django_capture_on_commit_callbacks(execute=True):
        assert inbound_queue.retry_parked(inbox_id=sms_inbox.pk) == 1
    assert held_drains.drains()[drains_before:] == [sms_inbox.pk]
    assert inbound_queue.queue_state()["parked"] == 0

    again = inbound_queue.drain_inbound(inbox_id=sms_inbox.pk)

    assert (again.stored, again.failed) == (1, 0)
    assert Message.objects.filter(provider_message_id=bad).count() == 1
    assert inbound_queue.queue_state() == {"waiting": 0, "oldest_seconds": 0.0, "parked": 0}


# --- events.deferred(): rolled-back savepoints drop their events ----------------------------------------


def test_an_event_recorded_in_a_rolled_back_savepoint_is_not_written_and_the_others_are_once() -> None:
    class HookFailed(Exception):
        pass

    before = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0
    audience = events.Audience(user_id=None)
    with CaptureQueriesContext(connection) as queries, transaction.atomic(), events.deferred():
        kept_first = events.record(events.PresenceChanged(user_id=1, availability="online"), audience)
        try:
            with transaction.atomic():
                dropped = events.record(events.PresenceChanged(user_id=2, availability="busy"), audience)
                raise HookFailed
        except HookFailed:
            pass
        kept_last = events.record(events.PresenceChanged(user_id=3, availability="away"), audience)
        # Deferred: nothing written until the block ends.
        assert kept_first.pk is None

    written = list(Event.objects.filter(id__gt=before).order_by("id"))
    assert [e.payload["user_id"] for e in written] == [1, 3]
    assert [e.pk for e in written] == [kept_first.pk, kept_last.pk]
    assert dropped.pk is None
    assert advisory_locks(queries.captured_queries) == 1
    assert event_writes(queries.captured_queries) == 1


# --- The sweep ---------------------------------------------------------------------------------------------


def test_the_sweep_schedules_a_drain_only_for_inboxes_with_old_unparked_rows(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued
) -> None:
    assert "inbound_webhooks" in dispatch.registered_steps()
    other_team = Team.objects.create(code="orthopedics", name="Orthopedics", name_zh="骨科")
    fresh_inbox = Inbox.objects.create(name="Orthopedics SMS", channel_type="simulator", team=other_team)
    parked_inbox = Inbox.objects.create(name="Oncology SMS", channel_type="simulator", team=other_team)
    long_ago = dt.timedelta(seconds=inbound_queue.SWEEP_AFTER_SECONDS + 5)
    now = timezone.now()

    def waiting_row(inbox: Inbox, message_sid: str, received_at: dt.datetime, **extra: Any) -> None:
        InboundWebhook.objects.create(
            inbox=inbox,
            provider_message_id=message_sid,
            record={"sender": {"kind": "phone", "value": PATIENTS[0]}, "body": "hello"},
            received_at=received_at,
            **extra,
        )

    # A webhook whose task was lost: its row left waiting past the threshold.
    assert post(client, sms_params(sid(500))).status_code == 200
    InboundWebhook.objects.filter(inbox=sms_inbox).update(received_at=now - long_ago)
    waiting_row(fresh_inbox, sid(501), now)
    waiting_row(parked_inbox, sid(502), now - long_ago, parked_at=now, attempts=inbound_queue.MAX_ATTEMPTS)
    held_drains.calls.clear()

    # While the webhook's drain is still pending (its flag is up), the sweep does not double it...
    inbound_queue.schedule_waiting_drains()
    assert held_drains.drains() == []
    # ...and once the lost task's flag has expired, it schedules one.
    inbound_queue._flag_clear(sms_inbox.pk)
    assert inbound_queue.schedule_waiting_drains() == 1
    assert held_drains.drains() == [sms_inbox.pk]
    state = inbound_queue.queue_state()
    assert (state["waiting"], state["parked"]) == (2, 1)
    assert state["oldest_seconds"] >= long_ago.total_seconds()


# --- A real Celery worker ------------------------------------------------------------------------------

WORKER_BOOT = (
    "import django\ndjango.setup()\n"
    "from config.celery import app\n"
    "app.worker_main(['worker', '--pool', 'solo', '--loglevel', 'WARNING',"
    " '--without-gossip', '--without-mingle', '--without-heartbeat'])\n"
)


@pytest.mark.django_db(transaction=True)
def test_a_real_celery_worker_drains_webhooks_answered_while_no_worker_was_running(
    client: Client, sms_inbox: Inbox, settings: Any
) -> None:
    settings.TASK_RUNNER = "celery"
    sids = [sid(600 + i) for i in range(5)]
    with celery_workers(boot=WORKER_BOOT, token=TOKEN, log_prefix="inbound-drain-worker-") as start_worker:
        for i, message_sid in enumerate(sids):
            response = post(client, sms_params(message_sid, phone=PATIENTS[i % 2], body=f"reply {i}"))
            assert response.status_code == 200

        # Answered with no worker running: the rows are what keeps the messages, and one task waits for them.
        assert stored() == (len(sids), 0)
        assert redis.Redis.from_url(django_settings.REDIS_URL).llen("celery") == 1

        start_worker()

        assert wait_for(lambda: stored() == (0, len(sids)), timeout=120), stored()
    assert [m.provider_message_id for m in messages_in_order(sms_inbox)] == sids


# --- Hooks: the interest check spares the savepoint --------------------------------------------------


def test_a_hook_not_interested_is_not_called_and_costs_no_savepoint(
    sms_inbox: Inbox, monkeypatch: pytest.MonkeyPatch, inbound: Callable[..., Any]
) -> None:
    stored_message = inbound(sms_inbox, PATIENTS[0], "Hello", provider_id=sid(700))
    monkeypatch.setattr(inbound_hooks, "_hooks", {})
    asked: list[int] = []
    called: list[int] = []

    def interested_if(answer: bool) -> Callable[..., bool]:
        def interested(*, message: Message, conversation: Conversation, patient: Any, keyword: str | None) -> bool:
            asked.append(message.pk)
            return answer

        return interested

    def hook(*, message: Message, conversation: Conversation, patient: Any, keyword: str | None) -> None:
        called.append(message.pk)

    def run_hooks() -> list[str]:
        with CaptureQueriesContext(connection) as queries, transaction.atomic():
            inbound_hooks.run_inbound_hooks(
                message=stored_message.message,
                conversation=stored_message.conversation,
                patient=stored_message.patient,
                keyword=None,
            )
        return [q["sql"] for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT")]

    # The outer atomic is itself a savepoint inside the test's transaction: counted as the baseline.
    baseline = run_hooks()

    inbound_hooks.register_inbound_hook("test_uninterested", hook, interested=interested_if(False))
    assert len(run_hooks()) == len(baseline)
    assert (asked, called) == ([stored_message.message.pk], [])

    inbound_hooks.register_inbound_hook("test_uninterested", hook, interested=interested_if(True))
    assert len(run_hooks()) == len(baseline) + 1
    assert called == [stored_message.message.pk]


def test_a_drained_message_runs_no_uninterested_hook_and_no_savepoint_for_it(
    client: Client, sms_inbox: Inbox, held_drains: Enqueued, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(inbound_hooks, "_hooks", {})
    called: list[int] = []

    def hook(*, message: Message, conversation: Conversation, patient: Any, keyword: str | None) -> None:
        called.append(message.pk)

    def savepoints_draining(message_sid: str) -> int:
        assert post(client, sms_params(message_sid, body=f"about {message_sid}")).status_code == 200
        with CaptureQueriesContext(connection) as queries:
            assert inbound_queue.drain_inbound(inbox_id=sms_inbox.pk).stored == 1
        return sum(1 for q in queries.captured_queries if q["sql"].startswith("SAVEPOINT"))

    # The same patient each time (a live conversation), so only the hooks differ between the drains.
    savepoints_draining(sid(800))
    without_hooks = savepoints_draining(sid(801))
    inbound_hooks.register_inbound_hook("test_uninterested", hook, interested=lambda **_: False)
    with_uninterested = savepoints_draining(sid(802))
    inbound_hooks.register_inbound_hook("test_uninterested", hook)
    with_interested = savepoints_draining(sid(803))

    assert with_uninterested == without_hooks
    assert with_interested == without_hooks + 1
    assert called == [Message.objects.get(provider_message_id=sid(803)).pk]

"""The campaign chunk path below the engine: many messages written and handed to Twilio at once, and the
sweep that settles sends whose answer was lost.

queue_outbound_batch and deliver_batch keep send_outbound's and deliver_message's rules (bodies checked,
marketing refused after an opt-out, statuses forward only, a message handed over once) in a handful of
statements; reconcile_unconfirmed asks Twilio (the real SDK, its HTTP client the recording fake) about
messages left "sending" with no SID. PostgreSQL and Redis are real.
"""

from __future__ import annotations

import datetime as dt
import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import requests
from django.utils import timezone

import channels_adapters.twilio.transport
from campaigns.models import CampaignRecipient, RecipientState
from contactcenter.actions.consent import record_consent
from contactcenter.actions.conversations import open_outbound_conversations
from contactcenter.actions.delivery import deliver_batch, reconcile_unconfirmed
from contactcenter.actions.outbound import Draft, queue_outbound_batch
from contactcenter.bulk_update import update_rows
from contactcenter.models import (
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Inbox,
    Message,
    MessageStatus,
    Patient,
    SenderKind,
)
from tests.campaigns.test_sending import enrol, make_campaign, make_patient, phone_of, sent_to
from tests.conftest import EventCapture
from tests.twilio_fake import RecordingTwilioHttpClient


def queue(inbox: Inbox, patients: list[Patient], body: str = "Your annual check-up is due.") -> list[Message]:
    return queue_batch(inbox, patients, body)[0]


def queue_batch(
    inbox: Inbox, patients: list[Patient], body: str = "Your annual check-up is due."
) -> tuple[list[Message], frozenset[int]]:
    from django.db import transaction

    with transaction.atomic():
        opened = open_outbound_conversations(inbox=inbox, patient_ids=[p.pk for p in patients])
        batch = queue_outbound_batch(
            drafts=[Draft(key=p.pk, conversation_id=opened.by_patient[p.pk], body=body) for p in patients],
            sender_kind=SenderKind.CAMPAIGN,
            purpose=ConsentPurpose.MARKETING,
            new_conversations=opened.added,
        )
    return [batch.messages[p.pk] for p in patients], batch.unannounced


# --- update_rows -------------------------------------------------------------------------------------------


def test_update_rows_sets_each_rows_own_values_in_one_statement(
    sms_inbox: Inbox, django_assert_num_queries: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    a, b, c = enrol(campaign, [make_patient(), make_patient(), make_patient()])
    later = dt.datetime(2026, 11, 23, 9, 30, tzinfo=dt.UTC)

    with django_assert_num_queries(1):
        updated = update_rows(
            CampaignRecipient,
            ["state", "deferred_until", "error_code"],
            {a.pk: (RecipientState.DEFERRED, later, ""), b.pk: (RecipientState.SKIPPED_INVALID, None, "no_phone")},
        )

    assert updated == 2
    rows = {r.pk: r for r in CampaignRecipient.objects.filter(campaign=campaign)}
    assert (rows[a.pk].state, rows[a.pk].deferred_until, rows[a.pk].error_code) == (RecipientState.DEFERRED, later, "")
    assert (rows[b.pk].state, rows[b.pk].deferred_until, rows[b.pk].error_code) == (
        RecipientState.SKIPPED_INVALID,
        None,
        "no_phone",
    )
    assert rows[c.pk].state == RecipientState.PENDING
    with pytest.raises(ValueError, match="not a column"):
        update_rows(Patient, ["identities"], {a.patient_id: (None,)})


# --- queue_outbound_batch ----------------------------------------------------------------------------------


def test_batch_writes_queued_messages_and_announces_a_new_thread_once(
    sms_inbox: Inbox, capture_events: Callable[[], EventCapture]
) -> None:
    known, fresh = make_patient(), make_patient()
    resolved = Conversation.objects.create(
        inbox=sms_inbox, patient=fresh, team=sms_inbox.team, status=ConversationStatus.RESOLVED
    )
    live = Conversation.objects.create(inbox=sms_inbox, patient=known, team=sms_inbox.team)
    events = capture_events()

    messages = queue(sms_inbox, [known, fresh])

    assert [m.status for m in messages] == [MessageStatus.QUEUED] * 2
    assert messages[0].conversation_id == live.pk
    new = Conversation.objects.get(pk=messages[1].conversation_id)
    assert new.pk != resolved.pk and new.status == ConversationStatus.PENDING
    assert new.last_message_preview == "Your annual check-up is due."
    by_conversation: dict[int | None, list[str]] = {}
    for event in events.all():
        by_conversation.setdefault(event.conversation_id, []).append(f"{event.type}.{event.op}")
    # The known thread: its message and its new preview. The new thread: once, already carrying its message.
    assert by_conversation == {live.pk: ["message.add", "conversation.update"], new.pk: ["conversation.add"]}
    added = next(e for e in events.all() if e.type == "conversation")
    assert added.payload["conversation"]["last_message_preview"] == "Your annual check-up is due."


def test_batch_refuses_empty_and_overlong_bodies_and_anyone_who_opted_out(sms_inbox: Inbox) -> None:
    from django.db import transaction

    ok, empty, long, out = (make_patient() for _ in range(4))
    record_consent(
        patient=out, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD
    )
    # Never asked: the same registry answer as send_outbound's (no consent under the default policy).
    unknown = make_patient(opted_in=False)
    bodies = {ok.pk: "Hello", empty.pk: "   ", long.pk: "x" * 4001, out.pk: "Hello", unknown.pk: "Hello"}
    with transaction.atomic():
        opened = open_outbound_conversations(inbox=sms_inbox, patient_ids=list(bodies))
        batch = queue_outbound_batch(
            drafts=[Draft(key=pid, conversation_id=opened.by_patient[pid], body=body) for pid, body in bodies.items()],
            sender_kind=SenderKind.CAMPAIGN,
            purpose=ConsentPurpose.MARKETING,
        )

    assert set(batch.messages) == {ok.pk}
    assert batch.refused == {empty.pk: "empty", long.pk: "too_long", out.pk: "opted_out", unknown.pk: "no_consent"}
    assert Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).count() == 1
    with pytest.raises(ValueError, match="agents"), transaction.atomic():
        queue_outbound_batch(drafts=[], sender_kind=SenderKind.AGENT, purpose=ConsentPurpose.SERVICE)


# --- deliver_batch -----------------------------------------------------------------------------------------


def test_delivery_hands_each_still_queued_message_to_twilio_once_and_saves_its_sid(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, capture_events: Callable[[], EventCapture]
) -> None:
    patients = [make_patient() for _ in range(5)]
    # The first already talks with us: her thread is known to the inbox, the others' are new.
    Conversation.objects.create(inbox=sms_inbox, patient=patients[0], team=sms_inbox.team)
    messages, unannounced = queue_batch(sms_inbox, patients)
    assert unannounced == {m.pk for m in messages[1:]}
    # Another delivery (a redelivered task) already has the second one.
    Message.objects.filter(pk=messages[1].pk).update(status=MessageStatus.SENDING)
    events = capture_events()

    outcomes = deliver_batch(messages=messages, block=2, unannounced=unannounced)

    assert sorted(sent_to(twilio_api)) == sorted(phone_of(p) for i, p in enumerate(patients) if i != 1)
    rows = {m.pk: m for m in Message.objects.filter(pk__in=[m.pk for m in messages])}
    assert rows[messages[1].pk].provider_message_id is None
    sids = [rows[m.pk].provider_message_id for i, m in enumerate(messages) if i != 1]
    assert all(sids) and len(set(sids)) == 4
    assert {o.message_id for o in outcomes} == {m.pk for i, m in enumerate(messages) if i != 1}
    assert all(rows[m.pk].status == MessageStatus.SENDING for m in messages)
    # Only the known thread's message is announced as sending: nobody was told of the others' messages
    # (their new thread carried them), and whoever opens such a thread reads the status with it.
    assert [(e.kinds, e.message) for e in [_Seen(x) for x in events.all()]] == [
        ("message.update_status", messages[0].pk)
    ]
    again = deliver_batch(messages=messages, block=2)
    assert again == [] and len(twilio_api.requests) == 4


def test_a_transient_refusal_goes_back_to_queued_for_the_retrying_task(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, settings: Any
) -> None:
    settings.TASK_RUNNER = "immediate"
    patient = make_patient()
    twilio_api.script = [requests.exceptions.ConnectionError("refused")]

    outcomes = deliver_batch(messages=queue(sms_inbox, [patient]))

    # The batch put it back to queued; the delivery task it enqueued sent it on its first try.
    assert [o.status for o in outcomes] == [MessageStatus.QUEUED]
    assert outcomes[0].retry
    message = Message.objects.get(sender_kind=SenderKind.CAMPAIGN)
    assert message.status == MessageStatus.SENDING and message.provider_message_id
    assert sent_to(twilio_api) == [phone_of(patient)] * 2


class _Seen:
    def __init__(self, event: Any) -> None:
        self.kinds = f"{event.type}.{event.op}"
        self.message = event.payload.get("message_id")


class SlowTwilio(RecordingTwilioHttpClient):
    """Twilio's latency, and how many requests were in flight at once."""

    def __post_init__(self) -> None:
        super().__post_init__()
        self.in_flight = 0
        self.most_in_flight = 0
        self.counter = threading.Lock()

    def request(self, *args: Any, **kwargs: Any) -> Any:
        with self.counter:
            self.in_flight += 1
            self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            time.sleep(0.05)
            return super().request(*args, **kwargs)
        finally:
            with self.counter:
                self.in_flight -= 1


def test_requests_of_a_block_are_in_flight_together(
    sms_inbox: Inbox, monkeypatch: pytest.MonkeyPatch, settings: Any
) -> None:
    settings.DELIVERY_CONCURRENCY = 8
    fake = SlowTwilio()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    patients = [make_patient() for _ in range(12)]

    deliver_batch(messages=queue(sms_inbox, patients), block=6)

    assert sorted(sent_to(fake)) == sorted(phone_of(p) for p in patients)
    # Six claimed together go out together; the next block waits for their answers.
    assert fake.most_in_flight == 6
    assert Message.objects.filter(sender_kind=SenderKind.CAMPAIGN, provider_message_id__isnull=True).count() == 0


# --- reconcile_unconfirmed ---------------------------------------------------------------------------------


def unconfirmed(inbox: Inbox, patients: list[Patient], at: dt.datetime) -> list[Message]:
    """Claimed and handed over (or not) by a worker that died before saving the answers."""
    messages = queue(inbox, patients)
    Message.objects.filter(pk__in=[m.pk for m in messages]).update(status=MessageStatus.SENDING, status_changed_at=at)
    return messages


def test_a_send_twilio_has_gets_its_sid_and_one_it_never_got_is_delivered_again(
    sms_inbox: Inbox,
    twilio_api: RecordingTwilioHttpClient,
    settings: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    settings.TASK_RUNNER = "immediate"
    claimed_at = timezone.now() - dt.timedelta(minutes=settings.DELIVERY_UNCONFIRMED_MINUTES + 1)
    reached, lost = make_patient(), make_patient()
    campaign = make_campaign(sms_inbox)
    recipients = enrol(campaign, [reached, lost], state=RecipientState.SENT)
    messages = unconfirmed(sms_inbox, [reached, lost], claimed_at)
    for recipient, message in zip(recipients, messages, strict=True):
        CampaignRecipient.objects.filter(pk=recipient.pk).update(message=message)
    # Twilio accepted the first (and has delivered it since); the worker died before its SID was saved.
    twilio_api.accepted.append(
        {
            "sid": "SM" + "a" * 32,
            "to": phone_of(reached),
            "from": "+8610123456780",
            "body": messages[0].body,
            "status": "delivered",
            "date_created": (claimed_at + dt.timedelta(seconds=1)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile_unconfirmed()

    assert (result.found, result.requeued, result.unknown) == (1, 1, 0)
    first, second = (Message.objects.get(pk=m.pk) for m in messages)
    assert (first.provider_message_id, first.status) == ("SM" + "a" * 32, MessageStatus.DELIVERED)
    assert CampaignRecipient.objects.get(message=first).state == RecipientState.DELIVERED
    # Looked up (two GETs), then only the lost one was sent, once.
    posts = [r for r in twilio_api.requests if r.method == "POST"]
    assert [r.data["To"] for r in posts] == [phone_of(lost)]
    assert second.status == MessageStatus.SENDING and second.provider_message_id
    assert reconcile_unconfirmed() == type(result)()


def test_the_same_text_sent_before_the_claim_is_not_taken_for_it(
    sms_inbox: Inbox,
    twilio_api: RecordingTwilioHttpClient,
    settings: Any,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    settings.TASK_RUNNER = "immediate"
    claimed_at = timezone.now() - dt.timedelta(minutes=settings.DELIVERY_UNCONFIRMED_MINUTES + 1)
    patient = make_patient()
    (message,) = unconfirmed(sms_inbox, [patient], claimed_at)
    # Last month's campaign had the same words.
    twilio_api.accepted.append(
        {
            "sid": "SM" + "b" * 32,
            "to": phone_of(patient),
            "from": "+8610123456780",
            "body": message.body,
            "status": "delivered",
            "date_created": (claimed_at - dt.timedelta(days=30)).strftime("%a, %d %b %Y %H:%M:%S +0000"),
        }
    )

    with django_capture_on_commit_callbacks(execute=True):
        result = reconcile_unconfirmed()

    assert (result.found, result.requeued) == (0, 1)
    message.refresh_from_db()
    assert message.provider_message_id not in (None, "SM" + "b" * 32)


def test_young_sends_and_sends_twilio_cannot_be_asked_about_are_left_for_later(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, settings: Any
) -> None:
    young = unconfirmed(sms_inbox, [make_patient()], timezone.now())
    old = unconfirmed(
        sms_inbox,
        [make_patient()],
        timezone.now() - dt.timedelta(minutes=settings.DELIVERY_UNCONFIRMED_MINUTES + 1),
    )
    twilio_api.script = [requests.exceptions.ConnectionError("down")]

    result = reconcile_unconfirmed()

    assert (result.found, result.requeued, result.unknown) == (0, 0, 1)
    assert [r.method for r in twilio_api.requests] == ["GET"]
    for message in young + old:
        message.refresh_from_db()
        assert (message.status, message.provider_message_id) == (MessageStatus.SENDING, None)

"""A drain batch behaves exactly like the one-message path, for many messages of many patients at once.

contactcenter.actions.inbound_queue takes up to BATCH waiting webhooks of one inbox in one transaction and reads
once for all of them (contactcenter.actions.inbound.BatchReads: the senders' patients, their live conversations
locked with their assignees and labels, each inbound hook's batch answer), then stores the messages one after the
other through receive_new. Whatever it reads once must stay true while the batch writes: a thread woken by the
batch's first message is open for its second, a label a hook adds is in the next payload, an agent filled by the
batch is not handed a third thread, a survey that moved on answers the next question.

Each test posts signed Twilio webhooks while the task runner only records the drains (the rows wait), then drains
them itself in ONE batch: the fallback that takes rows one at a time is made to fail the test, and the batch's
reads are counted. Real PostgreSQL; replies leave through the real twilio SDK to the recording fake. The last test
runs one scene twice, once as a batch and once through the one-message path (receive_inbound per row, the queue's
own fallback), and compares what agents were told and what was stored.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.cache import cache
from django.test import Client
from django.utils import timezone
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
import contactcenter.actions.inbound as inbound_actions
from callbacks.actions.discharges import record_discharge
from callbacks.models import CallbackTask, QuestionKind, SessionStatus, Survey, SurveyAnswer, SurveyQuestion, TaskKind
from callbacks.models import TaskStatus as CallbackTaskStatus
from callbacks.surveys import flow
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState, Segment
from campaigns.replies import campaign_label
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter import inbound_hooks, taskrunner
from contactcenter.actions import consent as consent_actions
from contactcenter.actions import inbound_queue
from contactcenter.models import (
    Availability,
    Consent,
    ConsentChange,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Event,
    IdentityKind,
    InboundWebhook,
    Inbox,
    Label,
    Message,
    MessageDirection,
    Patient,
    PatientIdentity,
    Role,
    SenderKind,
    Team,
)
from tests.conftest import make_staff
from tests.followup.conftest import discharge_record
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

pytestmark = pytest.mark.django_db

TOKEN = "batch-test-auth-token-0123456789ab"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
TWIN_NUMBER = "+8610123456781"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
FORM = "application/x-www-form-urlencoded"
CAMPAIGN = "Spring check-up"
# What receive_new adds to every conversation.update of an inbound message.
COUNTERS = ["last_message_at", "unread_count"]

_phones = itertools.count(1)
_sids = itertools.count(1)


def new_phone() -> str:
    """A Chinese mobile number no other test uses."""
    return f"+86139{next(_phones):08d}"


def next_sid() -> str:
    """A MessageSid shaped as Twilio's, and not the fake's outbound pattern."""
    return f"SMba7c{next(_sids):028x}"


# --- Webhooks in, one batch out ------------------------------------------------------------------------


@dataclass(frozen=True)
class Arrival:
    phone: str
    body: str
    sid: str = field(default_factory=next_sid)


def post(client: Client, arrival: Arrival, *, to: str = NUMBER) -> None:
    """POST as Twilio does: the real payload's fields, signed with the SDK's RequestValidator over the public URL."""
    params = {
        **fixture("inbound_plain_text.json"),
        "MessageSid": arrival.sid,
        "SmsMessageSid": arrival.sid,
        "SmsSid": arrival.sid,
        "From": arrival.phone,
        "To": to,
        "Body": arrival.body,
    }
    signature = RequestValidator(TOKEN).compute_signature(django_settings.PUBLIC_BASE_URL + INBOUND_PATH, params)
    response = client.post(INBOUND_PATH, urlencode(params), content_type=FORM, HTTP_X_TWILIO_SIGNATURE=signature)
    assert response.status_code == 200, response.content


def post_all(client: Client, arrivals: list[Arrival], *, to: str = NUMBER) -> None:
    for arrival in arrivals:
        post(client, arrival, to=to)
    # The runner only recorded the drain: every row waits for the test's drain.
    assert InboundWebhook.objects.filter(provider_message_id__in=[a.sid for a in arrivals]).count() == len(arrivals)


@dataclass
class BatchSpy:
    """The sizes BatchReads.read was called with: one entry per batch transaction."""

    sizes: list[int] = field(default_factory=list)


@pytest.fixture
def one_batch(monkeypatch: pytest.MonkeyPatch) -> Iterator[BatchSpy]:
    """Drains run when the test says so, as one batch: the one-at-a-time fallback fails the test (it would mean
    the batch raised and the rows went through the one-message path, which proves nothing about the batch)."""
    monkeypatch.setattr(taskrunner, "enqueue", lambda name, **kwargs: True)
    spy = BatchSpy()
    real_read = inbound_actions.BatchReads.read.__func__  # type: ignore[attr-defined]

    def read(cls: type[inbound_actions.BatchReads], inbox: Inbox, records: list[Any]) -> Any:
        spy.sizes.append(len(records))
        return real_read(cls, inbox, records)

    def no_fallback(inbox_id: int, outcome: inbound_queue.Drained) -> int:
        raise AssertionError("the batch failed: its rows were about to be taken one at a time")

    monkeypatch.setattr(inbound_actions.BatchReads, "read", classmethod(read))
    monkeypatch.setattr(inbound_queue, "_drain_one_by_one", no_fallback)
    yield spy


def drain_as_one_batch(inbox: Inbox, spy: BatchSpy, count: int) -> None:
    outcome = inbound_queue.drain_inbound(inbox_id=inbox.pk)
    assert (outcome.stored, outcome.failed, outcome.parked) == (count, 0, 0)
    assert spy.sizes == [count]
    assert not InboundWebhook.objects.filter(inbox=inbox).exists()


def make_sms_inbox(team: Team, number: str, *, auto_assign: bool = False) -> Inbox:
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name=f"SMS {number}",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[number],
            messaging_service_sid="",
            auto_assign=auto_assign,
        ),
    )
    # The drain flag lives in the run's Redis, which outlives a test.
    cache.delete(inbound_queue._flag(inbox.pk))
    return inbox


@pytest.fixture
def cardiology(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Team:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    # record_discharge files "cardiology" discharges under this team, and surveys go out from its SMS inbox.
    return Team.objects.create(code="cardiology", name="Cardiology", name_zh="心内科")


@pytest.fixture
def sms_inbox(cardiology: Team) -> Iterator[Inbox]:
    inbox = make_sms_inbox(cardiology, NUMBER)
    yield inbox
    cache.delete(inbound_queue._flag(inbox.pk))


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch) -> RecordingTwilioHttpClient:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


def texted_to(twilio_api: RecordingTwilioHttpClient, phone: str) -> list[str]:
    return [r.data["Body"] for r in twilio_api.requests if r.data.get("To") == phone]


# --- Patients, conversations, campaigns as they were before the batch --------------------------------------


def known_patient(phone: str, *, language: str = "") -> Patient:
    patient = Patient.objects.create(name=f"Patient {phone[-4:]}", language=language)
    PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=phone)
    return patient


def thread(inbox: Inbox, patient: Patient, *, status: str = ConversationStatus.OPEN, **fields: Any) -> Conversation:
    return Conversation.objects.create(inbox=inbox, patient=patient, team_id=inbox.team_id, status=status, **fields)


def labelled(conversation: Conversation, *names: str) -> Conversation:
    conversation.labels.add(*[Label.objects.get_or_create(name=name)[0] for name in names])
    return conversation


def campaign(inbox: Inbox, *, status: str = CampaignStatus.COMPLETED, name: str = CAMPAIGN) -> Campaign:
    return Campaign.objects.create(
        name=name,
        segment=Segment.objects.create(name=f"Segment of {name}"),
        inbox=inbox,
        body="Hello {{ first_name }}, time for your yearly check-up.",
        status=status,
        conversion_window_days=30,
        launched_at=timezone.now() - dt.timedelta(days=1),
    )


def sent_to(campaign: Campaign, patient: Patient) -> CampaignRecipient:
    """A recipient the campaign reached yesterday."""
    sent_at = timezone.now() - dt.timedelta(days=1)
    return CampaignRecipient.objects.create(
        campaign=campaign,
        patient=patient,
        phone=patient.identities.get(kind=IdentityKind.PHONE).value,
        state=RecipientState.DELIVERED,
        sent_at=sent_at,
        delivered_at=sent_at + dt.timedelta(minutes=1),
    )


# --- What agents were told ------------------------------------------------------------------------------


class Events:
    """The events written after this point, as an agent's screen reads them."""

    def __init__(self) -> None:
        self.start = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def all(self) -> list[Event]:
        return list(Event.objects.filter(id__gt=self.start).order_by("id"))

    def of(self, conversation: Conversation | int) -> list[dict[str, Any]]:
        """The conversation's own events and its messages' events, in order, reduced to what a screen shows."""
        conversation_id = conversation if isinstance(conversation, int) else conversation.pk
        seen = []
        for event in self.all():
            if event.type == "conversation" and event.payload["conversation"]["id"] == conversation_id:
                seen.append(conversation_view(event))
            elif event.type == "message" and event.op == "add":
                message = event.payload["message"]
                if message["conversation_id"] == conversation_id:
                    seen.append({"event": "message.add", "direction": message["direction"], "body": message["body"]})
        return seen


def conversation_view(event: Event) -> dict[str, Any]:
    shown = event.payload["conversation"]
    view = {
        "event": f"conversation.{event.op}",
        "status": shown["status"],
        "unread_count": shown["unread_count"],
        "last_message_preview": shown["last_message_preview"],
        "labels": sorted(label["name"] for label in shown["labels"]),
        "assignee": shown["assignee"]["id"] if shown["assignee"] else None,
    }
    if event.op == "update":
        view["changed"] = event.payload["changed"]
    return view


def the_thread(inbox: Inbox, phone: str, **filters: Any) -> Conversation:
    return Conversation.objects.get(inbox=inbox, patient__identities__value=phone, **filters)


def inbound_bodies(conversation: Conversation) -> list[str]:
    return list(
        conversation.messages.filter(direction=MessageDirection.INBOUND).order_by("id").values_list("body", flat=True)
    )


# --- 1. Many patients, interleaved ----------------------------------------------------------------------


def test_interleaved_messages_of_known_and_new_patients_are_stored_once_in_order_with_the_one_message_events(
    client: Client, sms_inbox: Inbox, one_batch: BatchSpy
) -> None:
    known_with_label, known_without_thread, campaign_reached = new_phone(), new_phone(), new_phone()
    new_senders = [new_phone(), new_phone()]
    vip = known_patient(known_with_label)
    labelled(thread(sms_inbox, vip), "VIP")
    known_patient(known_without_thread)
    reached = known_patient(campaign_reached)
    # The campaign patient's existing thread carries a label, and the campaign reply adds its own in the batch.
    labelled(thread(sms_inbox, reached), "Interpreter needed")
    spring = campaign(sms_inbox)
    # One campaign patient with no thread yet: the reply labels a conversation the batch itself opened.
    reached_new = new_phone()
    sent_to(spring, known_patient(reached_new))
    sent_to(spring, reached)
    senders = [known_with_label, known_without_thread, campaign_reached, reached_new, *new_senders]
    arrivals = [
        Arrival(phone, f"message {round_ + 1} from sender {i}")
        for round_ in range(3)
        for i, phone in enumerate(senders)
        # Not in lockstep: the new senders start late, the campaign patient with a thread writes twice in a row.
        if not (round_ == 0 and phone == new_senders[1])
    ] + [Arrival(new_senders[1], "message 4 from sender 5"), Arrival(campaign_reached, "message 4 from sender 2")]
    post_all(client, arrivals)
    events = Events()

    drain_as_one_batch(sms_inbox, one_batch, len(arrivals))

    # Every message stored once, in arrival order, each in its sender's one thread.
    stored = list(Message.objects.filter(inbox=sms_inbox, direction=MessageDirection.INBOUND).order_by("id"))
    assert [m.provider_message_id for m in stored] == [a.sid for a in arrivals]
    assert Conversation.objects.filter(inbox=sms_inbox).count() == len(senders)
    for phone in senders:
        assert inbound_bodies(the_thread(sms_inbox, phone)) == [a.body for a in arrivals if a.phone == phone]

    # What each thread's events said, message by message, as the one-message path tells it.
    had_thread = {known_with_label: ["VIP"], campaign_reached: ["Interpreter needed"]}
    label = campaign_label(CAMPAIGN)
    for phone in senders:
        conversation = the_thread(sms_inbox, phone)
        labels = list(had_thread.get(phone, []))
        expected: list[dict[str, Any]] = []
        mine = [a for a in arrivals if a.phone == phone]
        for n, arrival in enumerate(mine, start=1):
            shown = {
                "status": ConversationStatus.OPEN,
                "unread_count": n,
                "last_message_preview": arrival.body,
                "labels": sorted(labels),
                "assignee": None,
            }
            if n == 1 and phone not in had_thread:
                expected.append({"event": "conversation.add", **shown})
            else:
                expected.append({"event": "conversation.update", **shown, "changed": COUNTERS})
            expected.append({"event": "message.add", "direction": MessageDirection.INBOUND, "body": arrival.body})
            if n == 1 and phone in (campaign_reached, reached_new):
                # The campaign reply hook labels the thread right after the patient's first reply.
                labels.append(label)
                expected.append(
                    {"event": "conversation.update", **shown, "labels": sorted(labels), "changed": ["labels"]}
                )
        assert events.of(conversation) == expected, phone
        conversation.refresh_from_db()
        assert conversation.unread_count == len(mine)
        assert conversation.last_message_preview == mine[-1].body
        assert sorted(conversation.labels.values_list("name", flat=True)) == sorted(labels)

    # The message events, all of them, in the messages' order.
    added = [e.payload["message"]["id"] for e in events.all() if (e.type, e.op) == ("message", "add")]
    assert added == [m.pk for m in stored]
    recipients = CampaignRecipient.objects.filter(campaign=spring).order_by("id")
    first_reply = {a.phone: a for a in reversed(arrivals)}
    assert [r.replied_at for r in recipients] == [
        Message.objects.get(provider_message_id=first_reply[p].sid).created_at for p in (reached_new, campaign_reached)
    ]


# --- 2. Woken threads ---------------------------------------------------------------------------------


def test_snoozed_and_pending_threads_are_opened_by_the_batchs_first_message_and_reported_once(
    client: Client, sms_inbox: Inbox, one_batch: BatchSpy
) -> None:
    snoozed_phone, pending_phone, open_phone = new_phone(), new_phone(), new_phone()
    snoozed = thread(
        sms_inbox,
        known_patient(snoozed_phone),
        status=ConversationStatus.SNOOZED,
        snoozed_until=timezone.now() + dt.timedelta(days=2),
    )
    pending = thread(sms_inbox, known_patient(pending_phone), status=ConversationStatus.PENDING)
    already_open = thread(sms_inbox, known_patient(open_phone))
    arrivals = [
        Arrival(snoozed_phone, "I'm back from my trip"),
        Arrival(pending_phone, "Yes, Thursday works"),
        Arrival(open_phone, "Any news?"),
        Arrival(snoozed_phone, "Can we talk about my results?"),
        Arrival(pending_phone, "Morning if possible"),
        Arrival(snoozed_phone, "Thanks"),
    ]
    post_all(client, arrivals)
    events = Events()

    drain_as_one_batch(sms_inbox, one_batch, len(arrivals))

    for conversation, phone in [(snoozed, snoozed_phone), (pending, pending_phone), (already_open, open_phone)]:
        woken = conversation is not already_open
        updates = [e for e in events.of(conversation) if e["event"] == "conversation.update"]
        mine = [a for a in arrivals if a.phone == phone]
        assert len(updates) == len(mine)
        # Open in every payload; "status" changed by the first message only, then never again.
        assert [u["status"] for u in updates] == [ConversationStatus.OPEN] * len(mine)
        assert [u["changed"] for u in updates] == [
            (["status", *COUNTERS] if woken and n == 0 else COUNTERS) for n in range(len(mine))
        ]
        assert [u["unread_count"] for u in updates] == list(range(1, len(mine) + 1))
        conversation.refresh_from_db()
        assert (conversation.status, conversation.snoozed_until) == (ConversationStatus.OPEN, None)
        assert inbound_bodies(conversation) == [a.body for a in mine]
    # Woken, not replaced: no thread was opened for anyone.
    assert Conversation.objects.filter(inbox=sms_inbox).count() == 3
    assert not [e for e in events.all() if (e.type, e.op) == ("conversation", "add")]


# --- 3. A survey answered among other messages --------------------------------------------------------


@pytest.fixture
def survey(db: Any) -> Survey:
    survey = Survey.objects.create(
        name="Inpatient satisfaction",
        intro_en="City Hospital: a 3-question survey about your recent stay.",
        intro_zh="市医院：关于您近期住院的3个问题。",
        thanks_en="Thank you, your answers help us improve.",
        thanks_zh="感谢您的评价，我们会继续改进。",
        reminder_after_hours=24,
        close_after_days=3,
        low_score_threshold=2,
    )
    for position, kind, key, en, zh in [
        (1, QuestionKind.RATING, "overall", "How satisfied were you overall? Reply 1-5.", "总体满意吗？请回复1-5。"),
        (2, QuestionKind.NPS, "recommend", "How likely are you to recommend us? Reply 0-10.", "推荐可能性？回复0-10。"),
        (3, QuestionKind.FREE_TEXT, "comment", "Anything we could do better?", "您还有什么意见或建议？"),
    ]:
        SurveyQuestion.objects.create(survey=survey, position=position, kind=kind, key=key, prompt_en=en, prompt_zh=zh)
    return survey


def start_survey_for(phone: str, *, capture: Callable[..., Any]) -> Any:
    """A discharged patient's SMS survey, started as the dispatcher starts it (intro and first question sent)."""
    record = discharge_record(phone=phone)
    discharge = record_discharge(record, now=record.discharged_at).discharge
    Patient.objects.filter(pk=discharge.patient_id).update(language="en")
    now = timezone.now()
    task = CallbackTask.objects.create(
        discharge=discharge,
        patient=Patient.objects.get(pk=discharge.patient_id),
        department=discharge.department,
        kind=TaskKind.SMS_SURVEY,
        status=CallbackTaskStatus.OPEN,
        opened_at=now,
        due_at=now,
        deadline_at=now + dt.timedelta(days=2),
    )
    with capture(execute=True):
        session = flow.start_survey(task, now=now)
    assert session is not None
    return session


def test_a_survey_answered_inside_a_batch_records_each_answer_and_only_its_patient_runs_the_hook(
    client: Client,
    sms_inbox: Inbox,
    survey: Survey,
    one_batch: BatchSpy,
    twilio_api: RecordingTwilioHttpClient,
    monkeypatch: pytest.MonkeyPatch,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    surveyed = new_phone()
    session = start_survey_for(surveyed, capture=django_capture_on_commit_callbacks)
    assert texted_to(twilio_api, surveyed) == [
        "City Hospital: a 3-question survey about your recent stay.\nHow satisfied were you overall? Reply 1-5."
    ]
    known_phone, new_sender = new_phone(), new_phone()
    thread(sms_inbox, known_patient(known_phone))
    survey_hook, survey_interest = inbound_hooks._hooks["followup_surveys"]
    ran_for: list[int] = []

    def counted(**kwargs: Any) -> None:
        ran_for.append(kwargs["message"].pk)
        survey_hook(**kwargs)

    monkeypatch.setitem(inbound_hooks._hooks, "followup_surveys", (counted, survey_interest))
    arrivals = [
        Arrival(known_phone, "When is my next appointment?"),
        Arrival(surveyed, "4"),
        Arrival(new_sender, "Hello, I'm a new patient"),
        Arrival(known_phone, "Sorry, also: can I bring someone?"),
        Arrival(surveyed, "9"),
        Arrival(new_sender, "Do you take my insurance?"),
    ]
    post_all(client, arrivals)
    events = Events()

    with django_capture_on_commit_callbacks(execute=True):
        drain_as_one_batch(sms_inbox, one_batch, len(arrivals))

    answers = list(
        SurveyAnswer.objects.filter(session=session)
        .order_by("question__position")
        .values_list("question__key", "value", "message__provider_message_id")
    )
    assert answers == [("overall", 4, arrivals[1].sid), ("recommend", 9, arrivals[4].sid)]
    session.refresh_from_db()
    assert (session.status, session.current_position) == (SessionStatus.ACTIVE, 3)
    # Each answer was followed by the next question, sent through the real SDK after the batch committed.
    assert texted_to(twilio_api, surveyed)[1:] == [
        "How likely are you to recommend us? Reply 0-10.",
        "Anything we could do better?",
    ]
    # The hook ran for the survey patient's two messages and for nobody else's.
    assert ran_for == [
        Message.objects.get(provider_message_id=arrivals[1].sid).pk,
        Message.objects.get(provider_message_id=arrivals[4].sid).pk,
    ]
    # In the thread, each question follows the answer it reacts to; the survey's pending thread was woken.
    conversation = Conversation.objects.get(pk=session.conversation_id)
    assert conversation.status == ConversationStatus.OPEN
    told = events.of(conversation)
    assert [(e["event"], e.get("body"), e.get("changed")) for e in told] == [
        ("conversation.update", None, ["status", *COUNTERS]),
        ("message.add", "4", None),
        ("message.add", "How likely are you to recommend us? Reply 0-10.", None),
        ("conversation.update", None, ["last_message_at"]),
        ("conversation.update", None, COUNTERS),
        ("message.add", "9", None),
        ("message.add", "Anything we could do better?", None),
        ("conversation.update", None, ["last_message_at"]),
    ]
    assert [e["unread_count"] for e in told if e["event"] == "conversation.update"] == [1, 1, 2, 2]
    conversation.refresh_from_db()
    assert (conversation.unread_count, conversation.last_message_preview) == (2, "Anything we could do better?")


# --- 4. Keywords inside a batch -----------------------------------------------------------------------


def test_stop_from_a_campaign_recipient_and_help_inside_a_batch_are_applied_and_answered(
    client: Client,
    sms_inbox: Inbox,
    one_batch: BatchSpy,
    twilio_api: RecordingTwilioHttpClient,
    django_capture_on_commit_callbacks: Callable[..., Any],
) -> None:
    stopper, not_yet_sent, helped, bystander = new_phone(), new_phone(), new_phone(), new_phone()
    recipient_patient = known_patient(stopper, language="en")
    thread(sms_inbox, recipient_patient, status=ConversationStatus.PENDING)
    recipient = sent_to(campaign(sms_inbox), recipient_patient)
    flu_shots = campaign(sms_inbox, status=CampaignStatus.RUNNING, name="Flu shots")
    # Still waiting in a campaign that is sending: the opt-out takes them out of it at once. The second patient
    # was never sent anything yet (no batch read says a campaign reached them): only their STOP is for the hook.
    unsent_patient = known_patient(not_yet_sent, language="en")
    thread(sms_inbox, unsent_patient)
    waiting = [
        CampaignRecipient.objects.create(campaign=flu_shots, patient=patient, phone=phone, state=RecipientState.PENDING)
        for patient, phone in [(recipient_patient, stopper), (unsent_patient, not_yet_sent)]
    ]
    thread(sms_inbox, known_patient(helped, language="en"))
    thread(sms_inbox, known_patient(bystander))
    arrivals = [
        Arrival(stopper, "Is this about my check-up?"),
        Arrival(helped, "HELP"),
        Arrival(not_yet_sent, "Hi, is the clinic open on Sunday?"),
        Arrival(bystander, "Stopping by tomorrow at 10"),
        Arrival(stopper, "STOP"),
        Arrival(not_yet_sent, "STOP"),
        Arrival(helped, "Thanks"),
    ]
    post_all(client, arrivals)

    with django_capture_on_commit_callbacks(execute=True):
        drain_as_one_batch(sms_inbox, one_batch, len(arrivals))

    stops = {a.phone: Message.objects.get(provider_message_id=a.sid) for a in arrivals if a.body == "STOP"}
    for patient, phone in [(recipient_patient, stopper), (unsent_patient, not_yet_sent)]:
        consent = Consent.objects.get(patient=patient, purpose=ConsentPurpose.MARKETING)
        assert consent.status == ConsentStatus.OPTED_OUT
        change = ConsentChange.objects.get(patient=patient)
        assert (change.status, change.keyword, change.message_id) == (ConsentStatus.OPTED_OUT, "STOP", stops[phone].pk)
    recipient.refresh_from_db()
    assert recipient.replied_at == Message.objects.get(provider_message_id=arrivals[0].sid).created_at
    assert recipient.opted_out_at == stops[stopper].created_at
    assert [CampaignRecipient.objects.get(pk=w.pk).state for w in waiting] == [RecipientState.SKIPPED_OPTED_OUT] * 2
    # Nobody else's consent changed: the bystander's "Stopping by" is no keyword.
    assert not Consent.objects.exclude(patient__in=[recipient_patient, unsent_patient]).exists()

    # The confirmations and the help text: queued by send_outbound as service messages right after the keyword,
    # delivered through the real SDK once the batch committed.
    confirmation = consent_actions._CONFIRMATIONS[consent_actions.OPT_OUT]["en"]
    for phone, keyword_sid, reply in [
        (stopper, stops[stopper].provider_message_id, confirmation),
        (not_yet_sent, stops[not_yet_sent].provider_message_id, confirmation),
        (helped, arrivals[1].sid, str(django_settings.SMS_HELP_TEXT)),
    ]:
        conversation = the_thread(sms_inbox, phone)
        bodies = list(conversation.messages.order_by("id").values_list("provider_message_id", "sender_kind", "body"))
        keyword_at = [sid for sid, _kind, _body in bodies].index(keyword_sid)
        assert bodies[keyword_at + 1][1:] == (SenderKind.SYSTEM, reply)
        # Handed to Twilio: the message carries the SID Twilio's answer gave it.
        assert conversation.messages.get(body=reply).provider_message_id in {m["sid"] for m in twilio_api.accepted}
        assert texted_to(twilio_api, phone) == [reply]
    assert texted_to(twilio_api, bystander) == []


# --- 5. Auto-assignment -------------------------------------------------------------------------------


@pytest.fixture
def auto_inbox(cardiology: Team) -> Iterator[Inbox]:
    inbox = make_sms_inbox(cardiology, NUMBER, auto_assign=True)
    yield inbox
    cache.delete(inbound_queue._flag(inbox.pk))


def test_auto_assignment_in_a_batch_fills_the_online_agent_to_capacity_and_leaves_the_rest_unassigned(
    client: Client, auto_inbox: Inbox, cardiology: Team, one_batch: BatchSpy
) -> None:
    alice = make_staff("alice", Role.AGENT, [cardiology], availability=Availability.ONLINE)
    alice.agent_profile.capacity = 2
    alice.agent_profile.save(update_fields=["capacity"])
    make_staff("bob", Role.AGENT, [cardiology], availability=Availability.OFFLINE)
    senders = [new_phone() for _ in range(4)]
    # Two of the new threads are from patients already known, two from numbers never seen.
    for phone in senders[:2]:
        known_patient(phone)
    arrivals = [Arrival(phone, f"first from {i}") for i, phone in enumerate(senders)] + [
        Arrival(phone, f"second from {i}") for i, phone in enumerate(senders)
    ]
    post_all(client, arrivals)
    events = Events()

    drain_as_one_batch(auto_inbox, one_batch, len(arrivals))

    threads = [the_thread(auto_inbox, phone) for phone in senders]
    # Round robin in arrival order until alice is full: the first two; bob is offline, nobody else gets them.
    assert [c.assignee_id for c in threads] == [alice.pk, alice.pk, None, None]
    for conversation, assigned in zip(threads, [alice.pk, alice.pk, None, None], strict=True):
        told = [e for e in events.of(conversation) if e["event"].startswith("conversation.")]
        assert [(e["event"], e["assignee"], e.get("changed")) for e in told] == [
            ("conversation.add", assigned, None),
            ("conversation.update", assigned, COUNTERS),
        ]


def test_auto_assignment_of_existing_threads_in_a_batch_says_assignee_changed_only_for_those_assigned(
    client: Client, auto_inbox: Inbox, cardiology: Team, one_batch: BatchSpy
) -> None:
    alice = make_staff("alice", Role.AGENT, [cardiology], availability=Availability.ONLINE)
    alice.agent_profile.capacity = 2
    alice.agent_profile.save(update_fields=["capacity"])
    senders = [new_phone() for _ in range(4)]
    threads = [thread(auto_inbox, known_patient(phone)) for phone in senders]
    arrivals = [Arrival(phone, f"first from {i}") for i, phone in enumerate(senders)] + [
        Arrival(phone, f"second from {i}") for i, phone in enumerate(senders)
    ]
    post_all(client, arrivals)
    events = Events()

    drain_as_one_batch(auto_inbox, one_batch, len(arrivals))

    expected = [alice.pk, alice.pk, None, None]
    for conversation, assigned in zip(threads, expected, strict=True):
        conversation.refresh_from_db()
        assert conversation.assignee_id == assigned
        told = [e for e in events.of(conversation) if e["event"] == "conversation.update"]
        assert [(e["assignee"], e["changed"]) for e in told] == [
            (assigned, ["assignee", *COUNTERS] if assigned else COUNTERS),
            (assigned, COUNTERS),
        ]


# --- 6. Resolved threads and the reopen window ---------------------------------------------------------


def test_a_resolved_thread_inside_the_reopen_window_is_reopened_by_the_batch_and_an_older_one_is_not(
    client: Client, sms_inbox: Inbox, one_batch: BatchSpy
) -> None:
    recent_phone, old_phone = new_phone(), new_phone()
    window = dt.timedelta(hours=sms_inbox.reopen_window_hours)
    now = timezone.now()
    recent = labelled(
        thread(
            sms_inbox,
            known_patient(recent_phone),
            status=ConversationStatus.RESOLVED,
            resolved_at=now - window + dt.timedelta(hours=1),
            unread_count=0,
        ),
        "Follow-up",
    )
    old = thread(
        sms_inbox,
        known_patient(old_phone),
        status=ConversationStatus.RESOLVED,
        resolved_at=now - window - dt.timedelta(hours=1),
    )
    arrivals = [
        Arrival(recent_phone, "One more question about the dressing"),
        Arrival(old_phone, "Hello again"),
        Arrival(recent_phone, "It is still bleeding a little"),
        Arrival(old_phone, "It's been a while"),
    ]
    post_all(client, arrivals)
    events = Events()

    drain_as_one_batch(sms_inbox, one_batch, len(arrivals))

    recent.refresh_from_db()
    assert (recent.status, recent.resolved_at) == (ConversationStatus.OPEN, None)
    assert inbound_bodies(recent) == [a.body for a in arrivals if a.phone == recent_phone]
    assert events.of(recent) == [
        {
            "event": "conversation.update",
            "status": ConversationStatus.OPEN,
            "unread_count": 1,
            "last_message_preview": arrivals[0].body,
            "labels": ["Follow-up"],
            "assignee": None,
            "changed": ["status", *COUNTERS],
        },
        {"event": "message.add", "direction": MessageDirection.INBOUND, "body": arrivals[0].body},
        {
            "event": "conversation.update",
            "status": ConversationStatus.OPEN,
            "unread_count": 2,
            "last_message_preview": arrivals[2].body,
            "labels": ["Follow-up"],
            "assignee": None,
            "changed": COUNTERS,
        },
        {"event": "message.add", "direction": MessageDirection.INBOUND, "body": arrivals[2].body},
    ]

    old.refresh_from_db()
    assert old.status == ConversationStatus.RESOLVED
    assert inbound_bodies(old) == []
    fresh = the_thread(sms_inbox, old_phone, status=ConversationStatus.OPEN)
    assert fresh.pk != old.pk
    assert inbound_bodies(fresh) == [a.body for a in arrivals if a.phone == old_phone]
    assert [(e["event"], e["unread_count"], e.get("changed")) for e in events.of(fresh) if "status" in e] == [
        ("conversation.add", 1, None),
        ("conversation.update", 2, COUNTERS),
    ]
    assert events.of(old) == []


# --- One scene, both paths ----------------------------------------------------------------------------


@dataclass
class Scene:
    """Who is who in one run: the same roles, with their own numbers and threads, in either inbox."""

    inbox: Inbox
    phones: dict[str, str]
    arrivals: list[Arrival]


def build_scene(inbox: Inbox) -> Scene:
    now = timezone.now()
    window = dt.timedelta(hours=inbox.reopen_window_hours)
    roles = ["vip", "reached", "snoozed", "pending", "reopened", "too_old", "stopper", "helped", "new_a", "new_b"]
    phones = {role: new_phone() for role in roles}
    patients = {role: known_patient(phones[role], language="en") for role in roles if not role.startswith("new")}
    labelled(thread(inbox, patients["vip"]), "VIP")
    spring = campaign(inbox)
    sent_to(spring, patients["reached"])
    sent_to(spring, patients["stopper"])
    thread(inbox, patients["snoozed"], status=ConversationStatus.SNOOZED, snoozed_until=now + dt.timedelta(days=1))
    thread(inbox, patients["pending"], status=ConversationStatus.PENDING)
    labelled(
        thread(inbox, patients["reopened"], status=ConversationStatus.RESOLVED, resolved_at=now - window / 2),
        "Follow-up",
    )
    thread(inbox, patients["too_old"], status=ConversationStatus.RESOLVED, resolved_at=now - window * 2)
    thread(inbox, patients["helped"])
    script = [
        ("vip", "Is Dr. Wang in today?"),
        ("reached", "Yes, I'd like the check-up"),
        ("new_a", "Hello"),
        ("snoozed", "Back now"),
        ("pending", "Thursday is fine"),
        ("reopened", "One more question"),
        ("too_old", "Hi again"),
        ("stopper", "What is this about?"),
        ("helped", "HELP"),
        ("reached", "Morning please"),
        ("vip", "Also, parking?"),
        ("new_b", "Do you take walk-ins?"),
        ("snoozed", "Still there?"),
        ("stopper", "STOP"),
        ("pending", "Or Friday"),
        ("reopened", "Never mind, found it"),
        ("new_a", "Hello?"),
        ("too_old", "Anyone?"),
        ("helped", "ok thanks"),
        ("reached", "Thanks"),
        ("stopper", "Sorry, wrong button"),
    ]
    return Scene(inbox, phones, [Arrival(phones[role], body) for role, body in script])


def normalized(events: list[Event], scene: Scene) -> list[tuple[Any, ...]]:
    """The events with ids replaced by who they are about (the role) and the order things first appeared in, and
    times left out: two runs of the same scene must read the same."""
    role_of_patient = {
        patient_id: role
        for role, phone in scene.phones.items()
        for patient_id in PatientIdentity.objects.filter(value=phone).values_list("patient_id", flat=True)
    }
    threads: dict[int, int] = {}

    def thread_no(conversation_id: int) -> int:
        return threads.setdefault(conversation_id, len(threads))

    seen = []
    for event in events:
        if event.type == "conversation":
            shown = event.payload["conversation"]
            seen.append(
                (
                    event.type,
                    event.op,
                    tuple(event.payload.get("changed", ())),
                    thread_no(shown["id"]),
                    role_of_patient[shown["patient"]["id"]],
                    shown["status"],
                    shown["unread_count"],
                    shown["last_message_preview"],
                    tuple(sorted(label["name"] for label in shown["labels"])),
                    shown["assignee"],
                    shown["snoozed_until"],
                    shown["resolved_at"],
                    shown["priority"],
                )
            )
        elif event.type == "message":
            shown = event.payload["message"]
            seen.append(
                (
                    event.type,
                    event.op,
                    thread_no(shown["conversation_id"]),
                    shown["direction"],
                    shown["sender_kind"],
                    shown["body"],
                    shown["status"],
                    tuple(shown["flags"]),
                )
            )
        else:
            seen.append((event.type, event.op, tuple(sorted(event.payload))))
    return seen


def outcome(scene: Scene) -> dict[str, Any]:
    """What was stored, per role: threads with their state and messages, consent, campaign rows."""
    stored: dict[str, Any] = {}
    for role, phone in scene.phones.items():
        patient = PatientIdentity.objects.get(value=phone).patient
        stored[role] = {
            "threads": [
                (
                    c.status,
                    c.unread_count,
                    c.last_message_preview,
                    c.snoozed_until,
                    sorted(c.labels.values_list("name", flat=True)),
                    list(c.messages.order_by("id").values_list("direction", "sender_kind", "body", "status")),
                )
                for c in Conversation.objects.filter(inbox=scene.inbox, patient=patient).order_by("id")
            ],
            "consent": list(Consent.objects.filter(patient=patient).values_list("purpose", "status")),
            "campaigns": [
                (r.state, r.replied_at is not None, r.opted_out_at is not None)
                for r in CampaignRecipient.objects.filter(patient=patient).order_by("campaign__name")
            ],
        }
    return stored


def test_one_scene_drained_as_a_batch_tells_and_stores_what_the_one_message_path_does(
    client: Client, cardiology: Team, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(taskrunner, "enqueue", lambda name, **kwargs: True)
    batch_inbox = make_sms_inbox(cardiology, NUMBER)
    one_by_one_inbox = make_sms_inbox(cardiology, TWIN_NUMBER)
    runs = []
    for inbox, to in [(batch_inbox, NUMBER), (one_by_one_inbox, TWIN_NUMBER)]:
        scene = build_scene(inbox)
        post_all(client, scene.arrivals, to=to)
        events = Events()
        if inbox is batch_inbox:
            assert inbound_queue._drain_batch(inbox.pk) == len(scene.arrivals)
        else:
            # The queue's own fallback: receive_inbound per row, each in its own transaction, no batch reads.
            assert inbound_queue._drain_one_by_one(inbox.pk, inbound_queue.Drained()) == len(scene.arrivals)
        assert not InboundWebhook.objects.filter(inbox=inbox).exists()
        runs.append((normalized(events.all(), scene), outcome(scene), scene))

    (batch_events, batch_stored, batch_scene), (one_events, one_stored, _scene) = runs
    # The scene did what it is for (so equal runs are no two empty ones): keywords, campaign label, reopen.
    assert batch_stored["stopper"]["consent"] == [(ConsentPurpose.MARKETING, ConsentStatus.OPTED_OUT)]
    assert campaign_label(CAMPAIGN) in batch_stored["reached"]["threads"][0][4]
    assert [t[0] for t in batch_stored["too_old"]["threads"]] == [ConversationStatus.RESOLVED, ConversationStatus.OPEN]
    assert len(batch_events) > 2 * len(batch_scene.arrivals)
    assert batch_stored == one_stored
    assert batch_events == one_events

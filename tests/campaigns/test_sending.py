"""The campaign sender end to end: recipients → messages through the real twilio SDK (its HTTP client
replaced by the recording fake) → signed status callbacks → recipient states, and the progress socket.

PostgreSQL and Redis are real; TASK_RUNNER=immediate runs the delivery task when the sender commits.
Campaigns and recipients are written directly, as launch would leave them (running, recipients pending).
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import AsyncIterator, Callable, Iterator
from dataclasses import dataclass
from typing import Any

import pytest
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.test import Client

import channels_adapters.twilio.transport
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, MissingValueRule, RecipientState, Segment
from campaigns.sending import engine, throttle
from campaigns.sending.engine import dispatch_due_campaigns, run_campaign, send_batch, settle
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from config.asgi import application
from contactcenter.actions.consent import record_consent
from contactcenter.models import (
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Patient,
    PatientIdentity,
    SenderKind,
)
from tests.conftest import PASSWORD
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

TOKEN = "test-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
STATUS_PATH = "/webhooks/twilio/sms/status/"
FORM = "application/x-www-form-urlencoded"
# 10:00 in Shanghai, 22:00 the evening before in New York.
MORNING_IN_SHANGHAI = dt.datetime(2025, 6, 2, 2, 0, tzinfo=dt.UTC)
NEW_YORK_MORNING = dt.datetime(2025, 6, 2, 12, 0, tzinfo=dt.UTC)  # 08:00 EDT
BODY = "Hi {{ first_name }}, your annual check-up is due."


def quiet_hours_elsewhere() -> dict[str, dt.time]:
    """For runs on the real clock: a quiet window hours away from now, so the time of day never matters."""
    from django.utils import timezone

    local_now = timezone.localtime()
    return {
        "quiet_hours_start": (local_now + dt.timedelta(hours=6)).time().replace(second=0, microsecond=0),
        "quiet_hours_end": (local_now + dt.timedelta(hours=7)).time().replace(second=0, microsecond=0),
    }


_phones = (f"+86139{n:08d}" for n in itertools.count(20_000_001))


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch, settings: Any) -> RecordingTwilioHttpClient:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


@pytest.fixture
def sms_inbox(world: Any, twilio_api: RecordingTwilioHttpClient) -> Iterator[Inbox]:
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Marketing SMS",
            team=world.team_a,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    key = throttle.sender_key(inbox)
    throttle.reset(key)
    yield inbox
    throttle.reset(key)


def make_patient(
    *, given_name: str = "Mei", time_zone: str = "Asia/Shanghai", language: str = "en", opted_in: bool = True
) -> Patient:
    """A patient with a mobile; by default opted in to marketing (the registration form's box, recorded by
    the hospital system), as the default consent policy wants before a campaign may reach them."""
    patient = Patient.objects.create(
        given_name=given_name, name=f"{given_name} Lin", time_zone=time_zone, language=language
    )
    PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=next(_phones))
    if opted_in:
        opt_in(patient)
    return patient


def opt_in(patient: Patient) -> None:
    record_consent(
        patient=patient, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN, source=ConsentSource.API
    )


def phone_of(patient: Patient) -> str:
    return PatientIdentity.objects.get(patient=patient, kind=IdentityKind.PHONE).value


def make_campaign(inbox: Inbox, **fields: Any) -> Campaign:
    values: dict[str, Any] = {
        "name": "Annual check-up",
        "segment": Segment.objects.create(name="Everyone"),
        "inbox": inbox,
        "body": BODY,
        "signature": "康华医院",
        "status": CampaignStatus.RUNNING,
        "messages_per_second": 1000,
        **fields,
    }
    return Campaign.objects.create(**values)


def enrol(campaign: Campaign, patients: list[Patient], state: str = RecipientState.PENDING) -> list[CampaignRecipient]:
    return [
        CampaignRecipient.objects.create(
            campaign=campaign, patient=p, phone=phone_of(p), time_zone=p.time_zone, state=state
        )
        for p in patients
    ]


def states(campaign: Campaign) -> dict[int, str]:
    return dict(CampaignRecipient.objects.filter(campaign=campaign).values_list("patient_id", "state"))


def sent_to(fake: RecordingTwilioHttpClient) -> list[str]:
    return [r.data["To"] for r in fake.requests]


@dataclass
class Sent:
    campaign: Campaign
    patients: list[Patient]


@pytest.fixture
def send(django_capture_on_commit_callbacks: Callable[..., Any]) -> Callable[..., engine.BatchResult]:
    """send_batch with its commits' callbacks (delivery, progress) run, as outside a test transaction."""

    def run(campaign: Campaign, **kwargs: Any) -> engine.BatchResult:
        kwargs.setdefault("now", MORNING_IN_SHANGHAI)
        with django_capture_on_commit_callbacks(execute=True):
            return send_batch(campaign.pk, **kwargs)

    return run


# --- sending ---------------------------------------------------------------------------------------------


def test_batch_sends_each_pending_recipient_once_through_the_twilio_sdk(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    pending = [make_patient(given_name=f"Mei{i}") for i in range(5)]
    enrol(campaign, pending)
    already = make_patient()
    enrol(campaign, [already], state=RecipientState.SENT)
    skipped = make_patient()
    enrol(campaign, [skipped], state=RecipientState.SKIPPED_OPTED_OUT)

    result = send(campaign)

    assert (result.sent, result.skipped, result.deferred, result.stopped) == (5, 0, 0, False)
    assert sorted(sent_to(twilio_api)) == sorted(phone_of(p) for p in pending)
    first = next(r for r in twilio_api.requests if r.data["To"] == phone_of(pending[0]))
    assert first.data["Body"] == "【康华医院】Hi Mei0, your annual check-up is due. Reply STOP to opt out"
    assert first.data["From"] == NUMBER
    for recipient in CampaignRecipient.objects.filter(campaign=campaign, patient__in=pending).select_related("message"):
        assert recipient.state == RecipientState.SENT
        assert recipient.sent_at is not None
        message = recipient.message
        assert message is not None
        assert (message.sender_kind, message.status) == (SenderKind.CAMPAIGN, MessageStatus.SENDING)
        assert message.conversation.patient_id == recipient.patient_id
        assert message.inbox_id == sms_inbox.pk
    assert Message.objects.count() == 5

    again = send(campaign)

    assert (again.sent, again.examined) == (0, 0)
    assert len(twilio_api.requests) == 5
    assert Message.objects.count() == 5


def test_quiet_hours_defer_each_patient_to_their_own_morning_then_send_when_due(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    shanghai = make_patient(time_zone="Asia/Shanghai")
    new_york = make_patient(time_zone="America/New_York")
    enrol(campaign, [shanghai, new_york])

    result = send(campaign, now=MORNING_IN_SHANGHAI)

    assert (result.sent, result.deferred) == (1, 1)
    assert sent_to(twilio_api) == [phone_of(shanghai)]
    deferred = CampaignRecipient.objects.get(campaign=campaign, patient=new_york)
    assert deferred.state == RecipientState.DEFERRED
    assert deferred.deferred_until == NEW_YORK_MORNING
    assert deferred.message is None
    settled = settle(campaign.pk, now=MORNING_IN_SHANGHAI)
    assert (settled.status, settled.next_action_at) == (CampaignStatus.RUNNING, NEW_YORK_MORNING)

    early = send(campaign, now=NEW_YORK_MORNING - dt.timedelta(minutes=1))
    assert early.examined == 0
    on_time = send(campaign, now=NEW_YORK_MORNING)

    assert on_time.sent == 1
    assert sent_to(twilio_api) == [phone_of(shanghai), phone_of(new_york)]
    assert states(campaign) == {shanghai.pk: RecipientState.SENT, new_york.pk: RecipientState.SENT}
    with_callbacks = settle(campaign.pk, now=NEW_YORK_MORNING)
    assert with_callbacks.status == CampaignStatus.COMPLETED
    campaign.refresh_from_db()
    assert (campaign.completed_at, campaign.next_action_at) == (NEW_YORK_MORNING, None)


def test_patient_who_opted_out_after_launch_is_skipped_and_never_sent_to(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    stays, leaves = make_patient(), make_patient()
    enrol(campaign, [stays, leaves])
    record_consent(
        patient=leaves, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT, source=ConsentSource.KEYWORD
    )

    result = send(campaign)

    assert (result.sent, result.skipped) == (1, 1)
    assert sent_to(twilio_api) == [phone_of(stays)]
    assert states(campaign) == {stays.pk: RecipientState.SENT, leaves.pk: RecipientState.SKIPPED_OPTED_OUT}
    assert not Message.objects.filter(conversation__patient=leaves).exists()


def test_a_recipient_without_marketing_consent_under_the_policy_is_skipped_at_send(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any], settings: Any
) -> None:
    campaign = make_campaign(sms_inbox)
    asked, unknown, withdrawn = make_patient(), make_patient(opted_in=False), make_patient()
    enrol(campaign, [asked, unknown, withdrawn])
    # Consent taken back to "not recorded" after launch (staff corrected a wrong opt-in).
    record_consent(
        patient=withdrawn, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.UNKNOWN, source=ConsentSource.AGENT
    )

    result = send(campaign)

    assert (result.sent, result.skipped) == (1, 2)
    assert sent_to(twilio_api) == [phone_of(asked)]
    assert states(campaign) == {
        asked.pk: RecipientState.SENT,
        unknown.pk: RecipientState.SKIPPED_NO_CONSENT,
        withdrawn.pk: RecipientState.SKIPPED_NO_CONSENT,
    }
    assert set(CampaignRecipient.objects.filter(campaign=campaign).values_list("error_code", flat=True)) == {
        "",
        "no_consent",
    }
    assert not Message.objects.filter(conversation__patient__in=[unknown, withdrawn]).exists()


def test_missing_first_name_under_the_skip_rule_skips_the_recipient(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox, missing_value_rule=MissingValueRule.SKIP)
    named, nameless = make_patient(given_name="Mei"), make_patient(given_name="")
    enrol(campaign, [named, nameless])

    send(campaign)

    assert sent_to(twilio_api) == [phone_of(named)]
    assert states(campaign) == {named.pk: RecipientState.SENT, nameless.pk: RecipientState.SKIPPED_MISSING}


def test_paused_or_cancelled_campaign_sends_nothing(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    paused = make_campaign(sms_inbox, status=CampaignStatus.PAUSED)
    cancelled = make_campaign(sms_inbox, status=CampaignStatus.CANCELLED)
    enrol(paused, [make_patient()])
    enrol(cancelled, [make_patient()])

    assert send(paused).stopped
    assert send(cancelled).stopped
    assert run_campaign(cancelled.pk) == CampaignStatus.CANCELLED

    assert twilio_api.requests == []
    assert set(states(paused).values()) | set(states(cancelled).values()) == {RecipientState.PENDING}
    cancelled.refresh_from_db()
    assert cancelled.status == CampaignStatus.CANCELLED


class PausingTwilio(RecordingTwilioHttpClient):
    """Twilio that, as its third message is accepted, sees the marketer press pause (a committed write)."""

    campaign_id: int = 0

    def request(self, *args: Any, **kwargs: Any) -> Any:
        response = super().request(*args, **kwargs)
        if len(self.requests) == 3:
            Campaign.objects.filter(pk=self.campaign_id).update(status=CampaignStatus.PAUSED)
        return response


@pytest.mark.django_db(transaction=True)
def test_pause_stops_the_run_after_the_chunk_in_flight_and_resume_finishes_it(
    sms_inbox: Inbox, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = PausingTwilio()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    # Four a second: chunks of two (half a second of sending), so a pause lands between chunks.
    campaign = make_campaign(sms_inbox, messages_per_second=4, **quiet_hours_elsewhere())
    assert engine.chunk_size(campaign.messages_per_second) == 2
    fake.campaign_id = campaign.pk
    patients = [make_patient() for _ in range(8)]
    enrol(campaign, patients)

    assert run_campaign(campaign.pk) == "stopped"

    # Paused during the second chunk's first request: that chunk finishes, and so does the third if the run
    # had already written it (it writes the next chunk while delivering one); the fourth never starts.
    sent = sorted(states(campaign).values()).count(RecipientState.SENT)
    assert sent in (4, 6), sent
    assert len(fake.requests) == sent
    assert sorted(states(campaign).values()).count(RecipientState.PENDING) == 8 - sent
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.PAUSED

    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.RUNNING)
    assert run_campaign(campaign.pk) == CampaignStatus.COMPLETED

    assert sorted(sent_to(fake)) == sorted(phone_of(p) for p in patients)
    assert set(states(campaign).values()) == {RecipientState.SENT}
    assert Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).count() == 8


@pytest.mark.django_db(transaction=True)
def test_a_recipient_another_worker_holds_is_left_to_that_worker(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient
) -> None:
    import threading

    from django.db import connections, transaction

    campaign = make_campaign(sms_inbox, **quiet_hours_elsewhere())
    held, free = enrol(campaign, [make_patient(), make_patient()])
    locked, release = threading.Event(), threading.Event()

    def other_worker() -> None:
        try:
            with transaction.atomic():
                CampaignRecipient.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            connections.close_all()

    thread = threading.Thread(target=other_worker)
    thread.start()
    assert locked.wait(10)
    try:
        result = send_batch(campaign.pk)
    finally:
        release.set()
        thread.join()

    # The held row is passed over, not waited for: this chunk claimed only the free one.
    assert (result.examined, result.sent) == (1, 1)
    assert sent_to(twilio_api) == [free.phone]
    assert states(campaign) == {held.patient_id: RecipientState.PENDING, free.patient_id: RecipientState.SENT}


@pytest.mark.django_db(transaction=True)
def test_dispatcher_starts_a_run_for_a_campaign_whose_lease_lapsed_and_leaves_live_ones_alone(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient
) -> None:
    from django.utils import timezone

    lapsed = make_campaign(
        sms_inbox, next_action_at=timezone.now() - dt.timedelta(seconds=1), **quiet_hours_elsewhere()
    )
    live = make_campaign(sms_inbox, next_action_at=timezone.now() + dt.timedelta(seconds=60), **quiet_hours_elsewhere())
    enrol(lapsed, [make_patient(), make_patient()])
    enrol(live, [make_patient()])

    assert dispatch_due_campaigns() == 1

    lapsed.refresh_from_db()
    live.refresh_from_db()
    assert lapsed.status == CampaignStatus.COMPLETED
    assert set(states(lapsed).values()) == {RecipientState.SENT}
    assert set(states(live).values()) == {RecipientState.PENDING}
    assert len(twilio_api.requests) == 2
    assert dispatch_due_campaigns() == 0


# --- delivery states -------------------------------------------------------------------------------------


def post_status(client: Client, message: Message, name: str) -> int:
    from urllib.parse import urlencode

    from twilio.request_validator import RequestValidator

    params = {**fixture(name), "MessageSid": message.provider_message_id, "SmsSid": message.provider_message_id}
    path = f"{STATUS_PATH}?message={message.pk}"
    signature = RequestValidator(TOKEN).compute_signature(django_settings.PUBLIC_BASE_URL + path, params)
    response = client.post(path, urlencode(params), content_type=FORM, HTTP_X_TWILIO_SIGNATURE=signature)
    return int(response.status_code)


def test_signed_status_callbacks_mark_recipients_delivered_or_failed_with_the_error_code(
    client: Client, sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    reached, unreachable = enrol(campaign, [make_patient(), make_patient()])
    send(campaign)
    reached.refresh_from_db()
    unreachable.refresh_from_db()
    assert reached.message is not None and unreachable.message is not None

    assert post_status(client, reached.message, "status_sent.json") == 204
    reached.refresh_from_db()
    assert reached.state == RecipientState.SENT
    assert post_status(client, reached.message, "status_delivered.json") == 204
    assert post_status(client, unreachable.message, "status_undelivered_30003.json") == 204
    # Late and out of order: changes nothing.
    assert post_status(client, reached.message, "status_sent.json") == 204

    reached.refresh_from_db()
    unreachable.refresh_from_db()
    assert reached.state == RecipientState.DELIVERED
    assert reached.delivered_at is not None
    assert reached.delivered_at == Message.objects.get(pk=reached.message_id).delivered_at
    assert (unreachable.state, unreachable.error_code, unreachable.delivered_at) == (
        RecipientState.FAILED,
        "30003",
        None,
    )

    assert post_status(client, reached.message, "status_read.json") == 204
    reached.refresh_from_db()
    assert reached.state == RecipientState.DELIVERED


def test_number_twilio_refuses_fails_the_recipient_with_twilios_code(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any]
) -> None:
    campaign = make_campaign(sms_inbox)
    [recipient] = enrol(campaign, [make_patient()])
    twilio_api.script = [(400, fixture("api_error_21211.json"))]

    send(campaign)

    recipient.refresh_from_db()
    assert (recipient.state, recipient.error_code) == (RecipientState.FAILED, "21211")
    assert Message.objects.get(pk=recipient.message_id).status == MessageStatus.FAILED


def test_status_of_an_agents_message_leaves_campaign_recipients_alone(
    sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, send: Callable[..., Any], world: Any
) -> None:
    from channels_adapters.base import StatusUpdate
    from contactcenter.actions.delivery import update_message_status
    from contactcenter.actions.outbound import send_outbound

    campaign = make_campaign(sms_inbox)
    [recipient] = enrol(campaign, [make_patient()])
    send(campaign)
    recipient.refresh_from_db()
    conversation = recipient.message.conversation
    reply = send_outbound(conversation=conversation, body="A reply", author=world.alice)
    Message.objects.filter(pk=reply.pk).update(provider_message_id="SMagent")

    update_message_status(
        inbox_id=sms_inbox.pk, update=StatusUpdate(provider_message_id="SMagent", status=MessageStatus.DELIVERED)
    )

    recipient.refresh_from_db()
    assert recipient.state == RecipientState.SENT


# --- progress over the websocket -------------------------------------------------------------------------

ORIGIN = b"http://127.0.0.1:8000"
FRAME_TIMEOUT = 5


@pytest.fixture
async def fresh_channel_layer() -> AsyncIterator[None]:
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if layer is not None:
        await layer.flush()
        await layer.close_pools()


def _login_cookie(username: str) -> str:
    client = Client()
    assert client.login(username=username, password=PASSWORD)
    return client.cookies[django_settings.SESSION_COOKIE_NAME].value


async def open_progress(username: str, campaign_id: int) -> tuple[WebsocketCommunicator, bool, int | None]:
    cookie = await database_sync_to_async(_login_cookie)(username)
    headers = [(b"origin", ORIGIN), (b"cookie", f"{django_settings.SESSION_COOKIE_NAME}={cookie}".encode())]
    communicator = WebsocketCommunicator(application, f"/ws/campaigns/{campaign_id}/", headers=headers)
    connected, code = await communicator.connect(timeout=FRAME_TIMEOUT)
    return communicator, connected, code


@pytest.fixture(autouse=True)
def fast_hashing(settings: Any) -> None:
    """The personas are created and log in with real passwords; a cheap hasher keeps that from dominating."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.mark.django_db(transaction=True)
async def test_progress_socket_sends_the_counts_on_connect_and_as_the_campaign_sends(
    fresh_channel_layer: None, fast_hashing: None, sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient
) -> None:
    campaign = await database_sync_to_async(make_campaign)(sms_inbox, **quiet_hours_elsewhere())
    patients = [await database_sync_to_async(make_patient)() for _ in range(3)]
    await database_sync_to_async(enrol)(campaign, patients)

    communicator, connected, _ = await open_progress("mark", campaign.pk)
    assert connected
    try:
        first = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert first["type"] == "progress"
        assert (first["campaign_id"], first["status"], first["total"]) == (campaign.pk, "running", 3)
        assert first["counts"]["pending"] == 3
        assert set(first["counts"]) == set(RecipientState.values)

        assert await database_sync_to_async(run_campaign)(campaign.pk) == CampaignStatus.COMPLETED

        frames = []
        while not frames or frames[-1]["status"] != CampaignStatus.COMPLETED:
            frames.append(await communicator.receive_json_from(timeout=FRAME_TIMEOUT))
        last = frames[-1]
        assert (last["counts"]["sent"], last["counts"]["pending"], last["total"]) == (3, 0, 3)
        # Coalesced: three sends and a completion come as at most a few frames, never one per change.
        assert len(frames) <= 3
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(
    ("username", "allowed"), [("mark", True), ("sam", True), ("ada", True), ("alice", False), ("nina", False)]
)
async def test_only_campaign_roles_may_watch_progress(
    fresh_channel_layer: None, fast_hashing: None, sms_inbox: Inbox, username: str, allowed: bool
) -> None:
    campaign = await database_sync_to_async(make_campaign)(sms_inbox)

    communicator, connected, code = await open_progress(username, campaign.pk)

    try:
        assert connected is allowed, code
        if allowed:
            frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
            assert frame["type"] == "progress"
        else:
            assert code == 4403
    finally:
        await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_progress_of_an_unknown_campaign_is_refused(
    fresh_channel_layer: None, fast_hashing: None, world: Any
) -> None:
    communicator, connected, code = await open_progress("mark", 999_999)

    assert (connected, code) == (False, 4404)
    await communicator.disconnect()


@pytest.mark.django_db(transaction=True)
async def test_anonymous_socket_is_refused(fresh_channel_layer: None) -> None:
    communicator = WebsocketCommunicator(application, "/ws/campaigns/1/", headers=[(b"origin", ORIGIN)])
    connected, code = await communicator.connect(timeout=FRAME_TIMEOUT)

    assert (connected, code) == (False, 4403)
    await communicator.disconnect()

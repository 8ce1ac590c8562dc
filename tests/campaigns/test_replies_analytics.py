"""Campaign replies and analytics: replies land in the inbox linked to the campaign, STOP suppresses at
once, conversions are credited last-touch within the window, and the analytics add up exactly."""

from __future__ import annotations

import csv
import datetime as dt
import io
import itertools
import json
import os
import subprocess
import sys
import threading
import zoneinfo
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.test import Client
from django.urls import reverse
from django.utils import timezone

from campaigns.analytics import selectors
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState, Segment
from contactcenter.actions.inbound import InboundResult
from contactcenter.models import (
    AuditLogEntry,
    ChannelType,
    Conversation,
    ConversationStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    PatientIdentity,
    SenderKind,
    Team,
    Visit,
)

# The live server and Chromium fixtures, for the one browser test at the end.
from tests.browser.conftest import browser, live_server_url, login  # noqa: F401
from tests.browser.conftest import screenshot as full_page_screenshot
from tests.conftest import PASSWORD, World

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
ROOT = Path(__file__).resolve().parents[2]
_numbers = itertools.count(1)


def local(day: int, hour: int = 10, minute: int = 0, month: int = 3) -> dt.datetime:
    return dt.datetime(2025, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def hospital_in_shanghai(settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"
    # The personas' passwords are hashed for every test; the real cost buys nothing here. Still PBKDF2,
    # so the live server of the browser test (default hashers) can check the password.
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1_000


# --- Building campaigns, recipients and messages directly -----------------------------------------


def make_patient(phone: str | None = None) -> Patient:
    n = next(_numbers)
    patient = Patient.objects.create(name=f"Patient {n}", given_name=f"Given{n}")
    PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=phone or f"+86138{n:08d}")
    return patient


def make_campaign(
    name: str,
    *,
    inbox: Inbox,
    segment: Segment,
    window: int = 30,
    status: str = CampaignStatus.COMPLETED,
    launched_at: dt.datetime | None = None,
) -> Campaign:
    return Campaign.objects.create(
        name=name,
        segment=segment,
        inbox=inbox,
        body="Hello {{ first_name }}, time for your yearly check-up.",
        status=status,
        conversion_window_days=window,
        launched_at=launched_at,
    )


def recipient(
    campaign: Campaign,
    patient: Patient,
    *,
    state: str = RecipientState.DELIVERED,
    sent_at: dt.datetime | None = None,
    delivered_at: dt.datetime | None = None,
    error_code: str = "",
    message_error_code: str = "",
    replied_at: dt.datetime | None = None,
    opted_out_at: dt.datetime | None = None,
) -> CampaignRecipient:
    """A recipient row; a sent one gets its outbound campaign message in the patient's conversation."""
    message = None
    if sent_at is not None or state == RecipientState.FAILED:
        conversation = (
            Conversation.objects.filter(inbox=campaign.inbox, patient=patient)
            .exclude(status=ConversationStatus.RESOLVED)
            .first()
        ) or Conversation.objects.create(
            inbox=campaign.inbox, patient=patient, team_id=campaign.inbox.team_id, status=ConversationStatus.PENDING
        )
        message = Message.objects.create(
            conversation=conversation,
            inbox=campaign.inbox,
            direction=MessageDirection.OUTBOUND,
            sender_kind=SenderKind.CAMPAIGN,
            body=f"Campaign {campaign.pk}",
            status={
                RecipientState.FAILED: MessageStatus.FAILED,
                RecipientState.DELIVERED: MessageStatus.DELIVERED,
            }.get(state, MessageStatus.SENT),
            error_code=message_error_code,
            created_at=sent_at or timezone.now(),
            sent_at=sent_at,
            delivered_at=delivered_at,
        )
    if state == RecipientState.DELIVERED and delivered_at is None and sent_at is not None:
        delivered_at = sent_at + dt.timedelta(minutes=1)
    return CampaignRecipient.objects.create(
        campaign=campaign,
        patient=patient,
        phone=patient.identities.get(kind=IdentityKind.PHONE).value,
        state=state,
        message=message,
        error_code=error_code,
        sent_at=sent_at,
        delivered_at=delivered_at,
        replied_at=replied_at,
        opted_out_at=opted_out_at,
    )


def visit(patient: Patient, at: dt.datetime, department: Team) -> Visit:
    return Visit.objects.create(
        patient=patient, visit_number=f"V{next(_numbers)}", department=department, admitted_at=at
    )


def build_scene() -> dict[str, Any]:
    """Three campaigns over two segments with every outcome; the numbers below are counted by hand.

    Campaign A (30-day window, segment S1), launched 1 March:
      p1 delivered, replied · p2 delivered, visit 3 March → A · p3 sent then failed 30003 ·
      p4 rejected 30003 (never sent) · p5 failed, code only on the message (21211) · p6 skipped opted out ·
      p7 skipped invalid · p8 pending · p9 delivered 2 March, opted out, visit 5 April (after A's window) ·
      p10 sent 00:30 on 2 March Shanghai time (still 1 March in UTC), visited before the message ·
      p11 delivered, then B reached them, visit 10 March → B (last touch) ·
      p12 delivered, then B reached them, visit 20 March: B's 7-day window is over → A.
    Campaign B (7-day window, segment S1), launched 6 March: p2, p11, p12 delivered on 6 March.
    Campaign C (30-day window, segment S2), launched 10 March: p13 delivered, p14 failed 30007.
    """
    team, _ = Team.objects.get_or_create(code="marketing-scene", defaults={"name": "Marketing", "name_zh": "市场部"})
    inbox = Inbox.objects.create(name="Campaign SMS", channel_type=ChannelType.SIMULATOR, team=team, auto_assign=False)
    s1 = Segment.objects.create(name="Women over 50, Tianhe")
    s2 = Segment.objects.create(name="Lapsed health checks")
    a = make_campaign("Spring check-up", inbox=inbox, segment=s1, window=30, launched_at=local(1, 9))
    b = make_campaign("Bone density week", inbox=inbox, segment=s1, window=7, launched_at=local(6, 9))
    c = make_campaign("Come back", inbox=inbox, segment=s2, window=30, launched_at=local(10, 9))
    p = {i: make_patient() for i in range(1, 15)}
    D, F, S = RecipientState.DELIVERED, RecipientState.FAILED, RecipientState.SENT
    recipient(a, p[1], state=D, sent_at=local(1, 10), replied_at=local(1, 12))
    recipient(a, p[2], state=D, sent_at=local(1, 10))
    recipient(a, p[3], state=F, sent_at=local(1, 11), error_code="30003")
    recipient(a, p[4], state=F, error_code="30003")
    recipient(a, p[5], state=F, message_error_code="21211")
    recipient(a, p[6], state=RecipientState.SKIPPED_OPTED_OUT)
    recipient(a, p[7], state=RecipientState.SKIPPED_INVALID)
    recipient(a, p[8], state=RecipientState.PENDING)
    recipient(a, p[9], state=D, sent_at=local(2, 10), opted_out_at=local(2, 11))
    recipient(a, p[10], state=S, sent_at=local(2, 0, 30))
    recipient(a, p[11], state=D, sent_at=local(1, 10))
    recipient(a, p[12], state=D, sent_at=local(1, 10))
    for i in (2, 11, 12):
        recipient(b, p[i], state=D, sent_at=local(6, 10))
    recipient(c, p[13], state=D, sent_at=local(10, 10))
    recipient(c, p[14], state=F, sent_at=local(10, 10), error_code="30007")
    visit(p[2], local(3, 15), team)
    visit(p[9], local(5, 9, month=4), team)
    visit(p[10], local(28, 9, month=2), team)
    visit(p[11], local(10, 9), team)
    visit(p[12], local(20, 9), team)
    # A second visit in the window is still one converted recipient.
    visit(p[12], local(21, 9), team)
    return {"inbox": inbox, "team": team, "segments": (s1, s2), "campaigns": (a, b, c), "patients": p}


def scene_numbers() -> dict[str, Any]:
    """What the SQLite subprocess prints and the PostgreSQL test computes: the same selectors, same scene."""
    scene = build_scene()
    a, b, _c = scene["campaigns"]
    s1, _s2 = scene["segments"]
    return {
        "a": selectors.campaign_analytics(a, bucket="day"),
        "a_hourly": selectors.campaign_analytics(a),
        "b": selectors.campaign_analytics(b, bucket="day"),
        "s1": selectors.segment_analytics(s1),
        "overview": selectors.overview(selectors.Period(dt.date(2025, 3, 1), dt.date(2025, 3, 31))),
    }


def _ids_out(data: Any) -> Any:
    """Row ids differ between databases; names do not."""
    if isinstance(data, dict):
        return {k: _ids_out(v) for k, v in data.items() if k not in ("id", "segment_id")}
    if isinstance(data, list):
        return [_ids_out(v) for v in data]
    return data


# --- Analytics: exact numbers ---------------------------------------------------------------------


def test_campaign_numbers_are_exact(db: Any) -> None:
    numbers = scene_numbers()
    a = numbers["a"]

    assert a["totals"] == {
        "recipients": 12,
        "pending": 1,
        "deferred": 0,
        "sent": 9,
        "delivered": 5,
        "failed": 3,
        "skipped": 2,
        "cancelled": 0,
        "replied": 1,
        "opted_out": 1,
        "converted": 2,
    }
    assert a["rates"] == {"delivery": 55.6, "failure": 33.3, "reply": 11.1, "opt_out": 11.1, "conversion": 22.2}
    assert a["failures"] == [
        {"error_code": "30003", "reason": "The handset is unreachable.", "count": 2},
        {"error_code": "21211", "reason": "The number is not a valid phone number.", "count": 1},
    ]
    assert [(row["state"], row["count"]) for row in a["skipped"]] == [
        ("skipped_opted_out", 1),
        ("skipped_no_consent", 0),
        ("skipped_invalid", 1),
        ("skipped_missing", 0),
    ]
    assert [(s["step"], s["count"], s["of_recipients"], s["of_previous"]) for s in a["funnel"]] == [
        ("recipients", 12, 100.0, None),
        ("sent", 9, 75.0, 75.0),
        ("delivered", 5, 41.7, 55.6),
        ("replied", 1, 8.3, 20.0),
        ("converted", 2, 16.7, None),
    ]
    assert numbers["b"]["totals"]["converted"] == 1
    assert numbers["b"]["rates"]["conversion"] == 33.3


def test_time_buckets_are_hospital_days_and_hours(db: Any) -> None:
    numbers = scene_numbers()

    daily = numbers["a"]["series"]
    assert daily["bucket"] == "day"
    # 00:30 on 2 March in Shanghai is 1 March in UTC; it is counted on the hospital's 2 March.
    assert [(p["label"], p["sent"], p["delivered"], p["replied"]) for p in daily["points"]] == [
        ("2025-03-01", 5, 4, 1),
        ("2025-03-02", 2, 1, 0),
    ]
    hourly = numbers["a_hourly"]["series"]
    assert hourly["bucket"] == "hour"
    points = {p["label"]: (p["sent"], p["delivered"], p["replied"]) for p in hourly["points"]}
    # Every hour from the first event to the last, the empty ones too.
    assert len(hourly["points"]) == 25
    assert points["2025-03-01 10:00"] == (4, 4, 0)
    assert points["2025-03-01 11:00"] == (1, 0, 0)
    assert points["2025-03-01 12:00"] == (0, 0, 1)
    assert points["2025-03-02 00:00"] == (1, 0, 0)
    assert points["2025-03-02 10:00"] == (1, 1, 0)
    assert points["2025-03-01 15:00"] == (0, 0, 0)


def test_segment_adds_up_its_campaigns(db: Any) -> None:
    s1 = scene_numbers()["s1"]

    assert s1["totals"]["recipients"] == 15
    assert s1["totals"]["sent"] == 12
    assert s1["totals"]["delivered"] == 8
    # p2 and p12 credited to A, p11 to B: each visit once, to one campaign.
    assert s1["totals"]["converted"] == 3
    assert [(row["campaign"]["name"], row["totals"]["converted"]) for row in s1["campaigns"]] == [
        ("Bone density week", 1),
        ("Spring check-up", 2),
    ]


def test_overview_lists_campaigns_and_segments_of_the_period(db: Any) -> None:
    overview = scene_numbers()["overview"]

    assert overview["totals"]["recipients"] == 17
    assert overview["totals"]["failed"] == 4
    assert overview["totals"]["converted"] == 3
    assert [row["campaign"]["name"] for row in overview["campaigns"]] == [
        "Come back",
        "Bone density week",
        "Spring check-up",
    ]
    assert [(row["segment"]["name"], row["campaigns"], row["totals"]["sent"]) for row in overview["segments"]] == [
        ("Lapsed health checks", 1, 2),
        ("Women over 50, Tianhe", 2, 12),
    ]
    assert overview["failures"][0] == {"error_code": "30003", "reason": "The handset is unreachable.", "count": 2}
    assert {"error_code": "30007", "reason": "The carrier filtered the message.", "count": 1} in overview["failures"]
    series = overview["series"]["points"]
    assert len(series) == 31
    assert sum(p["sent"] for p in series) == 12
    assert series[5] == {
        "start": local(6, 0).isoformat(),
        "label": "2025-03-06",
        "sent": 3,
        "delivered": 3,
        "replied": 0,
    }


def test_sqlite_gives_the_same_numbers_as_postgresql(db: Any, tmp_path: Path) -> None:
    """The embedded demo runs on SQLite: the same scene there must give the same analytics."""
    env = {k: v for k, v in os.environ.items() if k not in ("DATABASE_URL", "REDIS_URL")}
    env.update(DATA_DIR=str(tmp_path), DJANGO_SETTINGS_MODULE="config.settings", HOSPITAL_TIME_ZONE="Asia/Shanghai")
    script = (
        "import django, json; django.setup()\n"
        "from django.core.management import call_command; call_command('migrate', verbosity=0)\n"
        "from tests.campaigns.test_replies_analytics import scene_numbers\n"
        "print(json.dumps(scene_numbers(), default=str))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stderr[-3000:]
    on_sqlite = json.loads(result.stdout.strip().splitlines()[-1])
    on_postgres = json.loads(json.dumps(scene_numbers(), default=str))

    assert on_sqlite["a"]["totals"]["converted"] == 2
    assert _ids_out(on_sqlite) == _ids_out(on_postgres)


# --- Replies --------------------------------------------------------------------------------------

Deliver = Callable[..., InboundResult]


@pytest.fixture
def segment(db: Any) -> Segment:
    return Segment.objects.create(name="Everyone")


def sent_recently(
    campaign: Campaign, phone: str, *, ago: dt.timedelta = dt.timedelta(hours=2), state: str = RecipientState.DELIVERED
) -> CampaignRecipient:
    patient = PatientIdentity.objects.filter(kind=IdentityKind.PHONE, value=phone).first()
    return recipient(
        campaign, patient.patient if patient else make_patient(phone), state=state, sent_at=timezone.now() - ago
    )


def labels_of(conversation: Conversation) -> list[str]:
    return sorted(conversation.labels.values_list("name", flat=True))


def test_a_reply_is_recorded_once_and_labels_the_conversation(
    world: World, segment: Segment, inbound: Deliver, capture_events: Any
) -> None:
    campaign = make_campaign("Spring check-up", inbox=world.inbox_a, segment=segment, status=CampaignStatus.RUNNING)
    row = sent_recently(campaign, "+8613800000001")
    events = capture_events()

    first = inbound(world.inbox_a, "+8613800000001", "Yes please, how do I book?")
    second = inbound(world.inbox_a, "+8613800000001", "Tomorrow morning?")

    row.refresh_from_db()
    assert row.replied_at == first.message.created_at
    assert row.opted_out_at is None
    assert first.conversation.pk == row.message.conversation_id
    assert labels_of(first.conversation) == ["campaign: Spring check-up"]
    # The reply itself stays in the inbox, as every inbound message does.
    assert Message.objects.filter(pk__in=[first.message.pk, second.message.pk]).count() == 2
    updates = [
        e for e in events.all() if (e.type, e.op) == ("conversation", "update") and "labels" in e.payload["changed"]
    ]
    assert len(updates) == 1
    assert [label["name"] for label in updates[0].payload["conversation"]["labels"]] == ["campaign: Spring check-up"]


def test_existing_labels_are_kept(world: World, segment: Segment, inbound: Deliver) -> None:
    campaign = make_campaign("A very long campaign name " * 4, inbox=world.inbox_a, segment=segment)
    row = sent_recently(campaign, "+8613800000002")
    conversation = Conversation.objects.get(pk=row.message.conversation_id)
    from contactcenter.actions.conversations import set_labels

    set_labels(conversation=conversation, label_names=["VIP"], actor=None)

    inbound(world.inbox_a, "+8613800000002", "ok")

    names = labels_of(conversation)
    assert "VIP" in names
    assert len(names) == 2
    long_label = next(n for n in names if n != "VIP")
    assert long_label.startswith("campaign: A very long campaign name")
    assert len(long_label) == 60


def test_a_message_after_the_window_or_from_someone_else_is_not_a_reply(
    world: World, segment: Segment, inbound: Deliver
) -> None:
    campaign = make_campaign("Old news", inbox=world.inbox_a, segment=segment, window=7)
    old = sent_recently(campaign, "+8613800000003", ago=dt.timedelta(days=8))
    failed = sent_recently(campaign, "+8613800000004", state=RecipientState.FAILED)

    late = inbound(world.inbox_a, "+8613800000003", "hello?")
    bounced = inbound(world.inbox_a, "+8613800000004", "hello?")
    stranger = inbound(world.inbox_a, "+8613800000005", "hello?")

    old.refresh_from_db()
    failed.refresh_from_db()
    assert old.replied_at is None
    assert failed.replied_at is None
    for result in (late, bounced, stranger):
        assert labels_of(result.conversation) == []


def test_the_reply_goes_to_the_latest_campaign_preferring_the_inbox_it_came_to(
    world: World, segment: Segment, inbound: Deliver
) -> None:
    phone = "+8613800000006"
    older_here = make_campaign("Cardiology week", inbox=world.inbox_a, segment=segment)
    newer_elsewhere = make_campaign("Orthopedics week", inbox=world.inbox_b, segment=segment)
    newest_here = make_campaign("Heart health talk", inbox=world.inbox_a, segment=segment)
    a = sent_recently(older_here, phone, ago=dt.timedelta(days=3))
    b = sent_recently(newer_elsewhere, phone, ago=dt.timedelta(hours=1))

    inbound(world.inbox_a, phone, "Is it free?")
    a.refresh_from_db()
    b.refresh_from_db()
    assert a.replied_at is not None
    assert b.replied_at is None

    c = sent_recently(newest_here, phone, ago=dt.timedelta(minutes=30))
    result = inbound(world.inbox_a, phone, "And this one?")
    c.refresh_from_db()
    assert c.replied_at == result.message.created_at
    assert labels_of(result.conversation) == ["campaign: Cardiology week", "campaign: Heart health talk"]


def test_a_web_chat_elsewhere_is_not_an_answer_to_an_sms_campaign(
    world: World, segment: Segment, inbound: Deliver
) -> None:
    chat = Inbox.objects.create(name="Website chat", channel_type=ChannelType.WEBCHAT, team=world.team_a)
    campaign = make_campaign("Spring check-up", inbox=world.inbox_a, segment=segment)
    row = sent_recently(campaign, "+8613800000010")

    result = inbound(chat, "+8613800000010", "Hello, a question about parking")

    row.refresh_from_db()
    assert row.replied_at is None
    assert labels_of(result.conversation) == []


def test_a_message_from_someone_not_messaged_costs_one_query(
    world: World, segment: Segment, inbound: Deliver, django_assert_num_queries: Any
) -> None:
    from campaigns.replies import handle_inbound

    result = inbound(world.inbox_a, "+8613800000011", "Hello")

    with django_assert_num_queries(1):
        handle_inbound(message=result.message, conversation=result.conversation, patient=result.patient, keyword=None)


def test_a_reply_while_a_status_callback_holds_the_recipient_neither_waits_nor_deadlocks(
    transactional_db: None, world: World, segment: Segment, inbound: Deliver, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The status callback's order: recipient row (status hook), then the event-order lock. The inbound
    path takes the event-order lock last (after its hooks), and its reply hook must not wait for a row a
    callback holds either: had it held the lock at its hook and waited for the row, this would deadlock."""
    from django.db import connection, connections, transaction

    from campaigns.replies import handle_inbound
    from contactcenter import inbound_hooks
    from contactcenter.events import _EVENT_ORDER_LOCK

    campaign = make_campaign("Spring check-up", inbox=world.inbox_a, segment=segment)
    row = sent_recently(campaign, "+8613800000012", state=RecipientState.SENT)
    locked, at_hook, errors = threading.Event(), threading.Event(), []

    def reply_hook(**kwargs: Any) -> None:
        # The reply has reached its hook, holding the event-order lock: now the callback may go on.
        at_hook.set()
        handle_inbound(**kwargs)

    monkeypatch.setitem(inbound_hooks._hooks, "campaign_replies", (reply_hook, None))

    def status_callback() -> None:
        try:
            with transaction.atomic():
                CampaignRecipient.objects.select_for_update().get(pk=row.pk)
                locked.set()
                # Hold the row until the reply is in its hook, as a slow callback would; then ask for the
                # lock the reply holds. Had the hook waited for the row, PostgreSQL would now see a deadlock.
                if not at_hook.wait(30):
                    raise TimeoutError("the reply never reached its hook")
                with connection.cursor() as cursor:
                    cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EVENT_ORDER_LOCK])
                CampaignRecipient.objects.filter(pk=row.pk).update(state=RecipientState.DELIVERED)
        except Exception as error:  # a deadlock victim, if it comes to that
            errors.append(error)
        finally:
            connections.close_all()

    callback = threading.Thread(target=status_callback)
    callback.start()
    assert locked.wait(10)
    result = inbound(world.inbox_a, "+8613800000012", "Yes, please call me")
    callback.join(30)

    assert not callback.is_alive(), "the status callback never finished"
    assert at_hook.is_set()
    assert errors == []
    row.refresh_from_db()
    assert row.state == RecipientState.DELIVERED
    assert row.replied_at == result.message.created_at
    assert labels_of(result.conversation) == ["campaign: Spring check-up"]


def test_stop_opts_out_and_skips_the_patients_waiting_sends_at_once(
    world: World, segment: Segment, inbound: Deliver
) -> None:
    phone = "+8613800000007"
    replied_to = make_campaign("Spring check-up", inbox=world.inbox_a, segment=segment)
    row = sent_recently(replied_to, phone)
    patient = row.patient
    running = make_campaign("Running", inbox=world.inbox_a, segment=segment, status=CampaignStatus.RUNNING)
    paused = make_campaign("Paused", inbox=world.inbox_b, segment=segment, status=CampaignStatus.PAUSED)
    finished = make_campaign("Finished", inbox=world.inbox_a, segment=segment, status=CampaignStatus.CANCELLED)
    waiting = recipient(running, patient, state=RecipientState.PENDING)
    deferred = recipient(paused, patient, state=RecipientState.DEFERRED)
    left_alone = recipient(finished, patient, state=RecipientState.CANCELLED)
    someone_else = recipient(running, make_patient(), state=RecipientState.PENDING)

    result = inbound(world.inbox_a, phone, "STOP")

    row.refresh_from_db()
    assert row.opted_out_at == result.message.created_at
    # An opt-out is counted as an opt-out, not as a reply.
    assert row.replied_at is None
    assert labels_of(result.conversation) == ["campaign: Spring check-up"]
    states = {r.pk: r.state for r in CampaignRecipient.objects.all()}
    assert states[waiting.pk] == RecipientState.SKIPPED_OPTED_OUT
    assert states[deferred.pk] == RecipientState.SKIPPED_OPTED_OUT
    assert states[left_alone.pk] == RecipientState.CANCELLED
    assert states[someone_else.pk] == RecipientState.PENDING
    assert states[row.pk] == RecipientState.DELIVERED


def test_stop_from_a_patient_who_was_not_messaged_yet_still_skips_their_waiting_sends(
    world: World, segment: Segment, inbound: Deliver
) -> None:
    running = make_campaign("Running", inbox=world.inbox_a, segment=segment, status=CampaignStatus.RUNNING)
    waiting = recipient(running, make_patient("+8613800000008"), state=RecipientState.PENDING)

    inbound(world.inbox_b, "+8613800000008", "退订")

    waiting.refresh_from_db()
    assert waiting.state == RecipientState.SKIPPED_OPTED_OUT
    assert waiting.opted_out_at is None


def test_a_stop_then_a_reply_are_both_recorded_once(world: World, segment: Segment, inbound: Deliver) -> None:
    campaign = make_campaign("Spring check-up", inbox=world.inbox_a, segment=segment)
    row = sent_recently(campaign, "+8613800000009")

    stop = inbound(world.inbox_a, "+8613800000009", "STOP")
    inbound(world.inbox_a, "+8613800000009", "STOP")
    why = inbound(world.inbox_a, "+8613800000009", "why did you text me")

    row.refresh_from_db()
    assert row.opted_out_at == stop.message.created_at
    assert row.replied_at == why.message.created_at


# --- Conversions: last touch within the window ----------------------------------------------------


def test_conversion_window_edges_and_last_touch(world: World, segment: Segment) -> None:
    a = make_campaign("A", inbox=world.inbox_a, segment=segment, window=10)
    b = make_campaign("B", inbox=world.inbox_a, segment=segment, window=10)
    on_edge, past_edge, at_send, tie = make_patient(), make_patient(), make_patient(), make_patient()
    sent = local(1, 10)
    recipient(a, on_edge, sent_at=sent)
    recipient(a, past_edge, sent_at=sent)
    recipient(a, at_send, sent_at=sent)
    # The same patient messaged by both campaigns in the same instant: exactly one is credited.
    tie_a = recipient(a, tie, sent_at=sent)
    tie_b = recipient(b, tie, sent_at=sent)
    visit(on_edge, sent + dt.timedelta(days=10), world.team_a)
    visit(past_edge, sent + dt.timedelta(days=10, seconds=1), world.team_a)
    visit(at_send, sent, world.team_a)
    visit(tie, local(2), world.team_a)

    converted = {r.patient_id: r.campaign_id for r in CampaignRecipient.objects.filter(selectors.converted_q())}

    # The visit at the very end of the window counts; a second later, or at the send itself, does not.
    assert converted == {on_edge.pk: a.pk, tie.pk: max(tie_a, tie_b, key=lambda r: r.pk).campaign_id}
    assert (
        selectors.totals(CampaignRecipient.objects.filter(campaign=a)).converted
        + selectors.totals(CampaignRecipient.objects.filter(campaign=b)).converted
        == 2
    )


def test_a_visit_recorded_later_counts_at_once(world: World, segment: Segment) -> None:
    campaign = make_campaign("A", inbox=world.inbox_a, segment=segment)
    row = recipient(campaign, make_patient(), sent_at=local(1))
    assert selectors.campaign_analytics(campaign)["totals"]["converted"] == 0

    visit(row.patient, local(5), world.team_b)

    assert selectors.campaign_analytics(campaign)["totals"]["converted"] == 1


# --- API, pages, CSV and who may read them --------------------------------------------------------


def client_for(user: Any, language: str = "en") -> Client:
    client = Client()
    client.force_login(user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return client


MARCH = {"from": "2025-03-01", "to": "2025-03-31"}


@pytest.fixture
def scene(world: World) -> dict[str, Any]:
    return build_scene()


def test_url_names() -> None:
    assert reverse("campaigns-analytics") == "/campaigns/analytics/"
    assert reverse("campaign-analytics", args=[7]) == "/campaigns/analytics/7/"
    assert reverse("campaign-analytics-export", args=[7]) == "/campaigns/analytics/7/export.csv"
    assert reverse("campaigns-analytics-export") == "/campaigns/analytics/export.csv"
    assert reverse("segment-analytics", args=[3]) == "/campaigns/analytics/segments/3/"
    assert reverse("api-campaign-analytics", args=[7]) == "/api/v1/campaigns/analytics/7/"
    assert reverse("api-segment-analytics", args=[3]) == "/api/v1/campaigns/analytics/segments/3/"
    assert reverse("api-campaigns-analytics-overview") == "/api/v1/campaigns/analytics/overview/"


def test_api_answers_the_selectors_numbers(world: World, scene: dict[str, Any]) -> None:
    a, _b, _c = scene["campaigns"]
    s1, _s2 = scene["segments"]
    client = client_for(world.mark)

    campaign = client.get(f"/api/v1/campaigns/analytics/{a.pk}/", {"bucket": "day"})
    segment = client.get(f"/api/v1/campaigns/analytics/segments/{s1.pk}/")
    overview = client.get("/api/v1/campaigns/analytics/overview/", MARCH)

    assert campaign.status_code == 200
    assert campaign.json()["totals"]["converted"] == 2
    assert campaign.json()["campaign"]["launched_at"] == "2025-03-01T09:00:00+08:00"
    assert [p["label"] for p in campaign.json()["series"]["points"]] == ["2025-03-01", "2025-03-02"]
    assert segment.status_code == 200
    assert segment.json()["totals"]["recipients"] == 15
    assert overview.status_code == 200
    assert overview.json()["period"] == {"from": "2025-03-01", "to": "2025-03-31"}
    assert len(overview.json()["campaigns"]) == 3
    # Aggregates only: no patient's name or number in any answer.
    for response in (campaign, segment, overview):
        assert b"Patient " not in response.content
        assert b"+86138" not in response.content


@pytest.mark.parametrize(
    ("url", "query", "field"),
    [
        ("/api/v1/campaigns/analytics/overview/", {"from": "2025-13-01"}, "from"),
        ("/api/v1/campaigns/analytics/overview/", {"to": "2025-02-30"}, "to"),
        ("/api/v1/campaigns/analytics/overview/", {"from": "2025-03-31", "to": "2025-03-01"}, "to"),
        ("/api/v1/campaigns/analytics/overview/", {"from": "2020-01-01", "to": "2025-01-01"}, "from"),
        ("/api/v1/campaigns/analytics/overview/", {"from": "2025-03-01\x00"}, "from"),
        ("/api/v1/campaigns/analytics/{a}/", {"bucket": "week"}, "bucket"),
        ("/api/v1/campaigns/analytics/segments/{s}/", {"bucket": "minute"}, "bucket"),
    ],
)
def test_api_bad_parameters_are_field_errors(
    world: World, scene: dict[str, Any], url: str, query: dict[str, str], field: str
) -> None:
    a = scene["campaigns"][0]
    s = scene["segments"][0]

    response = client_for(world.mark).get(url.format(a=a.pk, s=s.pk), query)

    assert response.status_code == 400
    assert list(response.json()) == [field]


def test_api_unknown_ids_are_404(world: World) -> None:
    client = client_for(world.sam)

    assert client.get("/api/v1/campaigns/analytics/999999/").status_code == 404
    assert client.get("/api/v1/campaigns/analytics/segments/999999/").status_code == 404
    assert client.get(f"/api/v1/campaigns/analytics/{2**70}/").status_code == 404


ROLE_CASES = [("mark", 200), ("sam", 200), ("ada", 200), ("alice", 403), ("nina", 403)]


@pytest.mark.parametrize(("who", "expected"), ROLE_CASES)
def test_only_marketers_supervisors_and_admins_read_analytics(
    world: World, scene: dict[str, Any], who: str, expected: int
) -> None:
    a = scene["campaigns"][0]
    s = scene["segments"][0]
    client = client_for(world.users()[who])

    urls = [
        f"/api/v1/campaigns/analytics/{a.pk}/",
        f"/api/v1/campaigns/analytics/segments/{s.pk}/",
        "/api/v1/campaigns/analytics/overview/",
        f"/campaigns/analytics/{a.pk}/",
        f"/campaigns/analytics/segments/{s.pk}/",
        "/campaigns/analytics/",
        f"/campaigns/analytics/{a.pk}/export.csv",
        "/campaigns/analytics/export.csv",
    ]
    assert [client.get(url).status_code for url in urls] == [expected] * len(urls)
    if expected != 200:
        assert not AuditLogEntry.objects.filter(object_type="campaign_analytics").exists()


def test_anonymous_is_sent_to_sign_in(world: World, scene: dict[str, Any]) -> None:
    a = scene["campaigns"][0]
    client = Client()

    page = client.get(f"/campaigns/analytics/{a.pk}/")
    export = client.get("/campaigns/analytics/export.csv")
    api = client.get(f"/api/v1/campaigns/analytics/{a.pk}/")

    assert page.status_code == 302
    assert export.status_code == 302
    assert api.status_code in (401, 403)


def test_campaign_page_shows_the_numbers_and_feeds_the_charts(world: World, scene: dict[str, Any]) -> None:
    a = scene["campaigns"][0]

    response = client_for(world.mark).get(f"/campaigns/analytics/{a.pk}/")

    assert response.status_code == 200
    body = response.content.decode()
    assert response.context["data"]["totals"]["sent"] == 9
    assert 'data-kpi="converted">2<small>22.2%</small>' in body
    assert 'id="analytics-data"' in body
    assert 'id="analytics-i18n"' in body
    assert "campaigns/analytics.js" in body
    assert "The handset is unreachable." in body
    assert reverse("campaign-analytics-export", args=[a.pk]) in body
    assert "Patient " not in body
    assert "+86138" not in body


def test_pages_in_chinese(world: World, scene: dict[str, Any]) -> None:
    a = scene["campaigns"][0]
    client = client_for(world.mark, "zh-hans")

    page = client.get(f"/campaigns/analytics/{a.pk}/")
    overview = client.get("/campaigns/analytics/", MARCH)

    assert page.status_code == 200
    assert overview.status_code == 200
    assert 'lang="zh-hans"' in page.content.decode()
    # Strings already in the catalogue come out in Chinese; the rest arrive with the merged fragment.
    assert "已送达" in page.content.decode()
    assert "导出 CSV" in overview.content.decode()


def test_segment_and_overview_pages(world: World, scene: dict[str, Any]) -> None:
    s1 = scene["segments"][0]
    client = client_for(world.sam)

    segment = client.get(f"/campaigns/analytics/segments/{s1.pk}/")
    overview = client.get("/campaigns/analytics/", MARCH)

    assert segment.status_code == 200
    assert [row["campaign"]["name"] for row in segment.context["data"]["campaigns"]] == [
        "Bone density week",
        "Spring check-up",
    ]
    assert overview.status_code == 200
    assert overview.context["data"]["totals"]["recipients"] == 17
    assert "Women over 50, Tianhe" in overview.content.decode()
    assert "export.csv?from=2025-03-01&amp;to=2025-03-31" in overview.content.decode()


@pytest.mark.parametrize("query", [{"from": "03/01/2025"}, {"from": "2025-03-31", "to": "2025-03-01"}])
def test_overview_bad_period_is_a_400_with_a_message(world: World, query: dict[str, str]) -> None:
    client = client_for(world.mark)

    page = client.get("/campaigns/analytics/", query)
    export = client.get("/campaigns/analytics/export.csv", query)

    assert page.status_code == 400
    assert page.context["error"].encode() in page.content
    assert export.status_code == 400
    assert export.content.strip()
    assert not AuditLogEntry.objects.filter(object_type="campaign_analytics").exists()


def test_campaign_page_bad_bucket_is_a_400(world: World, scene: dict[str, Any]) -> None:
    a = scene["campaigns"][0]

    response = client_for(world.mark).get(f"/campaigns/analytics/{a.pk}/", {"bucket": "week"})

    assert response.status_code == 400
    assert response.context["error"]


def test_unknown_campaign_page_is_a_404(world: World) -> None:
    assert client_for(world.mark).get("/campaigns/analytics/999999/").status_code == 404
    assert client_for(world.mark).get("/campaigns/analytics/999999/export.csv").status_code == 404


def read_csv(response: Any) -> list[list[str]]:
    body = response.content.decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body[1:])))


def test_campaign_csv_is_excel_friendly_aggregate_and_audited(world: World, scene: dict[str, Any]) -> None:
    a = scene["campaigns"][0]

    response = client_for(world.mark).get(f"/campaigns/analytics/{a.pk}/export.csv")

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == f'attachment; filename="campaign-{a.pk}-analytics.csv"'
    rows = read_csv(response)
    assert rows[0] == ["Metric", "Detail", "Count", "Share of sent"]
    assert rows[1:5] == [
        ["Recipients", "", "12", ""],
        ["Sent", "", "9", ""],
        ["Delivered", "", "5", "55.6"],
        ["Failed", "", "3", "33.3"],
    ]
    assert ["Failed", "30003 The handset is unreachable.", "2", "22.2"] in rows
    assert ["Skipped", "Skipped: opted out", "1", ""] in rows
    assert rows[-1] == ["Converted (visited)", "", "2", "22.2"]
    assert "Patient" not in response.content.decode()
    entry = AuditLogEntry.objects.get(object_type="campaign_analytics")
    assert (entry.actor, entry.action, entry.object_id, entry.patient_id) == (
        world.mark,
        "export_report",
        str(a.pk),
        None,
    )
    assert entry.detail == {"campaign_id": a.pk, "rows": len(rows) - 1}


def test_overview_csv_rows_headers_and_audit(world: World, scene: dict[str, Any]) -> None:
    response = client_for(world.sam).get("/campaigns/analytics/export.csv", MARCH)

    assert response["Content-Disposition"] == 'attachment; filename="campaigns-analytics-20250301-20250331.csv"'
    rows = read_csv(response)
    assert rows[0][:5] == ["Campaign", "Segment", "Status", "Launched", "Recipients"]
    assert ["|".join(row) for row in rows[1:]] == [
        "Come back|Lapsed health checks|Completed|2025-03-10 09:00|2|2|1|1|0|0|0|0|50.0|0.0|0.0|0.0",
        "Bone density week|Women over 50, Tianhe|Completed|2025-03-06 09:00|3|3|3|0|0|0|0|1|100.0|0.0|0.0|33.3",
        "Spring check-up|Women over 50, Tianhe|Completed|2025-03-01 09:00|12|9|5|3|2|1|1|2|55.6|11.1|11.1|22.2",
    ]
    entry = AuditLogEntry.objects.get(object_type="campaign_analytics")
    assert entry.object_id == "overview"
    assert entry.detail == {"date_from": "2025-03-01", "date_to": "2025-03-31", "rows": 3}


def test_csv_headers_follow_the_language(world: World, scene: dict[str, Any]) -> None:
    rows = read_csv(client_for(world.mark, "zh-hans").get("/campaigns/analytics/export.csv", MARCH))

    # "Campaign" and "Sent" are in the catalogue already: 营销活动, 已发送.
    assert rows[0][0] == "营销活动"
    assert rows[0][5] == "已发送"


def test_csv_cells_that_look_like_formulas_are_escaped(world: World, segment: Segment) -> None:
    evil = Segment.objects.create(name="@SUM(A1)")
    for name in ('=HYPERLINK("http://evil")', "+1 club", "-2", "Plain"):
        make_campaign(name, inbox=world.inbox_a, segment=evil, launched_at=local(5))

    rows = read_csv(client_for(world.ada).get("/campaigns/analytics/export.csv", MARCH))

    assert sorted(row[0] for row in rows[1:]) == sorted(['\'=HYPERLINK("http://evil")', "'+1 club", "'-2", "Plain"])
    assert {row[1] for row in rows[1:]} == {"'@SUM(A1)"}


# --- In a real browser: the charts draw ------------------------------------------------------------


@pytest.mark.browser
def test_analytics_pages_draw_their_charts(
    transactional_db: None,
    world: World,
    live_server_url: str,  # noqa: F811
    browser: Any,  # noqa: F811
) -> None:
    scene = build_scene()
    a = scene["campaigns"][0]
    s1 = scene["segments"][0]
    page = login(browser, live_server_url, "mark", PASSWORD)
    errors: list[str] = []
    page.on("pageerror", lambda error: errors.append(str(error)))
    page.on("console", lambda message: errors.append(message.text) if message.type == "error" else None)

    page.goto(f"{live_server_url}/campaigns/analytics/{a.pk}/?bucket=day")
    assert page.locator("[data-chart=funnel] svg rect").count() == 5
    assert page.locator("[data-chart=series] svg path.an-line").count() == 3
    assert page.locator("[data-chart=series] svg circle").count() == 6
    assert page.locator("[data-kpi=converted]").inner_text().startswith("2")
    full_page_screenshot(page, "campaign-analytics-en")
    page.select_option("#an-bucket", "hour")
    page.wait_for_url("**bucket=hour**")
    assert page.locator("[data-chart=series] svg circle").count() == 25 * 3

    page.goto(f"{live_server_url}/campaigns/analytics/segments/{s1.pk}/")
    assert page.locator("[data-chart=campaign_rates] svg rect").count() == 4

    page.goto(f"{live_server_url}/campaigns/analytics/?from=2025-03-01&to=2025-03-31")
    assert page.locator("[data-chart=campaign_rates] svg rect").count() == 6
    assert page.locator("[data-chart=series] svg path.an-line").count() == 3
    full_page_screenshot(page, "campaign-analytics-overview-en")
    page.context.close()

    zh = login(browser, live_server_url, "mark", PASSWORD, locale="zh-CN")
    zh.goto(f"{live_server_url}/campaigns/analytics/{a.pk}/")
    assert zh.locator("html").get_attribute("lang") == "zh-hans"
    assert zh.locator("[data-chart=funnel] svg rect").count() == 5
    full_page_screenshot(zh, "campaign-analytics-zh")
    zh.context.close()
    assert errors == []

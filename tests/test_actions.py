"""The actions are the only writers: each one's state change and the exact events it stores.

Events are read back from the Event table (type.op in id order, payloads and the audience columns
inbox/team/user/conversation that decide who may read them). Deliveries go through the real
simulator adapter; TASK_RUNNER=immediate runs the delivery task when the caller's transaction commits.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection
from django.utils import timezone

from channels_adapters.base import StatusUpdate
from channels_adapters.simulator.models import SimulatedDelivery
from contactcenter import access
from contactcenter.actions.conversations import (
    add_note,
    assign_conversation,
    assign_round_robin,
    mark_read,
    reopen_conversation,
    resolve_conversation,
    set_labels,
    set_pending,
    set_priority,
    snooze_conversation,
    transfer_to_team,
    wake_snoozed_conversations,
)
from contactcenter.actions.delivery import abandon_delivery, deliver_message, update_message_status
from contactcenter.actions.outbound import MAX_BODY_CHARS, send_outbound
from contactcenter.actions.patients import (
    add_identity,
    create_patient,
    merge_patients,
    resolve_patient,
    update_patient,
)
from contactcenter.actions.presence import set_availability
from contactcenter.models import (
    AgentProfile,
    AuditAction,
    AuditLogEntry,
    Availability,
    Conversation,
    ConversationStatus,
    Event,
    IdentityKind,
    Message,
    MessageDirection,
    MessageStatus,
    Note,
    Patient,
    PatientIdentity,
    Priority,
    Role,
    SenderKind,
    Tag,
    Visit,
)
from tests.conftest import make_staff

PHONE = "+8613800138000"
OTHER_PHONE = "+8613900139000"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings) -> None:
    """The personas' passwords are hashed on creation; the production hasher is deliberately slow."""
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def phone(n: int) -> str:
    return f"+86137{n:08d}"


def audience(event: Event) -> tuple[int | None, int | None, int | None, int | None]:
    return (event.inbox_id, event.team_id, event.user_id, event.conversation_id)


def set_profile(user: Any, **fields: Any) -> None:
    AgentProfile.objects.filter(user=user).update(**fields)


def statuses(captured: list[Event]) -> list[str]:
    return [e.payload["status"] for e in captured if (e.type, e.op) == ("message", "update_status")]


def visible_to(user: Any, captured: list[Event]) -> list[Event]:
    rule = access.event_filter_for(user)
    if rule is None:
        return []
    return list(Event.objects.filter(rule, id__in=[e.id for e in captured]).order_by("id"))


def run_concurrently(count: int, work: Callable[[int], Any]) -> tuple[list[Any], list[BaseException]]:
    """Start `count` threads at one barrier; each runs work(i) on its own database connection."""
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count
    errors: list[BaseException] = []

    def worker(index: int) -> None:
        try:
            barrier.wait(timeout=15)
            results[index] = work(index)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert not any(thread.is_alive() for thread in threads), "a worker thread hung"
    return results, errors


# --- receive_inbound ---------------------------------------------------------------------------


def test_first_message_from_a_new_number_creates_patient_and_conversation_and_publishes_both(
    world, inbound, capture_events
) -> None:
    capture = capture_events()
    result = inbound(world.inbox_a, PHONE, "My chest hurts when I climb stairs", name="王芳")

    assert result.created is True
    patient = Patient.objects.get()
    assert patient.pk == result.patient.pk and patient.name == "王芳"
    assert list(patient.identities.values_list("kind", "value")) == [(IdentityKind.PHONE, PHONE)]
    conversation = Conversation.objects.get()
    assert conversation.pk == result.conversation.pk
    assert (conversation.inbox_id, conversation.team_id, conversation.patient_id) == (
        world.inbox_a.pk,
        world.team_a.pk,
        patient.pk,
    )
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.unread_count == 1
    assert conversation.last_message_preview == "My chest hurts when I climb stairs"
    message = Message.objects.get()
    assert (message.direction, message.sender_kind, message.status) == (
        MessageDirection.INBOUND,
        SenderKind.PATIENT,
        MessageStatus.RECEIVED,
    )

    captured = capture.all()
    assert capture.kinds() == ["conversation.add", "message.add"]
    added, message_added = captured
    assert added.payload["conversation"]["id"] == conversation.pk
    assert added.payload["conversation"]["status"] == ConversationStatus.OPEN
    assert added.payload["conversation"]["unread_count"] == 1
    assert added.payload["conversation"]["patient"]["id"] == patient.pk
    assert message_added.payload["message"]["id"] == message.pk
    assert message_added.payload["message"]["conversation_id"] == conversation.pk
    assert message_added.payload["message"]["body"] == "My chest hurts when I climb stairs"
    assert message_added.payload["message"]["direction"] == MessageDirection.INBOUND
    for event in captured:
        assert audience(event) == (world.inbox_a.pk, world.team_a.pk, None, conversation.pk)


def test_message_to_a_live_conversation_appends_and_publishes_update_then_message(
    world, inbound, capture_events
) -> None:
    first = inbound(world.inbox_a, PHONE, "Hello")
    capture = capture_events()
    second = inbound(world.inbox_a, PHONE, "Are you there?")

    assert second.created is True
    assert second.conversation.pk == first.conversation.pk
    assert Conversation.objects.count() == 1 and Patient.objects.count() == 1
    conversation = Conversation.objects.get()
    assert conversation.unread_count == 2
    assert conversation.last_message_preview == "Are you there?"

    assert capture.kinds() == ["conversation.update", "message.add"]
    updated, message_added = capture.all()
    assert updated.payload["changed"] == ["last_message_at", "unread_count"]
    assert updated.payload["conversation"]["unread_count"] == 2
    assert updated.payload["conversation"]["last_message_preview"] == "Are you there?"
    assert message_added.payload["message"]["id"] == second.message.pk
    assert message_added.payload["message"]["body"] == "Are you there?"
    for event in (updated, message_added):
        assert audience(event) == (world.inbox_a.pk, world.team_a.pk, None, conversation.pk)


def test_same_number_in_another_inbox_gets_its_own_conversation_for_the_same_patient(world, inbound) -> None:
    in_a = inbound(world.inbox_a, PHONE)
    in_b = inbound(world.inbox_b, PHONE)
    assert in_a.patient.pk == in_b.patient.pk
    assert in_a.conversation.pk != in_b.conversation.pk
    assert in_b.conversation.team_id == world.team_b.pk


def test_message_within_reopen_window_reopens_the_resolved_conversation(world, inbound, capture_events) -> None:
    world.inbox_a.reopen_window_hours = 2
    world.inbox_a.save()
    first = inbound(world.inbox_a, PHONE, "Thanks, bye")
    resolve_conversation(conversation=first.conversation, actor=world.alice)
    Conversation.objects.filter(pk=first.conversation.pk).update(resolved_at=timezone.now() - dt.timedelta(hours=1))

    capture = capture_events()
    again = inbound(world.inbox_a, PHONE, "One more question")

    assert again.conversation.pk == first.conversation.pk
    conversation = Conversation.objects.get()
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.resolved_at is None
    assert capture.kinds() == ["conversation.update", "message.add"]
    updated = capture.all()[0]
    assert updated.payload["changed"] == ["status", "last_message_at", "unread_count"]
    assert updated.payload["conversation"]["status"] == ConversationStatus.OPEN
    assert updated.payload["conversation"]["resolved_at"] is None


def test_message_after_reopen_window_starts_a_new_conversation(world, inbound, capture_events) -> None:
    world.inbox_a.reopen_window_hours = 2
    world.inbox_a.save()
    first = inbound(world.inbox_a, PHONE, "Thanks, bye")
    resolve_conversation(conversation=first.conversation, actor=world.alice)
    Conversation.objects.filter(pk=first.conversation.pk).update(resolved_at=timezone.now() - dt.timedelta(hours=3))

    capture = capture_events()
    again = inbound(world.inbox_a, PHONE, "New problem")

    assert again.conversation.pk != first.conversation.pk
    assert again.patient.pk == first.patient.pk
    assert Conversation.objects.get(pk=first.conversation.pk).status == ConversationStatus.RESOLVED
    assert Conversation.objects.get(pk=again.conversation.pk).status == ConversationStatus.OPEN
    assert capture.kinds() == ["conversation.add", "message.add"]
    assert capture.all()[0].payload["conversation"]["id"] == again.conversation.pk


@pytest.mark.parametrize("park", ["snooze", "pending"])
def test_new_inbound_message_wakes_a_snoozed_or_pending_conversation(world, inbound, capture_events, park) -> None:
    first = inbound(world.inbox_a, PHONE)
    if park == "snooze":
        snooze_conversation(
            conversation=first.conversation, until=timezone.now() + dt.timedelta(days=1), actor=world.alice
        )
    else:
        set_pending(conversation=first.conversation, actor=world.alice)

    capture = capture_events()
    again = inbound(world.inbox_a, PHONE, "Any news?")

    assert again.conversation.pk == first.conversation.pk
    conversation = Conversation.objects.get()
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.snoozed_until is None
    assert capture.kinds() == ["conversation.update", "message.add"]
    updated = capture.all()[0]
    assert "status" in updated.payload["changed"]
    assert updated.payload["conversation"]["status"] == ConversationStatus.OPEN
    assert updated.payload["conversation"]["snoozed_until"] is None


def test_provider_retry_of_the_same_message_is_stored_once_and_publishes_nothing(
    world, inbound, capture_events
) -> None:
    first = inbound(world.inbox_a, PHONE, "Hello", provider_id="SM-DUP-1")
    capture = capture_events()
    retry = inbound(world.inbox_a, PHONE, "Hello", provider_id="SM-DUP-1")

    assert first.created is True
    assert retry.created is False
    assert retry.message.pk == first.message.pk
    assert retry.conversation.pk == first.conversation.pk
    assert Message.objects.count() == 1
    assert Conversation.objects.get().unread_count == 1
    assert capture.kinds() == []


def test_same_provider_id_in_another_inbox_is_a_different_message(world, inbound) -> None:
    in_a = inbound(world.inbox_a, PHONE, provider_id="SM-SAME")
    in_b = inbound(world.inbox_b, PHONE, provider_id="SM-SAME")
    assert in_b.created is True
    assert in_a.message.pk != in_b.message.pk
    assert Message.objects.count() == 2


def test_auto_assigned_inbound_conversation_is_published_to_the_assignee(world, inbound, capture_events) -> None:
    world.inbox_a.auto_assign = True
    world.inbox_a.save()
    set_profile(world.alice, availability=Availability.ONLINE)

    capture = capture_events()
    result = inbound(world.inbox_a, PHONE)

    assert Conversation.objects.get().assignee_id == world.alice.pk
    assert capture.kinds() == ["conversation.add", "message.add"]
    added = capture.all()[0]
    assert added.payload["conversation"]["assignee"]["id"] == world.alice.pk
    for event in capture.all():
        assert audience(event) == (world.inbox_a.pk, world.team_a.pk, world.alice.pk, result.conversation.pk)


@pytest.mark.django_db(transaction=True)
def test_concurrent_provider_retries_store_exactly_one_message(world, inbound, capture_events) -> None:
    capture = capture_events()
    results, errors = run_concurrently(8, lambda i: inbound(world.inbox_a, PHONE, "Hello", provider_id="SM-RACE"))

    assert errors == []
    assert Message.objects.count() == 1
    assert Patient.objects.count() == 1
    assert Conversation.objects.count() == 1
    stored = Message.objects.get()
    assert {r.message.pk for r in results} == {stored.pk}
    assert sum(1 for r in results if r.created) == 1
    assert Conversation.objects.get().unread_count == 1
    assert capture.kinds() == ["conversation.add", "message.add"]


@pytest.mark.django_db(transaction=True)
def test_concurrent_first_messages_from_a_new_number_make_one_patient_and_one_conversation(
    world, inbound, capture_events
) -> None:
    count = 8
    capture = capture_events()
    results, errors = run_concurrently(count, lambda i: inbound(world.inbox_a, PHONE, f"message {i}"))

    assert errors == []
    assert Patient.objects.count() == 1
    assert PatientIdentity.objects.count() == 1
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == count
    assert {r.patient.pk for r in results} == {Patient.objects.get().pk}
    assert {r.conversation.pk for r in results} == {Conversation.objects.get().pk}
    assert Conversation.objects.get().unread_count == count
    kinds = capture.kinds()
    assert kinds.count("conversation.add") == 1
    assert kinds[0] == "conversation.add"
    assert kinds.count("conversation.update") == count - 1
    assert kinds.count("message.add") == count


@pytest.mark.django_db(transaction=True)
def test_concurrent_messages_from_a_known_patient_without_a_live_conversation_share_one_new_conversation(
    world, inbound
) -> None:
    """The patient exists (from the registry) but has no live thread: the racers must not lose messages."""
    create_patient(fields={"name": "李伟"}, identities=[(IdentityKind.PHONE, PHONE)])
    count = 8
    results, errors = run_concurrently(count, lambda i: inbound(world.inbox_a, PHONE, f"message {i}"))

    assert errors == []
    assert Conversation.objects.count() == 1
    assert Message.objects.count() == count
    assert {r.conversation.pk for r in results} == {Conversation.objects.get().pk}


# --- send_outbound and delivery ------------------------------------------------------------------


def test_agent_reply_is_queued_then_delivered_through_the_simulator_in_status_order(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE, "When is my appointment?").conversation
    capture = capture_events()
    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body="  Tomorrow at 9:00.  ", author=world.alice)
        assert Message.objects.get(pk=message.pk).status == MessageStatus.QUEUED
        assert SimulatedDelivery.objects.count() == 0

    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    assert message.body == "Tomorrow at 9:00."
    assert message.provider_message_id and message.provider_message_id.startswith("SIM-")
    assert message.sent_at is not None and message.delivered_at is not None
    assert message.sent_at <= message.delivered_at
    delivery = SimulatedDelivery.objects.get()
    assert (delivery.to, delivery.body, delivery.provider_message_id) == (
        PHONE,
        "Tomorrow at 9:00.",
        message.provider_message_id,
    )

    conversation.refresh_from_db()
    assert conversation.assignee_id == world.alice.pk
    assert conversation.unread_count == 0
    assert conversation.last_message_preview == "Tomorrow at 9:00."

    captured = capture.all()
    assert capture.kinds() == [
        "message.add",
        "conversation.update",
        "message.update_status",
        "message.update_status",
        "message.update_status",
    ]
    added, updated = captured[0], captured[1]
    assert added.payload["message"]["status"] == MessageStatus.QUEUED
    assert added.payload["message"]["direction"] == MessageDirection.OUTBOUND
    assert added.payload["message"]["author"]["id"] == world.alice.pk
    assert updated.payload["changed"] == ["last_message_at", "unread_count", "assignee"]
    assert statuses(captured) == [MessageStatus.SENDING, MessageStatus.SENT, MessageStatus.DELIVERED]
    for event in captured[2:]:
        assert event.payload["message_id"] == message.pk
        assert event.payload["conversation_id"] == conversation.pk
    for event in captured:
        assert audience(event) == (world.inbox_a.pk, world.team_a.pk, world.alice.pk, conversation.pk)


@pytest.mark.parametrize("body", ["", "   \n\t "])
def test_empty_outbound_body_is_refused_and_nothing_is_written(world, inbound, capture_events, body) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        send_outbound(conversation=conversation, body=body, author=world.alice)
    assert "body" in err.value.message_dict
    assert Message.objects.filter(direction=MessageDirection.OUTBOUND).count() == 0
    assert capture.kinds() == []


def test_outbound_body_over_the_limit_is_refused_but_the_limit_itself_is_accepted(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        send_outbound(conversation=conversation, body="x" * (MAX_BODY_CHARS + 1), author=world.alice)
    assert "body" in err.value.message_dict
    assert capture.kinds() == []
    assert Message.objects.filter(direction=MessageDirection.OUTBOUND).count() == 0

    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body="x" * MAX_BODY_CHARS, author=world.alice)
    assert len(Message.objects.get(pk=message.pk).body) == MAX_BODY_CHARS


def test_permanent_provider_failure_marks_the_message_failed_with_the_error(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body="Please call us #fail", author=world.alice)

    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "SIM-30007"
    assert message.error_message == "the simulated network refused this message"
    assert message.provider_message_id is None
    assert message.sent_at is None
    assert SimulatedDelivery.objects.count() == 0

    captured = capture.all()
    assert capture.kinds() == ["message.add", "conversation.update", "message.update_status", "message.update_status"]
    assert statuses(captured) == [MessageStatus.SENDING, MessageStatus.FAILED]
    failed = captured[-1]
    assert failed.payload["error_code"] == "SIM-30007"
    assert failed.payload["error_message"] == "the simulated network refused this message"
    assert failed.payload["message_id"] == message.pk


def test_agent_reply_to_a_snoozed_conversation_makes_it_live(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    assign_conversation(conversation=conversation, assignee=world.bob, actor=world.sam)
    snooze_conversation(conversation=conversation, until=timezone.now() + dt.timedelta(hours=4), actor=world.bob)
    capture = capture_events()
    with django_capture_on_commit_callbacks(execute=True):
        send_outbound(conversation=conversation, body="We booked you in", author=world.alice)

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.snoozed_until is None
    # Already assigned: answering does not take the conversation away from bob.
    assert conversation.assignee_id == world.bob.pk
    updated = capture.all()[1]
    assert updated.payload["changed"] == ["last_message_at", "unread_count", "status"]


def test_campaign_message_leaves_unread_status_and_assignee_alone(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    set_pending(conversation=conversation, actor=world.alice)
    capture = capture_events()
    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(
            conversation=conversation, body="Flu shots are available", author=None, sender_kind=SenderKind.CAMPAIGN
        )

    conversation.refresh_from_db()
    assert conversation.unread_count == 1
    assert conversation.status == ConversationStatus.PENDING
    assert conversation.assignee_id is None
    assert Message.objects.get(pk=message.pk).status == MessageStatus.DELIVERED
    assert capture.all()[1].payload["changed"] == ["last_message_at"]


def test_message_to_a_patient_without_a_phone_fails_with_no_address(
    world, capture_events, django_capture_on_commit_callbacks
) -> None:
    patient = create_patient(fields={"name": "Email only"}, identities=[(IdentityKind.EMAIL, "only@example.com")])
    conversation = Conversation.objects.create(patient=patient, inbox=world.inbox_a, team=world.team_a)
    capture = capture_events()
    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body="Hello", author=world.alice)

    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "no_address"
    assert SimulatedDelivery.objects.count() == 0
    assert statuses(capture.all()) == [MessageStatus.FAILED]


def test_delivering_the_same_message_twice_sends_it_once(
    world, inbound, capture_events, django_capture_on_commit_callbacks
) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    # Not executing the on-commit callbacks keeps the message queued, as a worker would find it.
    with django_capture_on_commit_callbacks(execute=False):
        message = send_outbound(conversation=conversation, body="Reminder", author=world.alice)
    assert Message.objects.get(pk=message.pk).status == MessageStatus.QUEUED

    capture = capture_events()
    first = deliver_message(message_id=message.pk)
    second = deliver_message(message_id=message.pk)

    assert first.status == MessageStatus.SENT and first.retry is False
    assert second.status == MessageStatus.SENT and second.retry is False
    assert SimulatedDelivery.objects.count() == 1
    assert statuses(capture.all()) == [MessageStatus.SENDING, MessageStatus.SENT]


def status_update(message: Message, status: str, **extra: str) -> bool:
    assert message.provider_message_id
    return update_message_status(
        inbox_id=message.inbox_id,
        update=StatusUpdate(provider_message_id=message.provider_message_id, status=status, **extra),
    )


@pytest.fixture
def delivered_message(world, inbound, django_capture_on_commit_callbacks) -> Message:
    conversation = inbound(world.inbox_a, PHONE).conversation
    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body="Your results are ready", author=world.alice)
    message.refresh_from_db()
    assert message.status == MessageStatus.DELIVERED
    return message


def test_late_sent_callback_after_delivered_changes_nothing(delivered_message, capture_events) -> None:
    before = Message.objects.get(pk=delivered_message.pk)
    capture = capture_events()
    assert status_update(delivered_message, MessageStatus.SENT) is False
    after = Message.objects.get(pk=delivered_message.pk)
    assert after.status == MessageStatus.DELIVERED
    assert after.status_changed_at == before.status_changed_at
    assert capture.kinds() == []


def test_duplicate_status_callback_changes_nothing(delivered_message, capture_events) -> None:
    capture = capture_events()
    assert status_update(delivered_message, MessageStatus.DELIVERED) is False
    assert capture.kinds() == []


def test_read_receipt_moves_delivered_forward_once(delivered_message, capture_events) -> None:
    capture = capture_events()
    assert status_update(delivered_message, MessageStatus.READ) is True
    assert status_update(delivered_message, MessageStatus.READ) is False
    assert status_update(delivered_message, MessageStatus.DELIVERED) is False
    message = Message.objects.get(pk=delivered_message.pk)
    assert message.status == MessageStatus.READ
    assert message.read_at is not None
    assert capture.kinds() == ["message.update_status"]
    assert capture.all()[0].payload["status"] == MessageStatus.READ


def test_status_for_an_unknown_provider_id_is_ignored(world, delivered_message, capture_events) -> None:
    capture = capture_events()
    unknown = StatusUpdate(provider_message_id="SIM-does-not-exist", status=MessageStatus.READ)
    assert update_message_status(inbox_id=world.inbox_a.pk, update=unknown) is False
    # A real provider id reported on the wrong inbox is unknown there too.
    assert delivered_message.provider_message_id
    elsewhere = StatusUpdate(provider_message_id=delivered_message.provider_message_id, status=MessageStatus.READ)
    assert update_message_status(inbox_id=world.inbox_b.pk, update=elsewhere) is False
    assert Message.objects.get(pk=delivered_message.pk).status == MessageStatus.DELIVERED
    assert capture.kinds() == []


def test_undelivered_callback_stores_the_error_and_a_later_delivered_is_ignored(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    message = Message.objects.create(
        conversation=conversation,
        inbox=world.inbox_a,
        direction=MessageDirection.OUTBOUND,
        sender_kind=SenderKind.AGENT,
        body="Hi",
        status=MessageStatus.SENT,
        provider_message_id="SIM-sent-1",
    )
    capture = capture_events()
    assert status_update(message, MessageStatus.UNDELIVERED, error_code="30003", error_message="Unreachable") is True
    assert status_update(message, MessageStatus.DELIVERED) is False

    message.refresh_from_db()
    assert (message.status, message.error_code, message.error_message) == (
        MessageStatus.UNDELIVERED,
        "30003",
        "Unreachable",
    )
    assert capture.kinds() == ["message.update_status"]
    event = capture.all()[0]
    assert (event.payload["status"], event.payload["error_code"], event.payload["error_message"]) == (
        MessageStatus.UNDELIVERED,
        "30003",
        "Unreachable",
    )
    assert audience(event) == (world.inbox_a.pk, world.team_a.pk, None, conversation.pk)


def test_abandoned_delivery_fails_a_queued_message_and_leaves_others_alone(
    world, inbound, capture_events, django_capture_on_commit_callbacks, delivered_message
) -> None:
    conversation = delivered_message.conversation
    with django_capture_on_commit_callbacks(execute=False):
        queued = send_outbound(conversation=conversation, body="Still queued", author=world.alice)
    capture = capture_events()
    abandon_delivery(message_id=queued.pk, reason="timeout")
    abandon_delivery(message_id=delivered_message.pk, reason="timeout")

    queued.refresh_from_db()
    assert queued.status == MessageStatus.FAILED
    assert queued.error_code == "retries_exhausted"
    assert "timeout" in queued.error_message
    assert Message.objects.get(pk=delivered_message.pk).status == MessageStatus.DELIVERED
    assert capture.kinds() == ["message.update_status"]
    assert capture.all()[0].payload["message_id"] == queued.pk


# --- round robin and manual assignment -----------------------------------------------------------


@pytest.fixture
def auto_inbox(world):
    world.inbox_a.auto_assign = True
    world.inbox_a.save()
    return world.inbox_a


def test_round_robin_picks_only_online_agents_of_the_conversation_team(world, auto_inbox, inbound) -> None:
    set_profile(world.charlie, availability=Availability.ONLINE)  # other team
    set_profile(world.nina, availability=Availability.ONLINE)  # nurse, not an agent
    set_profile(world.alice, availability=Availability.BUSY)
    set_profile(world.bob, availability=Availability.ONLINE)
    result = inbound(auto_inbox, PHONE)
    assert Conversation.objects.get(pk=result.conversation.pk).assignee_id == world.bob.pk
    assert AgentProfile.objects.get(user=world.bob).last_assigned_at is not None


def test_round_robin_takes_turns_by_longest_wait(world, auto_inbox, inbound) -> None:
    set_profile(world.alice, availability=Availability.ONLINE)
    set_profile(world.bob, availability=Availability.ONLINE)
    assignees = [inbound(auto_inbox, phone(i)).conversation.assignee_id for i in range(4)]
    # Neither has waited: the earlier profile first, then strictly alternating.
    assert assignees == [world.alice.pk, world.bob.pk, world.alice.pk, world.bob.pk]


def test_round_robin_prefers_the_oldest_last_assignment(world, auto_inbox, inbound) -> None:
    now = timezone.now()
    set_profile(world.alice, availability=Availability.ONLINE, last_assigned_at=now - dt.timedelta(hours=1))
    set_profile(world.bob, availability=Availability.ONLINE, last_assigned_at=now - dt.timedelta(hours=2))
    result = inbound(auto_inbox, PHONE)
    assert result.conversation.assignee_id == world.bob.pk
    assert AgentProfile.objects.get(user=world.bob).last_assigned_at > now


def test_round_robin_skips_agents_at_capacity(world, auto_inbox, inbound) -> None:
    set_profile(world.alice, availability=Availability.ONLINE, capacity=1)
    set_profile(world.bob, availability=Availability.ONLINE, last_assigned_at=timezone.now())
    busy_with = inbound(world.inbox_b, OTHER_PHONE).conversation
    Conversation.objects.filter(pk=busy_with.pk).update(assignee=world.alice)
    result = inbound(auto_inbox, PHONE)
    assert result.conversation.assignee_id == world.bob.pk


def test_round_robin_does_not_count_resolved_conversations_against_capacity(world, auto_inbox, inbound) -> None:
    set_profile(world.alice, availability=Availability.ONLINE, capacity=1)
    done = inbound(world.inbox_b, OTHER_PHONE).conversation
    Conversation.objects.filter(pk=done.pk).update(assignee=world.alice, status=ConversationStatus.RESOLVED)
    assert inbound(auto_inbox, PHONE).conversation.assignee_id == world.alice.pk


def test_round_robin_skips_deactivated_users(world, auto_inbox, inbound) -> None:
    set_profile(world.alice, availability=Availability.ONLINE)
    world.alice.is_active = False
    world.alice.save()
    assert inbound(auto_inbox, PHONE).conversation.assignee_id is None


def test_round_robin_leaves_the_conversation_unassigned_when_nobody_is_free(
    world, auto_inbox, inbound, capture_events
) -> None:
    set_profile(world.alice, availability=Availability.BUSY)
    set_profile(world.bob, availability=Availability.ONLINE, capacity=1)
    taken = inbound(world.inbox_b, OTHER_PHONE).conversation
    Conversation.objects.filter(pk=taken.pk).update(assignee=world.bob)
    capture = capture_events()
    result = inbound(auto_inbox, PHONE)
    assert Conversation.objects.get(pk=result.conversation.pk).assignee_id is None
    added = capture.all()[0]
    assert added.payload["conversation"]["assignee"] is None
    assert added.user_id is None


def test_round_robin_called_directly_assigns_an_existing_conversation(world, inbound) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    set_profile(world.alice, availability=Availability.OFFLINE)
    assert assign_round_robin(conversation=conversation).assignee_id is None
    set_profile(world.alice, availability=Availability.ONLINE)
    assign_round_robin(conversation=conversation)
    assert Conversation.objects.get(pk=conversation.pk).assignee_id == world.alice.pk


@pytest.mark.parametrize("who", ["charlie", "mark"])
def test_manual_assignment_to_someone_who_cannot_work_the_inbox_is_refused(world, inbound, capture_events, who) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        assign_conversation(conversation=conversation, assignee=getattr(world, who), actor=world.sam)
    assert "assignee" in err.value.message_dict
    assert Conversation.objects.get(pk=conversation.pk).assignee_id is None
    assert capture.kinds() == []


def test_manual_assignment_publishes_to_the_new_assignee(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)
    assert Conversation.objects.get(pk=conversation.pk).assignee_id == world.alice.pk
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["assignee"]
    assert event.payload["conversation"]["assignee"]["id"] == world.alice.pk
    assert audience(event) == (world.inbox_a.pk, world.team_a.pk, world.alice.pk, conversation.pk)

    # Assigning the same person again is not a change.
    again = capture_events()
    assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)
    assert again.kinds() == []


def test_reassignment_tells_the_previous_assignee_too(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)
    capture = capture_events()
    assign_conversation(conversation=conversation, assignee=world.bob, actor=world.sam)
    assert capture.kinds() == ["conversation.update", "conversation.update"]
    to_team, to_previous = capture.all()
    assert audience(to_team) == (world.inbox_a.pk, world.team_a.pk, world.bob.pk, conversation.pk)
    assert audience(to_previous) == (None, None, world.alice.pk, conversation.pk)
    assert to_previous.payload["conversation"]["assignee"]["id"] == world.bob.pk


def test_unassignment_publishes_to_the_previous_assignee(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)
    capture = capture_events()
    assign_conversation(conversation=conversation, assignee=None, actor=world.sam)

    assert Conversation.objects.get(pk=conversation.pk).assignee_id is None
    assert capture.kinds() == ["conversation.update", "conversation.update"]
    to_inbox, to_previous = capture.all()
    assert audience(to_inbox) == (world.inbox_a.pk, world.team_a.pk, None, conversation.pk)
    assert audience(to_previous) == (None, None, world.alice.pk, conversation.pk)
    for event in capture.all():
        assert event.payload["changed"] == ["assignee"]
        assert event.payload["conversation"]["assignee"] is None


# --- conversation state --------------------------------------------------------------------------


def test_resolve_closes_the_conversation_once(world, inbound, capture_events) -> None:
    inbound(world.inbox_a, PHONE)
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    resolve_conversation(conversation=conversation, actor=world.alice)
    resolve_conversation(conversation=conversation, actor=world.alice)

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.RESOLVED
    assert conversation.resolved_at is not None
    assert conversation.unread_count == 0
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["status"]
    assert event.payload["conversation"]["status"] == ConversationStatus.RESOLVED
    assert audience(event) == (world.inbox_a.pk, world.team_a.pk, None, conversation.pk)


def test_reopen_brings_a_resolved_conversation_back(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    resolve_conversation(conversation=conversation, actor=world.alice)
    capture = capture_events()
    reopen_conversation(conversation=conversation, actor=world.alice)
    reopen_conversation(conversation=conversation, actor=world.alice)

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.OPEN
    assert conversation.resolved_at is None
    assert capture.kinds() == ["conversation.update"]
    assert capture.all()[0].payload["conversation"]["status"] == ConversationStatus.OPEN


def test_reopen_is_refused_when_the_patient_already_has_a_live_conversation_there(
    world, inbound, capture_events
) -> None:
    world.inbox_a.reopen_window_hours = 0
    world.inbox_a.save()
    old = inbound(world.inbox_a, PHONE).conversation
    resolve_conversation(conversation=old, actor=world.alice)
    Conversation.objects.filter(pk=old.pk).update(resolved_at=timezone.now() - dt.timedelta(hours=1))
    live = inbound(world.inbox_a, PHONE).conversation
    assert live.pk != old.pk

    capture = capture_events()
    with pytest.raises(ValidationError):
        reopen_conversation(conversation=old, actor=world.alice)
    assert Conversation.objects.get(pk=old.pk).status == ConversationStatus.RESOLVED
    assert capture.kinds() == []


def test_pending_parks_a_live_conversation_but_not_a_resolved_one(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    set_pending(conversation=conversation, actor=world.alice)
    assert Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.PENDING
    assert capture.kinds() == ["conversation.update"]
    assert capture.all()[0].payload["conversation"]["status"] == ConversationStatus.PENDING

    resolve_conversation(conversation=conversation, actor=world.alice)
    after_resolve = capture_events()
    with pytest.raises(ValidationError):
        set_pending(conversation=conversation, actor=world.alice)
    assert Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.RESOLVED
    assert after_resolve.kinds() == []


def test_snooze_until_a_future_time(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    until = timezone.now() + dt.timedelta(hours=3)
    capture = capture_events()
    snooze_conversation(conversation=conversation, until=until, actor=world.alice)

    conversation.refresh_from_db()
    assert conversation.status == ConversationStatus.SNOOZED
    assert conversation.snoozed_until == until
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["status", "snoozed_until"]
    assert event.payload["conversation"]["status"] == ConversationStatus.SNOOZED
    assert event.payload["conversation"]["snoozed_until"] is not None


@pytest.mark.parametrize("offset", [dt.timedelta(minutes=-5), dt.timedelta(0)])
def test_snooze_until_a_past_time_is_refused(world, inbound, capture_events, offset) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        snooze_conversation(conversation=conversation, until=timezone.now() + offset, actor=world.alice)
    assert "until" in err.value.message_dict
    assert Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.OPEN
    assert capture.kinds() == []


def test_resolved_conversation_cannot_be_snoozed(world, inbound) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    resolve_conversation(conversation=conversation, actor=world.alice)
    with pytest.raises(ValidationError):
        snooze_conversation(conversation=conversation, until=timezone.now() + dt.timedelta(hours=1), actor=None)
    assert Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.RESOLVED


def test_waking_snoozed_conversations_reopens_only_the_due_ones(world, inbound, capture_events) -> None:
    now = timezone.now()
    due = inbound(world.inbox_a, phone(1)).conversation
    later = inbound(world.inbox_a, phone(2)).conversation
    open_one = inbound(world.inbox_a, phone(3)).conversation
    snooze_conversation(conversation=due, until=now + dt.timedelta(hours=1), actor=world.alice)
    snooze_conversation(conversation=later, until=now + dt.timedelta(hours=3), actor=world.alice)

    capture = capture_events()
    assert wake_snoozed_conversations(now=now + dt.timedelta(hours=2)) == 1

    due.refresh_from_db()
    later.refresh_from_db()
    assert (due.status, due.snoozed_until) == (ConversationStatus.OPEN, None)
    assert later.status == ConversationStatus.SNOOZED
    assert Conversation.objects.get(pk=open_one.pk).status == ConversationStatus.OPEN
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["conversation"]["id"] == due.pk
    assert event.payload["conversation"]["status"] == ConversationStatus.OPEN
    assert "status" in event.payload["changed"]
    assert audience(event) == (world.inbox_a.pk, world.team_a.pk, None, due.pk)

    # Running again finds nothing new to wake.
    again = capture_events()
    assert wake_snoozed_conversations(now=now + dt.timedelta(hours=2)) == 0
    assert again.kinds() == []


def test_labels_replace_the_set_and_ignore_blank_names(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    set_labels(conversation=conversation, label_names=["old"], actor=world.alice)
    capture = capture_events()
    set_labels(conversation=conversation, label_names=[" urgent ", "  ", "follow-up"], actor=world.alice)

    assert set(conversation.labels.values_list("name", flat=True)) == {"urgent", "follow-up"}
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["labels"]
    assert {label["name"] for label in event.payload["conversation"]["labels"]} == {"urgent", "follow-up"}


def test_priority_change_is_stored_and_published(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    set_priority(conversation=conversation, priority=Priority.URGENT, actor=world.alice)
    assert Conversation.objects.get(pk=conversation.pk).priority == Priority.URGENT
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["priority"]
    assert event.payload["conversation"]["priority"] == Priority.URGENT


def test_transfer_to_another_team_unassigns_and_reaches_the_new_team(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)
    capture = capture_events()
    transfer_to_team(conversation=conversation, team=world.team_b, actor=world.sam)

    conversation.refresh_from_db()
    assert (conversation.team_id, conversation.assignee_id) == (world.team_b.pk, None)
    captured = capture.all()
    assert capture.kinds()[0] == "conversation.update"
    assert set(capture.kinds()) == {"conversation.update"}
    main = captured[0]
    assert main.payload["changed"] == ["team", "assignee"]
    assert main.payload["conversation"]["team_id"] == world.team_b.pk
    assert main.payload["conversation"]["assignee"] is None
    assert audience(main) == (world.inbox_a.pk, world.team_b.pk, None, conversation.pk)
    # The new team can now read it; so can the inbox's team.
    assert visible_to(world.charlie, captured)
    assert visible_to(world.bob, captured)
    # charlie may now take the conversation.
    assign_conversation(conversation=conversation, assignee=world.charlie, actor=world.sam)


def test_transfer_tells_the_previous_team_and_assignee_that_the_conversation_left(
    world, inbound, capture_events
) -> None:
    """charlie (Orthopedics) holds a Cardiology-inbox conversation transferred to his team; when it is
    transferred back, he sees neither the inbox nor the new team, so he must be told directly: that it left,
    and nothing of what is in it (REST no longer lets him read it)."""
    conversation = inbound(world.inbox_a, PHONE).conversation
    transfer_to_team(conversation=conversation, team=world.team_b, actor=world.sam)
    assign_conversation(conversation=conversation, assignee=world.charlie, actor=world.sam)
    capture = capture_events()
    transfer_to_team(conversation=conversation, team=world.team_a, actor=world.sam)

    captured = capture.all()
    assert visible_to(world.charlie, captured) == [], "the conversation's contents reached someone who may not see it"
    charlie = access.event_visibility_for(world.charlie)
    assert charlie is not None
    placement = access.placement_of(conversation.pk)
    told = [
        e
        for e in captured
        if charlie.delivery(
            event_type=e.type,
            inbox_id=e.inbox_id,
            team_id=e.team_id,
            user_id=e.user_id,
            conversation_id=e.conversation_id,
            placement=placement,
        )
        is access.Delivery.WITHDRAW
    ]
    assert told, "the previous assignee never learns the conversation left his list"
    assert {e.conversation_id for e in told} == {conversation.pk}


def test_mark_read_clears_unread_once(world, inbound, capture_events) -> None:
    inbound(world.inbox_a, PHONE)
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    mark_read(conversation=conversation, actor=world.alice)
    mark_read(conversation=conversation, actor=world.alice)
    assert Conversation.objects.get(pk=conversation.pk).unread_count == 0
    assert capture.kinds() == ["conversation.update"]
    event = capture.all()[0]
    assert event.payload["changed"] == ["unread_count"]
    assert event.payload["conversation"]["unread_count"] == 0


def test_add_note_stores_and_publishes_a_private_note(world, inbound, capture_events) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    conversation = assign_conversation(conversation=conversation, assignee=world.bob, actor=world.sam)
    capture = capture_events()
    note = add_note(conversation=conversation, author=world.nina, body="  Called the patient back.  ")

    assert Note.objects.get().pk == note.pk
    assert note.body == "Called the patient back."
    assert Message.objects.filter(direction=MessageDirection.OUTBOUND).count() == 0
    assert capture.kinds() == ["note.add"]
    event = capture.all()[0]
    assert event.payload["note"]["id"] == note.pk
    assert event.payload["note"]["body"] == "Called the patient back."
    assert event.payload["note"]["author"]["id"] == world.nina.pk
    assert event.payload["note"]["conversation_id"] == conversation.pk
    assert audience(event) == (world.inbox_a.pk, world.team_a.pk, world.bob.pk, conversation.pk)


@pytest.mark.parametrize("body", ["", "  \n "])
def test_empty_note_is_refused(world, inbound, capture_events, body) -> None:
    conversation = inbound(world.inbox_a, PHONE).conversation
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        add_note(conversation=conversation, author=world.alice, body=body)
    assert "body" in err.value.message_dict
    assert Note.objects.count() == 0
    assert capture.kinds() == []


# --- patients ------------------------------------------------------------------------------------


def test_resolve_patient_finds_by_exact_identity_and_creates_otherwise(world) -> None:
    created = resolve_patient(kind=IdentityKind.PHONE, value=PHONE, name="Wang")
    found = resolve_patient(kind=IdentityKind.PHONE, value=PHONE, name="Someone else")
    assert created.created is True and found.created is False
    assert found.patient.pk == created.patient.pk
    assert Patient.objects.get().name == "Wang"


def test_resolve_patient_attaches_extra_identities_only_when_free(world) -> None:
    owner = create_patient(fields={"name": "Owner"}, identities=[(IdentityKind.EMAIL, "taken@example.com")])
    result = resolve_patient(
        kind=IdentityKind.VISITOR,
        value="visitor-1",
        also_known_as=((IdentityKind.EMAIL, "taken@example.com"), (IdentityKind.PHONE, PHONE)),
    )
    assert PatientIdentity.objects.get(kind=IdentityKind.EMAIL).patient_id == owner.pk
    assert PatientIdentity.objects.get(kind=IdentityKind.PHONE).patient_id == result.patient.pk


def test_create_patient_refuses_an_identity_that_belongs_to_someone_else(world, capture_events) -> None:
    create_patient(fields={"name": "First"}, identities=[(IdentityKind.PHONE, PHONE)], tags=["vip"])
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        create_patient(fields={"name": "Second"}, identities=[(IdentityKind.PHONE, PHONE)])
    assert "identities" in err.value.message_dict
    assert Patient.objects.count() == 1
    assert list(Patient.objects.get().tags.values_list("name", flat=True)) == ["vip"]
    assert capture.kinds() == []


def test_update_patient_publishes_and_audits_only_real_changes(world, capture_events) -> None:
    patient = create_patient(fields={"name": "Wang", "city": "Beijing"}, identities=[(IdentityKind.PHONE, PHONE)])
    capture = capture_events()
    update_patient(patient=patient, fields={"city": "Shanghai", "name": "Wang"}, actor=world.alice, via="api")

    assert Patient.objects.get(pk=patient.pk).city == "Shanghai"
    assert capture.kinds() == ["patient.update"]
    event = capture.all()[0]
    assert event.payload == {"patient_id": patient.pk, "merged_into": None}
    assert audience(event) == (None, None, None, None)
    entry = AuditLogEntry.objects.get(action=AuditAction.UPDATE_PATIENT)
    assert (entry.actor_id, entry.patient_id, entry.via, entry.detail) == (
        world.alice.pk,
        patient.pk,
        "api",
        {"fields": ["city"]},
    )

    unchanged = capture_events()
    update_patient(patient=patient, fields={"city": "Shanghai"}, actor=world.alice, via="api")
    assert unchanged.kinds() == []
    assert AuditLogEntry.objects.filter(action=AuditAction.UPDATE_PATIENT).count() == 1


def test_add_identity_is_idempotent_for_the_owner_and_refused_for_others(world) -> None:
    owner = create_patient(fields={"name": "Owner"}, identities=[(IdentityKind.PHONE, PHONE)])
    other = create_patient(fields={"name": "Other"}, identities=[])
    first = add_identity(patient=owner, kind=IdentityKind.EMAIL, value="o@example.com")
    again = add_identity(patient=owner, kind=IdentityKind.EMAIL, value="o@example.com")
    assert first.pk == again.pk
    with pytest.raises(ValidationError):
        add_identity(patient=other, kind=IdentityKind.PHONE, value=PHONE)
    assert PatientIdentity.objects.get(kind=IdentityKind.PHONE).patient_id == owner.pk


@pytest.fixture
def two_records(world, inbound):
    """One person known twice: by phone (keep) and by a second phone and email (drop)."""
    keep_in_a = inbound(world.inbox_a, PHONE, "from the first number")
    drop_in_a = inbound(world.inbox_a, OTHER_PHONE, "from the second number")
    drop_in_b = inbound(world.inbox_b, OTHER_PHONE, "ortho question")
    keep, drop = keep_in_a.patient, drop_in_a.patient
    old = inbound(world.inbox_b, PHONE, "old ortho thread").conversation
    resolve_conversation(conversation=old, actor=None)
    add_identity(patient=drop, kind=IdentityKind.EMAIL, value="wang@example.com")
    Patient.objects.filter(pk=drop.pk).update(region="Chaoyang", city="Beijing")
    Patient.objects.filter(pk=keep.pk).update(city="Shanghai")
    drop.tags.set([Tag.objects.create(name="diabetes"), Tag.objects.create(name="vip")])
    keep.tags.set([Tag.objects.get(name="vip"), Tag.objects.create(name="smoker")])
    visit = Visit.objects.create(patient=drop, visit_number="V-1", department=world.team_a, admitted_at=timezone.now())
    return {
        "keep": Patient.objects.get(pk=keep.pk),
        "drop": Patient.objects.get(pk=drop.pk),
        "keep_in_a": keep_in_a.conversation,
        "drop_in_a": drop_in_a.conversation,
        "drop_in_b": drop_in_b.conversation,
        "old": old,
        "visit": visit,
    }


def test_merge_moves_everything_to_the_kept_patient_and_leaves_a_tombstone(world, two_records, capture_events) -> None:
    keep, drop = two_records["keep"], two_records["drop"]
    capture = capture_events()
    merged = merge_patients(keep=keep, drop=drop, actor=world.sam, via="ui")

    assert merged.pk == keep.pk
    assert set(PatientIdentity.objects.filter(patient=keep).values_list("kind", "value")) == {
        (IdentityKind.PHONE, PHONE),
        (IdentityKind.PHONE, OTHER_PHONE),
        (IdentityKind.EMAIL, "wang@example.com"),
    }
    assert not PatientIdentity.objects.filter(patient=drop).exists()
    assert set(Conversation.objects.values_list("patient_id", flat=True)) == {keep.pk}
    assert Visit.objects.get(pk=two_records["visit"].pk).patient_id == keep.pk
    keep.refresh_from_db()
    drop.refresh_from_db()
    assert set(keep.tags.values_list("name", flat=True)) == {"diabetes", "vip", "smoker"}
    assert drop.merged_into_id == keep.pk
    assert keep.merged_into_id is None
    # Blank fields are filled from the dropped record; the kept record's own values win.
    assert (keep.region, keep.city) == ("Chaoyang", "Shanghai")

    # Two live threads in Cardiology would break one-live-thread: the dropped one is resolved.
    dropped_a = Conversation.objects.get(pk=two_records["drop_in_a"].pk)
    assert dropped_a.status == ConversationStatus.RESOLVED and dropped_a.resolved_at is not None
    assert Conversation.objects.get(pk=two_records["keep_in_a"].pk).status == ConversationStatus.OPEN
    assert Conversation.objects.get(pk=two_records["drop_in_b"].pk).status == ConversationStatus.OPEN

    entry = AuditLogEntry.objects.get(action=AuditAction.MERGE_PATIENTS)
    assert (entry.actor_id, entry.patient_id, entry.object_id, entry.via) == (
        world.sam.pk,
        keep.pk,
        str(drop.pk),
        "ui",
    )
    assert entry.detail["kept"] == keep.pk and entry.detail["dropped"] == drop.pk
    assert sorted(entry.detail["identities"]) == [IdentityKind.EMAIL, IdentityKind.PHONE]
    assert sorted(entry.detail["conversations"]) == sorted([two_records["drop_in_a"].pk, two_records["drop_in_b"].pk])
    assert entry.detail["resolved_on_merge"] == [two_records["drop_in_a"].pk]
    assert entry.detail["visits"] == 1

    patient_events = [e for e in capture.all() if (e.type, e.op) == ("patient", "update")]
    assert len(patient_events) == 1
    assert patient_events[0].payload == {"patient_id": drop.pk, "merged_into": keep.pk}
    assert audience(patient_events[0]) == (None, None, None, None)


def test_merge_publishes_the_moved_and_resolved_conversations(world, two_records, capture_events) -> None:
    """Agents' lists show the patient and status of each conversation; the merge changes both."""
    keep, drop = two_records["keep"], two_records["drop"]
    capture = capture_events()
    merge_patients(keep=keep, drop=drop, actor=world.sam, via="ui")

    updates = {
        e.payload["conversation"]["id"]: e for e in capture.all() if (e.type, e.op) == ("conversation", "update")
    }
    resolved = updates.get(two_records["drop_in_a"].pk)
    assert resolved is not None, "the conversation resolved by the merge is never published"
    assert resolved.payload["conversation"]["status"] == ConversationStatus.RESOLVED
    assert resolved.payload["conversation"]["patient"]["id"] == keep.pk
    assert visible_to(world.alice, [resolved])
    moved = updates.get(two_records["drop_in_b"].pk)
    assert moved is not None, "the conversation moved to the kept patient is never published"
    assert moved.payload["conversation"]["patient"]["id"] == keep.pk
    assert visible_to(world.charlie, [moved])


def test_after_a_merge_the_dropped_number_reaches_the_kept_patient(world, two_records, inbound) -> None:
    merge_patients(keep=two_records["keep"], drop=two_records["drop"], actor=world.sam, via="ui")
    result = inbound(world.inbox_a, OTHER_PHONE, "it's me again")
    assert result.patient.pk == two_records["keep"].pk
    assert result.conversation.pk == two_records["keep_in_a"].pk


def test_merging_a_patient_with_itself_is_refused(world, two_records, capture_events) -> None:
    keep = two_records["keep"]
    capture = capture_events()
    with pytest.raises(ValidationError):
        merge_patients(keep=keep, drop=keep, actor=world.sam, via="ui")
    assert Patient.objects.get(pk=keep.pk).merged_into_id is None
    assert not AuditLogEntry.objects.filter(action=AuditAction.MERGE_PATIENTS).exists()
    assert capture.kinds() == []


@pytest.mark.parametrize("merged_side", ["drop", "keep"])
def test_merging_an_already_merged_patient_is_refused(world, two_records, capture_events, merged_side) -> None:
    keep, drop = two_records["keep"], two_records["drop"]
    merge_patients(keep=keep, drop=drop, actor=world.sam, via="ui")
    third = create_patient(fields={"name": "Third"}, identities=[(IdentityKind.PHONE, phone(9))])
    capture = capture_events()
    with pytest.raises(ValidationError):
        if merged_side == "drop":
            merge_patients(keep=third, drop=drop, actor=world.sam, via="ui")
        else:
            merge_patients(keep=drop, drop=third, actor=world.sam, via="ui")
    assert Patient.objects.get(pk=drop.pk).merged_into_id == keep.pk
    assert Patient.objects.get(pk=third.pk).merged_into_id is None
    assert AuditLogEntry.objects.filter(action=AuditAction.MERGE_PATIENTS).count() == 1
    assert capture.kinds() == []


# --- presence ------------------------------------------------------------------------------------


def test_availability_change_is_published_to_each_team_and_the_user(world, capture_events) -> None:
    both = make_staff("dora", Role.AGENT, [world.team_a, world.team_b])
    capture = capture_events()
    profile = set_availability(user=both, availability=Availability.ONLINE)

    assert profile.availability == Availability.ONLINE
    assert AgentProfile.objects.get(user=both).availability == Availability.ONLINE
    assert capture.kinds() == ["presence.update"] * 3
    captured = capture.all()
    for event in captured:
        assert event.payload == {"user_id": both.pk, "availability": Availability.ONLINE}
    assert sorted((e.inbox_id, e.team_id, e.user_id) for e in captured if e.team_id) == sorted(
        [(None, world.team_a.pk, None), (None, world.team_b.pk, None)]
    )
    assert [(e.inbox_id, e.team_id, e.user_id) for e in captured if e.team_id is None] == [(None, None, both.pk)]


def test_availability_of_someone_without_teams_reaches_only_themselves(world, capture_events) -> None:
    capture = capture_events()
    set_availability(user=world.sam, availability=Availability.BUSY)
    assert capture.kinds() == ["presence.update"]
    assert audience(capture.all()[0]) == (None, None, world.sam.pk, None)


def test_setting_the_same_availability_publishes_nothing(world, capture_events) -> None:
    capture = capture_events()
    set_availability(user=world.alice, availability=Availability.OFFLINE)
    assert capture.kinds() == []


def test_invalid_availability_is_refused(world, capture_events) -> None:
    capture = capture_events()
    with pytest.raises(ValidationError) as err:
        set_availability(user=world.alice, availability="away")
    assert "availability" in err.value.message_dict
    assert AgentProfile.objects.get(user=world.alice).availability == Availability.OFFLINE
    assert capture.kinds() == []


def test_an_image_only_message_still_gives_the_list_a_preview(world) -> None:
    from channels_adapters.base import InboundMessage, Sender
    from contactcenter.actions.inbound import receive_inbound

    result = receive_inbound(
        InboundMessage(
            inbox_id=world.inbox_a.pk,
            sender=Sender(kind="phone", value="+8613900000077"),
            body="",
            provider_message_id="IMG-1",
            attachments=[{"kind": "image", "content_type": "image/png", "size": 10}],
        )
    )

    result.conversation.refresh_from_db()
    assert result.conversation.last_message_preview == "📎"

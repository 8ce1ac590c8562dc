"""Concurrent inbound messages on PostgreSQL: auto-assignment must not deadlock with event inserts.

One transaction auto-assigns a new conversation (locking candidate agents) and then waits for the
event-order lock; another, already holding that lock, inserts an event whose user_id foreign key
points at one of those agents. Locking more than the agent profiles closes that cycle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import psycopg
import pytest
from django.contrib.auth.models import User
from django.db import connection

import contactcenter.actions.inbound as inbound_module
from channels_adapters.base import InboundMessage, Sender
from contactcenter.actions.delivery import deliver_message
from contactcenter.actions.outbound import send_outbound
from contactcenter.models import (
    AgentProfile,
    Availability,
    ChannelType,
    IdentityKind,
    Inbox,
    Message,
    MessageStatus,
    Role,
    Team,
)

pytestmark = pytest.mark.django_db(transaction=True)


def lock_waiters() -> int:
    """Backends of this database waiting on a lock right now, seen from a connection of its own."""
    settings = connection.settings_dict
    with psycopg.connect(
        host=settings["HOST"], port=settings["PORT"], user=settings["USER"], dbname=settings["NAME"], autocommit=True
    ) as watcher:
        row = watcher.execute(
            "SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() AND wait_event_type = 'Lock'"
        ).fetchone()
    return int(row[0]) if row else 0


def linger_until(other_done: threading.Event, timeout: float = 10.0) -> None:
    """Hold this transaction's locks until the other thread has either finished or is blocked on one of them:
    the moment a deadlock would form. A signal, not a guess at how long the other thread takes."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if other_done.is_set() or lock_waiters() > 0:
            return
        time.sleep(0.02)
    raise AssertionError("the other transaction neither finished nor waited on a lock")


def joined(threads: list[threading.Thread], timeout: float = 30.0) -> bool:
    for t in threads:
        t.join(timeout)
    return not any(t.is_alive() for t in threads)


def message(inbox: Inbox, phone: str, sid: str) -> InboundMessage:
    return InboundMessage(
        inbox_id=inbox.pk, sender=Sender(kind=IdentityKind.PHONE, value=phone), body="hi", provider_message_id=sid
    )


def test_auto_assignment_and_a_message_to_an_assigned_conversation_do_not_deadlock(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    team = Team.objects.create(code="cardiology", name="Cardiology")
    inbox = Inbox.objects.create(name="Cardiology", channel_type=ChannelType.SIMULATOR, team=team, auto_assign=True)
    agent = User.objects.create(username="agent")
    AgentProfile.objects.create(user=agent, role=Role.AGENT, availability=Availability.ONLINE).teams.add(team)
    existing = inbound_module.receive_inbound(message(inbox, "+8613900000001", "SM1"))
    assert existing.conversation.assignee_id == agent.pk

    assigned = threading.Event()
    follow_up_done = threading.Event()
    real_assign = inbound_module.assign_round_robin

    def assign_then_linger(*, conversation: Any) -> Any:
        out = real_assign(conversation=conversation)
        assigned.set()
        # Holds the assignment's locks while the other message commits its events (or waits on them).
        linger_until(follow_up_done)
        return out

    monkeypatch.setattr(inbound_module, "assign_round_robin", assign_then_linger)
    errors: dict[str, BaseException] = {}

    def run(name: str, msg: InboundMessage, wait: bool, done: threading.Event | None = None) -> None:
        try:
            if wait:
                assert assigned.wait(10)
            inbound_module.receive_inbound(msg)
        except BaseException as exc:
            errors[name] = exc
        finally:
            connection.close()
            if done is not None:
                done.set()

    new_contact = threading.Thread(target=run, args=("new", message(inbox, "+8613900000002", "SM2"), False))
    follow_up = threading.Thread(
        target=run, args=("follow-up", message(inbox, "+8613900000001", "SM3"), True, follow_up_done)
    )
    new_contact.start()
    follow_up.start()

    assert joined([new_contact, follow_up]), "a thread is still running: deadlocked"
    assert errors == {}
    assert Message.objects.filter(provider_message_id__in=["SM2", "SM3"]).count() == 2


def test_delivering_a_reply_while_the_patient_writes_does_not_deadlock(monkeypatch: pytest.MonkeyPatch) -> None:
    team = Team.objects.create(code="service", name="Service")
    inbox = Inbox.objects.create(name="SMS", channel_type=ChannelType.SIMULATOR, team=team, auto_assign=False)
    sender = Sender(kind=IdentityKind.PHONE, value="+8613900000001")
    first = inbound_module.receive_inbound(
        InboundMessage(inbox_id=inbox.pk, sender=sender, body="hi", provider_message_id="SM1")
    )
    monkeypatch.setattr("contactcenter.actions.outbound.enqueue", lambda *a, **k: None)  # deliver below, by hand
    reply = send_outbound(conversation=first.conversation, body="We will call you.", author=None)
    assert reply.status == MessageStatus.QUEUED

    locked = threading.Event()
    delivered = threading.Event()
    real = inbound_module.apply_inbound_keywords

    def keywords_then_linger(**kwargs: Any) -> Any:
        # Inside receive_inbound's transaction: the conversation row is locked FOR UPDATE, events.record is next.
        out = real(**kwargs)
        locked.set()
        linger_until(delivered)
        return out

    monkeypatch.setattr(inbound_module, "apply_inbound_keywords", keywords_then_linger)
    errors: dict[str, BaseException] = {}

    def patient_writes() -> None:
        try:
            inbound_module.receive_inbound(
                InboundMessage(inbox_id=inbox.pk, sender=sender, body="thanks", provider_message_id="SM2")
            )
        except BaseException as exc:  # reported to the test thread
            errors["inbound"] = exc
        finally:
            connection.close()

    def reply_delivered() -> None:
        try:
            assert locked.wait(10)
            deliver_message(message_id=reply.pk)
        except BaseException as exc:  # reported to the test thread
            errors["delivery"] = exc
        finally:
            connection.close()
            delivered.set()

    threads = [threading.Thread(target=patient_writes), threading.Thread(target=reply_delivered)]
    for t in threads:
        t.start()
    assert joined(threads), "a thread is still running: deadlocked"
    assert errors == {}
    assert Message.objects.get(pk=reply.pk).status in (MessageStatus.SENT, MessageStatus.DELIVERED)

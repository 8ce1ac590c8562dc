"""Concurrent inbound messages on PostgreSQL: auto-assignment must not deadlock with event inserts.

One transaction auto-assigns a new conversation (locking candidate agents) and then waits for the
event-order lock; another, already holding that lock, inserts an event whose user_id foreign key
points at one of those agents. Locking more than the agent profiles closes that cycle.
"""

from __future__ import annotations

import threading
import time
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.db import connection

import contactcenter.actions.inbound as inbound_module
from channels_adapters.base import InboundMessage, Sender
from contactcenter.models import AgentProfile, Availability, ChannelType, IdentityKind, Inbox, Role, Team

pytestmark = pytest.mark.django_db(transaction=True)


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
    real_assign = inbound_module.assign_round_robin

    def assign_then_linger(*, conversation: Any) -> Any:
        out = real_assign(conversation=conversation)
        assigned.set()
        time.sleep(0.5)  # holds the assignment's locks while the other message commits its events
        return out

    monkeypatch.setattr(inbound_module, "assign_round_robin", assign_then_linger)
    errors: dict[str, BaseException] = {}

    def run(name: str, msg: InboundMessage, wait: bool) -> None:
        try:
            if wait:
                assert assigned.wait(10)
            inbound_module.receive_inbound(msg)
        except BaseException as exc:
            errors[name] = exc
        finally:
            connection.close()

    new_contact = threading.Thread(target=run, args=("new", message(inbox, "+8613900000002", "SM2"), False))
    follow_up = threading.Thread(target=run, args=("follow-up", message(inbox, "+8613900000001", "SM3"), True))
    new_contact.start()
    follow_up.start()
    new_contact.join(30)
    follow_up.join(30)

    assert errors == {}

"""GET /conversations/{id}/messages/ pages a long thread from its newest end, and every read is audited."""

from __future__ import annotations

from typing import Any

import pytest
from rest_framework.test import APIClient

from contactcenter.models import AuditAction, AuditLogEntry, Conversation
from tests.conftest import World

PHONE = "+8613900000001"


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def long_thread(world: World, inbound: Any) -> Conversation:
    conversation = None
    for n in range(12):
        conversation = inbound(world.inbox_a, PHONE, f"message {n}").conversation
    assert conversation is not None
    return conversation


def bodies(response: Any) -> list[str]:
    assert response.status_code == 200, response.content
    return [m["body"] for m in response.json()]


def test_the_newest_page_comes_oldest_first_and_pages_back_without_gaps(
    world: World, long_thread: Conversation
) -> None:
    url = f"/api/v1/conversations/{long_thread.pk}/messages/"
    alice = api(world.alice)

    newest = alice.get(url, {"limit": 5})
    assert bodies(newest) == [f"message {n}" for n in range(7, 12)]
    seen = bodies(newest)
    before = newest.json()[0]["id"]
    while True:
        older = alice.get(url, {"limit": 5, "before": before})
        if not older.json():
            break
        seen = bodies(older) + seen
        before = older.json()[0]["id"]

    assert seen == [f"message {n}" for n in range(12)]


def test_without_a_limit_the_latest_hundred_are_served(world: World, long_thread: Conversation) -> None:
    assert len(bodies(api(world.alice).get(f"/api/v1/conversations/{long_thread.pk}/messages/"))) == 12


@pytest.mark.parametrize(
    "query", [{"limit": 0}, {"limit": 501}, {"limit": "ten"}, {"before": -1}, {"before": "x"}, {"before": 2**64}]
)
def test_bad_paging_parameters_are_field_errors(world: World, long_thread: Conversation, query: dict[str, Any]) -> None:
    response = api(world.alice).get(f"/api/v1/conversations/{long_thread.pk}/messages/", query)

    assert response.status_code == 400
    assert set(response.json()) == set(query)


def test_a_message_id_from_another_conversation_pages_nothing(
    world: World, long_thread: Conversation, inbound: Any
) -> None:
    other = inbound(world.inbox_a, "+8613900000002", "elsewhere").message

    response = api(world.alice).get(f"/api/v1/conversations/{long_thread.pk}/messages/", {"before": other.pk})

    assert bodies(response) == []


@pytest.mark.parametrize("part", ["messages", "notes"])
def test_reading_messages_or_notes_alone_is_audited(world: World, long_thread: Conversation, part: str) -> None:
    before = AuditLogEntry.objects.count()

    assert api(world.alice).get(f"/api/v1/conversations/{long_thread.pk}/{part}/").status_code == 200

    entry = AuditLogEntry.objects.get(id__gt=0, detail__part=part)
    assert AuditLogEntry.objects.count() == before + 1
    assert (entry.actor_id, entry.action, entry.patient_id, entry.object_id) == (
        world.alice.pk,
        AuditAction.VIEW_CONVERSATION,
        long_thread.patient_id,
        str(long_thread.pk),
    )


@pytest.mark.parametrize("part", ["messages", "notes"])
def test_another_teams_agent_reads_nothing_and_leaves_no_read_entry(
    world: World, long_thread: Conversation, part: str
) -> None:
    response = api(world.charlie).get(f"/api/v1/conversations/{long_thread.pk}/{part}/")

    assert response.status_code == 404
    assert not AuditLogEntry.objects.filter(actor=world.charlie).exists()

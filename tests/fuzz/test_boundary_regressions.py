"""Regressions for what the fuzzing found (or was built to find) at the staff API's and the simulator's
boundaries: each case was a 500 before its fix and is a 400 naming the field, or a stored, cleaned value,
after it. On the test PostgreSQL, which refuses what SQLite accepts."""

from __future__ import annotations

from typing import Any

import pytest
from django.test import Client
from rest_framework.test import APIClient

from contactcenter.models import Conversation, Message, Patient, PatientIdentity
from tests.conftest import World


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def thread(world: World, inbound: Any) -> Conversation:
    return inbound(world.inbox_a, "+8613800138001", "When is my echo scan?", name="Wang Fang").conversation


def post_raw(client: APIClient, url: str, raw: str, content_type: str = "application/json") -> Any:
    """The body exactly as written: JSON escapes like \\ud800 reach the server as the client spelled them."""
    return client.generic("POST", url, raw.encode(), content_type=content_type)


# --- Lone surrogates in JSON bodies ----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("url", "raw", "field"),
    [
        ("/api/v1/patients/", '{"name": "Wang \\ud800 Fang"}', "name"),
        ("/api/v1/patients/", '{"custom_attributes": {"\\udfff": 1}}', "custom_attributes"),
        ("/api/v1/patients/", '{"custom_attributes": {"note": ["ok", "\\ud83d"]}}', "custom_attributes.note.1"),
        (
            "/api/v1/patients/",
            '{"name": "Li", "identities": [{"kind": "email", "value": "li@kanghua\\ud800.example"}]}',
            "identities.0.value",
        ),
        ("/api/v1/patients/{patient}/identities/", '{"kind": "email", "value": "a@b\\udc00.cn"}', "value"),
        ("/api/v1/conversations/{conversation}/messages/", '{"body": "\\ud800"}', "body"),
        ("/api/v1/conversations/{conversation}/notes/", '{"body": "call back \\udbff"}', "body"),
        ("/api/v1/conversations/{conversation}/labels/", '{"labels": ["vip\\ud800"]}', "labels.0"),
        (
            "/api/v1/patients/{patient}/consent/",
            '{"purpose": "marketing", "status": "opted_out", "channel": "\\ud800"}',
            "channel",
        ),
        ("/api/v1/sms/segments/", '"\\ud800"', "non_field_errors"),
    ],
)
def test_a_lone_surrogate_in_a_json_body_is_a_400_naming_the_field_and_stores_nothing(
    world: World, thread: Conversation, url: str, raw: str, field: str
) -> None:
    before = (Patient.objects.count(), PatientIdentity.objects.count(), Message.objects.count())

    response = post_raw(api(world.sam), url.format(patient=thread.patient_id, conversation=thread.pk), raw)

    assert response.status_code == 400, response.content
    assert field in response.json(), response.json()
    assert (Patient.objects.count(), PatientIdentity.objects.count(), Message.objects.count()) == before


def test_a_paired_surrogate_is_an_ordinary_character(world: World) -> None:
    response = post_raw(api(world.sam), "/api/v1/patients/", '{"name": "Wang \\ud83d\\ude00 Fang"}')

    assert response.status_code == 201, response.content
    assert Patient.objects.get(pk=response.json()["id"]).name == "Wang 😀 Fang"


def test_json_nested_deeper_than_the_stack_is_a_400(world: World) -> None:
    response = post_raw(api(world.sam), "/api/v1/patients/", "[" * 100_000 + "]" * 100_000)

    assert response.status_code == 400


# --- Query strings -------------------------------------------------------------------------------------------


def test_an_over_long_search_is_a_400_naming_the_parameter(world: World) -> None:
    response = api(world.sam).get("/api/v1/patients/", {"q": "王" * 201})

    assert response.status_code == 400
    assert "q" in response.json()


def test_a_search_up_to_the_limit_is_answered(world: World, thread: Conversation) -> None:
    response = api(world.sam).get("/api/v1/patients/", {"q": "王" * 200})

    assert response.status_code == 200


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"to": "0001-01-05"}, "to"),
        ({"from": "0001-01-01", "to": "2026-01-02"}, "from"),
        ({"from": "9999-12-31", "to": "9999-12-31"}, "to"),
        ({"from": "2026-01-01", "to": "3000-01-01"}, "to"),
    ],
)
def test_analytics_dates_at_the_ends_of_the_calendar_are_a_400_naming_the_field(
    world: World, query: dict[str, str], field: str
) -> None:
    response = api(world.mark).get("/api/v1/campaigns/analytics/overview/", query)

    assert response.status_code == 400, response.content
    assert field in response.json()


# --- Dates in bodies -----------------------------------------------------------------------------------------


@pytest.mark.parametrize("until", ["0001-01-01T00:00:00", "0001-01-01T06:00:00", "0001-01-01T00:00:00+14:00"])
def test_a_snooze_time_before_the_calendar_begins_is_a_400(world: World, thread: Conversation, until: str) -> None:
    response = api(world.sam).post(f"/api/v1/conversations/{thread.pk}/snooze/", {"until": until}, format="json")

    assert response.status_code == 400, response.content
    assert "until" in response.json()
    thread.refresh_from_db()
    assert thread.snoozed_until is None


# --- The simulator's patient phone ---------------------------------------------------------------------------


def test_a_simulated_patient_message_with_a_nul_is_stored_cleaned(world: World) -> None:
    response = Client().post(
        "/simulator/send/",
        {"inbox": world.inbox_a.pk, "from": "13800138009", "body": "pain\x00 again", "name": "A\x00"},
    )

    assert response.status_code == 200, response.content
    message = Message.objects.select_related("conversation__patient").get(pk=response.json()["message_id"])
    assert message.body == "pain\ufffd again"
    assert message.provider_payload["body"] == "pain\ufffd again"
    assert message.conversation.patient.name == "A\ufffd"


def test_a_simulated_message_id_that_cannot_be_one_is_a_400(world: World) -> None:
    response = Client().post(
        "/simulator/send/", {"inbox": world.inbox_a.pk, "from": "13800138009", "body": "hi", "id": "x" * 121}
    )

    assert response.status_code == 400
    assert not Message.objects.exists()


def test_the_simulated_mailbox_filtered_by_an_address_with_a_nul_is_empty(world: World) -> None:
    response = Client().get("/simulator/mailbox/", {"to": "li\x00@kanghua.example"})

    assert response.status_code == 200

"""REST API behaviour and validation: bad input is a 400 with field messages, never a 500."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from typing import Any

import pytest
from django.utils import timezone
from rest_framework.test import APIClient

from channels_adapters.simulator.models import SimulatedDelivery
from contactcenter.actions.conversations import assign_conversation, resolve_conversation, set_labels
from contactcenter.models import (
    Conversation,
    ConversationStatus,
    Label,
    Message,
    MessageDirection,
    MessageStatus,
    Note,
    Patient,
    PatientIdentity,
)
from tests.conftest import World


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def phone(n: int) -> str:
    return f"+86139000{n:05d}"


@pytest.fixture
def sam(world: World) -> APIClient:
    return api(world.sam)


@pytest.fixture
def alice(world: World) -> APIClient:
    return api(world.alice)


@pytest.fixture
def thread(world: World, inbound: Any) -> Conversation:
    """One open, unassigned team A conversation with a patient reachable by phone."""
    return inbound(world.inbox_a, phone(1), "When is my echo scan?", name="Wang Fang").conversation


# --- Creating patients ----------------------------------------------------------------------------------------


def test_creating_a_patient_normalizes_identities(sam: APIClient) -> None:
    response = sam.post(
        "/api/v1/patients/",
        {
            "name": "Li Wei",
            "gender": "female",
            "birth_date": "1980-05-17",
            "time_zone": "Asia/Shanghai",
            "tags": ["vip", "heart-failure"],
            "identities": [
                {"kind": "phone", "value": "0086-138-0013-8000"},
                {"kind": "email", "value": " Li.Wei@Example.COM "},
                {"kind": "mrn", "value": "mrn-00042"},
            ],
        },
        format="json",
    )
    assert response.status_code == 201, response.content
    body = response.json()
    stored = set(PatientIdentity.objects.filter(patient_id=body["id"]).values_list("kind", "value"))
    assert stored == {("phone", "+8613800138000"), ("email", "li.wei@example.com"), ("mrn", "MRN-00042")}
    assert {(i["kind"], i["value"]) for i in body["identities"]} == stored
    assert body["name"] == "Li Wei"
    assert body["birth_date"] == "1980-05-17"
    assert body["tags"] == ["heart-failure", "vip"]


@pytest.mark.parametrize("raw", ["hello", "123", "+86 138 0013", "+1 555"])
def test_creating_a_patient_with_an_invalid_phone_is_a_field_error(sam: APIClient, raw: str) -> None:
    before = Patient.objects.count()
    response = sam.post(
        "/api/v1/patients/", {"name": "X", "identities": [{"kind": "phone", "value": raw}]}, format="json"
    )
    assert response.status_code == 400
    errors = response.json()["identities"]
    first = errors[0] if isinstance(errors, list) else errors["0"]
    assert "phone number" in first["value"][0]
    assert Patient.objects.count() == before


def test_creating_a_patient_with_an_unknown_identity_kind_is_a_field_error(sam: APIClient) -> None:
    response = sam.post("/api/v1/patients/", {"identities": [{"kind": "fax", "value": "123"}]}, format="json")
    assert response.status_code == 400
    assert "identities" in response.json()


def test_creating_a_patient_with_a_taken_identity_is_refused_not_merged(
    sam: APIClient, world: World, inbound: Any
) -> None:
    existing = inbound(world.inbox_a, "+8613800138000", "hi").patient
    before = Patient.objects.count()
    response = sam.post(
        "/api/v1/patients/",
        {"name": "Someone else", "identities": [{"kind": "phone", "value": "138 0013 8000"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "already belongs" in response.json()["identities"][0]
    assert Patient.objects.count() == before
    assert PatientIdentity.objects.get(value="+8613800138000").patient_id == existing.pk


def test_creating_a_patient_with_two_spellings_of_one_number_is_refused(sam: APIClient, world: World) -> None:
    before = Patient.objects.count()
    response = sam.post(
        "/api/v1/patients/",
        {"identities": [{"kind": "phone", "value": "13800138000"}, {"kind": "phone", "value": "+86 138 0013 8000"}]},
        format="json",
    )
    assert response.status_code == 400
    assert "identities" in response.json()
    assert Patient.objects.count() == before
    assert not PatientIdentity.objects.exists()


def test_adding_an_identity_that_belongs_to_another_patient_is_refused(
    alice: APIClient, world: World, inbound: Any
) -> None:
    first = inbound(world.inbox_a, phone(1), "hi").patient
    second = inbound(world.inbox_a, phone(2), "hi").patient
    response = alice.post(
        f"/api/v1/patients/{second.pk}/identities/", {"kind": "phone", "value": phone(1)[3:]}, format="json"
    )
    assert response.status_code == 400
    assert "merge" in response.json()["value"][0]
    assert PatientIdentity.objects.get(value=phone(1)).patient_id == first.pk


def test_adding_an_identity_normalizes_it(alice: APIClient, thread: Conversation) -> None:
    response = alice.post(
        f"/api/v1/patients/{thread.patient_id}/identities/",
        {"kind": "email", "value": "Wang.Fang@QQ.com"},
        format="json",
    )
    assert response.status_code == 201
    assert response.json()["value"] == "wang.fang@qq.com"
    assert PatientIdentity.objects.filter(patient_id=thread.patient_id, kind="email", value="wang.fang@qq.com").exists()


# --- Updating patients ----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("gender", "banana"),
        ("gender", ""),
        ("time_zone", "Mars/Olympus_Mons"),
        ("time_zone", "../../etc/passwd"),
        ("time_zone", ""),
        ("birth_date", "2020-13-45"),
        ("birth_date", "17/05/1980"),
        ("birth_date", "yesterday"),
        ("vip_tier", "diamond"),
        ("language", "klingon"),
    ],
)
def test_patch_with_a_bad_value_is_a_field_error(
    alice: APIClient, thread: Conversation, field: str, value: str
) -> None:
    patient = Patient.objects.get(pk=thread.patient_id)
    response = alice.patch(f"/api/v1/patients/{patient.pk}/", {field: value}, format="json")
    assert response.status_code == 400
    assert list(response.json()) == [field]
    assert response.json()[field][0]
    fresh = Patient.objects.get(pk=patient.pk)
    assert getattr(fresh, field) == getattr(patient, field)


def test_patch_with_a_birth_date_in_the_future_is_a_field_error(alice: APIClient, thread: Conversation) -> None:
    tomorrow = timezone.localdate() + dt.timedelta(days=1)
    response = alice.patch(
        f"/api/v1/patients/{thread.patient_id}/", {"birth_date": tomorrow.isoformat()}, format="json"
    )
    assert response.status_code == 400
    assert "birth_date" in response.json()
    assert Patient.objects.get(pk=thread.patient_id).birth_date is None


def test_patch_updates_only_the_given_fields(alice: APIClient, thread: Conversation) -> None:
    response = alice.patch(
        f"/api/v1/patients/{thread.patient_id}/",
        {"gender": "female", "time_zone": "Asia/Urumqi", "birth_date": "1975-02-03", "tags": ["diabetic"]},
        format="json",
    )
    assert response.status_code == 200, response.content
    patient = Patient.objects.get(pk=thread.patient_id)
    assert (patient.gender, patient.time_zone, patient.birth_date) == ("female", "Asia/Urumqi", dt.date(1975, 2, 3))
    assert patient.name == "Wang Fang"
    assert [t.name for t in patient.tags.all()] == ["diabetic"]
    assert response.json()["age_band"] == patient.age_band


def test_merged_patient_is_gone_from_the_api(sam: APIClient, world: World, inbound: Any) -> None:
    keep = inbound(world.inbox_a, phone(1), "hi").patient
    drop = inbound(world.inbox_b, phone(2), "hi").patient
    response = sam.post(f"/api/v1/patients/{keep.pk}/merge/", {"drop_id": drop.pk}, format="json")
    assert response.status_code == 200
    assert {i["value"] for i in response.json()["identities"]} == {phone(1), phone(2)}
    assert sam.get(f"/api/v1/patients/{drop.pk}/").status_code == 404
    again = sam.post(f"/api/v1/patients/{keep.pk}/merge/", {"drop_id": drop.pk}, format="json")
    assert again.status_code == 404


def test_merging_a_patient_with_itself_is_refused(sam: APIClient, thread: Conversation) -> None:
    response = sam.post(f"/api/v1/patients/{thread.patient_id}/merge/", {"drop_id": thread.patient_id}, format="json")
    assert response.status_code == 400
    assert Patient.objects.get(pk=thread.patient_id).merged_into_id is None


# --- Listing and filtering conversations ------------------------------------------------------------------------


@dataclass
class Threads:
    mine: Conversation
    unassigned: Conversation
    resolved: Conversation
    labelled: Conversation
    other_team: Conversation

    def ids(self, *names: str) -> set[int]:
        return {getattr(self, n).pk for n in names}


@pytest.fixture
def threads(world: World, inbound: Any) -> Threads:
    mine = inbound(world.inbox_a, phone(1), "mine").conversation
    assign_conversation(conversation=mine, assignee=world.alice, actor=world.sam)
    unassigned = inbound(world.inbox_a, phone(2), "nobody's").conversation
    resolved = inbound(world.inbox_a, phone(3), "done").conversation
    resolve_conversation(conversation=resolved, actor=world.alice)
    labelled = inbound(world.inbox_a, phone(4), "bill").conversation
    set_labels(conversation=labelled, label_names=["billing"], actor=world.alice)
    other_team = inbound(world.inbox_b, phone(5), "knee").conversation
    return Threads(mine, unassigned, resolved, labelled, other_team)


@pytest.mark.parametrize(
    ("query", "expected"),
    [
        ({}, ("mine", "unassigned", "labelled")),
        ({"view": "all"}, ("mine", "unassigned", "labelled")),
        ({"view": "mine"}, ("mine",)),
        ({"view": "unassigned"}, ("unassigned", "labelled")),
        ({"status": "resolved"}, ("resolved",)),
        ({"status": "any"}, ("mine", "unassigned", "resolved", "labelled")),
        ({"view": "unassigned", "status": "any"}, ("unassigned", "resolved", "labelled")),
        ({"label": "billing"}, ("labelled",)),
        ({"label": "no-such-label"}, ()),
        ({"inbox": "A"}, ("mine", "unassigned", "labelled")),
        ({"inbox": "B"}, ()),
    ],
)
def test_agent_conversation_list_filters(
    alice: APIClient, world: World, threads: Threads, query: dict[str, str], expected: tuple[str, ...]
) -> None:
    inboxes = {"A": world.inbox_a.pk, "B": world.inbox_b.pk}
    params = {k: inboxes.get(v, v) if k == "inbox" else v for k, v in query.items()}
    response = alice.get("/api/v1/conversations/", params)
    assert response.status_code == 200
    body = response.json()
    assert {row["id"] for row in body["results"]} == threads.ids(*expected)
    assert body["count"] == len(expected)


def test_supervisor_filters_by_another_teams_inbox(sam: APIClient, world: World, threads: Threads) -> None:
    response = sam.get("/api/v1/conversations/", {"inbox": world.inbox_b.pk})
    assert {row["id"] for row in response.json()["results"]} == threads.ids("other_team")


def test_supervisor_filters_by_patient(sam: APIClient, threads: Threads) -> None:
    response = sam.get("/api/v1/conversations/", {"patient": threads.labelled.patient_id, "status": "any"})
    assert {row["id"] for row in response.json()["results"]} == threads.ids("labelled")


@pytest.mark.parametrize(
    ("query", "field"),
    [
        ({"view": "everything"}, "view"),
        ({"status": "closed"}, "status"),
        ({"inbox": "abc"}, "inbox"),
        ({"inbox": "-1"}, "inbox"),
        ({"patient": "1.5"}, "patient"),
        ({"label": "x" * 61}, "label"),
        ({"label": "a\x00b"}, "label"),
    ],
)
def test_bad_conversation_filters_are_field_errors(
    alice: APIClient, threads: Threads, query: dict[str, str], field: str
) -> None:
    response = alice.get("/api/v1/conversations/", query)
    assert response.status_code == 400
    assert field in response.json()


def test_conversation_list_is_paginated(sam: APIClient, threads: Threads) -> None:
    response = sam.get("/api/v1/conversations/", {"status": "any", "limit": 2})
    body = response.json()
    assert body["count"] == 5
    assert len(body["results"]) == 2
    assert body["next"]


# --- Messages ---------------------------------------------------------------------------------------------------------


def test_posting_a_message_queues_it_and_the_simulator_delivers_it(
    alice: APIClient, world: World, thread: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post(
            f"/api/v1/conversations/{thread.pk}/messages/", {"body": "  Tuesday at 9:00, room 3  "}, format="json"
        )
    assert response.status_code == 201, response.content
    body = response.json()
    # The answer describes the message as written: queued, not yet handed to the provider.
    assert body["status"] == MessageStatus.QUEUED
    assert body["direction"] == MessageDirection.OUTBOUND
    assert body["body"] == "Tuesday at 9:00, room 3"
    assert body["author"]["id"] == world.alice.pk

    message = Message.objects.get(pk=body["id"])
    assert message.status == MessageStatus.DELIVERED
    assert message.sent_at is not None
    assert message.delivered_at is not None
    assert message.provider_message_id.startswith("SIM-")
    delivery = SimulatedDelivery.objects.get(provider_message_id=message.provider_message_id)
    assert (delivery.to, delivery.body) == (phone(1), "Tuesday at 9:00, room 3")

    thread.refresh_from_db()
    assert thread.assignee_id == world.alice.pk  # answering an unassigned thread takes it
    assert thread.last_message_preview == "Tuesday at 9:00, room 3"
    listed = alice.get(f"/api/v1/conversations/{thread.pk}/messages/").json()
    assert [(m["direction"], m["status"]) for m in listed] == [("in", "received"), ("out", "delivered")]


def test_message_the_network_refuses_ends_failed(
    alice: APIClient, thread: Conversation, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        response = alice.post(f"/api/v1/conversations/{thread.pk}/messages/", {"body": "test #fail"}, format="json")
    assert response.status_code == 201
    message = Message.objects.get(pk=response.json()["id"])
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "SIM-30007"


@pytest.mark.parametrize("payload", [{"body": ""}, {"body": "   \n\t "}, {}, {"body": None}, {"body": "x" * 4001}])
def test_empty_or_oversized_message_is_a_field_error(alice: APIClient, thread: Conversation, payload: Any) -> None:
    response = alice.post(f"/api/v1/conversations/{thread.pk}/messages/", payload, format="json")
    assert response.status_code == 400
    assert "body" in response.json()
    assert not Message.objects.filter(direction=MessageDirection.OUTBOUND).exists()


# --- Notes ----------------------------------------------------------------------------------------------------------


def test_notes_are_added_and_listed_with_their_author(alice: APIClient, world: World, thread: Conversation) -> None:
    response = alice.post(
        f"/api/v1/conversations/{thread.pk}/notes/", {"body": " Prefers calls after 6pm "}, format="json"
    )
    assert response.status_code == 201
    assert response.json()["body"] == "Prefers calls after 6pm"
    listed = api(world.bob).get(f"/api/v1/conversations/{thread.pk}/notes/").json()
    assert [(n["body"], n["author"]["id"]) for n in listed] == [("Prefers calls after 6pm", world.alice.pk)]
    # A note is internal: nothing is sent to the patient.
    assert not Message.objects.filter(direction=MessageDirection.OUTBOUND).exists()


@pytest.mark.parametrize("payload", [{"body": ""}, {"body": "  "}, {}, {"body": ["a"]}])
def test_empty_note_is_a_field_error(alice: APIClient, thread: Conversation, payload: Any) -> None:
    response = alice.post(f"/api/v1/conversations/{thread.pk}/notes/", payload, format="json")
    assert response.status_code == 400
    assert "body" in response.json()
    assert not Note.objects.exists()


# --- Conversation actions -----------------------------------------------------------------------------------------


def action(client: APIClient, conversation: Conversation, name: str, payload: Any = None) -> Any:
    return client.post(f"/api/v1/conversations/{conversation.pk}/{name}/", payload or {}, format="json")


@pytest.mark.parametrize("assignee", ["bob", "nina", "sam"])
def test_assign_to_someone_who_can_see_the_inbox(
    alice: APIClient, world: World, thread: Conversation, assignee: str
) -> None:
    user = getattr(world, assignee)
    response = action(alice, thread, "assign", {"assignee_id": user.pk})
    assert response.status_code == 200
    assert response.json()["assignee"]["id"] == user.pk
    thread.refresh_from_db()
    assert thread.assignee_id == user.pk


@pytest.mark.parametrize("assignee", ["charlie", "mark", "ada"])
def test_assign_to_someone_who_cannot_work_the_inbox_is_refused(
    alice: APIClient, world: World, thread: Conversation, assignee: str
) -> None:
    response = action(alice, thread, "assign", {"assignee_id": getattr(world, assignee).pk})
    assert response.status_code == 400
    assert "assignee" in response.json()
    thread.refresh_from_db()
    assert thread.assignee_id is None


@pytest.mark.parametrize("assignee_id", [987654321, 10**20])
def test_assign_to_a_nonexistent_user_is_a_field_error(
    alice: APIClient, thread: Conversation, assignee_id: int
) -> None:
    response = action(alice, thread, "assign", {"assignee_id": assignee_id})
    assert response.status_code == 400
    assert "assignee_id" in response.json()


def test_assign_to_a_deactivated_user_is_refused(alice: APIClient, world: World, thread: Conversation) -> None:
    world.bob.is_active = False
    world.bob.save()
    response = action(alice, thread, "assign", {"assignee_id": world.bob.pk})
    assert response.status_code == 400


def test_unassign(alice: APIClient, world: World, thread: Conversation) -> None:
    assign_conversation(conversation=thread, assignee=world.bob, actor=world.sam)
    response = action(alice, thread, "assign", {"assignee_id": None})
    assert response.status_code == 200
    assert response.json()["assignee"] is None


def test_resolve_then_reopen(alice: APIClient, thread: Conversation) -> None:
    resolved = action(alice, thread, "resolve")
    assert resolved.status_code == 200
    assert resolved.json()["status"] == ConversationStatus.RESOLVED
    assert resolved.json()["resolved_at"]
    reopened = action(alice, thread, "reopen")
    assert reopened.status_code == 200
    assert reopened.json()["status"] == ConversationStatus.OPEN
    assert reopened.json()["resolved_at"] is None
    thread.refresh_from_db()
    assert thread.status == ConversationStatus.OPEN


def test_reopen_is_refused_when_the_patient_already_has_a_live_thread_in_the_inbox(
    alice: APIClient, world: World, thread: Conversation, inbound: Any
) -> None:
    action(alice, thread, "resolve")
    thread.refresh_from_db()
    Conversation.objects.filter(pk=thread.pk).update(resolved_at=timezone.now() - dt.timedelta(days=30))
    newer = inbound(world.inbox_a, phone(1), "a new question").conversation
    assert newer.pk != thread.pk
    response = action(alice, thread, "reopen")
    assert response.status_code == 400
    thread.refresh_from_db()
    assert thread.status == ConversationStatus.RESOLVED


def test_snooze_until_a_future_time(alice: APIClient, thread: Conversation) -> None:
    until = timezone.now() + dt.timedelta(hours=3)
    response = action(alice, thread, "snooze", {"until": until.isoformat()})
    assert response.status_code == 200
    thread.refresh_from_db()
    assert thread.status == ConversationStatus.SNOOZED
    assert abs((thread.snoozed_until - until).total_seconds()) < 1


@pytest.mark.parametrize(
    "until",
    [
        (timezone.now() - dt.timedelta(minutes=1)).isoformat(),
        "2001-01-01T00:00:00Z",
        "tomorrow",
        "",
        None,
        "9999-12-31T23:59:59+00:00",
    ],
)
def test_snooze_until_a_past_or_bad_time_is_a_field_error(alice: APIClient, thread: Conversation, until: Any) -> None:
    response = action(alice, thread, "snooze", {"until": until})
    assert response.status_code == 400
    assert "until" in response.json()
    thread.refresh_from_db()
    assert thread.status == ConversationStatus.OPEN


def test_pending_on_a_resolved_conversation_is_refused(alice: APIClient, thread: Conversation) -> None:
    action(alice, thread, "resolve")
    response = action(alice, thread, "pending")
    assert response.status_code == 400
    assert response.json()["non_field_errors"]


def test_labels_are_set_listed_and_filterable(alice: APIClient, thread: Conversation) -> None:
    response = action(alice, thread, "labels", {"labels": ["billing", " callback ", "billing"]})
    assert response.status_code == 200
    assert sorted(label["name"] for label in response.json()["labels"]) == ["billing", "callback"]
    assert {row["name"] for row in alice.get("/api/v1/labels/").json()} == {"billing", "callback"}
    filtered = alice.get("/api/v1/conversations/", {"label": "callback"}).json()["results"]
    assert [row["id"] for row in filtered] == [thread.pk]
    cleared = action(alice, thread, "labels", {"labels": []})
    assert cleared.json()["labels"] == []
    assert Label.objects.count() == 2  # labels outlive the conversations they were on


@pytest.mark.parametrize("labels", ["billing", [["nested"]], ["x" * 61], [f"l{i}" for i in range(21)], None])
def test_bad_labels_are_a_field_error(alice: APIClient, thread: Conversation, labels: Any) -> None:
    response = action(alice, thread, "labels", {"labels": labels})
    assert response.status_code == 400
    assert "labels" in response.json()
    assert not Label.objects.exists()


def test_priority(alice: APIClient, thread: Conversation) -> None:
    response = action(alice, thread, "priority", {"priority": 4})
    assert response.status_code == 200
    assert response.json()["priority"] == 4


def test_mark_read_clears_the_unread_count(alice: APIClient, thread: Conversation) -> None:
    assert thread.unread_count == 1
    response = action(alice, thread, "read")
    assert response.json()["unread_count"] == 0


def test_unknown_conversation_action_is_404(alice: APIClient, thread: Conversation) -> None:
    assert action(alice, thread, "delete").status_code == 404


# --- Schema ------------------------------------------------------------------------------------------------------------


def test_openapi_schema_is_served_and_describes_patients(alice: APIClient) -> None:
    response = alice.get("/api/v1/schema/")
    assert response.status_code == 200
    text = response.content.decode()
    assert "openapi:" in text
    for path in ("/api/v1/patients/", "/api/v1/conversations/{conversation_id}/messages/"):
        assert path in text


def test_openapi_schema_as_json(alice: APIClient) -> None:
    response = alice.get("/api/v1/schema/", {"format": "json"})
    assert response.status_code == 200
    schema = response.json()
    assert "post" in schema["paths"]["/api/v1/patients/"]
    assert "patch" in schema["paths"]["/api/v1/patients/{patient_id}/"]


# --- Garbage in, 400 out --------------------------------------------------------------------------------------------

POST_ENDPOINTS = [
    ("post", "/api/v1/patients/"),
    ("patch", "/api/v1/patients/{patient}/"),
    ("post", "/api/v1/patients/{patient}/identities/"),
    ("post", "/api/v1/patients/{patient}/merge/"),
    ("post", "/api/v1/conversations/{conversation}/messages/"),
    ("post", "/api/v1/conversations/{conversation}/notes/"),
    ("post", "/api/v1/conversations/{conversation}/assign/"),
    ("post", "/api/v1/conversations/{conversation}/snooze/"),
    ("post", "/api/v1/conversations/{conversation}/labels/"),
    ("post", "/api/v1/conversations/{conversation}/priority/"),
]
RAW_BODIES = ["{not json", '{"body": "unterminated', "[]", "[1, 2]", '"text"', "42", "null", "true", '{"x": NaN}']


def garbage_url(template: str, thread: Conversation) -> str:
    return template.format(patient=thread.patient_id, conversation=thread.pk)


@pytest.mark.parametrize("raw", RAW_BODIES)
@pytest.mark.parametrize(("method", "url"), POST_ENDPOINTS, ids=[f"{m} {u}" for m, u in POST_ENDPOINTS])
def test_malformed_json_bodies_are_400(sam: APIClient, thread: Conversation, method: str, url: str, raw: str) -> None:
    patients, messages = Patient.objects.count(), Message.objects.count()
    response = sam.generic(method.upper(), garbage_url(url, thread), raw, content_type="application/json")
    assert response.status_code == 400, response.content
    assert (Patient.objects.count(), Message.objects.count()) == (patients, messages)


WRONG_TYPES: list[tuple[str, str, Any]] = [
    ("post", "/api/v1/patients/", {"identities": "13800138000"}),
    ("post", "/api/v1/patients/", {"identities": ["13800138000"]}),
    ("post", "/api/v1/patients/", {"identities": [{"kind": "phone"}]}),
    ("post", "/api/v1/patients/", {"identities": [{"kind": "phone", "value": None}]}),
    ("post", "/api/v1/patients/", {"tags": "vip"}),
    ("post", "/api/v1/patients/", {"custom_attributes": ["a", "b"]}),
    ("post", "/api/v1/patients/", {"name": {"first": "Li"}}),
    ("post", "/api/v1/patients/", {"birth_date": 19800517}),
    ("post", "/api/v1/patients/", {"name": "a\x00b"}),
    ("patch", "/api/v1/patients/{patient}/", {"gender": ["female"]}),
    ("patch", "/api/v1/patients/{patient}/", {"custom_attributes": "x"}),
    ("patch", "/api/v1/patients/{patient}/", {"custom_attributes": {"note": "a\x00b"}}),
    ("patch", "/api/v1/patients/{patient}/", {"custom_attributes": {"nested": {"a\x00": 1}}}),
    ("patch", "/api/v1/patients/{patient}/", {"time_zone": 8}),
    ("patch", "/api/v1/patients/{patient}/", {"tags": [None]}),
    ("post", "/api/v1/patients/{patient}/identities/", {"kind": "phone", "value": ["1"]}),
    ("post", "/api/v1/patients/{patient}/identities/", {"kind": None, "value": "1"}),
    ("post", "/api/v1/patients/{patient}/identities/", {"kind": "visitor", "value": "short"}),
    ("post", "/api/v1/patients/{patient}/merge/", {"drop_id": "abc"}),
    ("post", "/api/v1/patients/{patient}/merge/", {"drop_id": -1}),
    ("post", "/api/v1/patients/{patient}/merge/", {"drop_id": 1.5}),
    ("post", "/api/v1/patients/{patient}/merge/", {}),
    ("post", "/api/v1/conversations/{conversation}/messages/", {"body": {"text": "hi"}}),
    ("post", "/api/v1/conversations/{conversation}/messages/", {"body": True}),
    ("post", "/api/v1/conversations/{conversation}/messages/", {"body": "a\x00b"}),
    ("post", "/api/v1/conversations/{conversation}/notes/", {"body": [1]}),
    ("post", "/api/v1/conversations/{conversation}/assign/", {"assignee_id": "bob"}),
    ("post", "/api/v1/conversations/{conversation}/assign/", {"assignee_id": []}),
    ("post", "/api/v1/conversations/{conversation}/assign/", {}),
    ("post", "/api/v1/conversations/{conversation}/snooze/", {"until": 1700000000}),
    ("post", "/api/v1/conversations/{conversation}/snooze/", {"until": ["2030-01-01"]}),
    ("post", "/api/v1/conversations/{conversation}/labels/", {"labels": {"a": 1}}),
    ("post", "/api/v1/conversations/{conversation}/labels/", {"labels": ["a\x00"]}),
    ("post", "/api/v1/conversations/{conversation}/priority/", {"priority": 99}),
    ("post", "/api/v1/conversations/{conversation}/priority/", {"priority": "urgent"}),
    ("post", "/api/v1/conversations/{conversation}/priority/", {"priority": None}),
]


@pytest.mark.parametrize(("method", "url", "payload"), WRONG_TYPES)
def test_wrongly_typed_fields_are_400(
    sam: APIClient, thread: Conversation, method: str, url: str, payload: dict[str, Any]
) -> None:
    response = getattr(sam, method)(garbage_url(url, thread), payload, format="json")
    assert response.status_code == 400, response.content
    assert isinstance(response.json(), dict)


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/patients/?q=a%00b",
        "/api/v1/canned-responses/?q=%00",
        "/api/v1/audit/?actor=ad%00a",
    ],
)
def test_nul_bytes_in_search_parameters_are_not_a_server_error(world: World, thread: Conversation, url: str) -> None:
    response = api(world.ada).get(url)
    assert response.status_code in (200, 400)
    if response.status_code == 200:
        body = response.json()
        assert (body["results"] if isinstance(body, dict) else body) == []


@pytest.mark.parametrize(
    "url",
    [
        "/api/v1/patients/99999999999999999999/",
        "/api/v1/conversations/99999999999999999999/",
        "/api/v1/conversations/99999999999999999999/messages/",
    ],
)
def test_out_of_range_ids_are_404(sam: APIClient, url: str) -> None:
    assert sam.get(url).status_code == 404


def test_merge_with_an_out_of_range_drop_id_is_404(sam: APIClient, thread: Conversation) -> None:
    response = sam.post(f"/api/v1/patients/{thread.patient_id}/merge/", {"drop_id": 10**20}, format="json")
    assert response.status_code == 404


def test_openapi_schema_generates_without_warnings_and_validates(tmp_path: Any) -> None:
    from django.core.management import call_command

    # --fail-on-warn turns "unable to guess serializer" and name collisions into an error.
    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    assert "Patient360Shape" in (tmp_path / "schema.yml").read_text()

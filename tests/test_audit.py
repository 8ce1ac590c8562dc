"""The audit log: every staff read of a patient's data is recorded with who, what, how and from where.

Decisions under test: a read the API refuses (404 for another team's record, 403 for a marketer, 401 for
anonymous) discloses nothing, so it writes no entry — the log answers "who saw this patient", and a refused
caller saw nothing. Every successful read writes its own entry; reads are not de-duplicated.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contactcenter.models import AuditAction, AuditLogEntry, Conversation, Patient
from tests.conftest import World

PHONE_A = "+8613912345678"
PHONE_A2 = "+8613800138000"
PHONE_B = "+8615011112222"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Records:
    patient_a: Patient
    conversation_a: Conversation
    patient_a2: Patient
    conversation_a2: Conversation
    patient_b: Patient
    conversation_b: Conversation


@pytest.fixture
def records(world: World, inbound: Any) -> Records:
    a = inbound(world.inbox_a, PHONE_A, "Cardiology question")
    a2 = inbound(world.inbox_a, PHONE_A2, "Another cardiology question")
    b = inbound(world.inbox_b, PHONE_B, "Orthopedics question")
    return Records(a.patient, a.conversation, a2.patient, a2.conversation, b.patient, b.conversation)


def token_client(user: Any) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {Token.objects.get_or_create(user=user)[0].key}")
    return client


def session_client(user: Any) -> APIClient:
    client = APIClient()
    client.force_login(user)
    return client


CLIENTS = {"api": token_client, "ui": session_client}


def entries() -> list[AuditLogEntry]:
    return list(AuditLogEntry.objects.order_by("id"))


# --- Reads are recorded ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("via", ["api", "ui"])
@pytest.mark.parametrize("persona", ["alice", "nina", "sam", "ada"])
def test_reading_a_patient_profile_is_audited(world: World, records: Records, persona: str, via: str) -> None:
    user = getattr(world, persona)
    client = CLIENTS[via](user)
    response = client.get(f"/api/v1/patients/{records.patient_a.pk}/", REMOTE_ADDR="203.0.113.7")
    assert response.status_code == 200
    [entry] = entries()
    assert entry.actor_id == user.pk
    assert entry.action == AuditAction.VIEW_PATIENT
    assert entry.patient_id == records.patient_a.pk
    assert (entry.object_type, entry.object_id) == ("patient", str(records.patient_a.pk))
    assert entry.via == via
    assert entry.ip_address == "203.0.113.7"
    assert entry.at is not None


@pytest.mark.parametrize("via", ["api", "ui"])
@pytest.mark.parametrize("persona", ["bob", "nina", "sam", "ada"])
def test_reading_a_conversation_is_audited(world: World, records: Records, persona: str, via: str) -> None:
    user = getattr(world, persona)
    client = CLIENTS[via](user)
    response = client.get(f"/api/v1/conversations/{records.conversation_a.pk}/", REMOTE_ADDR="198.51.100.23")
    assert response.status_code == 200
    [entry] = entries()
    assert entry.actor_id == user.pk
    assert entry.action == AuditAction.VIEW_CONVERSATION
    assert entry.patient_id == records.patient_a.pk
    assert (entry.object_type, entry.object_id) == ("conversation", str(records.conversation_a.pk))
    assert entry.via == via
    assert entry.ip_address == "198.51.100.23"


def test_ipv6_client_address_is_recorded(world: World, records: Records) -> None:
    token_client(world.alice).get(f"/api/v1/patients/{records.patient_a.pk}/", REMOTE_ADDR="2001:db8::42")
    assert entries()[0].ip_address == "2001:db8::42"


def test_agent_of_team_b_reading_own_team_patient_is_audited(world: World, records: Records) -> None:
    response = token_client(world.charlie).get(f"/api/v1/patients/{records.patient_b.pk}/")
    assert response.status_code == 200
    [entry] = entries()
    assert (entry.actor_id, entry.patient_id) == (world.charlie.pk, records.patient_b.pk)


def test_every_read_writes_its_own_entry(world: World, records: Records) -> None:
    client = token_client(world.alice)
    for _ in range(3):
        client.get(f"/api/v1/patients/{records.patient_a.pk}/")
    client.get(f"/api/v1/conversations/{records.conversation_a.pk}/")
    assert [e.action for e in entries()] == [AuditAction.VIEW_PATIENT] * 3 + [AuditAction.VIEW_CONVERSATION]


def test_entries_name_the_reader_not_the_record_owner(world: World, records: Records) -> None:
    token_client(world.alice).get(f"/api/v1/patients/{records.patient_a.pk}/")
    token_client(world.bob).get(f"/api/v1/patients/{records.patient_a.pk}/")
    assert [(e.actor_id, e.patient_id) for e in entries()] == [
        (world.alice.pk, records.patient_a.pk),
        (world.bob.pk, records.patient_a.pk),
    ]


def test_listing_patients_is_audited_with_the_ids_shown(world: World, records: Records) -> None:
    response = token_client(world.alice).get("/api/v1/patients/", {"q": "13912"})
    assert response.status_code == 200
    [entry] = entries()
    assert entry.action == AuditAction.LIST_PATIENTS
    assert entry.actor_id == world.alice.pk
    assert entry.via == "api"
    assert entry.detail == {"query": "13912", "ids": [records.patient_a.pk]}


def test_listing_patients_as_team_b_records_only_team_b_ids(world: World, records: Records) -> None:
    token_client(world.charlie).get("/api/v1/patients/")
    assert entries()[0].detail["ids"] == [records.patient_b.pk]


# --- Refused reads ----------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "target", "status"),
    [
        ("charlie", "patient", 404),
        ("charlie", "conversation", 404),
        ("mark", "patient", 403),
        ("mark", "conversation", 403),
        ("anonymous", "patient", 401),
        ("anonymous", "conversation", 401),
    ],
)
def test_refused_reads_write_no_entry(world: World, records: Records, persona: str, target: str, status: int) -> None:
    client = APIClient() if persona == "anonymous" else token_client(getattr(world, persona))
    url = {
        "patient": f"/api/v1/patients/{records.patient_a.pk}/",
        "conversation": f"/api/v1/conversations/{records.conversation_a.pk}/",
    }[target]
    assert client.get(url).status_code == status
    assert entries() == []


def test_reading_a_nonexistent_patient_writes_no_entry(world: World, records: Records) -> None:
    assert token_client(world.ada).get("/api/v1/patients/987654321/").status_code == 404
    assert entries() == []


def test_marketer_listing_patients_is_refused_and_not_audited(world: World, records: Records) -> None:
    assert token_client(world.mark).get("/api/v1/patients/").status_code == 403
    assert entries() == []


# --- Changes are recorded --------------------------------------------------------------------------------------


def test_patient_update_is_audited_with_the_changed_fields(world: World, records: Records) -> None:
    response = token_client(world.alice).patch(
        f"/api/v1/patients/{records.patient_a.pk}/", {"city": "Hangzhou", "gender": "male"}, format="json"
    )
    assert response.status_code == 200
    [entry] = entries()
    assert entry.action == AuditAction.UPDATE_PATIENT
    assert (entry.actor_id, entry.patient_id, entry.via) == (world.alice.pk, records.patient_a.pk, "api")
    assert sorted(entry.detail["fields"]) == ["city", "gender"]


def test_patient_update_that_changes_nothing_is_not_an_update_entry(world: World, records: Records) -> None:
    session_client(world.alice).patch(f"/api/v1/patients/{records.patient_a.pk}/", {"gender": "unknown"}, format="json")
    assert [e.action for e in entries()] == []


def test_merge_is_audited_with_the_moved_ids(world: World, records: Records, inbound: Any) -> None:
    # The dropped patient also wrote to team B; their live inbox A thread clashes with the kept patient's.
    clash = inbound(world.inbox_b, PHONE_A2, "also orthopedics").conversation
    moved = {records.conversation_a2.pk, clash.pk}
    response = token_client(world.sam).post(
        f"/api/v1/patients/{records.patient_a.pk}/merge/",
        {"drop_id": records.patient_a2.pk},
        format="json",
        REMOTE_ADDR="192.0.2.9",
    )
    assert response.status_code == 200
    merges = [e for e in entries() if e.action == AuditAction.MERGE_PATIENTS]
    assert len(merges) == 1
    entry = merges[0]
    assert entry.actor_id == world.sam.pk
    assert entry.patient_id == records.patient_a.pk
    assert (entry.object_type, entry.object_id) == ("patient", str(records.patient_a2.pk))
    assert entry.via == "api"
    assert entry.detail["kept"] == records.patient_a.pk
    assert entry.detail["dropped"] == records.patient_a2.pk
    assert set(entry.detail["conversations"]) == moved
    assert entry.detail["identities"] == ["phone"]
    # Both had a live thread in inbox A: the dropped one's was resolved on merge.
    assert entry.detail["resolved_on_merge"] == [records.conversation_a2.pk]
    assert set(Conversation.objects.filter(pk__in=moved).values_list("patient_id", flat=True)) == {records.patient_a.pk}


def test_merge_through_the_ui_session_is_audited_as_ui(world: World, records: Records) -> None:
    response = session_client(world.ada).post(
        f"/api/v1/patients/{records.patient_a.pk}/merge/", {"drop_id": records.patient_b.pk}, format="json"
    )
    assert response.status_code == 200
    [entry] = [e for e in entries() if e.action == AuditAction.MERGE_PATIENTS]
    assert (entry.actor_id, entry.via) == (world.ada.pk, "ui")
    assert entry.detail["conversations"] == [records.conversation_b.pk]


@pytest.mark.parametrize("persona", ["alice", "charlie", "mark"])
def test_refused_merge_writes_no_entry(world: World, records: Records, persona: str) -> None:
    response = token_client(getattr(world, persona)).post(
        f"/api/v1/patients/{records.patient_a.pk}/merge/", {"drop_id": records.patient_a2.pk}, format="json"
    )
    assert response.status_code == 403
    assert entries() == []


def test_merged_tombstone_audits_still_find_the_dropped_patient(world: World, records: Records) -> None:
    token_client(world.alice).get(f"/api/v1/patients/{records.patient_a2.pk}/")
    token_client(world.sam).post(
        f"/api/v1/patients/{records.patient_a.pk}/merge/", {"drop_id": records.patient_a2.pk}, format="json"
    )
    ada = token_client(world.ada)
    by_dropped = ada.get("/api/v1/audit/", {"patient": records.patient_a2.pk}).json()["results"]
    assert [(row["actor"], row["action"]) for row in by_dropped] == [("alice", "view_patient")]
    by_kept = ada.get("/api/v1/audit/", {"patient": records.patient_a.pk}).json()["results"]
    assert [row["action"] for row in by_kept] == ["merge_patients"]


# --- Admins browse the log ---------------------------------------------------------------------------------------


@pytest.fixture
def history(world: World, records: Records) -> None:
    """alice reads patient A twice, bob reads conversation A, charlie reads patient B, sam reads patient A2."""
    alice, bob = token_client(world.alice), session_client(world.bob)
    alice.get(f"/api/v1/patients/{records.patient_a.pk}/")
    alice.get(f"/api/v1/patients/{records.patient_a.pk}/")
    bob.get(f"/api/v1/conversations/{records.conversation_a.pk}/")
    token_client(world.charlie).get(f"/api/v1/patients/{records.patient_b.pk}/")
    token_client(world.sam).get(f"/api/v1/patients/{records.patient_a2.pk}/")


def audit_rows(world: World, **params: Any) -> list[dict[str, Any]]:
    response = token_client(world.ada).get("/api/v1/audit/", params)
    assert response.status_code == 200
    return response.json()["results"]


def test_admin_sees_every_entry_newest_first(world: World, records: Records, history: None) -> None:
    rows = audit_rows(world)
    assert [row["actor"] for row in rows] == ["sam", "charlie", "bob", "alice", "alice"]
    assert [row["id"] for row in rows] == sorted((row["id"] for row in rows), reverse=True)
    fields = {"id", "at", "actor", "action", "patient_id", "object_type", "object_id", "via", "ip_address"}
    assert set(rows[0]) >= fields


def test_admin_filters_the_log_by_patient(world: World, records: Records, history: None) -> None:
    rows = audit_rows(world, patient=records.patient_a.pk)
    assert [(row["actor"], row["action"], row["via"]) for row in rows] == [
        ("bob", "view_conversation", "ui"),
        ("alice", "view_patient", "api"),
        ("alice", "view_patient", "api"),
    ]
    assert {row["patient_id"] for row in rows} == {records.patient_a.pk}


def test_admin_filters_the_log_by_actor(world: World, records: Records, history: None) -> None:
    rows = audit_rows(world, actor="charlie")
    assert [(row["actor"], row["patient_id"]) for row in rows] == [("charlie", records.patient_b.pk)]


def test_admin_filters_the_log_by_patient_and_actor(world: World, records: Records, history: None) -> None:
    assert len(audit_rows(world, patient=records.patient_a.pk, actor="alice")) == 2
    assert audit_rows(world, patient=records.patient_b.pk, actor="alice") == []


def test_admin_filter_for_an_unknown_actor_is_empty(world: World, records: Records, history: None) -> None:
    assert audit_rows(world, actor="nobody") == []


@pytest.mark.parametrize("persona", ["alice", "charlie", "nina", "sam", "mark"])
def test_only_admins_browse_the_audit_log(world: World, records: Records, history: None, persona: str) -> None:
    response = token_client(getattr(world, persona)).get("/api/v1/audit/", {"patient": records.patient_a.pk})
    assert response.status_code == 403
    assert "results" not in response.json()


def test_browsing_the_audit_log_does_not_touch_patient_entries(world: World, records: Records, history: None) -> None:
    before = AuditLogEntry.objects.count()
    audit_rows(world)
    audit_rows(world, patient=records.patient_a.pk)
    assert AuditLogEntry.objects.count() == before


@pytest.mark.parametrize("actor", ["a\x00b", "\x00"])
def test_audit_page_with_a_nul_byte_in_the_actor_filter_is_not_a_server_error(
    world: World, records: Records, history: None, actor: str
) -> None:
    client = Client()
    client.force_login(world.ada)
    assert client.get("/audit/", {"actor": actor}).status_code == 400


@pytest.mark.parametrize("actor", ["a\x00b", "\x00"])
def test_audit_api_with_a_nul_byte_in_the_actor_filter_is_a_400(world: World, records: Records, actor: str) -> None:
    response = token_client(world.ada).get("/api/v1/audit/", {"actor": actor})
    assert response.status_code == 400
    assert "actor" in response.json()

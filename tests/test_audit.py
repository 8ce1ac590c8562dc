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
    assert entry.detail == {
        "query": "13912",
        "count": 1,
        "ids": [records.patient_a.pk],
        "patient_ids": [records.patient_a.pk],
    }


def test_listing_patients_as_team_b_records_only_team_b_ids(world: World, records: Records) -> None:
    token_client(world.charlie).get("/api/v1/patients/")
    assert entries()[0].detail["ids"] == [records.patient_b.pk]


# --- List reads: one entry per request, naming what the page showed --------------------------------------------


@pytest.mark.parametrize("via", ["api", "ui"])
def test_listing_conversations_is_one_entry_naming_the_conversations_and_patients_shown(
    world: World, records: Records, via: str
) -> None:
    response = CLIENTS[via](world.alice).get("/api/v1/conversations/", {"status": "any"}, REMOTE_ADDR="203.0.113.9")
    assert response.status_code == 200
    shown = [row["id"] for row in response.json()["results"]]
    assert sorted(shown) == sorted([records.conversation_a.pk, records.conversation_a2.pk])
    [entry] = entries()
    assert (entry.actor_id, entry.action, entry.via, entry.ip_address) == (
        world.alice.pk,
        AuditAction.LIST_CONVERSATIONS,
        via,
        "203.0.113.9",
    )
    assert (entry.object_type, entry.object_id, entry.patient_id) == ("conversation", "*", None)
    assert entry.detail == {
        "view": "all",
        "status": "any",
        "count": 2,
        "ids": shown,
        "patient_ids": sorted([records.patient_a.pk, records.patient_a2.pk]),
    }


def test_a_page_of_the_conversation_list_names_only_that_page(world: World, records: Records) -> None:
    client = token_client(world.sam)
    first = client.get("/api/v1/conversations/", {"status": "any", "limit": 2}).json()
    second = client.get("/api/v1/conversations/", {"status": "any", "limit": 2, "offset": 2}).json()
    pages = [[row["id"] for row in page["results"]] for page in (first, second)]
    assert [len(page) for page in pages] == [2, 1]
    assert [e.detail["ids"] for e in entries()] == pages
    assert [e.action for e in entries()] == [AuditAction.LIST_CONVERSATIONS] * 2


def test_an_empty_conversation_list_is_still_audited_as_a_query(world: World, records: Records) -> None:
    response = token_client(world.charlie).get("/api/v1/conversations/", {"inbox": world.inbox_a.pk})
    assert response.json()["results"] == []
    [entry] = entries()
    assert entry.detail["count"] == 0 and entry.detail["ids"] == []


def test_a_refused_conversation_list_writes_no_entry(world: World, records: Records) -> None:
    assert token_client(world.mark).get("/api/v1/conversations/").status_code == 403
    assert APIClient().get("/api/v1/conversations/").status_code == 401
    assert entries() == []


@pytest.fixture
def follow_up_tasks(world: World) -> list[Any]:
    """Two open call tasks of Cardiology patients, one of Orthopedics."""
    import datetime as dt

    from django.utils import timezone

    from callbacks.actions.discharges import record_discharge
    from callbacks.models import CallbackTask, FollowUpPlan, PlanStep, StepKind, TaskKind, TaskStatus
    from tests.followup.conftest import discharge_record

    plan = FollowUpPlan.objects.create(name="Audit test plan", is_active=False)
    step = PlanStep.objects.create(plan=plan, position=1, kind=StepKind.CALL, offset_days=2)
    deadline = timezone.now() + dt.timedelta(days=2)
    tasks = []
    for department in ("cardiology", "cardiology", "orthopedics"):
        discharge = record_discharge(discharge_record(department_code=department)).discharge
        tasks.append(
            CallbackTask.objects.create(
                discharge=discharge,
                patient=discharge.patient,
                department=discharge.department,
                step=step,
                kind=TaskKind.CALL,
                status=TaskStatus.OPEN,
                due_at=deadline - dt.timedelta(days=2),
                deadline_at=deadline,
            )
        )
    return tasks


def test_listing_follow_up_tasks_is_one_entry_naming_the_tasks_and_patients_shown(
    world: World, follow_up_tasks: list[Any]
) -> None:
    response = session_client(world.nina).get("/api/v1/followup/tasks/", {"view": "due"})
    assert response.status_code == 200
    shown = [row["id"] for row in response.json()["results"]]
    cardiology = follow_up_tasks[:2]
    assert sorted(shown) == sorted(t.pk for t in cardiology)
    [entry] = entries()
    assert (entry.actor_id, entry.action, entry.object_type, entry.via) == (
        world.nina.pk,
        AuditAction.LIST_FOLLOWUP_TASKS,
        "callback_task",
        "ui",
    )
    assert entry.detail == {
        "view": "due",
        "count": 2,
        "ids": shown,
        "patient_ids": sorted(t.patient_id for t in cardiology),
    }


def test_a_refused_follow_up_list_writes_no_entry(world: World, follow_up_tasks: list[Any]) -> None:
    assert session_client(world.alice).get("/api/v1/followup/tasks/").status_code == 403
    assert entries() == []


# --- Web chat images staff open -----------------------------------------------------------------------------------


@pytest.fixture
def chat_image(world: World, records: Records, settings: Any, tmp_path: Any) -> Any:
    """An image a patient sent in conversation A, stored where the web chat keeps uploads."""
    from channels_adapters.webchat.actions import upload_path
    from channels_adapters.webchat.models import WebUpload, WebVisitor

    settings.MEDIA_ROOT = str(tmp_path)
    visitor = WebVisitor.objects.create(inbox=world.inbox_a, visitor_id="v-audit", patient=records.patient_a)
    message = records.conversation_a.messages.get()
    upload = WebUpload.objects.create(
        name="a" * 32 + ".png", visitor=visitor, message=message, content_type="image/png", size=4, width=1, height=1
    )
    path = upload_path(upload.name)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"\x89PNG")
    return upload


def test_staff_opening_a_web_chat_image_is_audited(world: World, records: Records, chat_image: Any) -> None:
    client = Client()
    client.force_login(world.bob)
    response = client.get(f"/webchat/files/{chat_image.name}", REMOTE_ADDR="198.51.100.4")
    assert response.status_code == 200
    [entry] = entries()
    assert (entry.actor_id, entry.action, entry.patient_id, entry.via, entry.ip_address) == (
        world.bob.pk,
        AuditAction.VIEW_ATTACHMENT,
        records.patient_a.pk,
        "ui",
        "198.51.100.4",
    )
    assert (entry.object_type, entry.object_id) == ("web_upload", str(chat_image.pk))
    assert entry.detail == {"conversation_id": records.conversation_a.pk, "message_id": chat_image.message_id}


def test_a_web_chat_image_refused_to_another_team_writes_no_entry(
    world: World, records: Records, chat_image: Any
) -> None:
    client = Client()
    client.force_login(world.charlie)
    assert client.get(f"/webchat/files/{chat_image.name}").status_code == 404
    assert entries() == []


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

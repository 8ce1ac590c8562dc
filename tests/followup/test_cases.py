"""Service recovery (服务补救): the 四落实 transitions, first-contact SLA escalation, and the cases API.

Personas (tests/conftest.py): sam supervisor and ada admin are patient relations; nina is a Cardiology
nurse; charlie is an Orthopedics agent and mark a marketer, neither of whom may see cases.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks.actions import recovery
from callbacks.actions.discharges import DischargeResult
from callbacks.models import (
    CaseEvent,
    CaseStatus,
    QuestionKind,
    ServiceCase,
    Survey,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
)
from contactcenter.models import AgentProfile, AuditLogEntry, Role, Team
from tests.conftest import World, make_staff

NOW = dt.datetime(2025, 3, 3, 9, 0, tzinfo=dt.UTC)


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


@pytest.fixture
def case(world: World, make_discharge: Callable[..., DischargeResult]) -> ServiceCase:
    """A Cardiology case opened from a survey: overall 1/5 and a complaint about the night shift."""
    discharge = make_discharge(name="Wang Fang").discharge
    assert discharge.department_id == world.team_a.pk
    survey = Survey.objects.create(name="Inpatient satisfaction", name_zh="住院满意度")
    overall = SurveyQuestion.objects.create(
        survey=survey, position=1, kind=QuestionKind.RATING, key="overall", prompt_en="Overall?", prompt_zh="总体？"
    )
    comment = SurveyQuestion.objects.create(
        survey=survey, position=2, kind=QuestionKind.FREE_TEXT, key="comment", prompt_en="Why?", prompt_zh="原因？"
    )
    session = SurveySession.objects.create(
        survey=survey, patient=discharge.patient, inbox=world.inbox_a, discharge=discharge
    )
    SurveyAnswer.objects.create(session=session, question=overall, raw_text="一分", value=1)
    SurveyAnswer.objects.create(
        session=session, question=comment, raw_text="夜班护士态度很差", text="夜班护士态度很差", negative=True
    )
    return recovery.open_case(
        patient=discharge.patient,
        source="survey_score",
        summary="Overall 1/5",
        discharge=discharge,
        survey_session=session,
        now=NOW,
    )


def statuses(case: ServiceCase) -> list[tuple[str, str, str]]:
    return list(case.history.values_list("kind", "from_status", "to_status"))


def walk_to(case: ServiceCase, status: str, actor: Any) -> ServiceCase:
    if status in ("verified", "improved", "closed"):
        case = recovery.verify_case(case=case, actor=actor, cause="Night shift understaffed", category="attitude")
    if status in ("improved", "closed"):
        case = recovery.record_improvement(case=case, actor=actor, action_taken="Apologised; rota changed")
    if status == "closed":
        case = recovery.close_case(case=case, actor=actor, accountability="training")
    return case


# --- Transitions ----------------------------------------------------------------------------------------------


def test_a_case_walks_received_verified_improved_closed_with_an_event_per_step(world: World, case: ServiceCase) -> None:
    sam = world.sam
    case = recovery.verify_case(
        case=case,
        actor=sam,
        cause="  Night shift understaffed  ",
        category="attitude",
        accountable_department=world.team_a,
        accountable_staff="Nurse Zhao",
        now=NOW + dt.timedelta(hours=1),
    )
    assert (case.status, case.cause, case.category, case.accountable_staff) == (
        "verified",
        "Night shift understaffed",
        "attitude",
        "Nurse Zhao",
    )
    case = recovery.record_improvement(
        case=case, actor=sam, action_taken="Apologised in person", now=NOW + dt.timedelta(hours=2)
    )
    closed = NOW + dt.timedelta(hours=3)
    case = recovery.close_case(case=case, actor=sam, accountability="discipline", note="Written warning", now=closed)
    case.refresh_from_db()
    assert case.status == CaseStatus.CLOSED
    assert case.accountability == "discipline"
    assert case.closed_at == closed
    assert statuses(case) == [
        ("opened", "", "received"),
        ("status", "received", "verified"),
        ("status", "verified", "improved"),
        ("status", "improved", "closed"),
    ]
    events = list(case.history.filter(kind="status"))
    assert {e.actor_id for e in events} == {sam.pk}
    assert [e.note for e in events] == ["Night shift understaffed", "Apologised in person", "Written warning"]


def test_improvement_before_verification_is_refused_and_writes_nothing(world: World, case: ServiceCase) -> None:
    with pytest.raises(ValidationError) as error:
        recovery.record_improvement(case=case, actor=world.sam, action_taken="Apologised")
    assert error.value.message_dict["status"] == ["A case must be verified before improvement is recorded."]
    case.refresh_from_db()
    assert (case.status, case.action_taken) == ("received", "")
    assert statuses(case) == [("opened", "", "received")]


@pytest.mark.parametrize(
    ("at", "step"),
    [
        ("received", "close"),
        ("verified", "close"),
        ("verified", "verify"),
        ("improved", "verify"),
        ("improved", "improve"),
        ("closed", "verify"),
        ("closed", "improve"),
        ("closed", "close"),
    ],
)
def test_no_step_can_be_skipped_or_repeated(world: World, case: ServiceCase, at: str, step: str) -> None:
    case = walk_to(case, at, world.sam)
    events_before = CaseEvent.objects.filter(case=case).count()
    with pytest.raises(ValidationError) as error:
        if step == "verify":
            recovery.verify_case(case=case, actor=world.sam, cause="x", category="other")
        elif step == "improve":
            recovery.record_improvement(case=case, actor=world.sam, action_taken="x")
        else:
            recovery.close_case(case=case, actor=world.sam, accountability="none")
    assert "status" in error.value.message_dict
    case.refresh_from_db()
    assert case.status == at
    assert CaseEvent.objects.filter(case=case).count() == events_before


def test_a_stale_case_object_cannot_move_twice(world: World, case: ServiceCase) -> None:
    """Two staff with the same page open: the second press finds the locked row already verified."""
    stale = ServiceCase.objects.get(pk=case.pk)
    recovery.verify_case(case=case, actor=world.sam, cause="Rude reply", category="attitude")
    with pytest.raises(ValidationError):
        recovery.verify_case(case=stale, actor=world.ada, cause="Something else", category="billing")
    case.refresh_from_db()
    assert (case.cause, case.category) == ("Rude reply", "attitude")
    assert case.history.filter(kind="status").count() == 1


def test_required_fields_of_each_step(world: World, case: ServiceCase) -> None:
    with pytest.raises(ValidationError) as error:
        recovery.verify_case(case=case, actor=world.sam, cause="  ", category="unclassified")
    assert set(error.value.message_dict) == {"cause", "category"}
    case = walk_to(case, "verified", world.sam)
    with pytest.raises(ValidationError) as error:
        recovery.record_improvement(case=case, actor=world.sam, action_taken="")
    assert set(error.value.message_dict) == {"action_taken"}
    case = recovery.record_improvement(case=case, actor=world.sam, action_taken="Apologised")
    with pytest.raises(ValidationError) as error:
        recovery.close_case(case=case, actor=world.sam, accountability="")
    assert set(error.value.message_dict) == {"accountability"}
    case.refresh_from_db()
    assert case.status == "improved"


def test_reopen_returns_a_closed_case_to_received_and_keeps_the_history(world: World, case: ServiceCase) -> None:
    case = walk_to(case, "closed", world.sam)
    with pytest.raises(ValidationError):
        recovery.reopen_case(case=case, actor=world.sam, note="")
    case = recovery.reopen_case(case=case, actor=world.sam, note="Patient called again")
    case.refresh_from_db()
    assert (case.status, case.closed_at, case.accountability) == ("received", None, "")
    assert statuses(case)[-1] == ("status", "closed", "received")
    with pytest.raises(ValidationError):
        recovery.reopen_case(case=case, actor=world.sam, note="again")


def test_first_contact_notes_and_assignment_leave_events(world: World, case: ServiceCase) -> None:
    later = NOW + dt.timedelta(hours=3)
    case = recovery.record_first_contact(case=case, actor=world.nina, note="Called, apologised", now=later)
    assert case.first_contacted_at == later
    with pytest.raises(ValidationError):
        recovery.record_first_contact(case=case, actor=world.nina)
    recovery.add_case_note(case=case, actor=world.nina, note="Patient prefers calls after 18:00")
    with pytest.raises(ValidationError):
        recovery.add_case_note(case=case, actor=world.nina, note="   ")
    recovery.assign_case(case=case, assignee=world.sam, actor=world.ada)
    recovery.assign_case(case=case, assignee=world.sam, actor=world.ada)  # unchanged: no second event
    recovery.assign_case(case=case, assignee=None, actor=world.ada)
    kinds = list(case.history.values_list("kind", "note"))
    assert kinds == [
        ("opened", ""),
        ("contacted", "Called, apologised"),
        ("note", "Patient prefers calls after 18:00"),
        ("assigned", "Sam"),
        ("assigned", ""),
    ]


# --- SLA escalation -------------------------------------------------------------------------------------------


def test_a_case_nobody_contacted_is_escalated_once_after_its_deadline(case: ServiceCase) -> None:
    due = NOW + dt.timedelta(hours=settings.SERVICE_CASE_FIRST_CONTACT_HOURS)
    assert case.first_contact_due_at == due
    assert recovery.escalate_overdue_cases(now=due - dt.timedelta(seconds=1)) == 0
    assert recovery.escalate_overdue_cases(now=due + dt.timedelta(seconds=1)) == 1
    assert recovery.escalate_overdue_cases(now=due + dt.timedelta(hours=5)) == 0
    case.refresh_from_db()
    assert case.escalated_at == due + dt.timedelta(seconds=1)
    assert case.status == "received"
    assert list(case.history.filter(kind="escalated").values_list("actor", flat=True)) == [None]


def test_a_first_contacted_case_never_escalates(world: World, case: ServiceCase) -> None:
    recovery.record_first_contact(case=case, actor=world.sam, now=NOW + dt.timedelta(hours=1))
    assert recovery.escalate_overdue_cases(now=NOW + dt.timedelta(days=30)) == 0
    case.refresh_from_db()
    assert case.escalated_at is None
    assert not case.history.filter(kind="escalated").exists()


def test_escalation_respects_its_limit_and_catches_up_on_the_next_run(
    world: World, make_discharge: Callable[..., DischargeResult]
) -> None:
    for _ in range(3):
        discharge = make_discharge().discharge
        recovery.open_case(patient=discharge.patient, source="manual", summary="x", discharge=discharge, now=NOW)
    later = NOW + dt.timedelta(days=2)
    assert recovery.escalate_overdue_cases(now=later, limit=2) == 2
    assert recovery.escalate_overdue_cases(now=later, limit=2) == 1
    assert recovery.escalate_overdue_cases(now=later, limit=2) == 0
    assert CaseEvent.objects.filter(kind="escalated").count() == 3


def test_the_periodic_due_work_job_escalates_cases(case: ServiceCase) -> None:
    from contactcenter.dispatch import run_due_work

    ServiceCase.objects.filter(pk=case.pk).update(first_contact_due_at=timezone.now() - dt.timedelta(minutes=1))
    assert run_due_work()["service_cases"] == 1
    case.refresh_from_db()
    assert case.escalated_at is not None


# --- API: scoping -------------------------------------------------------------------------------------------


def test_marketers_and_agents_are_refused_and_other_departments_nurses_see_nothing(
    world: World, case: ServiceCase
) -> None:
    for user in (world.mark, world.charlie, world.alice):
        assert api(user).get("/api/v1/followup/cases/").status_code == 403
        assert api(user).get(f"/api/v1/followup/cases/{case.pk}/").status_code == 403
    ortho_nurse = make_staff("olga", Role.NURSE, [world.team_b])
    client = api(ortho_nurse)
    assert client.get("/api/v1/followup/cases/").json()["count"] == 0
    assert client.get(f"/api/v1/followup/cases/{case.pk}/").status_code == 404
    assert client.post(f"/api/v1/followup/cases/{case.pk}/notes/", {"note": "hi"}, format="json").status_code == 404
    assert client.post(f"/api/v1/followup/cases/{case.pk}/contact/", {}, format="json").status_code == 404
    assert not case.history.exclude(kind="opened").exists()


def test_a_nurse_of_the_department_may_contact_and_note_but_not_move_the_case(world: World, case: ServiceCase) -> None:
    nina = api(world.nina)
    listing = nina.get("/api/v1/followup/cases/").json()
    assert [c["id"] for c in listing["results"]] == [case.pk]
    detail = nina.get(f"/api/v1/followup/cases/{case.pk}/").json()
    assert detail["allowed"] == {
        "verify": False,
        "improve": False,
        "close": False,
        "reopen": False,
        "contact": True,
        "assign": False,
        "note": True,
    }
    for step, body in [
        ("verify", {"cause": "x", "category": "other"}),
        ("assign", {"assignee_id": world.sam.pk}),
        ("improve", {"action_taken": "x"}),
        ("close", {"accountability": "none"}),
        ("reopen", {"note": "x"}),
    ]:
        assert nina.post(f"/api/v1/followup/cases/{case.pk}/{step}/", body, format="json").status_code == 403, step
    response = nina.post(f"/api/v1/followup/cases/{case.pk}/contact/", {"note": "Called"}, format="json")
    assert response.status_code == 200
    assert response.json()["first_contacted_at"] is not None
    assert response.json()["allowed"]["contact"] is False
    response = nina.post(f"/api/v1/followup/cases/{case.pk}/notes/", {"note": "Will call back"}, format="json")
    assert response.status_code == 201
    assert [e["kind"] for e in response.json()["history"]] == ["opened", "contacted", "note"]
    assert response.json()["history"][-1]["actor"] == {"id": world.nina.pk, "name": "Nina"}


def test_patient_relations_walks_a_case_through_the_api(world: World, case: ServiceCase) -> None:
    sam = api(world.sam)
    base = f"/api/v1/followup/cases/{case.pk}"
    r = sam.post(f"{base}/improve/", {"action_taken": "Apologised"}, format="json")
    assert r.status_code == 400
    assert r.json() == {"status": ["A case must be verified before improvement is recorded."]}
    r = sam.post(
        f"{base}/verify/",
        {
            "cause": "Rude night nurse",
            "category": "attitude",
            "accountable_department_id": world.team_a.pk,
            "accountable_staff": "Nurse Zhao",
        },
        format="json",
    )
    assert r.status_code == 200, r.json()
    assert r.json()["status"] == "verified"
    assert r.json()["accountable_department"]["id"] == world.team_a.pk
    assert sam.post(f"{base}/assign/", {"assignee_id": world.ada.pk}, format="json").json()["assignee"] == {
        "id": world.ada.pk,
        "name": "Ada",
    }
    assert sam.post(f"{base}/improve/", {"action_taken": "Apologised"}, format="json").status_code == 200
    r = sam.post(f"{base}/close/", {"accountability": "training", "note": "Communication course"}, format="json")
    assert r.status_code == 200
    body = r.json()
    assert (body["status"], body["accountability"]) == ("closed", "training")
    assert body["closed_at"] is not None
    assert [(e["kind"], e["to_status"]) for e in body["history"] if e["kind"] == "status"] == [
        ("status", "verified"),
        ("status", "improved"),
        ("status", "closed"),
    ]
    assert body["allowed"]["reopen"] is True


def test_bad_input_is_a_400_with_field_errors_and_never_a_500(world: World, case: ServiceCase) -> None:
    sam = api(world.sam)
    base = f"/api/v1/followup/cases/{case.pk}"
    cases = [
        ("verify", {}, {"cause", "category"}),
        ("verify", {"cause": "x", "category": "nonsense"}, {"category"}),
        ("verify", {"cause": "x", "category": "unclassified"}, {"category"}),
        ("verify", {"cause": "a\x00b", "category": "other"}, {"cause"}),
        (
            "verify",
            {"cause": "x", "category": "other", "accountable_department_id": 999999},
            {"accountable_department_id"},
        ),
        (
            "verify",
            {"cause": "x", "category": "other", "accountable_department_id": "x"},
            {"accountable_department_id"},
        ),
        ("close", {"accountability": "promotion"}, {"accountability"}),
        ("assign", {"assignee_id": world.nina.pk}, {"assignee_id"}),
        ("assign", {"assignee_id": 10**12}, {"assignee_id"}),
        ("assign", {}, {"assignee_id"}),
        ("notes", {"note": ""}, {"note"}),
        ("notes", {"note": "x" * 5000}, {"note"}),
        ("improve", {"action_taken": "x"}, {"status"}),
    ]
    for step, body, fields in cases:
        r = sam.post(f"{base}/{step}/", body, format="json")
        assert r.status_code == 400, (step, body, r.status_code)
        assert set(r.json()) == fields, (step, body, r.json())
    assert sam.post(f"{base}/verify/", "not json", content_type="application/json").status_code == 400
    assert sam.post("/api/v1/followup/cases/99999999/verify/", {}, format="json").status_code == 404
    for query in ("status=lost", "escalated=maybe", "department=x", "assignee=x", "limit=x&offset=-1"):
        assert sam.get(f"/api/v1/followup/cases/?{query}").status_code in (200, 400), query
    case.refresh_from_db()
    assert case.status == "received"
    assert statuses(case) == [("opened", "", "received")]


def test_list_filters(world: World, case: ServiceCase, make_discharge: Callable[..., DischargeResult]) -> None:
    ortho = make_discharge(department_code="orthopedics", department_name="Orthopedics").discharge
    other = recovery.open_case(
        patient=ortho.patient, source="manual", summary="Waited 3 h", discharge=ortho, now=timezone.now()
    )
    recovery.verify_case(case=other, actor=world.sam, cause="Slow pharmacy", category="waiting")
    recovery.escalate_overdue_cases(now=NOW + dt.timedelta(days=2))
    sam = api(world.sam)

    def ids(query: str) -> list[int]:
        response = sam.get(f"/api/v1/followup/cases/?{query}")
        assert response.status_code == 200, response.json()
        return sorted(c["id"] for c in response.json()["results"])

    assert ids("") == sorted([case.pk, other.pk])
    assert ids("status=received") == [case.pk]
    assert ids("status=verified") == [other.pk]
    assert ids("status=closed") == []
    assert ids("category=waiting") == [other.pk]
    assert ids(f"department={world.team_b.pk}") == [other.pk]
    assert ids("escalated=true") == [case.pk]
    assert ids("escalated=false") == [other.pk]
    assert ids("overdue=true") == [case.pk]
    assert ids("overdue=false") == [other.pk]
    counts = sam.get("/api/v1/followup/cases/counts/").json()
    assert counts == {
        "open": 2,
        "received": 1,
        "verified": 1,
        "improved": 0,
        "closed": 0,
        "escalated": 1,
        "overdue": 1,
        "all": 2,
    }
    row = next(c for c in sam.get("/api/v1/followup/cases/").json()["results"] if c["id"] == case.pk)
    assert row["overdue"] is True
    assert row["escalated_at"] is not None


def test_detail_shows_the_trigger_answers_and_the_discharge(world: World, case: ServiceCase) -> None:
    body = api(world.sam).get(f"/api/v1/followup/cases/{case.pk}/").json()
    answers = body["trigger"]["answers"]
    assert [(a["question_key"], a["value"], a["raw_text"], a["flagged"]) for a in answers] == [
        ("overall", 1, "一分", True),
        ("comment", None, "夜班护士态度很差", True),
    ]
    discharge = body["discharge"]
    assert discharge["department"]["name"] == "Cardiology"
    assert (discharge["ward"], discharge["attending_doctor"]) == ("5A", "Dr. Wang")
    assert discharge["discharged_at"]
    assert body["patient"]["name"] == "Wang Fang"


def test_reading_cases_is_audited(world: World, case: ServiceCase) -> None:
    before = AuditLogEntry.objects.count()
    api(world.nina).get(f"/api/v1/followup/cases/{case.pk}/")
    api(world.sam).get("/api/v1/followup/cases/")
    entries = list(AuditLogEntry.objects.order_by("id")[before:])
    assert [(e.actor_id, e.action, e.object_type, e.patient_id) for e in entries] == [
        (world.nina.pk, "view_patient", "service_case", case.patient_id),
        (world.sam.pk, "list_patients", "service_case", None),
    ]
    assert entries[0].object_id == str(case.pk)
    assert entries[1].detail == {"ids": [case.pk]}
    # A refused read is not a read.
    api(world.charlie).get(f"/api/v1/followup/cases/{case.pk}/")
    assert AuditLogEntry.objects.count() == before + 2


def test_manual_case_creation(world: World, make_discharge: Callable[..., DischargeResult]) -> None:
    patient = make_discharge().discharge.patient
    sam = api(world.sam)
    r = sam.post(
        "/api/v1/followup/cases/",
        {"patient_id": patient.pk, "summary": "Billing twice", "category": "billing"},
        format="json",
    )
    assert r.status_code == 201, r.json()
    assert (r.json()["source"], r.json()["category"], r.json()["status"]) == ("manual", "billing", "received")
    assert r.json()["history"][0]["actor"]["id"] == world.sam.pk
    bad = sam.post("/api/v1/followup/cases/", {"patient_id": 10**15, "summary": "", "category": "x"}, format="json")
    assert bad.status_code == 400
    assert set(bad.json()) == {"summary", "category"}
    assert sam.post(
        "/api/v1/followup/cases/", {"patient_id": 10**15, "summary": "x", "category": "other"}, format="json"
    ).json() == {"patient_id": ["No such patient."]}
    # A nurse records cases for her own departments only, so she can still see them afterwards.
    nina = api(world.nina)
    body = {"patient_id": patient.pk, "summary": "Rude porter", "category": "attitude"}
    assert set(nina.post("/api/v1/followup/cases/", body, format="json").json()) == {"department_id"}
    assert (
        nina.post("/api/v1/followup/cases/", body | {"department_id": world.team_b.pk}, format="json").status_code
        == 400
    )
    r = nina.post("/api/v1/followup/cases/", body | {"department_id": world.team_a.pk}, format="json")
    assert r.status_code == 201
    assert r.json()["department"]["id"] == world.team_a.pk


def test_the_cases_page_renders_for_patient_relations_and_nurses_only(world: World, client: Any) -> None:
    from django.urls import reverse

    url = reverse("service-cases")
    assert url == "/followup/cases/"
    for user, expected in [(world.sam, 200), (world.nina, 200), (world.mark, 403), (world.alice, 403)]:
        client.force_login(user)
        response = client.get(url)
        assert response.status_code == expected, user
        if expected == 200:
            assert 'id="cases-i18n"' in response.content.decode()
    client.logout()
    assert client.get(url).status_code == 302


def test_assignable_staff_are_active_supervisors_and_admins(world: World) -> None:
    from callbacks.cases.api import assignable_staff

    gone = make_staff("old_sup", Role.SUPERVISOR, [])
    gone.is_active = False
    gone.save()
    assert set(assignable_staff()) == {world.sam, world.ada}
    assert AgentProfile.objects.filter(role=Role.SUPERVISOR).count() == 2
    assert Team.objects.count() == 2


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_escalate_a_case_once_skipping_the_row_the_other_holds(
    make_discharge: Callable[..., DischargeResult],
) -> None:
    """PostgreSQL: while one dispatcher holds a case's row, the other skips it instead of waiting or doubling."""
    import threading

    from django.db import connection, transaction

    discharges = [make_discharge().discharge for _ in range(2)]
    held, other = (
        recovery.open_case(patient=d.patient, source="manual", summary="x", discharge=d, now=NOW) for d in discharges
    )
    later = NOW + dt.timedelta(days=2)
    locked = threading.Event()
    release = threading.Event()

    def hold_row() -> None:
        try:
            with transaction.atomic():
                ServiceCase.objects.select_for_update().get(pk=held.pk)
                locked.set()
                release.wait(10)
        finally:
            connection.close()

    holder = threading.Thread(target=hold_row)
    holder.start()
    assert locked.wait(10)
    try:
        assert recovery.escalate_overdue_cases(now=later) == 1
    finally:
        release.set()
        holder.join(10)
    assert recovery.escalate_overdue_cases(now=later) == 1
    assert recovery.escalate_overdue_cases(now=later) == 0
    assert sorted(CaseEvent.objects.filter(kind="escalated").values_list("case_id", flat=True)) == sorted(
        [held.pk, other.pk]
    )

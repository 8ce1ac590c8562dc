"""The nurse worklist: claiming, recording attempts with the call script, retries, and who sees what."""

from __future__ import annotations

import datetime as dt
import threading
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connections
from django.utils import timezone
from rest_framework.test import APIClient

from callbacks.actions import worklist as actions
from callbacks.actions.discharges import DischargeResult
from callbacks.models import (
    CallAttempt,
    CallbackTask,
    CallScript,
    CaseSource,
    FollowUpPlan,
    PlanStep,
    ServiceCase,
    StepKind,
    TaskKind,
    TaskStatus,
)
from callbacks.worklist import selectors
from contactcenter.models import AuditAction, AuditLogEntry
from tests.conftest import World

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
# A Tuesday morning in the hospital: inside calling hours, far from any weekend.
TUESDAY_10 = dt.datetime(2025, 6, 10, 10, 0, tzinfo=SHANGHAI)

QUESTIONS = [
    {"key": "pain", "kind": "rating", "prompt_en": "How is the pain?", "prompt_zh": "疼痛如何？", "required": True},
    {"key": "meds", "kind": "yes_no", "prompt_en": "Taking the medication?", "prompt_zh": "按时服药吗？"},
    {
        "key": "breath",
        "kind": "choice",
        "prompt_en": "Breathing",
        "prompt_zh": "呼吸",
        "choices": [{"value": "better", "label_en": "Better", "label_zh": "好转"}, "same", "worse"],
    },
    {"key": "comment", "kind": "free_text", "prompt_en": "Anything else?", "prompt_zh": "其他？"},
]
GOOD_ANSWERS = {"pain": 4, "meds": True, "breath": "better", "comment": "Walking 20 minutes a day"}


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@pytest.fixture
def step(db: Any) -> PlanStep:
    script = CallScript.objects.create(name="Cardiology day 2", name_zh="心内科出院第2天", questions=QUESTIONS)
    plan = FollowUpPlan.objects.create(name="Worklist test plan", is_active=False)
    return PlanStep.objects.create(plan=plan, position=1, kind=StepKind.CALL, offset_days=2, call_script=script)


@pytest.fixture
def make_task(
    world: World, make_discharge: Callable[..., DischargeResult], step: PlanStep
) -> Callable[..., CallbackTask]:
    def make(
        *,
        discharge: Any = None,
        department: str = "cardiology",
        status: str = TaskStatus.OPEN,
        deadline: dt.datetime | None = None,
        **fields: Any,
    ) -> CallbackTask:
        if discharge is None:
            discharge = make_discharge(department_code=department).discharge
        deadline = deadline or timezone.now() + dt.timedelta(days=2)
        return CallbackTask.objects.create(
            discharge=discharge,
            patient=discharge.patient,
            department=discharge.department,
            step=step,
            kind=TaskKind.CALL,
            status=status,
            due_at=deadline - dt.timedelta(days=2),
            deadline_at=deadline,
            **fields,
        )

    return make


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


def fresh(task: CallbackTask) -> CallbackTask:
    return CallbackTask.objects.get(pk=task.pk)


# --- Claiming ----------------------------------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_nurses_claiming_at_once_one_wins(world: World, make_task: Callable[..., CallbackTask]) -> None:
    from tests.conftest import make_staff

    nora = make_staff("nora", "nurse", [world.team_a])
    task = make_task()
    barrier = threading.Barrier(2)
    results: dict[str, str] = {}

    def claim(nurse: Any) -> None:
        try:
            barrier.wait(5)
            actions.claim_task(task=CallbackTask.objects.get(pk=task.pk), nurse=nurse)
            results[nurse.username] = "won"
        except ValidationError as exc:
            results[nurse.username] = " ".join(exc.messages)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=claim, args=(n,)) for n in (world.nina, nora)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)

    assert sorted(results) == ["nina", "nora"]
    winners = [name for name, result in results.items() if result == "won"]
    assert len(winners) == 1
    loser = "nora" if winners == ["nina"] else "nina"
    assert f"already claimed by {winners[0].title()}" in results[loser]
    task = fresh(task)
    assert task.status == TaskStatus.IN_PROGRESS
    assert task.assignee.username == winners[0]


def test_a_task_claimed_by_someone_else_names_who_holds_it(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task()
    actions.claim_task(task=task, nurse=world.nina)
    with pytest.raises(ValidationError) as caught:
        actions.claim_task(task=task, nurse=world.sam)
    assert caught.value.message_dict == {"task": ["This task is already claimed by Nina."]}
    # Claiming one's own task again changes nothing.
    assert actions.claim_task(task=task, nurse=world.nina).assignee == world.nina


def test_only_the_holder_or_a_supervisor_releases_a_claim(world: World, make_task: Callable[..., CallbackTask]) -> None:
    from tests.conftest import make_staff

    nora = make_staff("nora", "nurse", [world.team_a])
    task = actions.claim_task(task=make_task(), nurse=world.nina)
    with pytest.raises(ValidationError, match="only a supervisor can release it"):
        actions.release_task(task=task, actor=nora)
    released = actions.release_task(task=task, actor=world.sam)
    assert (released.status, released.assignee, released.claimed_at) == (TaskStatus.OPEN, None, None)


def test_a_supervisor_reassigns_only_to_a_nurse_of_the_department(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task()
    with pytest.raises(ValidationError):
        actions.reassign_task(task=task, nurse=world.alice, actor=world.sam)
    with pytest.raises(ValidationError):
        actions.reassign_task(task=task, nurse=world.nina, actor=world.nina)
    moved = actions.reassign_task(task=task, nurse=world.nina, actor=world.sam)
    assert (moved.status, moved.assignee) == (TaskStatus.IN_PROGRESS, world.nina)


def test_a_task_of_another_department_cannot_be_claimed(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task(department="orthopedics")
    with pytest.raises(ValidationError, match="cannot work on this"):
        actions.claim_task(task=task, nurse=world.nina)
    assert fresh(task).status == TaskStatus.OPEN


# --- Attempts: retries and outcomes ------------------------------------------------------------------------


def test_no_answer_comes_back_after_the_retry_interval_unassigned(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task(deadline=TUESDAY_10 + dt.timedelta(days=2))
    actions.claim_task(task=task, nurse=world.nina, now=TUESDAY_10)
    attempt = actions.record_attempt(
        task=task, nurse=world.nina, outcome="no_answer", notes="rang 8 times", now=TUESDAY_10
    )

    task = fresh(task)
    assert attempt.outcome == "no_answer"
    assert (task.status, task.assignee, task.attempt_count) == (TaskStatus.OPEN, None, 1)
    # 4 hours later is 14:00, inside calling hours on a business day.
    assert task.retry_at == TUESDAY_10 + dt.timedelta(hours=4)
    assert task.next_action_at == task.retry_at

    def ids(view: str, now: dt.datetime) -> list[int]:
        return [t.pk for t in selectors.worklist(user=world.nina, view=view, now=now)]

    just_after = TUESDAY_10 + dt.timedelta(minutes=10)
    assert ids("due", just_after) == []
    assert ids("upcoming", just_after) == [task.pk]
    assert selectors.worklist_counts(user=world.nina, now=just_after)["upcoming"] == 1
    retry_time = TUESDAY_10 + dt.timedelta(hours=4, minutes=1)
    assert ids("due", retry_time) == [task.pk]
    assert ids("upcoming", retry_time) == []


def test_a_retry_that_would_fall_after_calling_hours_waits_for_the_next_morning(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    evening = TUESDAY_10.replace(hour=18)
    task = make_task(deadline=evening + dt.timedelta(days=3))
    actions.record_attempt(task=task, nurse=world.nina, outcome="busy", now=evening)
    assert fresh(task).retry_at == dt.datetime(2025, 6, 11, 9, 0, tzinfo=SHANGHAI)


def test_attempts_exhausted_make_the_task_unreachable(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task(deadline=TUESDAY_10 + dt.timedelta(days=5), max_attempts=3)
    now = TUESDAY_10
    for _ in range(3):
        actions.record_attempt(task=task, nurse=world.nina, outcome="no_answer", now=now)
        now = fresh(task).retry_at or now

    task = fresh(task)
    assert task.status == TaskStatus.UNREACHABLE
    assert (task.attempt_count, task.outcome, task.next_action_at, task.retry_at) == (3, "no_answer", None, None)
    assert task.completed_at is not None
    assert CallAttempt.objects.filter(task=task).count() == 3
    with pytest.raises(ValidationError, match="already closed"):
        actions.record_attempt(task=task, nurse=world.nina, outcome="no_answer", now=now)


def test_reached_with_answers_completes_the_task_and_stores_the_script(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task()
    attempt = actions.record_attempt(
        task=task, nurse=world.nina, outcome="reached", answers={**GOOD_ANSWERS, "meds": "no"}, notes=" ok "
    )
    task = fresh(task)
    assert (task.status, task.outcome, task.assignee) == (TaskStatus.COMPLETED, "reached", world.nina)
    assert attempt.answers == {**GOOD_ANSWERS, "meds": False}
    assert attempt.notes == "ok"
    assert not ServiceCase.objects.exists()


def test_deceased_cancels_every_other_open_task_of_the_patient(
    world: World, make_task: Callable[..., CallbackTask], make_discharge: Callable[..., DischargeResult]
) -> None:
    first = make_discharge(mrn="MRN900001", phone="+8613900000001").discharge
    second = make_discharge(mrn="MRN900001", phone="+8613900000001").discharge
    assert first.patient_id == second.patient_id
    task = make_task(discharge=first)
    survey_later = make_task(discharge=first, status=TaskStatus.SCHEDULED)
    other_stay = make_task(discharge=second, status=TaskStatus.SCHEDULED)
    someone_else = make_task()

    actions.record_attempt(task=task, nurse=world.nina, outcome="deceased", notes="Daughter answered")

    assert fresh(task).status == TaskStatus.COMPLETED
    assert fresh(task).outcome == "deceased"
    assert fresh(survey_later).status == TaskStatus.CANCELLED
    assert fresh(other_stay).status == TaskStatus.CANCELLED
    assert fresh(someone_else).status == TaskStatus.OPEN


def test_readmitted_cancels_the_rest_of_that_stay_only(
    world: World, make_task: Callable[..., CallbackTask], make_discharge: Callable[..., DischargeResult]
) -> None:
    first = make_discharge(mrn="MRN900002").discharge
    second = make_discharge(mrn="MRN900002").discharge
    task = make_task(discharge=first)
    same_stay = make_task(discharge=first, status=TaskStatus.SCHEDULED)
    other_stay = make_task(discharge=second, status=TaskStatus.SCHEDULED)

    actions.record_attempt(task=task, nurse=world.nina, outcome="readmitted")

    assert (fresh(task).status, fresh(task).outcome) == (TaskStatus.COMPLETED, "readmitted")
    assert fresh(same_stay).status == TaskStatus.CANCELLED
    assert fresh(other_stay).status == TaskStatus.SCHEDULED


@pytest.mark.parametrize("outcome", ["wrong_number", "declined"])
def test_wrong_number_and_declined_complete_the_task_with_that_outcome(
    world: World, make_task: Callable[..., CallbackTask], outcome: str
) -> None:
    task = make_task()
    actions.record_attempt(task=task, nurse=world.nina, outcome=outcome)
    assert (fresh(task).status, fresh(task).outcome) == (TaskStatus.COMPLETED, outcome)


# --- The call script -------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("answers", "errors"),
    [
        ({}, {"answers.pain": ["This question needs an answer when the patient was reached."]}),
        ({"pain": 7}, {"answers.pain": ["Choose a rating from 1 to 5."]}),
        ({"pain": True}, {"answers.pain": ["Choose a rating from 1 to 5."]}),
        ({"pain": 3, "meds": "maybe"}, {"answers.meds": ["Answer yes or no."]}),
        ({"pain": 3, "breath": "awful"}, {"answers.breath": ["Choose one of the listed answers."]}),
        ({"pain": 3, "comment": 12}, {"answers.comment": ["Enter text."]}),
        ({"pain": 3, "mood": 5}, {"answers.mood": ["This call script has no such question."]}),
    ],
)
def test_bad_script_answers_are_field_errors_and_store_nothing(
    world: World, make_task: Callable[..., CallbackTask], answers: dict[str, Any], errors: dict[str, list[str]]
) -> None:
    task = make_task()
    with pytest.raises(ValidationError) as caught:
        actions.record_attempt(task=task, nurse=world.nina, outcome="reached", answers=answers)
    assert caught.value.message_dict == errors
    assert not CallAttempt.objects.exists()
    assert (fresh(task).status, fresh(task).attempt_count) == (TaskStatus.OPEN, 0)


def test_required_questions_do_not_apply_when_the_patient_was_not_reached(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task()
    actions.record_attempt(task=task, nurse=world.nina, outcome="busy", answers={})
    assert fresh(task).attempt_count == 1


def test_an_unknown_outcome_is_a_field_error(world: World, make_task: Callable[..., CallbackTask]) -> None:
    with pytest.raises(ValidationError) as caught:
        actions.record_attempt(task=make_task(), nurse=world.nina, outcome="voicemail")
    assert list(caught.value.message_dict) == ["outcome"]


def test_a_low_rating_opens_a_service_recovery_case(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task()
    actions.record_attempt(task=task, nurse=world.nina, outcome="reached", answers={"pain": 2}, notes="Ward was noisy")
    case = ServiceCase.objects.get()
    assert (case.source, case.task_id, case.discharge_id, case.patient_id) == (
        CaseSource.CALL,
        task.pk,
        task.discharge_id,
        task.patient_id,
    )
    assert "pain" in case.summary and "Ward was noisy" in case.summary


def test_the_open_a_case_box_opens_one_whatever_the_answers(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    actions.record_attempt(task=make_task(), nurse=world.nina, outcome="reached", answers=GOOD_ANSWERS, open_case=True)
    assert ServiceCase.objects.filter(source=CaseSource.CALL).count() == 1


def test_good_answers_open_no_case(world: World, make_task: Callable[..., CallbackTask]) -> None:
    actions.record_attempt(task=make_task(), nurse=world.nina, outcome="reached", answers=GOOD_ANSWERS)
    assert not ServiceCase.objects.exists()


def test_phones_are_masked_on_the_list() -> None:
    assert selectors.mask_phone("+8613800138000") == "138****8000"
    assert selectors.mask_phone("") == ""


# --- The API: scoping ------------------------------------------------------------------------------------


@pytest.mark.parametrize("who", ["charlie", "alice", "mark"])
def test_agents_and_marketers_are_refused_the_worklist(
    world: World, make_task: Callable[..., CallbackTask], who: str
) -> None:
    task = make_task()
    client = api(getattr(world, who))
    assert client.get("/api/v1/followup/tasks/").status_code == 403
    assert client.get(f"/api/v1/followup/tasks/{task.pk}/").status_code == 403
    assert client.post(f"/api/v1/followup/tasks/{task.pk}/claim/").status_code == 403
    assert client.get("/api/v1/followup/tasks/counts/").status_code == 403
    assert fresh(task).status == TaskStatus.OPEN


def test_the_worklist_page_refuses_agents(world: World) -> None:
    client = APIClient()
    client.force_login(world.charlie)
    assert client.get("/followup/").status_code == 403
    client.force_login(world.nina)
    assert client.get("/followup/").status_code == 200


def test_nina_sees_her_department_only_and_sam_sees_all(world: World, make_task: Callable[..., CallbackTask]) -> None:
    mine = make_task()
    theirs = make_task(department="orthopedics")
    nina = api(world.nina)
    rows = nina.get("/api/v1/followup/tasks/?view=due").json()
    assert [r["id"] for r in rows["results"]] == [mine.pk]
    assert nina.get(f"/api/v1/followup/tasks/{theirs.pk}/").status_code == 404
    assert nina.post(f"/api/v1/followup/tasks/{theirs.pk}/claim/").status_code == 404
    assert nina.post(f"/api/v1/followup/tasks/{theirs.pk}/attempts/", {"outcome": "reached"}).status_code == 404
    assert fresh(theirs).status == TaskStatus.OPEN

    sam = api(world.sam)
    rows = sam.get("/api/v1/followup/tasks/").json()
    assert sorted(r["id"] for r in rows["results"]) == sorted([mine.pk, theirs.pk])
    only_b = sam.get(f"/api/v1/followup/tasks/?department={world.team_b.pk}").json()
    assert [r["id"] for r in only_b["results"]] == [theirs.pk]
    assert sam.get("/api/v1/followup/tasks/counts/").json()["due"] == 2
    assert nina.get("/api/v1/followup/tasks/counts/").json()["due"] == 1
    assert [d["code"] for d in nina.get("/api/v1/followup/departments/").json()] == ["cardiology"]


def test_the_list_is_ordered_by_deadline_and_shows_a_masked_phone(
    world: World, make_task: Callable[..., CallbackTask], make_discharge: Callable[..., DischargeResult]
) -> None:
    now = timezone.now()
    later = make_task(deadline=now + dt.timedelta(days=3))
    sooner = make_task(discharge=make_discharge(phone="+8613800138000").discharge, deadline=now + dt.timedelta(hours=5))
    overdue = make_task(deadline=now - dt.timedelta(hours=1))
    nina = api(world.nina)
    due = nina.get("/api/v1/followup/tasks/?view=due").json()["results"]
    assert [r["id"] for r in due] == [sooner.pk, later.pk]
    assert due[0]["patient"]["phone_masked"] == "138****8000"
    assert "+8613800138000" not in str(due)
    assert due[0]["step"] == {"position": 1, "offset_days": 2, "business_days": False}
    late = nina.get("/api/v1/followup/tasks/?view=overdue").json()["results"]
    assert [(r["id"], r["overdue"]) for r in late] == [(overdue.pk, True)]


@pytest.mark.parametrize(
    ("query", "field"), [("view=someday", "view"), ("department=abc", "department"), ("department=0", "department")]
)
def test_bad_filters_are_field_errors(world: World, query: str, field: str) -> None:
    response = api(world.nina).get(f"/api/v1/followup/tasks/?{query}")
    assert response.status_code == 400
    assert field in response.json()


def test_opening_a_task_is_audited_and_diagnoses_are_for_the_departments_nurses(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    task = make_task()
    body = api(world.nina).get(f"/api/v1/followup/tasks/{task.pk}/").json()
    assert body["discharge"]["diagnoses"] == [{"code": "I21.4", "text": "NSTEMI"}]
    assert body["patient"]["phone"].startswith("+86")
    assert [q["key"] for q in body["call_script"]["questions"]] == ["pain", "meds", "breath", "comment"]
    assert body["call_script"]["questions"][2]["choices"][1] == {"value": "same", "label_en": "same", "label_zh": ""}

    supervisor_view = api(world.sam).get(f"/api/v1/followup/tasks/{task.pk}/").json()
    assert supervisor_view["discharge"]["diagnoses"] is None
    assert supervisor_view["discharge"]["diagnoses_visible"] is False

    entries = AuditLogEntry.objects.filter(object_type="callback_task", object_id=str(task.pk)).order_by("id")
    assert [(e.actor, e.action, e.patient_id, e.detail) for e in entries] == [
        (world.nina, AuditAction.VIEW_PATIENT, task.patient_id, {"diagnoses": True}),
        (world.sam, AuditAction.VIEW_PATIENT, task.patient_id, {"diagnoses": False}),
    ]


def test_claim_then_attempt_through_the_api(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task()
    nina = api(world.nina)
    claimed = nina.post(f"/api/v1/followup/tasks/{task.pk}/claim/")
    assert claimed.status_code == 200
    assert claimed.json()["assignee"] == {"id": world.nina.pk, "name": "Nina"}
    assert api(world.sam).post(f"/api/v1/followup/tasks/{task.pk}/claim/").json() == {
        "task": ["This task is already claimed by Nina."]
    }
    assert nina.get("/api/v1/followup/tasks/?view=mine").json()["count"] == 1

    bad = nina.post(
        f"/api/v1/followup/tasks/{task.pk}/attempts/", {"outcome": "reached", "answers": {"pain": 9}}, format="json"
    )
    assert bad.status_code == 400
    assert bad.json() == {"answers.pain": ["Choose a rating from 1 to 5."]}
    for payload in (
        {"outcome": "hung_up"},
        {"outcome": "reached", "answers": [1]},
        {"outcome": "busy", "notes": "a\x00b"},
    ):
        assert nina.post(f"/api/v1/followup/tasks/{task.pk}/attempts/", payload, format="json").status_code == 400

    done = nina.post(
        f"/api/v1/followup/tasks/{task.pk}/attempts/",
        {"outcome": "reached", "answers": {"pain": 1}, "notes": "Unhappy with discharge teaching", "open_case": False},
        format="json",
    )
    assert done.status_code == 201
    assert done.json()["task"]["status"] == TaskStatus.COMPLETED
    assert done.json()["attempt"]["answers"] == {"pain": 1}
    detail = nina.get(f"/api/v1/followup/tasks/{task.pk}/").json()
    assert [a["outcome"] for a in detail["attempts"]] == ["reached"]
    assert [c["source"] for c in detail["cases"]] == [CaseSource.CALL]
    assert nina.get("/api/v1/followup/tasks/?view=done").json()["count"] == 1


def test_release_and_assign_through_the_api(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task()
    sam = api(world.sam)
    assert sam.post(f"/api/v1/followup/tasks/{task.pk}/assign/", {"nurse_id": world.charlie.pk}).status_code == 400
    assert sam.post(f"/api/v1/followup/tasks/{task.pk}/assign/", {"nurse_id": 999999}).status_code == 400
    assigned = sam.post(f"/api/v1/followup/tasks/{task.pk}/assign/", {"nurse_id": world.nina.pk})
    assert assigned.json()["assignee"]["id"] == world.nina.pk
    released = sam.post(f"/api/v1/followup/tasks/{task.pk}/release/")
    assert (released.json()["status"], released.json()["assignee"]) == (TaskStatus.OPEN, None)
    assert sam.post(f"/api/v1/followup/tasks/{task.pk}/release/").status_code == 400


def test_escalated_tasks_have_their_own_tab(world: World, make_task: Callable[..., CallbackTask]) -> None:
    task = make_task(deadline=timezone.now() - dt.timedelta(hours=1), escalated_at=timezone.now())
    make_task()
    rows = api(world.nina).get("/api/v1/followup/tasks/?view=escalated").json()["results"]
    assert [(r["id"], r["escalated_at"] is not None) for r in rows] == [(task.pk, True)]


def test_an_expired_call_is_listed_as_done_with_its_reason_and_cannot_be_claimed(
    world: World, make_task: Callable[..., CallbackTask]
) -> None:
    from callbacks import plans

    task = make_task(
        status=TaskStatus.EXPIRED,
        deadline=timezone.now() - dt.timedelta(days=30),
        plan_note=plans.NOTE_DEADLINE_PASSED,
    )
    client = api(world.nina)
    counts = client.get("/api/v1/followup/tasks/counts/").json()
    assert (counts["done"], counts["overdue"], counts["escalated"]) == (1, 0, 0)
    (row,) = client.get("/api/v1/followup/tasks/?view=done").json()["results"]
    assert (row["id"], row["status"]) == (task.pk, "expired")
    assert "contact deadline had already passed" in row["plan_note"]
    assert client.post(f"/api/v1/followup/tasks/{task.pk}/claim/").status_code == 400

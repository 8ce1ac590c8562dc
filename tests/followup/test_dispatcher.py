"""The follow-up dispatcher: opening due tasks, starting surveys, escalating, reopening retries, concurrency."""

from __future__ import annotations

import datetime as dt
import threading
import zoneinfo
from collections import Counter
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.db import connection

from callbacks import business_calendar, dispatcher, plans
from callbacks.actions.discharges import DischargeResult, record_discharge
from callbacks.actions.worklist import claim_task, record_attempt
from callbacks.models import CallbackTask, CallOutcome, Discharge, TaskKind, TaskStatus
from callbacks.surveys import flow as survey_flow
from tests.followup.conftest import discharge_record

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
MakeDischarge = Callable[..., DischargeResult]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=SHANGHAI)


# Monday 23 November 2026, a business day; calling hours 09:00–20:00 Shanghai.
MONDAY_10 = at(2026, 11, 23, 10, 0)


@pytest.fixture(autouse=True)
def fresh_calendar() -> Iterator[None]:
    business_calendar.clear_calendar_cache()
    yield
    business_calendar.clear_calendar_cache()


class SurveySeam:
    """Stands in for the surveys package's start_survey, which has its own tests: counts calls per task."""

    def __init__(self, result: object = "session") -> None:
        self.calls: Counter[int] = Counter()
        self.result = result
        self._lock = threading.Lock()

    def __call__(self, task: CallbackTask, *, now: dt.datetime | None = None) -> object:
        with self._lock:
            self.calls[task.pk] += 1
        return self.result


@pytest.fixture
def surveys(monkeypatch: pytest.MonkeyPatch) -> SurveySeam:
    seam = SurveySeam()
    monkeypatch.setattr(survey_flow, "start_survey", seam)
    return seam


def discharge() -> Discharge:
    # No plans installed: the discharge gets no tasks of its own and each test adds the one it needs.
    return record_discharge(discharge_record(discharged_at=at(2026, 11, 20, 10, 0))).discharge


def task(of: Discharge, **values: Any) -> CallbackTask:
    fields: dict[str, Any] = {
        "discharge": of,
        "patient_id": of.patient_id,
        "department_id": of.department_id,
        "kind": TaskKind.CALL,
        "status": TaskStatus.SCHEDULED,
        "due_at": at(2026, 11, 23, 9, 0),
        "deadline_at": at(2026, 11, 24, 23, 59, 59),
    }
    fields.update(values)
    fields.setdefault("next_action_at", fields["due_at"])
    return CallbackTask.objects.create(**fields)


def fresh(t: CallbackTask) -> CallbackTask:
    return CallbackTask.objects.get(pk=t.pk)


# --- opening ----------------------------------------------------------------------------------------


def test_a_due_call_is_opened_on_the_worklist_until_its_deadline(db: Any) -> None:
    call = task(discharge())
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10) == 1
    opened = fresh(call)
    assert opened.status == TaskStatus.OPEN
    assert opened.opened_at == MONDAY_10
    assert opened.next_action_at == opened.deadline_at
    assert opened.escalated_at is None
    # Nothing else is due until the deadline: the row is not read again.
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10 + dt.timedelta(hours=1)) == 0


def test_a_task_not_yet_due_is_left_alone(db: Any, surveys: SurveySeam) -> None:
    later = task(discharge(), due_at=at(2026, 11, 23, 10, 0, 1))
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY, due_at=at(2026, 11, 23, 11, 0))
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10) == 0
    assert fresh(later).status == TaskStatus.SCHEDULED
    assert fresh(survey).status == TaskStatus.SCHEDULED
    assert not surveys.calls


def test_a_due_survey_is_started_once(db: Any, surveys: SurveySeam) -> None:
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10) == 1
    assert surveys.calls == Counter({survey.pk: 1})
    started = fresh(survey)
    assert (started.status, started.kind, started.next_action_at) == (TaskStatus.OPEN, TaskKind.SMS_SURVEY, None)
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10 + dt.timedelta(days=3)) == 0
    assert surveys.calls[survey.pk] == 1


def test_a_survey_that_cannot_start_becomes_a_call(db: Any, surveys: SurveySeam) -> None:
    surveys.result = None
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    call = fresh(survey)
    assert (call.kind, call.status, call.plan_note) == (TaskKind.CALL, TaskStatus.OPEN, plans.NOTE_SURVEY_NOT_STARTED)
    assert call.next_action_at == call.deadline_at


def test_a_survey_that_fails_to_start_is_tried_again_later_not_every_tick(
    db: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    def broken(task: CallbackTask, *, now: dt.datetime | None = None) -> None:
        raise RuntimeError("SMS inbox misconfigured")

    monkeypatch.setattr(survey_flow, "start_survey", broken)
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10) == 1
    waiting = fresh(survey)
    assert waiting.status == TaskStatus.SCHEDULED
    assert waiting.next_action_at == MONDAY_10 + dispatcher.SURVEY_START_BACKOFF


def test_a_backlogged_survey_waits_for_calling_hours(db: Any, surveys: SurveySeam) -> None:
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    night = at(2026, 11, 23, 22, 30)
    dispatcher.dispatch_due_tasks(now=night)
    assert not surveys.calls
    assert fresh(survey).next_action_at == at(2026, 11, 24, 9, 0)
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 24, 9, 0))
    assert surveys.calls[survey.pk] == 1


def test_finished_and_cancelled_rows_are_cleared_not_worked(db: Any) -> None:
    done = task(discharge(), status=TaskStatus.COMPLETED)
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    assert fresh(done).status == TaskStatus.COMPLETED
    assert fresh(done).next_action_at is None


# --- escalation -------------------------------------------------------------------------------------


def test_an_open_call_past_its_deadline_is_escalated_once(db: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    past = at(2026, 11, 25, 0, 0)
    assert dispatcher.dispatch_due_tasks(now=at(2026, 11, 24, 23, 0)) == 0
    assert dispatcher.dispatch_due_tasks(now=past) == 1
    escalated = fresh(call)
    assert escalated.escalated_at == past
    assert escalated.status == TaskStatus.OPEN
    assert escalated.next_action_at is None
    assert dispatcher.dispatch_due_tasks(now=past + dt.timedelta(days=1)) == 0


def test_a_call_a_nurse_is_working_keeps_its_nurse_when_escalated(db: Any, world: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    CallbackTask.objects.filter(pk=call.pk).update(
        status=TaskStatus.IN_PROGRESS, assignee=world.nina, claimed_at=MONDAY_10
    )
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 25, 8, 0))
    escalated = fresh(call)
    assert escalated.escalated_at is not None
    assert (escalated.status, escalated.assignee_id) == (TaskStatus.IN_PROGRESS, world.nina.pk)


def test_a_call_that_never_reached_the_worklist_before_its_deadline_expires(db: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 26, 10, 0))
    late = fresh(call)
    assert (late.status, late.opened_at, late.next_action_at) == (TaskStatus.EXPIRED, None, None)
    assert late.plan_note == plans.NOTE_DEADLINE_PASSED_UNOPENED


# --- contact deadline passed: expired, never sent ---------------------------------------------------


def test_a_survey_whose_deadline_passed_is_expired_and_never_started(db: Any, surveys: SurveySeam) -> None:
    # The dispatcher was down from Monday to Thursday: Monday's survey must not go out on Thursday.
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    assert dispatcher.dispatch_due_tasks(now=at(2026, 11, 26, 10, 0)) == 1
    expired = fresh(survey)
    assert (expired.status, expired.next_action_at, expired.opened_at) == (TaskStatus.EXPIRED, None, None)
    assert expired.plan_note == plans.NOTE_DEADLINE_PASSED_UNSENT
    assert surveys.calls[survey.pk] == 0
    # Finished for good: the next run does not read it again.
    assert dispatcher.dispatch_due_tasks(now=at(2026, 11, 27, 10, 0)) == 0


def test_a_survey_that_could_only_go_out_after_its_deadline_expires_now(db: Any, surveys: SurveySeam) -> None:
    # Due at 21:00 on its last day: calling hours open again tomorrow, after the deadline.
    survey = task(
        discharge(),
        kind=TaskKind.SMS_SURVEY,
        due_at=at(2026, 11, 24, 21, 0),
        deadline_at=at(2026, 11, 24, 23, 59, 59),
    )
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 24, 21, 0))
    assert fresh(survey).status == TaskStatus.EXPIRED
    assert surveys.calls[survey.pk] == 0


def test_a_survey_due_in_time_is_still_started(db: Any, surveys: SurveySeam) -> None:
    survey = task(discharge(), kind=TaskKind.SMS_SURVEY)
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 24, 23, 0) - dt.timedelta(hours=4))
    assert fresh(survey).status == TaskStatus.OPEN
    assert surveys.calls[survey.pk] == 1


# --- retries ----------------------------------------------------------------------------------------


def no_answer(call: CallbackTask, nurse: Any, when: dt.datetime) -> dt.datetime:
    """A nurse claims the call and gets no answer, through the worklist's own actions."""
    claim_task(task=fresh(call), nurse=nurse, now=when)
    record_attempt(task=fresh(call), nurse=nurse, outcome=CallOutcome.NO_ANSWER, now=when)
    waiting = fresh(call)
    assert waiting.retry_at is not None
    return waiting.retry_at


def test_a_no_answer_comes_back_to_the_worklist_at_the_retry_time(world: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    retry_at = no_answer(call, world.nina, at(2026, 11, 23, 10, 5))
    assert retry_at == at(2026, 11, 23, 14, 5)
    assert fresh(call).next_action_at == retry_at

    assert dispatcher.dispatch_due_tasks(now=at(2026, 11, 23, 14, 0)) == 0
    assert dispatcher.dispatch_due_tasks(now=retry_at) == 1
    back = fresh(call)
    assert (back.status, back.assignee_id, back.claimed_at) == (TaskStatus.OPEN, None, None)
    # Next stop: the deadline, for escalation; nothing in between.
    assert back.next_action_at == back.deadline_at
    assert back.escalated_at is None
    assert dispatcher.dispatch_due_tasks(now=retry_at + dt.timedelta(hours=2)) == 0


def test_a_retry_after_the_deadline_escalates_first_and_still_reopens(world: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    # Tuesday 19:30: four hours later is after hours, so the retry is Wednesday 09:00, past the deadline.
    retry_at = no_answer(call, world.nina, at(2026, 11, 24, 19, 30))
    assert retry_at == at(2026, 11, 25, 9, 0)
    assert fresh(call).next_action_at == fresh(call).deadline_at

    dispatcher.dispatch_due_tasks(now=at(2026, 11, 25, 0, 0))
    escalated = fresh(call)
    assert escalated.escalated_at == at(2026, 11, 25, 0, 0)
    assert escalated.next_action_at == retry_at

    assert dispatcher.dispatch_due_tasks(now=retry_at) == 1
    back = fresh(call)
    assert (back.status, back.assignee_id, back.next_action_at) == (TaskStatus.OPEN, None, None)


def test_a_nurse_who_picked_the_task_up_again_keeps_it_at_the_deadline(world: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    retry_at = no_answer(call, world.nina, at(2026, 11, 23, 10, 5))
    dispatcher.dispatch_due_tasks(now=retry_at)
    claim_task(task=fresh(call), nurse=world.nina, now=retry_at + dt.timedelta(minutes=5))
    dispatcher.dispatch_due_tasks(now=at(2026, 11, 25, 0, 0))
    escalated = fresh(call)
    assert escalated.escalated_at is not None
    assert (escalated.status, escalated.assignee_id) == (TaskStatus.IN_PROGRESS, world.nina.pk)
    assert escalated.next_action_at is None


def test_a_nurse_who_claimed_during_the_retry_wait_keeps_it_at_the_retry_time(world: Any) -> None:
    call = task(discharge())
    dispatcher.dispatch_due_tasks(now=MONDAY_10)
    retry_at = no_answer(call, world.nina, at(2026, 11, 23, 10, 5))
    CallbackTask.objects.filter(pk=call.pk).update(
        status=TaskStatus.IN_PROGRESS, assignee=world.nina, claimed_at=at(2026, 11, 23, 13, 0)
    )
    dispatcher.dispatch_due_tasks(now=retry_at)
    kept = fresh(call)
    assert (kept.status, kept.assignee_id) == (TaskStatus.IN_PROGRESS, world.nina.pk)
    assert kept.next_action_at == kept.deadline_at


def test_the_limit_caps_one_run_and_the_rest_follow_in_the_next(db: Any) -> None:
    of = discharge()
    for _ in range(7):
        task(of)
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10, limit=5) == 5
    assert dispatcher.dispatch_due_tasks(now=MONDAY_10, limit=5) == 2
    assert set(CallbackTask.objects.values_list("status", flat=True)) == {TaskStatus.OPEN}


# --- two dispatchers at once (PostgreSQL) -----------------------------------------------------------


@pytest.mark.django_db(transaction=True)
def test_two_dispatchers_at_once_start_each_survey_exactly_once(surveys: SurveySeam) -> None:
    assert connection.vendor == "postgresql"
    of = discharge()
    CallbackTask.objects.bulk_create(
        CallbackTask(
            discharge=of,
            patient_id=of.patient_id,
            department_id=of.department_id,
            kind=TaskKind.SMS_SURVEY,
            due_at=at(2026, 11, 23, 9, 0) + dt.timedelta(seconds=i),
            deadline_at=at(2026, 11, 26, 23, 59),
            next_action_at=at(2026, 11, 23, 9, 0) + dt.timedelta(seconds=i),
        )
        for i in range(300)
    )
    start = threading.Barrier(2)
    handled: list[int] = []
    errors: list[BaseException] = []

    def run() -> None:
        try:
            start.wait()
            # Small limits so the two interleave over many short transactions.
            while (done := dispatcher.dispatch_due_tasks(now=MONDAY_10, limit=20)) > 0:
                handled.append(done)
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    threads = [threading.Thread(target=run) for _ in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()

    assert not errors
    ids = set(CallbackTask.objects.values_list("id", flat=True))
    assert set(surveys.calls) == ids
    assert set(surveys.calls.values()) == {1}
    assert sum(handled) == 300
    assert set(CallbackTask.objects.values_list("status", flat=True)) == {TaskStatus.OPEN}

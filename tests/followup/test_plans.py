"""Follow-up plans: which plan a discharge gets, when each task is due, who is excluded, re-planning."""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Callable, Iterator
from typing import Any

import pytest

from callbacks import business_calendar, plans
from callbacks.actions.discharges import DischargeResult, cancel_discharge, record_discharge
from callbacks.defaults import CARDIOLOGY_PLAN_NAME, CATCH_ALL_PLAN_NAME, install_default_plans
from callbacks.models import CallbackTask, Discharge, Disposition, FollowUpPlan, StepKind, TaskKind, TaskStatus
from contactcenter.actions.consent import record_consent
from contactcenter.models import ConsentPurpose, ConsentSource, ConsentStatus, Team
from tests.followup.conftest import discharge_record

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
MakeDischarge = Callable[..., DischargeResult]


def at(year: int, month: int, day: int, hour: int = 0, minute: int = 0, second: int = 0, us: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, second, us, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def fresh_calendar(db: Any) -> Iterator[None]:
    business_calendar.clear_calendar_cache()
    yield
    business_calendar.clear_calendar_cache()


@pytest.fixture
def defaults(db: Any) -> None:
    install_default_plans()


def tasks_of(discharge: Discharge) -> list[CallbackTask]:
    return list(CallbackTask.objects.filter(discharge=discharge).select_related("step").order_by("step__position"))


# --- matching ---------------------------------------------------------------------------------------


def plan(name: str, **values: Any) -> FollowUpPlan:
    created = FollowUpPlan.objects.create(name=name, **values)
    created.steps.create(position=1, kind=StepKind.CALL, offset_days=1, business_days=True)
    return created


@pytest.fixture
def rulebook(db: Any) -> dict[str, FollowUpPlan]:
    cardiology = Team.objects.create(code="cardiology", name="Cardiology")
    return {
        "any": plan("Anyone"),
        "cardiology": plan("Cardiology", department=cardiology),
        "mi": plan("Myocardial infarction", diagnosis_prefixes=["i21"]),
        "home_care": plan("Home care", dispositions=[Disposition.HOME_CARE]),
        "retired": plan("Retired", diagnosis_prefixes=["I21.4"], department=cardiology, is_active=False),
    }


def test_a_diagnosis_rule_beats_a_department_rule(
    rulebook: dict[str, FollowUpPlan], make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(diagnoses=[{"code": "I21.4"}]).discharge
    assert plans.match_plan(discharge) == rulebook["mi"]


def test_diagnosis_prefixes_ignore_case_and_dots_and_any_code_counts(
    rulebook: dict[str, FollowUpPlan], make_discharge: MakeDischarge
) -> None:
    rulebook["mi"].diagnosis_prefixes = ["I21.0"]
    rulebook["mi"].save()
    discharge = make_discharge(diagnoses=[{"code": "E11.9"}, {"code": "i210"}]).discharge
    assert plans.match_plan(discharge) == rulebook["mi"]


def test_a_department_rule_beats_a_disposition_rule(
    rulebook: dict[str, FollowUpPlan], make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(diagnoses=[{"code": "E11.9"}], disposition=Disposition.HOME_CARE).discharge
    assert plans.match_plan(discharge) == rulebook["cardiology"]


def test_a_disposition_rule_beats_the_catch_all(
    rulebook: dict[str, FollowUpPlan], make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(department_code="orthopedics", disposition=Disposition.HOME_CARE, diagnoses=[]).discharge
    assert plans.match_plan(discharge) == rulebook["home_care"]
    other = make_discharge(department_code="orthopedics", diagnoses=[]).discharge
    assert plans.match_plan(other) == rulebook["any"]


def test_priority_breaks_a_tie_between_equally_specific_plans(
    rulebook: dict[str, FollowUpPlan], make_discharge: MakeDischarge
) -> None:
    urgent = plan("Cardiology urgent", department=rulebook["cardiology"].department, priority=5)
    discharge = make_discharge(diagnoses=[]).discharge
    assert plans.match_plan(discharge) == urgent


def test_no_active_plan_means_no_tasks(db: Any, make_discharge: MakeDischarge) -> None:
    result = make_discharge()
    assert plans.match_plan(result.discharge) is None
    assert not CallbackTask.objects.exists()


# --- due windows ------------------------------------------------------------------------------------


def test_cardiology_gets_a_call_within_two_business_days_a_survey_on_day_7_and_a_call_on_day_30(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    # Friday afternoon discharge.
    discharge = make_discharge(discharged_at=at(2026, 11, 20, 15, 0)).discharge
    assert plans.match_plan(discharge).name == CARDIOLOGY_PLAN_NAME  # type: ignore[union-attr]
    first, survey, last = tasks_of(discharge)

    assert (first.kind, first.status) == (TaskKind.CALL, TaskStatus.SCHEDULED)
    assert first.due_at == at(2026, 11, 23, 9, 0)  # Monday, the first business day after
    assert first.deadline_at == at(2026, 11, 24, 23, 59, 59, 999999)  # end of Tuesday: 2 business days
    assert first.next_action_at == first.due_at
    assert (first.max_attempts, first.retry_interval_hours) == (3, 4)
    assert first.department_id == discharge.department_id

    assert survey.kind == TaskKind.SMS_SURVEY
    assert survey.due_at == at(2026, 11, 27, 9, 0)  # day 7, calendar days
    assert survey.deadline_at == at(2026, 12, 2, 23, 59, 59, 999999)

    # Day 30 is Sunday 20 December: a call waits for Monday.
    assert last.kind == TaskKind.CALL
    assert last.due_at == at(2026, 12, 21, 9, 0)


def test_the_first_call_skips_national_day_and_lands_on_the_next_working_day(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    discharge = make_discharge(discharged_at=at(2026, 9, 30, 11, 0)).discharge
    first = tasks_of(discharge)[0]
    assert first.due_at == at(2026, 10, 8, 9, 0)
    assert first.deadline_at.astimezone(SHANGHAI).date() == dt.date(2026, 10, 9)


def test_a_survey_due_on_a_weekend_goes_out_on_the_weekend(defaults: None, make_discharge: MakeDischarge) -> None:
    # Saturday + 7 = Saturday: an SMS waits in the phone, not on a nurse's desk.
    discharge = make_discharge(discharged_at=at(2026, 11, 14, 10, 0)).discharge
    survey = next(t for t in tasks_of(discharge) if t.kind == TaskKind.SMS_SURVEY)
    assert survey.due_at == at(2026, 11, 21, 9, 0)


def test_a_same_day_call_for_an_evening_discharge_is_due_next_business_morning(
    db: Any, make_discharge: MakeDischarge
) -> None:
    same_day = FollowUpPlan.objects.create(name="Same day")
    same_day.steps.create(position=1, kind=StepKind.CALL, offset_days=0, business_days=True, deadline_days=0)
    evening = make_discharge(discharged_at=at(2026, 11, 20, 20, 30)).discharge
    (task,) = tasks_of(evening)
    assert task.due_at == at(2026, 11, 23, 9, 0)
    assert task.deadline_at == at(2026, 11, 23, 23, 59, 59, 999999)
    noon = make_discharge(discharged_at=at(2026, 11, 20, 12, 0)).discharge
    assert tasks_of(noon)[0].due_at == at(2026, 11, 20, 12, 0)


def test_the_catch_all_plan_covers_other_departments(defaults: None, make_discharge: MakeDischarge) -> None:
    discharge = make_discharge(department_code="orthopedics").discharge
    assert plans.match_plan(discharge).name == CATCH_ALL_PLAN_NAME  # type: ignore[union-attr]
    assert [t.kind for t in tasks_of(discharge)] == [TaskKind.CALL, TaskKind.SMS_SURVEY]


# --- exclusions -------------------------------------------------------------------------------------


def test_an_expired_patient_gets_no_calls_and_no_survey(defaults: None, make_discharge: MakeDischarge) -> None:
    discharge = make_discharge(disposition=Disposition.EXPIRED).discharge
    tasks = tasks_of(discharge)
    assert len(tasks) == 3
    assert {t.status for t in tasks} == {TaskStatus.EXCLUDED}
    assert all(t.next_action_at is None and t.plan_note == plans.NOTE_EXPIRED for t in tasks)


def test_a_transferred_patient_gets_the_calls_but_no_survey(defaults: None, make_discharge: MakeDischarge) -> None:
    discharge = make_discharge(disposition=Disposition.TRANSFERRED).discharge
    by_kind = {(t.kind, t.status) for t in tasks_of(discharge)}
    assert by_kind == {
        (TaskKind.CALL, TaskStatus.SCHEDULED),
        (TaskKind.SMS_SURVEY, TaskStatus.EXCLUDED),
    }
    survey = next(t for t in tasks_of(discharge) if t.kind == TaskKind.SMS_SURVEY)
    assert survey.plan_note == plans.NOTE_TRANSFERRED and survey.next_action_at is None


@pytest.mark.parametrize("phone", ["", "+86 10 6552 9988"], ids=["no phone", "landline only"])
def test_a_patient_without_a_mobile_gets_a_call_instead_of_the_survey(
    defaults: None, make_discharge: MakeDischarge, phone: str
) -> None:
    discharge = make_discharge(phone=phone).discharge
    second = tasks_of(discharge)[1]
    assert second.step is not None and second.step.kind == StepKind.SMS_SURVEY
    assert (second.kind, second.status, second.plan_note) == (TaskKind.CALL, TaskStatus.SCHEDULED, plans.NOTE_NO_MOBILE)
    # Still a call: on a business day.
    assert business_calendar.is_business_day(second.due_at.astimezone(SHANGHAI).date())


def test_a_patient_who_opted_out_of_sms_gets_a_call_instead_of_the_survey(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    earlier = make_discharge(mrn="MRN-OPTOUT", phone="+8613900000001").discharge
    assert tasks_of(earlier)[1].kind == TaskKind.SMS_SURVEY
    record_consent(
        patient=earlier.patient,
        purpose=ConsentPurpose.MARKETING,
        status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.KEYWORD,
        keyword="STOP",
    )
    later = make_discharge(mrn="MRN-OPTOUT", phone="+8613900000001").discharge
    assert later.patient_id == earlier.patient_id
    second = tasks_of(later)[1]
    assert (second.kind, second.plan_note) == (TaskKind.CALL, plans.NOTE_OPTED_OUT)


# --- idempotency and re-planning --------------------------------------------------------------------


def test_scheduling_twice_creates_nothing_new(defaults: None, make_discharge: MakeDischarge) -> None:
    record = discharge_record()
    discharge = record_discharge(record, now=record.discharged_at).discharge
    assert len(tasks_of(discharge)) == 3
    assert plans.schedule_follow_up(discharge) == []
    record_discharge(record, now=record.discharged_at)
    assert plans.schedule_follow_up_bulk([discharge]) == 0
    assert CallbackTask.objects.filter(discharge=discharge).count() == 3


def test_bulk_scheduling_plans_exactly_like_one_at_a_time(defaults: None, make_discharge: MakeDischarge) -> None:
    one = make_discharge(discharged_at=at(2026, 11, 20, 15, 0), phone="").discharge
    expected = [(t.step_id, t.kind, t.status, t.plan_note, t.due_at, t.deadline_at) for t in tasks_of(one)]
    CallbackTask.objects.all().delete()
    assert plans.schedule_follow_up_bulk(Discharge.objects.all(), now=one.discharged_at) == 3
    assert [(t.step_id, t.kind, t.status, t.plan_note, t.due_at, t.deadline_at) for t in tasks_of(one)] == expected


def test_a_corrected_discharge_time_moves_tasks_not_yet_opened(defaults: None, make_discharge: MakeDischarge) -> None:
    record = discharge_record(discharged_at=at(2026, 11, 16, 10, 0))
    discharge = record_discharge(record, now=record.discharged_at).discharge
    first, survey, last = tasks_of(discharge)
    CallbackTask.objects.filter(pk=first.pk).update(status=TaskStatus.OPEN, opened_at=at(2026, 11, 17, 9, 0))

    result = record_discharge(
        discharge_record(visit_number=record.visit_number, discharged_at=at(2026, 11, 18, 10, 0)),
        now=at(2026, 11, 18, 10, 0),
    )
    assert "discharged_at" in result.changed
    first_now, survey_now, last_now = tasks_of(discharge)
    assert [first_now.pk, survey_now.pk, last_now.pk] == [first.pk, survey.pk, last.pk]
    assert first_now.due_at == first.due_at  # opened: stays as it was
    assert survey_now.due_at == at(2026, 11, 25, 9, 0)
    assert survey_now.next_action_at == survey_now.due_at
    assert last_now.due_at == at(2026, 12, 18, 9, 0)


def test_a_discharge_corrected_to_expired_excludes_what_is_not_yet_opened(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    record = discharge_record()
    discharge = record_discharge(record, now=record.discharged_at).discharge
    record_discharge(
        discharge_record(visit_number=record.visit_number, disposition=Disposition.EXPIRED), now=record.discharged_at
    )
    assert {(t.status, t.next_action_at) for t in tasks_of(discharge)} == {(TaskStatus.EXCLUDED, None)}


def test_a_new_department_replaces_the_plan_of_tasks_not_yet_opened(
    defaults: None, make_discharge: MakeDischarge
) -> None:
    record = discharge_record()
    discharge = record_discharge(record, now=record.discharged_at).discharge
    first = tasks_of(discharge)[0]
    CallbackTask.objects.filter(pk=first.pk).update(status=TaskStatus.COMPLETED, opened_at=first.due_at)
    Team.objects.create(code="orthopedics", name="Orthopedics")
    record_discharge(
        discharge_record(visit_number=record.visit_number, department_code="orthopedics"), now=record.discharged_at
    )
    catch_all = FollowUpPlan.objects.get(name=CATCH_ALL_PLAN_NAME)
    remaining = tasks_of(discharge)
    # The completed cardiology call stays; the scheduled cardiology steps give way to the catch-all plan's.
    assert first.pk in {t.pk for t in remaining}
    assert {t.step.plan_id for t in remaining if t.pk != first.pk} == {catch_all.pk}  # type: ignore[union-attr]
    assert all(t.department.code == "orthopedics" for t in remaining if t.pk != first.pk)


def test_a_cancelled_then_resent_discharge_is_planned_again(defaults: None, make_discharge: MakeDischarge) -> None:
    record = discharge_record()
    discharge = record_discharge(record, now=record.discharged_at).discharge
    cancel_discharge(visit_number=record.visit_number, reason="A13")
    assert {t.status for t in tasks_of(discharge)} == {TaskStatus.CANCELLED}
    assert plans.schedule_follow_up(Discharge.objects.get(pk=discharge.pk)) == []

    record_discharge(record, now=record.discharged_at)
    live = CallbackTask.objects.filter(discharge=discharge).exclude(status=TaskStatus.CANCELLED)
    assert live.count() == 3
    assert set(live.values_list("status", flat=True)) == {TaskStatus.SCHEDULED}


# --- late and back-filled discharges ------------------------------------------------------------------


def test_a_back_filled_discharge_is_planned_expired_and_nothing_will_be_sent(defaults: None) -> None:
    # Discharged in March, reported in December: every step's contact deadline is long gone.
    record = discharge_record(discharged_at=at(2026, 3, 16, 10, 0))
    discharge = record_discharge(record, now=at(2026, 12, 1, 10, 0)).discharge

    tasks = tasks_of(discharge)
    assert len(tasks) == 3
    assert {(t.status, t.next_action_at, t.plan_note) for t in tasks} == {
        (TaskStatus.EXPIRED, None, plans.NOTE_DEADLINE_PASSED)
    }


def test_a_late_discharge_expires_only_the_steps_already_past_their_deadline(defaults: None) -> None:
    # Twelve days late: the first call and the day-7 survey are past their deadlines, the day-30 call is not.
    record = discharge_record(discharged_at=at(2026, 11, 2, 10, 0))
    first, survey, last = tasks_of(record_discharge(record, now=at(2026, 11, 14, 10, 0)).discharge)
    assert (first.status, survey.status, last.status) == (TaskStatus.EXPIRED, TaskStatus.EXPIRED, TaskStatus.SCHEDULED)
    assert last.next_action_at == last.due_at


def test_a_corrected_discharge_time_brings_expired_steps_back(defaults: None) -> None:
    record = discharge_record(discharged_at=at(2026, 3, 16, 10, 0))
    discharge = record_discharge(record, now=at(2026, 11, 18, 10, 0)).discharge
    corrected = discharge_record(visit_number=record.visit_number, discharged_at=at(2026, 11, 18, 9, 0))
    record_discharge(corrected, now=at(2026, 11, 18, 10, 0))
    assert {t.status for t in tasks_of(discharge)} == {TaskStatus.SCHEDULED}


# --- retries ----------------------------------------------------------------------------------------


def test_a_retry_waits_the_interval_and_respects_calling_hours(defaults: None, make_discharge: MakeDischarge) -> None:
    task = tasks_of(make_discharge().discharge)[0]
    task.attempt_count = 1
    assert plans.schedule_retry(task, at(2026, 11, 23, 10, 0)) == at(2026, 11, 23, 14, 0)
    # Friday 17:00 + 4 h is after hours: Monday morning.
    assert plans.schedule_retry(task, at(2026, 11, 20, 17, 0)) == at(2026, 11, 23, 9, 0)


def test_no_retry_once_the_attempts_are_used(defaults: None, make_discharge: MakeDischarge) -> None:
    task = tasks_of(make_discharge().discharge)[0]
    task.attempt_count = task.max_attempts
    assert plans.schedule_retry(task, at(2026, 11, 23, 10, 0)) is None


def test_a_retry_after_the_deadline_waits_for_the_deadline_first(defaults: None, make_discharge: MakeDischarge) -> None:
    task = tasks_of(make_discharge(discharged_at=at(2026, 11, 20, 15, 0)).discharge)[0]
    late_retry = task.deadline_at + dt.timedelta(hours=10)
    assert plans.retry_next_action(task, late_retry) == task.deadline_at
    task.escalated_at = task.deadline_at
    assert plans.retry_next_action(task, late_retry) == late_retry


# --- the admin where hospital IT configures plans ---------------------------------------------------


def test_admins_configure_plans_in_the_admin_and_reading_a_task_there_is_audited(
    defaults: None, make_discharge: MakeDischarge, client: Any
) -> None:
    from django.contrib.auth.models import User

    from contactcenter.models import AuditLogEntry

    it = User.objects.create_superuser("it-admin", password="correct-horse-battery")
    client.force_login(it)
    plan_id = FollowUpPlan.objects.get(name=CARDIOLOGY_PLAN_NAME).pk
    for url in (
        "/django-admin/callbacks/followupplan/",
        f"/django-admin/callbacks/followupplan/{plan_id}/change/",
        "/django-admin/callbacks/survey/",
        "/django-admin/callbacks/callscript/",
        "/django-admin/callbacks/calendarday/",
        "/django-admin/callbacks/callbacktask/",
        "/django-admin/callbacks/intakemessage/",
    ):
        assert client.get(url).status_code == 200, url
    task = tasks_of(make_discharge().discharge)[0]
    assert client.get(f"/django-admin/callbacks/callbacktask/{task.pk}/change/").status_code == 200
    entry = AuditLogEntry.objects.get(object_type="callbacktask", object_id=str(task.pk))
    assert (entry.actor_id, entry.patient_id) == (it.pk, task.patient_id)
    # Tasks are written by actions only.
    assert client.get("/django-admin/callbacks/callbacktask/add/").status_code == 403

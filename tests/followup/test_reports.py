"""Follow-up reports: known rows in, exact rates, means, distributions, NPS and times to close out."""

from __future__ import annotations

import csv
import datetime as dt
import io
import zoneinfo
from collections.abc import Callable
from typing import Any

import pytest
from django.conf import settings
from django.test import Client
from django.urls import reverse

from callbacks.models import (
    CallbackTask,
    CallOutcome,
    CaseCategory,
    CaseSource,
    CaseStatus,
    Discharge,
    QuestionKind,
    ServiceCase,
    SessionStatus,
    Survey,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
    TaskKind,
    TaskStatus,
)
from callbacks.reports import selectors
from callbacks.reports.selectors import Bucket, Dimension, ReportPeriod
from contactcenter.models import AuditLogEntry
from tests.conftest import World

SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
MARCH = ReportPeriod(dt.date(2025, 3, 1), dt.date(2025, 3, 31))
# The reports are read "now": every follow-up task below came due before this.
AS_OF = dt.datetime(2025, 5, 1, 9, 0, tzinfo=SHANGHAI)


@pytest.fixture(autouse=True)
def hospital_in_shanghai(settings: Any) -> None:
    settings.TIME_ZONE = "Asia/Shanghai"


def local(day: int, hour: int = 10, minute: int = 0, month: int = 3) -> dt.datetime:
    return dt.datetime(2025, month, day, hour, minute, tzinfo=SHANGHAI)


@pytest.fixture
def discharge(world: World, make_discharge: Callable[..., Any]) -> Callable[..., Discharge]:
    """A discharge with no tasks of its own: each test writes exactly the tasks it counts."""

    def make(at: dt.datetime, *, team: str = "a", **overrides: Any) -> Discharge:
        department = world.team_a if team == "a" else world.team_b
        made = make_discharge(
            discharged_at=at,
            department_code=department.code,
            department_name=department.name,
            **overrides,
        ).discharge
        made.tasks.all().delete()
        return made

    return make


def task(
    discharge: Discharge,
    *,
    kind: str = TaskKind.CALL,
    status: str = TaskStatus.OPEN,
    due_at: dt.datetime | None = None,
    deadline_at: dt.datetime | None = None,
    completed_at: dt.datetime | None = None,
    outcome: str = "",
) -> CallbackTask:
    due_at = due_at or discharge.discharged_at + dt.timedelta(days=1)
    return CallbackTask.objects.create(
        discharge=discharge,
        patient=discharge.patient,
        department=discharge.department,
        kind=kind,
        status=status,
        due_at=due_at,
        deadline_at=deadline_at or due_at + dt.timedelta(days=2),
        completed_at=completed_at,
        outcome=outcome,
    )


def reached_call(discharge: Discharge, *, after_due: dt.timedelta, **kwargs: Any) -> CallbackTask:
    due_at = kwargs.pop("due_at", discharge.discharged_at + dt.timedelta(days=1))
    return task(
        discharge,
        status=TaskStatus.COMPLETED,
        outcome=CallOutcome.REACHED,
        due_at=due_at,
        completed_at=due_at + after_due,
        **kwargs,
    )


@pytest.fixture
def survey(db: Any) -> Survey:
    survey = Survey.objects.create(name="Inpatient satisfaction")
    for position, (kind, key) in enumerate(
        [
            (QuestionKind.RATING, "overall"),
            (QuestionKind.RATING, "doctor"),
            (QuestionKind.NPS, "recommend"),
            (QuestionKind.FREE_TEXT, "comment"),
        ],
        start=1,
    ):
        SurveyQuestion.objects.create(
            survey=survey, position=position, kind=kind, key=key, prompt_en=key, prompt_zh=key
        )
    return survey


def session(
    world: World,
    survey: Survey,
    discharge: Discharge,
    *,
    status: str = SessionStatus.COMPLETED,
    closed_at: dt.datetime | None = None,
    answers: dict[str, int | None] | None = None,
) -> SurveySession:
    made = SurveySession.objects.create(
        survey=survey,
        patient=discharge.patient,
        inbox=world.inbox_a,
        discharge=discharge,
        status=status,
        closed_at=closed_at,
    )
    for key, value in (answers or {}).items():
        SurveyAnswer.objects.create(
            session=made, question=survey.questions.get(key=key), value=value, raw_text=str(value)
        )
    return made


# --- 回访率 -------------------------------------------------------------------------------------------


@pytest.fixture
def completion_scene(world: World, survey: Survey, discharge: Callable[..., Discharge]) -> None:
    # Cardiology: 5 due, 3 contacted, 2 of them by the first task's deadline.
    reached_call(discharge(local(3)), after_due=dt.timedelta(hours=1))
    late = discharge(local(4))
    first = task(late, status=TaskStatus.UNREACHABLE, due_at=local(5), deadline_at=local(7))
    survey_task = task(late, kind=TaskKind.SMS_SURVEY, due_at=local(11), deadline_at=local(14))
    # Reached by the day-7 survey, within that task's window but after the first task's deadline.
    session(world, survey, late, closed_at=local(12))
    assert first.deadline_at < survey_task.deadline_at
    by_survey = discharge(local(6))
    task(by_survey, kind=TaskKind.SMS_SURVEY, due_at=local(7), deadline_at=local(10))
    session(world, survey, by_survey, closed_at=local(8))
    task(discharge(local(8)), status=TaskStatus.UNREACHABLE)
    # Not due: everything excluded or cancelled, or the first task is not due yet.
    task(discharge(local(9), disposition="expired"), status=TaskStatus.EXCLUDED)
    cancelled = discharge(local(9))
    task(cancelled, status=TaskStatus.CANCELLED)
    task(cancelled, status=TaskStatus.EXCLUDED, kind=TaskKind.SMS_SURVEY)
    task(discharge(local(30)), status=TaskStatus.SCHEDULED, due_at=AS_OF + dt.timedelta(days=1))
    # An abandoned survey (no response) is not a contact.
    silent = discharge(local(12))
    task(silent, kind=TaskKind.SMS_SURVEY, status=TaskStatus.COMPLETED)
    session(world, survey, silent, status=SessionStatus.NO_RESPONSE, closed_at=local(20))
    # Orthopedics: 2 due, 1 contacted within deadline.
    reached_call(discharge(local(10), team="b"), after_due=dt.timedelta(days=1))
    task(discharge(local(11), team="b"), status=TaskStatus.IN_PROGRESS)
    # February: outside the period.
    reached_call(discharge(local(20, month=2)), after_due=dt.timedelta(hours=1))


def test_completion_and_within_deadline_rates_by_department(world: World, completion_scene: None) -> None:
    rows = selectors.completion_rates(period=MARCH, as_of=AS_OF)

    by_department = {row.group.key: row for row in rows}
    assert set(by_department) == {str(world.team_a.pk), str(world.team_b.pk)}
    cardiology = by_department[str(world.team_a.pk)]
    assert (cardiology.due, cardiology.contacted, cardiology.within_deadline) == (5, 3, 2)
    assert cardiology.rate == 60.0
    assert cardiology.within_deadline_rate == 40.0
    assert (cardiology.group.label, cardiology.group.label_zh) == ("Cardiology", "心内科")
    orthopedics = by_department[str(world.team_b.pk)]
    assert (orthopedics.due, orthopedics.contacted, orthopedics.within_deadline) == (2, 1, 1)
    assert orthopedics.rate == 50.0


def test_steps_that_expired_unsent_count_as_due_and_are_shown_as_expired(
    world: World, discharge: Callable[..., Discharge]
) -> None:
    # A back-filled discharge: its call and survey expired, nothing went out, nobody was contacted.
    backfilled = discharge(local(3))
    task(backfilled, status=TaskStatus.EXPIRED)
    task(backfilled, kind=TaskKind.SMS_SURVEY, status=TaskStatus.EXPIRED)
    reached_call(discharge(local(4)), after_due=dt.timedelta(hours=1))

    (row,) = selectors.completion_rates(period=MARCH, as_of=AS_OF)

    assert (row.due, row.contacted, row.expired) == (2, 1, 1)
    page = client_for(world.sam).get(REPORTS_URL, MARCH_QUERY)
    assert b'data-testid="completion-expired">1<' in page.content
    export = read_csv(client_for(world.sam).get(EXPORT_URL, {"report": "completion", **MARCH_QUERY}))
    assert export[0][-1] == "Expired unsent" and export[1][-1] == "1"


def test_completion_filtered_by_department(world: World, completion_scene: None) -> None:
    rows = selectors.completion_rates(period=MARCH, department_id=world.team_b.pk, as_of=AS_OF)

    assert [(row.group.label, row.due, row.contacted) for row in rows] == [("Orthopedics", 2, 1)]


def test_completion_counts_a_discharge_only_once_its_first_task_is_due(world: World, completion_scene: None) -> None:
    # On the morning of 6 March only the discharges of 3 and 4 March had a task due (on the 4th and 5th).
    rows = selectors.completion_rates(period=MARCH, as_of=local(6, 9))

    assert [(row.group.label, row.due) for row in rows] == [("Cardiology", 2)]


def test_completion_date_range_is_the_hospitals_calendar(world: World, discharge: Callable[..., Discharge]) -> None:
    # 23:30 on 31 March in Shanghai is 15:30 UTC the same day; 00:10 on 1 April is still 31 March in UTC.
    march = discharge(local(31, 23, 30))
    april = discharge(dt.datetime(2025, 4, 1, 0, 10, tzinfo=SHANGHAI))
    assert april.discharged_at.astimezone(dt.UTC).date() == dt.date(2025, 3, 31)
    reached_call(march, after_due=dt.timedelta(hours=1))
    reached_call(april, after_due=dt.timedelta(hours=1))

    rows = selectors.completion_rates(period=MARCH, as_of=AS_OF)
    assert [(row.due, row.contacted) for row in rows] == [(1, 1)]

    by_month = selectors.completion_rates(
        period=ReportPeriod(dt.date(2025, 3, 1), dt.date(2025, 4, 30)), bucket=Bucket.MONTH, as_of=AS_OF
    )
    assert [(row.bucket, row.due) for row in by_month] == [(dt.date(2025, 3, 1), 1), (dt.date(2025, 4, 1), 1)]


def test_week_buckets_start_on_the_hospitals_monday(world: World, discharge: Callable[..., Discharge]) -> None:
    # Sunday 30 March 23:30 and Monday 31 March 00:30 in Shanghai: both Sunday in UTC, different weeks here.
    for at in (local(30, 23, 30), local(31, 0, 30)):
        reached_call(discharge(at), after_due=dt.timedelta(hours=1))

    rows = selectors.completion_rates(period=MARCH, bucket=Bucket.WEEK, as_of=AS_OF)

    assert [(row.bucket, row.due) for row in rows] == [(dt.date(2025, 3, 24), 1), (dt.date(2025, 3, 31), 1)]


# --- Satisfaction and NPS ------------------------------------------------------------------------------


@pytest.fixture
def answers_scene(world: World, survey: Survey, discharge: Callable[..., Discharge]) -> None:
    def answered(at: dt.datetime, answers: dict[str, int | None], **overrides: Any) -> None:
        made = discharge(at, **overrides)
        session(world, survey, made, closed_at=at + dt.timedelta(days=7), answers=answers)

    wang = {"attending_doctor": "Dr. Wang", "primary_nurse": "Nurse Li", "ward": "5A"}
    zhao = {"attending_doctor": "Dr. Zhao", "primary_nurse": "Nurse Chen", "ward": "5B"}
    answered(local(2), {"overall": 5, "doctor": 1, "recommend": 10}, **wang)
    answered(local(3), {"overall": 5, "doctor": 2, "recommend": 9}, **wang)
    answered(local(4), {"overall": 4, "doctor": 3, "recommend": 9}, **zhao)
    answered(local(20), {"overall": 2, "recommend": 7}, **zhao)
    # An answer the survey could not read has no value and is not a score.
    answered(local(21), {"overall": None, "recommend": 3}, **zhao)
    answered(local(5), {"overall": 1, "recommend": 0}, team="b", attending_doctor="Dr. Wang", ward="8C")
    answered(local(5, month=4), {"overall": 1, "recommend": 0}, **wang)


def test_satisfaction_mean_and_distribution_by_department(world: World, answers_scene: None) -> None:
    rows = selectors.satisfaction(period=MARCH, dimension=Dimension.DEPARTMENT, question_key="overall")

    by_department = {row.group.label: row for row in rows}
    cardiology = by_department["Cardiology"]
    assert cardiology.responses == 4
    assert cardiology.mean == 4.0
    assert cardiology.distribution == {1: 0, 2: 1, 3: 0, 4: 1, 5: 2}
    assert by_department["Orthopedics"].distribution == {1: 1, 2: 0, 3: 0, 4: 0, 5: 0}


@pytest.mark.parametrize(
    ("dimension", "expected"),
    [
        (Dimension.DOCTOR, {"Dr. Wang": (3, 3.67), "Dr. Zhao": (2, 3.0)}),
        (Dimension.NURSE, {"Nurse Li": (3, 3.67), "Nurse Chen": (2, 3.0)}),
        (Dimension.WARD, {"5A": (2, 5.0), "5B": (2, 3.0), "8C": (1, 1.0)}),
    ],
)
def test_satisfaction_by_doctor_nurse_and_ward(
    world: World, answers_scene: None, dimension: str, expected: dict[str, tuple[int, float]]
) -> None:
    rows = selectors.satisfaction(period=MARCH, dimension=dimension, question_key="overall")

    assert {row.group.label: (row.responses, row.mean) for row in rows} == expected


def test_satisfaction_question_key_filter(world: World, answers_scene: None) -> None:
    doctor = selectors.satisfaction(period=MARCH, dimension=Dimension.DOCTOR, question_key="doctor")
    every_rating = selectors.satisfaction(period=MARCH, dimension=Dimension.DEPARTMENT, department_id=world.team_a.pk)

    assert [(row.group.label, row.responses, row.mean) for row in doctor] == [
        ("Dr. Wang", 2, 1.5),
        ("Dr. Zhao", 1, 3.0),
    ]
    assert [(row.responses, row.mean) for row in every_rating] == [(7, 3.14)]


def test_nps_three_promoters_one_passive_one_detractor_is_40(world: World, answers_scene: None) -> None:
    rows = selectors.nps(period=MARCH, dimension=Dimension.DEPARTMENT, department_id=world.team_a.pk)

    assert len(rows) == 1
    row = rows[0]
    assert (row.promoters, row.passives, row.detractors, row.responses) == (3, 1, 1, 5)
    assert row.nps == 40.0


def test_nps_by_doctor_and_over_time(world: World, answers_scene: None) -> None:
    by_doctor = selectors.nps(period=MARCH, dimension=Dimension.DOCTOR)
    trend = selectors.nps(
        period=ReportPeriod(dt.date(2025, 3, 1), dt.date(2025, 4, 30)), dimension=None, bucket=Bucket.MONTH
    )
    whole = selectors.nps(period=MARCH, dimension=None)

    # Dr. Wang: 10, 9 and the Orthopedics 0 → (2 − 1) / 3; Dr. Zhao: 9, 7, 3 → (1 − 1) / 3.
    assert {row.group.label: row.nps for row in by_doctor} == {"Dr. Wang": 33.3, "Dr. Zhao": 0.0}
    assert [(row.bucket, row.responses, row.nps) for row in trend] == [
        (dt.date(2025, 3, 1), 6, 16.7),
        (dt.date(2025, 4, 1), 1, -100.0),
    ]
    assert [(row.responses, row.nps) for row in whole] == [(6, 16.7)]
    assert selectors.nps(period=ReportPeriod(dt.date(2024, 1, 1), dt.date(2024, 1, 31)), dimension=None) == []


# --- Service recovery ------------------------------------------------------------------------------------


@pytest.fixture
def cases_scene(world: World, discharge: Callable[..., Discharge]) -> None:
    patient = discharge(local(1)).patient

    def case(
        category: str,
        status: str,
        *,
        opened: dt.datetime,
        hours_open: float | None = None,
        escalated: bool = False,
        team: Any = None,
    ) -> None:
        ServiceCase.objects.create(
            patient=patient,
            source=CaseSource.SURVEY_SCORE,
            category=category,
            status=status,
            department=team or world.team_a,
            first_contact_due_at=opened + dt.timedelta(hours=24),
            escalated_at=opened + dt.timedelta(hours=25) if escalated else None,
            created_at=opened,
            closed_at=opened + dt.timedelta(hours=hours_open) if hours_open is not None else None,
        )

    case(CaseCategory.ATTITUDE, CaseStatus.CLOSED, opened=local(2), hours_open=2)
    case(CaseCategory.ATTITUDE, CaseStatus.CLOSED, opened=local(3), hours_open=10)
    case(CaseCategory.ATTITUDE, CaseStatus.CLOSED, opened=local(4), hours_open=30, escalated=True)
    case(CaseCategory.ATTITUDE, CaseStatus.RECEIVED, opened=local(5), escalated=True)
    case(CaseCategory.WAITING, CaseStatus.VERIFIED, opened=local(6), team=world.team_b)
    case(CaseCategory.WAITING, CaseStatus.CLOSED, opened=local(2, month=4), hours_open=1)


@pytest.mark.parametrize("median_in_database", [True, False])
def test_cases_by_category_with_time_to_close(world: World, cases_scene: None, median_in_database: bool) -> None:
    rows = selectors.case_summary(period=MARCH, median_in_database=median_in_database)

    assert [row.category for row in rows] == [CaseCategory.ATTITUDE, CaseCategory.WAITING]
    attitude, waiting = rows
    assert attitude.total == 4
    assert attitude.by_status == {"received": 1, "verified": 0, "improved": 0, "closed": 3}
    assert (attitude.closed, attitude.breached) == (3, 2)
    assert attitude.mean_hours_to_close == 14.0
    assert attitude.median_hours_to_close == 10.0
    assert (waiting.total, waiting.by_status["verified"], waiting.closed) == (1, 1, 0)
    assert waiting.mean_hours_to_close is None
    assert waiting.median_hours_to_close is None


def test_cases_filtered_by_department(world: World, cases_scene: None) -> None:
    rows = selectors.case_summary(period=MARCH, department_id=world.team_b.pk)

    assert [(row.category, row.total) for row in rows] == [(CaseCategory.WAITING, 1)]


# --- The page and the export ------------------------------------------------------------------------------


REPORTS_URL = "/followup/reports/"
EXPORT_URL = "/followup/reports/export.csv"
MARCH_QUERY = {"from": "2025-03-01", "to": "2025-03-31"}


def client_for(user: Any, language: str = "en") -> Client:
    client = Client()
    client.force_login(user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return client


def test_reports_url_name() -> None:
    assert reverse("followup-reports") == REPORTS_URL
    assert reverse("followup-reports-export") == EXPORT_URL


@pytest.mark.parametrize("persona", ["alice", "charlie", "nina", "mark"])
def test_only_supervisors_and_admins_read_reports(world: World, persona: str) -> None:
    client = client_for(getattr(world, persona))

    assert client.get(REPORTS_URL).status_code == 403
    assert client.get(EXPORT_URL, {"report": "completion"}).status_code == 403
    assert not AuditLogEntry.objects.filter(object_type="followup_report").exists()


def test_signed_out_visitors_are_sent_to_login(world: World) -> None:
    response = Client().get(REPORTS_URL)

    assert response.status_code == 302
    assert "/login/" in response["Location"]


@pytest.mark.parametrize("persona", ["sam", "ada"])
def test_page_shows_the_aggregates(
    world: World, persona: str, completion_scene: None, answers_scene: None, cases_scene: None
) -> None:
    response = client_for(getattr(world, persona)).get(REPORTS_URL, {**MARCH_QUERY, "dimension": "doctor"})

    assert response.status_code == 200
    data = response.context["data"]
    # Read today, the discharge of 30 March has come due as well (the selector tests read on 1 May 2025).
    assert (data["completion_total"]["due"], data["completion_total"]["contacted"]) == (8, 4)
    assert {row["label"]: row["nps"] for row in data["nps"]} == {"Dr. Wang": 33.3, "Dr. Zhao": 0.0}
    assert [row["label"] for row in data["cases"]] == ["Staff attitude", "Waiting time"]
    body = response.content.decode()
    assert 'id="reports-data"' in body
    assert "Dr. Zhao" in body
    # Aggregates only: no patient's name reaches the page.
    assert "Patient " not in body


def test_page_defaults_to_the_last_90_days(world: World) -> None:
    response = client_for(world.sam).get(REPORTS_URL)

    assert response.status_code == 200
    filters = response.context["filters"]
    assert (filters.period.date_to - filters.period.date_from).days == 89
    assert (filters.dimension, filters.bucket) == ("department", "month")


def test_department_labels_follow_the_language(world: World, completion_scene: None) -> None:
    response = client_for(world.sam, "zh-hans").get(REPORTS_URL, MARCH_QUERY)

    assert [row["label"] for row in response.context["data"]["completion"]] == ["心内科", "骨科"]


@pytest.mark.parametrize(
    "query",
    [
        {"from": "2025-13-01"},
        {"from": "31/03/2025"},
        {"to": "2025-02-30"},
        {"from": "2025-03-31", "to": "2025-03-01"},
        {"from": "1990-01-01", "to": "2025-01-01"},
        {"from": "2025-03-01\x00"},
        {"department": "cardiology"},
        {"department": "999999"},
        {"department": "١"},
        {"dimension": "patient"},
        {"bucket": "day"},
        {"question": "no-such-question"},
    ],
)
def test_bad_parameters_are_a_400_with_a_message(world: World, survey: Survey, query: dict[str, str]) -> None:
    client = client_for(world.sam)

    page = client.get(REPORTS_URL, query)
    export = client.get(EXPORT_URL, {"report": "nps", **query})

    assert page.status_code == 400
    assert page.context["error"]
    assert page.context["error"].encode() in page.content
    assert export.status_code == 400
    assert export.content.strip()


def test_export_needs_a_known_report(world: World) -> None:
    response = client_for(world.sam).get(EXPORT_URL, {"report": "patients"})

    assert response.status_code == 400
    assert b"completion" in response.content


def read_csv(response: Any) -> list[list[str]]:
    body = response.content.decode("utf-8")
    assert body.startswith("\ufeff")
    return list(csv.reader(io.StringIO(body[1:])))


def test_completion_csv_is_excel_friendly_and_audited(world: World, completion_scene: None) -> None:
    response = client_for(world.sam).get(EXPORT_URL, {"report": "completion", **MARCH_QUERY})

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/csv")
    assert response["Content-Disposition"] == 'attachment; filename="followup-completion-20250301-20250331.csv"'
    rows = read_csv(response)
    assert rows[0][0] == "Department"
    # Monthly buckets by default: March only. Read today, the discharge of 30 March is due too.
    assert rows[1:] == [
        ["Cardiology", "2025-03", "6", "3", "50.0", "2", "33.3", "0"],
        ["Orthopedics", "2025-03", "2", "1", "50.0", "1", "50.0", "0"],
    ]
    entry = AuditLogEntry.objects.get(object_type="followup_report")
    assert entry.actor == world.sam
    assert entry.action == "export_report"
    assert entry.object_id == "completion"
    assert entry.patient_id is None
    assert entry.detail["rows"] == 2
    assert entry.detail["date_from"] == "2025-03-01"


def test_csv_headers_follow_the_language(world: World, answers_scene: None) -> None:
    client = client_for(world.sam, "zh-hans")

    completion = read_csv(client.get(EXPORT_URL, {"report": "completion", **MARCH_QUERY}))
    by_doctor = read_csv(client.get(EXPORT_URL, {"report": "satisfaction", "dimension": "doctor", **MARCH_QUERY}))

    assert completion[0][0] == "科室"
    assert by_doctor[0][0] == "医生"


def test_csv_cells_that_look_like_formulas_are_escaped(
    world: World, survey: Survey, discharge: Callable[..., Discharge]
) -> None:
    for doctor in ('=HYPERLINK("http://evil")', "+1", "-2", "@SUM(A1)", "Dr. Wang"):
        made = discharge(local(3), attending_doctor=doctor)
        session(world, survey, made, closed_at=local(10), answers={"recommend": 3})

    response = client_for(world.ada).get(EXPORT_URL, {"report": "nps", "dimension": "doctor", **MARCH_QUERY})

    rows = read_csv(response)
    assert sorted(row[0] for row in rows[1:]) == sorted(
        ['\'=HYPERLINK("http://evil")', "'+1", "'-2", "'@SUM(A1)", "Dr. Wang"]
    )
    # Numbers stay numbers, negative ones included.
    assert {row[-1] for row in rows[1:]} == {"-100.0"}


@pytest.mark.parametrize("report", ["completion", "satisfaction", "nps", "cases"])
def test_every_report_exports(
    world: World, report: str, completion_scene: None, answers_scene: None, cases_scene: None
) -> None:
    response = client_for(world.sam).get(EXPORT_URL, {"report": report, "bucket": "week", **MARCH_QUERY})

    assert response.status_code == 200
    rows = read_csv(response)
    assert len(rows) > 1
    assert all(len(row) == len(rows[0]) for row in rows)

"""Follow-up reports: read-only aggregates for managers (回访率, satisfaction, NPS, service recovery).

Every query groups in the database; only case medians may fall back to Python (SQLite has no
percentile aggregate). Periods are the discharge's local date in the hospital's time zone, so a
discharge at 23:30 on 31 March in Shanghai belongs to March whatever the server's clock says.
Rows carry staff names (doctor, nurse) and department names, never anything about a patient.
"""

from __future__ import annotations

import datetime as dt
import statistics
import zoneinfo
from dataclasses import dataclass, field
from typing import Any

from django.conf import settings
from django.db import connection
from django.db.models import (
    Aggregate,
    Avg,
    Count,
    DurationField,
    Exists,
    ExpressionWrapper,
    F,
    FloatField,
    Func,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    TextChoices,
)
from django.db.models.functions import TruncMonth, TruncWeek
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from callbacks.models import (
    CallbackTask,
    CallOutcome,
    CaseCategory,
    CaseStatus,
    Discharge,
    QuestionKind,
    ServiceCase,
    SessionStatus,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
    TaskKind,
    TaskStatus,
)

# Tasks the planner or a cancellation took out of follow-up: a discharge with only these was never due.
NOT_DUE_STATUSES = (TaskStatus.EXCLUDED, TaskStatus.CANCELLED)
RATING_VALUES = (1, 2, 3, 4, 5)
# Above this many closed cases in one report the SQLite median would read too many rows; PostgreSQL
# computes it in the database and has no such limit.
MEDIAN_ROW_LIMIT = 50_000


class Dimension(TextChoices):
    DEPARTMENT = "department", _("Department")
    DOCTOR = "doctor", _("Doctor")
    NURSE = "nurse", _("Nurse")
    WARD = "ward", _("Ward")


class Bucket(TextChoices):
    WEEK = "week", _("Week")
    MONTH = "month", _("Month")


# The Discharge field each dimension groups by; the department also brings its names along.
_DIMENSION_FIELDS: dict[str, tuple[str, ...]] = {
    Dimension.DEPARTMENT: ("department_id", "department__name", "department__name_zh"),
    Dimension.DOCTOR: ("attending_doctor",),
    Dimension.NURSE: ("primary_nurse",),
    Dimension.WARD: ("ward",),
}


def hospital_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


@dataclass(frozen=True)
class ReportPeriod:
    """Discharge dates from date_from to date_to inclusive, as the hospital's calendar reads them."""

    date_from: dt.date
    date_to: dt.date

    def __post_init__(self) -> None:
        if self.date_to < self.date_from:
            raise ValueError("date_to is before date_from")

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        zone = hospital_zone()
        start = dt.datetime.combine(self.date_from, dt.time.min, tzinfo=zone)
        end = dt.datetime.combine(self.date_to + dt.timedelta(days=1), dt.time.min, tzinfo=zone)
        return start, end

    @classmethod
    def last_days(cls, days: int, *, today: dt.date | None = None) -> ReportPeriod:
        today = today or timezone.localdate(timezone=hospital_zone())
        return cls(today - dt.timedelta(days=days - 1), today)


@dataclass(frozen=True)
class GroupKey:
    """One value of a dimension: a department (with both names) or a doctor, nurse or ward name."""

    key: str
    label: str
    label_zh: str = ""


@dataclass(frozen=True)
class CompletionRow:
    group: GroupKey
    bucket: dt.date | None
    due: int
    contacted: int
    within_deadline: int
    # Discharges with a call or survey that expired unsent: its contact deadline passed before it could start.
    expired: int = 0

    @property
    def rate(self) -> float | None:
        return _percent(self.contacted, self.due)

    @property
    def within_deadline_rate(self) -> float | None:
        return _percent(self.within_deadline, self.due)


@dataclass(frozen=True)
class SatisfactionRow:
    group: GroupKey
    bucket: dt.date | None
    responses: int
    mean: float | None
    # {1: n, 2: n, …, 5: n}
    distribution: dict[int, int] = field(default_factory=dict)


@dataclass(frozen=True)
class NpsRow:
    group: GroupKey
    bucket: dt.date | None
    responses: int
    promoters: int
    passives: int
    detractors: int

    @property
    def nps(self) -> float | None:
        if not self.responses:
            return None
        return round(100 * (self.promoters - self.detractors) / self.responses, 1)


@dataclass(frozen=True)
class CaseCategoryRow:
    category: str
    total: int
    # {status: n} for every CaseStatus, zeros included.
    by_status: dict[str, int]
    closed: int
    breached: int
    mean_hours_to_close: float | None
    median_hours_to_close: float | None


def _percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


def _trunc(bucket: str | None, path: str) -> Any:
    if bucket == Bucket.WEEK:
        return TruncWeek(path, tzinfo=hospital_zone())
    if bucket == Bucket.MONTH:
        return TruncMonth(path, tzinfo=hospital_zone())
    if bucket is None:
        return None
    raise ValueError(f"unknown bucket {bucket!r}")


def _bucket_date(value: dt.datetime | dt.date | None) -> dt.date | None:
    if isinstance(value, dt.datetime):
        # Trunc with tzinfo returns the local midnight, aware in the hospital zone.
        return timezone.localtime(value, hospital_zone()).date() if timezone.is_aware(value) else value.date()
    return value


def _group_key(row: dict[str, Any], dimension: str | None, prefix: str) -> GroupKey:
    if dimension is None:
        return GroupKey(key="", label="")
    if dimension == Dimension.DEPARTMENT:
        return GroupKey(
            key=str(row[f"{prefix}department_id"]),
            label=row[f"{prefix}department__name"] or "",
            label_zh=row[f"{prefix}department__name_zh"] or "",
        )
    value = row[f"{prefix}{_DIMENSION_FIELDS[dimension][0]}"] or ""
    return GroupKey(key=value, label=value, label_zh=value)


def _aggregate_rows(
    qs: QuerySet[Any],
    *,
    dimension: str | None,
    prefix: str,
    bucket: str | None,
    date_path: str,
    aggregates: dict[str, Any],
) -> list[dict[str, Any]]:
    """GROUP BY the dimension's fields (and the time bucket) in the database; one row per group.

    With neither a dimension nor a bucket it is one row over the whole filter (none when it is empty).
    """
    if dimension is not None and dimension not in _DIMENSION_FIELDS:
        raise ValueError(f"unknown dimension {dimension!r}")
    names = [f"{prefix}{name}" for name in _DIMENSION_FIELDS[dimension]] if dimension is not None else []
    trunc = _trunc(bucket, date_path)
    if trunc is not None:
        qs = qs.annotate(report_bucket=trunc)
        names.append("report_bucket")
    if not names:
        total = qs.aggregate(**aggregates)
        return [total] if total.get("n") else []
    return list(qs.values(*names).annotate(**aggregates).order_by(*names))


# --- 回访率: follow-up completion and within-deadline rate ------------------------------------------


def _discharges_due(*, period: ReportPeriod, department_id: int | None, as_of: dt.datetime) -> QuerySet[Discharge]:
    """Discharges in the period with at least one live task whose due time has come."""
    start, end = period.bounds()
    live_tasks = CallbackTask.objects.filter(discharge=OuterRef("pk")).exclude(status__in=NOT_DUE_STATUSES)
    qs = Discharge.objects.filter(discharged_at__gte=start, discharged_at__lt=end).filter(
        Exists(live_tasks.filter(due_at__lte=as_of))
    )
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    first_deadline = live_tasks.order_by("due_at", "id").values("deadline_at")[:1]
    return qs.annotate(first_deadline_at=Subquery(first_deadline))


def completion_rates(
    *,
    period: ReportPeriod,
    department_id: int | None = None,
    bucket: str | None = None,
    as_of: dt.datetime | None = None,
) -> list[CompletionRow]:
    """Per department (and bucket): discharges due, discharges contacted, and contacted by the first deadline.

    Contact means a nurse call completed with the patient reached, or an SMS survey completed; expired
    counts discharges with a step whose contact deadline passed before it could start (nothing sent). A
    discharge counts as due once one of its tasks (not excluded or cancelled) has come due by `as_of`,
    so discharges from yesterday whose first call is tomorrow do not drag the rate down.
    """
    as_of = as_of or timezone.now()
    reached_calls = CallbackTask.objects.filter(
        discharge=OuterRef("pk"), kind=TaskKind.CALL, status=TaskStatus.COMPLETED, outcome=CallOutcome.REACHED
    )
    completed_surveys = SurveySession.objects.filter(discharge=OuterRef("pk"), status=SessionStatus.COMPLETED)
    contacted = Q(Exists(reached_calls)) | Q(Exists(completed_surveys))
    expired = Q(Exists(CallbackTask.objects.filter(discharge=OuterRef("pk"), status=TaskStatus.EXPIRED)))
    # min(first call, first survey) <= deadline  ⇔  either one is; NULLs (no such contact) compare false.
    within = Q(Exists(reached_calls.filter(completed_at__lte=OuterRef("first_deadline_at")))) | Q(
        Exists(completed_surveys.filter(closed_at__lte=OuterRef("first_deadline_at")))
    )
    qs = _discharges_due(period=period, department_id=department_id, as_of=as_of)
    rows = _aggregate_rows(
        qs,
        dimension=Dimension.DEPARTMENT,
        prefix="",
        bucket=bucket,
        date_path="discharged_at",
        aggregates={
            "n_due": Count("pk"),
            "n_contacted": Count("pk", filter=contacted),
            "n_within": Count("pk", filter=within),
            "n_expired": Count("pk", filter=expired),
        },
    )
    return [
        CompletionRow(
            group=_group_key(row, Dimension.DEPARTMENT, ""),
            bucket=_bucket_date(row.get("report_bucket")),
            due=row["n_due"],
            contacted=row["n_contacted"],
            within_deadline=row["n_within"],
            expired=row["n_expired"],
        )
        for row in rows
    ]


# --- Satisfaction (1–5 ratings) and NPS (0–10) ----------------------------------------------------


_ANSWER_DISCHARGE = "session__discharge__"


def _answers(
    *, period: ReportPeriod, kind: str, question_key: str | None, department_id: int | None
) -> QuerySet[SurveyAnswer]:
    start, end = period.bounds()
    qs = SurveyAnswer.objects.filter(
        question__kind=kind,
        value__isnull=False,
        session__discharge__discharged_at__gte=start,
        session__discharge__discharged_at__lt=end,
    )
    if question_key:
        qs = qs.filter(question__key=question_key)
    if department_id is not None:
        qs = qs.filter(session__discharge__department_id=department_id)
    return qs


def satisfaction(
    *,
    period: ReportPeriod,
    dimension: str | None = Dimension.DEPARTMENT,
    question_key: str | None = None,
    department_id: int | None = None,
    bucket: str | None = None,
) -> list[SatisfactionRow]:
    """Mean and distribution of 1–5 rating answers, by dimension and/or bucket of discharge date.

    dimension=None gives one row per bucket for everything in the filter (the hospital over time).
    """
    qs = _answers(
        period=period, kind=QuestionKind.RATING, question_key=question_key, department_id=department_id
    ).filter(value__in=RATING_VALUES)
    counts = {f"n_{v}": Count("pk", filter=Q(value=v)) for v in RATING_VALUES}
    rows = _aggregate_rows(
        qs,
        dimension=dimension,
        prefix=_ANSWER_DISCHARGE,
        bucket=bucket,
        date_path=f"{_ANSWER_DISCHARGE}discharged_at",
        aggregates={"n": Count("pk"), "mean": Avg("value", output_field=FloatField()), **counts},
    )
    return [
        SatisfactionRow(
            group=_group_key(row, dimension, _ANSWER_DISCHARGE),
            bucket=_bucket_date(row.get("report_bucket")),
            responses=row["n"],
            mean=round(float(row["mean"]), 2) if row["mean"] is not None else None,
            distribution={v: row[f"n_{v}"] for v in RATING_VALUES},
        )
        for row in rows
    ]


def nps(
    *,
    period: ReportPeriod,
    dimension: str | None = Dimension.DEPARTMENT,
    question_key: str | None = None,
    department_id: int | None = None,
    bucket: str | None = None,
) -> list[NpsRow]:
    """Promoters (9–10), passives (7–8), detractors (0–6) by dimension and/or bucket.

    dimension=None gives one row per bucket for everything in the filter (the hospital's NPS over time).
    """
    qs = _answers(period=period, kind=QuestionKind.NPS, question_key=question_key, department_id=department_id).filter(
        value__gte=0, value__lte=10
    )
    rows = _aggregate_rows(
        qs,
        dimension=dimension,
        prefix=_ANSWER_DISCHARGE,
        bucket=bucket,
        date_path=f"{_ANSWER_DISCHARGE}discharged_at",
        aggregates={
            "n": Count("pk"),
            "promoters": Count("pk", filter=Q(value__gte=9)),
            "passives": Count("pk", filter=Q(value__gte=7, value__lte=8)),
            "detractors": Count("pk", filter=Q(value__lte=6)),
        },
    )
    return [
        NpsRow(
            group=_group_key(row, dimension, _ANSWER_DISCHARGE),
            bucket=_bucket_date(row.get("report_bucket")),
            responses=row["n"],
            promoters=row["promoters"],
            passives=row["passives"],
            detractors=row["detractors"],
        )
        for row in rows
    ]


def question_keys(kind: str) -> list[str]:
    """The question keys reports can filter by, e.g. overall, doctor, nurse."""
    return sorted(set(SurveyQuestion.objects.filter(kind=kind).values_list("key", flat=True)))


# --- Service recovery (服务补救) --------------------------------------------------------------------


class _Median(Aggregate):
    """PostgreSQL's percentile_cont(0.5); other databases take the Python path in case_summary."""

    function = "percentile_cont"
    template = "%(function)s(0.5) WITHIN GROUP (ORDER BY %(expressions)s)"
    output_field = FloatField()


class _EpochSeconds(Func):
    """An interval in seconds (PostgreSQL)."""

    template = "EXTRACT(EPOCH FROM %(expressions)s)"
    output_field = FloatField()


def _cases(*, period: ReportPeriod, department_id: int | None) -> QuerySet[ServiceCase]:
    # Cases by the day they were opened: many have no discharge (recorded by staff), and a manager
    # reading "last quarter's cases" means cases opened then.
    start, end = period.bounds()
    qs = ServiceCase.objects.filter(created_at__gte=start, created_at__lt=end)
    if department_id is not None:
        qs = qs.filter(department_id=department_id)
    return qs


def median_hours_in_python(qs: QuerySet[ServiceCase]) -> dict[str, float]:
    """Median time to close by category, computed over at most MEDIAN_ROW_LIMIT closed cases."""
    seconds: dict[str, list[float]] = {}
    closed = qs.filter(closed_at__isnull=False).values_list("category", "created_at", "closed_at")
    for category, created_at, closed_at in closed[:MEDIAN_ROW_LIMIT]:
        assert closed_at is not None  # filtered above
        seconds.setdefault(category, []).append((closed_at - created_at).total_seconds())
    return {category: round(statistics.median(values) / 3600, 2) for category, values in seconds.items()}


def case_summary(
    *, period: ReportPeriod, department_id: int | None = None, median_in_database: bool | None = None
) -> list[CaseCategoryRow]:
    """Cases opened in the period, by category: counts per status, SLA breaches, time to close."""
    qs = _cases(period=period, department_id=department_id)
    if median_in_database is None:
        median_in_database = connection.vendor == "postgresql"
    duration = ExpressionWrapper(F("closed_at") - F("created_at"), output_field=DurationField())
    closed = Q(closed_at__isnull=False)
    per_status = {f"s_{status}": Count("pk", filter=Q(status=status)) for status in CaseStatus.values}
    annotations: dict[str, Any] = {
        "total": Count("pk"),
        "closed": Count("pk", filter=closed),
        "breached": Count("pk", filter=Q(escalated_at__isnull=False)),
        "mean_close": Avg(duration, filter=closed),
        **per_status,
    }
    if median_in_database:
        annotations["median_seconds"] = _Median(_EpochSeconds(duration), filter=closed)
    grouped: QuerySet[Any] = qs.values("category")
    rows: list[dict[str, Any]] = list(grouped.annotate(**annotations).order_by("category"))
    medians = {} if median_in_database else median_hours_in_python(qs)
    order = {value: i for i, value in enumerate(CaseCategory.values)}
    rows.sort(key=lambda row: order.get(row["category"], len(order)))
    result = []
    for row in rows:
        mean_close: dt.timedelta | None = row["mean_close"]
        if median_in_database:
            median = row["median_seconds"]
            median_hours = round(median / 3600, 2) if median is not None else None
        else:
            median_hours = medians.get(row["category"])
        result.append(
            CaseCategoryRow(
                category=row["category"],
                total=row["total"],
                by_status={status: row[f"s_{status}"] for status in CaseStatus.values},
                closed=row["closed"],
                breached=row["breached"],
                mean_hours_to_close=round(mean_close.total_seconds() / 3600, 2) if mean_close is not None else None,
                median_hours_to_close=median_hours,
            )
        )
    return result

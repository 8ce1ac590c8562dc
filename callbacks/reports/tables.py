"""Selector rows → what the page, its charts and the CSV export show, in the active language."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from django.utils.translation import get_language
from django.utils.translation import gettext as _

from callbacks.models import CaseCategory, CaseStatus
from callbacks.reports import selectors
from callbacks.reports.filters import ReportFilters
from callbacks.reports.selectors import Bucket, GroupKey
from contactcenter.spreadsheets import Cell

REPORTS = ("completion", "satisfaction", "nps", "cases")


def _zh() -> bool:
    return (get_language() or "").lower().startswith("zh")


def group_label(group: GroupKey) -> str:
    label = (group.label_zh if _zh() and group.label_zh else group.label).strip()
    return label or _("Not recorded")


def bucket_label(bucket: dt.date | None, kind: str) -> str:
    if bucket is None:
        return ""
    if kind == Bucket.MONTH:
        return bucket.strftime("%Y-%m")
    return bucket.isoformat()


def dimension_header(dimension: str) -> str:
    return str(selectors.Dimension(dimension).label)


@dataclass(frozen=True)
class Report:
    """Everything one page view shows: aggregate totals for the tables, series for the charts."""

    completion: list[selectors.CompletionRow]
    completion_total: selectors.CompletionRow
    satisfaction: list[selectors.SatisfactionRow]
    satisfaction_trend: list[selectors.SatisfactionRow]
    nps: list[selectors.NpsRow]
    nps_trend: list[selectors.NpsRow]
    cases: list[selectors.CaseCategoryRow]


def build_report(filters: ReportFilters) -> Report:
    common: dict[str, Any] = {"period": filters.period, "department_id": filters.department_id}
    completion = selectors.completion_rates(**common)
    total = selectors.CompletionRow(
        group=GroupKey(key="", label=""),
        bucket=None,
        due=sum(r.due for r in completion),
        contacted=sum(r.contacted for r in completion),
        within_deadline=sum(r.within_deadline for r in completion),
        expired=sum(r.expired for r in completion),
    )
    question = filters.question or None
    satisfaction = selectors.satisfaction(dimension=filters.dimension, question_key=question, **common)
    return Report(
        completion=completion,
        completion_total=total,
        satisfaction=satisfaction,
        satisfaction_trend=selectors.satisfaction(
            dimension=None, question_key=question, bucket=filters.bucket, **common
        ),
        nps=selectors.nps(dimension=filters.dimension, **common),
        nps_trend=selectors.nps(dimension=None, bucket=filters.bucket, **common),
        cases=selectors.case_summary(**common),
    )


def page_data(report: Report, filters: ReportFilters) -> dict[str, Any]:
    """What the tables show and the SVG charts draw (one JSON block); labels in the active language."""
    total = report.completion_total
    return {
        "completion": [
            {
                "label": group_label(r.group),
                "due": r.due,
                "contacted": r.contacted,
                "rate": r.rate,
                "within": r.within_deadline,
                "within_rate": r.within_deadline_rate,
                "expired": r.expired,
            }
            for r in report.completion
        ],
        "completion_total": {
            "due": total.due,
            "contacted": total.contacted,
            "rate": total.rate,
            "within": total.within_deadline,
            "within_rate": total.within_deadline_rate,
            "expired": total.expired,
        },
        "satisfaction": [
            {
                "label": group_label(r.group),
                "mean": r.mean,
                "responses": r.responses,
                "values": [r.distribution[v] for v in selectors.RATING_VALUES],
            }
            for r in report.satisfaction
        ],
        "satisfaction_trend": [
            {"label": bucket_label(r.bucket, filters.bucket), "value": r.mean, "n": r.responses}
            for r in report.satisfaction_trend
        ],
        "nps": [
            {
                "label": group_label(r.group),
                "responses": r.responses,
                "promoters": r.promoters,
                "passives": r.passives,
                "detractors": r.detractors,
                "nps": r.nps,
            }
            for r in report.nps
        ],
        "nps_trend": [
            {"label": bucket_label(r.bucket, filters.bucket), "value": r.nps, "n": r.responses}
            for r in report.nps_trend
        ],
        "cases": [
            {
                "label": category_label(r.category),
                "total": r.total,
                "values": [r.by_status[s] for s in CaseStatus.values],
                "closed": r.closed,
                "breached": r.breached,
                "mean_hours": r.mean_hours_to_close,
                "median_hours": r.median_hours_to_close,
            }
            for r in report.cases
        ],
        "case_statuses": [str(label) for label in CaseStatus.labels],
    }


def category_label(category: str) -> str:
    return str(CaseCategory(category).label) if category in CaseCategory.values else category


# --- CSV ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class CsvTable:
    header: list[str]
    rows: list[list[Cell]]


def _period_header() -> str:
    return _("Period starting")


def csv_table(report: str, filters: ReportFilters) -> CsvTable:
    """The rows behind one report, by dimension and time bucket so a spreadsheet can pivot them."""
    builders: dict[str, Callable[[ReportFilters], CsvTable]] = {
        "completion": _completion_csv,
        "satisfaction": _satisfaction_csv,
        "nps": _nps_csv,
        "cases": _cases_csv,
    }
    return builders[report](filters)


def _completion_csv(filters: ReportFilters) -> CsvTable:
    rows = selectors.completion_rates(period=filters.period, department_id=filters.department_id, bucket=filters.bucket)
    header = [
        _("Department"),
        _period_header(),
        _("Discharges due"),
        _("Contacted"),
        _("Completion rate %"),
        _("Contacted within deadline"),
        _("Within-deadline rate %"),
        _("Expired unsent"),
    ]
    return CsvTable(
        header,
        [
            [
                group_label(r.group),
                bucket_label(r.bucket, filters.bucket),
                r.due,
                r.contacted,
                r.rate,
                r.within_deadline,
                r.within_deadline_rate,
                r.expired,
            ]
            for r in rows
        ],
    )


def _satisfaction_csv(filters: ReportFilters) -> CsvTable:
    rows = selectors.satisfaction(
        period=filters.period,
        dimension=filters.dimension,
        question_key=filters.question or None,
        department_id=filters.department_id,
        bucket=filters.bucket,
    )
    header: list[str] = [
        dimension_header(filters.dimension),
        _period_header(),
        _("Question"),
        _("Responses"),
        _("Mean (1–5)"),
    ]
    header += [_("Rated %(score)s") % {"score": v} for v in selectors.RATING_VALUES]
    question = filters.question or _("All rating questions")
    return CsvTable(
        header,
        [
            [
                group_label(r.group),
                bucket_label(r.bucket, filters.bucket),
                question,
                r.responses,
                r.mean,
                *(r.distribution[v] for v in selectors.RATING_VALUES),
            ]
            for r in rows
        ],
    )


def _nps_csv(filters: ReportFilters) -> CsvTable:
    rows = selectors.nps(
        period=filters.period,
        dimension=filters.dimension,
        department_id=filters.department_id,
        bucket=filters.bucket,
    )
    header = [
        dimension_header(filters.dimension),
        _period_header(),
        _("Responses"),
        _("Promoters (9–10)"),
        _("Passives (7–8)"),
        _("Detractors (0–6)"),
        _("NPS"),
    ]
    return CsvTable(
        header,
        [
            [
                group_label(r.group),
                bucket_label(r.bucket, filters.bucket),
                r.responses,
                r.promoters,
                r.passives,
                r.detractors,
                r.nps,
            ]
            for r in rows
        ],
    )


def _cases_csv(filters: ReportFilters) -> CsvTable:
    rows = selectors.case_summary(period=filters.period, department_id=filters.department_id)
    header: list[str] = [_("Category"), _("Cases")]
    header += [str(label) for label in CaseStatus.labels]
    header += [_("SLA breaches"), _("Mean hours to close"), _("Median hours to close")]
    return CsvTable(
        header,
        [
            [
                category_label(r.category),
                r.total,
                *(r.by_status[s] for s in CaseStatus.values),
                r.breached,
                r.mean_hours_to_close,
                r.median_hours_to_close,
            ]
            for r in rows
        ],
    )

"""The report filters from a query string: parsed once, every mistake a message a person can act on."""

from __future__ import annotations

import datetime as dt
import re
from dataclasses import dataclass

from django.http import QueryDict
from django.utils.translation import gettext as _

from callbacks.models import QuestionKind
from callbacks.reports.selectors import Bucket, Dimension, ReportPeriod, question_keys
from contactcenter.models import Team

DEFAULT_DAYS = 90
# A bound on how much one request may aggregate; ten years of discharges is already more than any report needs.
MAX_DAYS = 3660
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
PREFERRED_QUESTION = "overall"


class FilterError(ValueError):
    """A query parameter a person typed wrong; the message is translated and safe to show."""


@dataclass(frozen=True)
class ReportFilters:
    period: ReportPeriod
    department: Team | None
    dimension: str
    bucket: str
    question: str  # a rating question key, or "" for every rating question

    @property
    def department_id(self) -> int | None:
        return self.department.pk if self.department is not None else None

    def as_audit_detail(self) -> dict[str, object]:
        return {
            "date_from": self.period.date_from.isoformat(),
            "date_to": self.period.date_to.isoformat(),
            "department_id": self.department_id,
            "dimension": self.dimension,
            "bucket": self.bucket,
            "question": self.question,
        }


def _date(params: QueryDict, name: str, default: dt.date) -> dt.date:
    raw = params.get(name, "").strip()
    if not raw:
        return default
    if not _ISO_DATE.fullmatch(raw):
        raise FilterError(_("Dates must be written as YYYY-MM-DD, e.g. 2025-03-31."))
    try:
        return dt.date.fromisoformat(raw)
    except ValueError:
        raise FilterError(_("%(value)s is not a date on the calendar.") % {"value": raw}) from None


def parse_filters(params: QueryDict) -> ReportFilters:
    default = ReportPeriod.last_days(DEFAULT_DAYS)
    date_from = _date(params, "from", default.date_from)
    date_to = _date(params, "to", default.date_to)
    if date_to < date_from:
        raise FilterError(_("The end date is before the start date."))
    if (date_to - date_from).days >= MAX_DAYS:
        raise FilterError(_("Choose a period of at most ten years."))

    department: Team | None = None
    raw_department = params.get("department", "").strip()
    if raw_department:
        if not raw_department.isascii() or not raw_department.isdigit():
            raise FilterError(_("Unknown department."))
        department = Team.objects.filter(pk=int(raw_department)).first()
        if department is None:
            raise FilterError(_("Unknown department."))

    dimension = params.get("dimension", "").strip() or Dimension.DEPARTMENT
    if dimension not in Dimension.values:
        raise FilterError(_("Group by department, doctor, nurse or ward."))
    bucket = params.get("bucket", "").strip() or Bucket.MONTH
    if bucket not in Bucket.values:
        raise FilterError(_("Show trends by week or by month."))

    keys = question_keys(QuestionKind.RATING)
    if "question" in params:
        question = params.get("question", "").strip()
        if question and question not in keys:
            raise FilterError(_("Unknown survey question."))
    else:
        question = PREFERRED_QUESTION if PREFERRED_QUESTION in keys else ""

    return ReportFilters(
        period=ReportPeriod(date_from, date_to),
        department=department,
        dimension=dimension,
        bucket=bucket,
        question=question,
    )

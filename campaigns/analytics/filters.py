"""Who may read campaign analytics, and the query parameters they take, parsed once for pages and API.

Every mistake is a message a person can act on, tied to the parameter that caused it, so the API can
answer a 400 with field errors and a page can show it.
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Mapping

from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.analytics.selectors import Bucket, Period, hospital_zone
from contactcenter import access
from contactcenter.access import StaffUser
from contactcenter.models import Role

ANALYTICS_ROLES = frozenset({Role.MARKETER, Role.ADMIN, Role.SUPERVISOR})
DEFAULT_DAYS = 30
# A bound on one request's work; two years of daily points is already more than a chart can show.
MAX_DAYS = 731
_ISO_DATE = re.compile(r"\d{4}-\d{2}-\d{2}")
EARLIEST = dt.date(1900, 1, 1)
LATEST = dt.date(2999, 12, 31)


def may_read_analytics(user: StaffUser | None) -> bool:
    """Marketers, supervisors and admins: the numbers carry no patient's name, only counts."""
    return access.role_of(user) in ANALYTICS_ROLES


class FilterError(ValueError):
    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


def _date(params: Mapping[str, str], name: str, default: dt.date) -> dt.date:
    raw = (params.get(name) or "").strip()
    if not raw:
        return default
    if not _ISO_DATE.fullmatch(raw):
        raise FilterError(name, _("Dates must be written as YYYY-MM-DD, e.g. 2025-03-31."))
    try:
        value = dt.date.fromisoformat(raw)
    except ValueError:
        raise FilterError(name, _("%(value)s is not a date on the calendar.") % {"value": raw}) from None
    # The period is widened by days and time zones on its way to SQL; near year 1 or 9999 that overflows.
    if not (EARLIEST <= value <= LATEST):
        raise FilterError(name, _("Choose a date between 1900 and 2999."))
    return value


def parse_period(params: Mapping[str, str], *, today: dt.date | None = None) -> Period:
    """`from` and `to` (hospital dates, inclusive); the last 30 days by default."""
    today = today or timezone.localdate(timezone=hospital_zone())
    date_to = _date(params, "to", today)
    date_from = _date(params, "from", date_to - dt.timedelta(days=DEFAULT_DAYS - 1))
    if date_to < date_from:
        raise FilterError("to", _("The end date is before the start date."))
    if (date_to - date_from).days >= MAX_DAYS:
        raise FilterError("from", _("Choose a period of at most two years."))
    return Period(date_from, date_to)


def parse_bucket(params: Mapping[str, str]) -> str | None:
    """`bucket`: hour or day; None (left out) lets the selector choose by the campaign's length."""
    raw = (params.get("bucket") or "").strip()
    if not raw:
        return None
    if raw not in Bucket.values:
        raise FilterError("bucket", _("Show activity by hour or by day."))
    return raw

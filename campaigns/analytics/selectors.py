"""Campaign analytics: read-only aggregates over campaign recipients, grouped in the database.

What the numbers mean (the page and the CSV say the same):

- sent: handed to the SMS provider (sent_at set, or the row reached sent, delivered or failed; a send
  the provider rejected outright is a failure that was sent). Every rate is a share of sent, except
  the funnel, which also shows each step as a share of the recipients.
- delivered: the provider reported delivery. failed: it reported (or answered) a failure; grouped by
  error code with a readable reason. skipped: never sent, by reason (opted out, no consent, invalid, missing
  personalisation).
- replied / opted out: set by campaigns.replies when the patient answered within the campaign's
  conversion window (an opt-out keyword is an opt-out, not a reply).
- conversions, last-touch: a visit (Visit.admitted_at) after a message and within that campaign's
  conversion_window_days of it is credited to the latest campaign message the patient was sent
  before the visit whose window still covers the visit; older campaigns get nothing for it. A
  recipient converted when at least one visit is credited to them. Computed here in SQL from the
  visits themselves, so a visit imported late, corrected or removed changes the numbers at once.

Time buckets (hour or day) are read in the hospital's time zone. Everything runs on PostgreSQL and on
the embedded SQLite: no database-specific SQL.
"""

from __future__ import annotations

import datetime as dt
import zoneinfo
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from django.conf import settings
from django.db.models import (
    Count,
    DateTimeField,
    Exists,
    F,
    Func,
    Max,
    Min,
    OuterRef,
    Q,
    QuerySet,
    TextChoices,
    Value,
)
from django.db.models.functions import Coalesce, NullIf, TruncDay, TruncHour
from django.utils import timezone
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import Campaign, CampaignRecipient, RecipientState, Segment
from channels_adapters.twilio.errors import describe_error
from contactcenter.models import Visit

DAY = dt.timedelta(days=1)
SKIPPED_STATES = (
    RecipientState.SKIPPED_OPTED_OUT,
    RecipientState.SKIPPED_NO_CONSENT,
    RecipientState.SKIPPED_INVALID,
    RecipientState.SKIPPED_MISSING,
)
# What campaigns.sending.delivery_states records when a failed message came with no code.
UNKNOWN_ERROR = "unknown"
# A time series longer than this is drawn by day even when hours were asked for.
MAX_POINTS = 800
# Up to this long a campaign's activity is shown by the hour by default.
HOURLY_UP_TO = dt.timedelta(hours=48)


class Bucket(TextChoices):
    HOUR = "hour", gettext_lazy("Hour")
    DAY = "day", gettext_lazy("Day")


def hospital_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


def percent(part: int, whole: int) -> float | None:
    return round(100 * part / whole, 1) if whole else None


# --- Conversions (last-touch) ---------------------------------------------------------------------


def _touches() -> QuerySet[CampaignRecipient]:
    """Campaign messages that reached (or may have reached) the patient: sent and not failed."""
    return CampaignRecipient.objects.filter(sent_at__isnull=False).exclude(state=RecipientState.FAILED)


class AddDays(Func):
    """datetime + a whole number of days taken from a column: portable, unlike interval arithmetic.

    Django multiplies a duration by a column on PostgreSQL but refuses to on SQLite, whose datetimes
    are text; there Django's own django_format_dtdelta() adds microseconds and gives text that
    compares correctly with the stored datetimes.
    """

    arity = 2
    output_field = DateTimeField()

    def as_sql(
        self,
        compiler: Any,
        connection: Any,
        function: str | None = None,
        template: str | None = None,
        arg_joiner: str | None = None,
        **extra_context: Any,
    ) -> tuple[str, tuple[Any, ...]]:
        (moment, moment_params), (days, days_params) = (compiler.compile(e) for e in self.source_expressions)
        return f"({moment} + ({days}) * INTERVAL '1 day')", (*moment_params, *days_params)

    def as_sqlite(self, compiler: Any, connection: Any, **extra_context: Any) -> tuple[str, tuple[Any, ...]]:
        (moment, moment_params), (days, days_params) = (compiler.compile(e) for e in self.source_expressions)
        return f"django_format_dtdelta('+', {moment}, ({days}) * 86400000000)", (*moment_params, *days_params)


def _window_end(sent_at: Any, window_days: Any) -> AddDays:
    """The end of a message's conversion window: sent_at + the campaign's conversion_window_days."""
    return AddDays(sent_at, window_days)


def converted_q() -> Q:
    """True for a recipient row (the outer query) that is credited with at least one visit.

    A visit of the recipient's patient counts when it falls in (sent_at, sent_at + window] and no
    later message to the same patient (another campaign's) was sent before the visit with a window
    that also covers it; equal send times go to the higher row id so exactly one message wins.
    """
    later_touch = (
        _touches()
        .filter(patient_id=OuterRef("patient_id"), sent_at__lt=OuterRef("admitted_at"))
        .alias(window_end=_window_end(F("sent_at"), F("campaign__conversion_window_days")))
        .filter(window_end__gte=OuterRef("admitted_at"))
        .filter(
            Q(sent_at__gt=OuterRef(OuterRef("sent_at")))
            | Q(sent_at=OuterRef(OuterRef("sent_at")), pk__gt=OuterRef(OuterRef("pk")))
        )
    )
    credited_visits = Visit.objects.filter(
        patient_id=OuterRef("patient_id"),
        admitted_at__gt=OuterRef("sent_at"),
        admitted_at__lte=_window_end(OuterRef("sent_at"), OuterRef("campaign__conversion_window_days")),
    ).filter(~Exists(later_touch))
    return Q(Exists(credited_visits), sent_at__isnull=False) & ~Q(state=RecipientState.FAILED)


# --- Counters -------------------------------------------------------------------------------------

SENT_Q = Q(sent_at__isnull=False) | Q(state__in=(RecipientState.SENT, RecipientState.DELIVERED, RecipientState.FAILED))
DELIVERED_Q = Q(delivered_at__isnull=False) | Q(state=RecipientState.DELIVERED)


def _counters() -> dict[str, Any]:
    return {
        "recipients": Count("pk"),
        "pending": Count("pk", filter=Q(state=RecipientState.PENDING)),
        "deferred": Count("pk", filter=Q(state=RecipientState.DEFERRED)),
        "sent": Count("pk", filter=SENT_Q),
        "delivered": Count("pk", filter=DELIVERED_Q),
        "failed": Count("pk", filter=Q(state=RecipientState.FAILED)),
        "skipped": Count("pk", filter=Q(state__in=SKIPPED_STATES)),
        "cancelled": Count("pk", filter=Q(state=RecipientState.CANCELLED)),
        "replied": Count("pk", filter=Q(replied_at__isnull=False)),
        "opted_out": Count("pk", filter=Q(opted_out_at__isnull=False)),
        "converted": Count("pk", filter=converted_q()),
    }


COUNTER_NAMES = tuple(_counters())


@dataclass(frozen=True)
class Totals:
    recipients: int = 0
    pending: int = 0
    deferred: int = 0
    sent: int = 0
    delivered: int = 0
    failed: int = 0
    skipped: int = 0
    cancelled: int = 0
    replied: int = 0
    opted_out: int = 0
    converted: int = 0

    @classmethod
    def of(cls, row: Mapping[str, Any]) -> Totals:
        return cls(**{name: int(row.get(name) or 0) for name in COUNTER_NAMES})

    def rates(self) -> dict[str, float | None]:
        return {
            "delivery": percent(self.delivered, self.sent),
            "failure": percent(self.failed, self.sent),
            "reply": percent(self.replied, self.sent),
            "opt_out": percent(self.opted_out, self.sent),
            "conversion": percent(self.converted, self.sent),
        }

    def as_dict(self) -> dict[str, int]:
        return {name: getattr(self, name) for name in COUNTER_NAMES}


def totals(recipients: QuerySet[CampaignRecipient]) -> Totals:
    return Totals.of(recipients.aggregate(**_counters()))


@dataclass(frozen=True)
class FailureRow:
    error_code: str
    reason: str
    count: int


def failures(recipients: QuerySet[CampaignRecipient]) -> list[FailureRow]:
    """Failed recipients by error code (the recipient's, else its message's), most frequent first."""
    code = Coalesce(NullIf(F("error_code"), Value("")), NullIf(F("message__error_code"), Value("")), Value(""))
    rows = (
        recipients.filter(state=RecipientState.FAILED)
        .annotate(code=code)
        .values("code")
        .annotate(n=Count("pk"))
        .order_by("-n", "code")
    )
    return [FailureRow(error_code=row["code"], reason=error_reason(row["code"]), count=row["n"]) for row in rows]


def error_reason(code: str) -> str:
    """Twilio's codes in words; the provider's own error text is not used: it may quote the number."""
    if not code or code == UNKNOWN_ERROR:
        return _("No error code reported")
    return describe_error(code) or _("Error %(code)s") % {"code": code}


@dataclass(frozen=True)
class SkipRow:
    state: str
    label: str
    count: int


def skipped(recipients: QuerySet[CampaignRecipient]) -> list[SkipRow]:
    found = {
        row["state"]: row["n"]
        for row in recipients.filter(state__in=SKIPPED_STATES).values("state").annotate(n=Count("pk")).order_by()
    }
    return [SkipRow(state=s, label=str(RecipientState(s).label), count=found.get(s, 0)) for s in SKIPPED_STATES]


def funnel(t: Totals) -> list[dict[str, Any]]:
    """Recipients → sent → delivered → replied, each also as a share of the step before; then converted,
    which is not a subset of replied (a patient may book without answering), so it has no "step before"."""
    steps = [
        ("recipients", _("Recipients"), t.recipients, None),
        ("sent", _("Sent"), t.sent, t.recipients),
        ("delivered", _("Delivered"), t.delivered, t.sent),
        ("replied", _("Replied"), t.replied, t.delivered),
        ("converted", _("Converted (visited)"), t.converted, None),
    ]
    return [
        {
            "step": key,
            "label": label,
            "count": count,
            "of_recipients": percent(count, t.recipients),
            "of_previous": percent(count, previous) if previous is not None else None,
        }
        for key, label, count, previous in steps
    ]


# --- Over time ------------------------------------------------------------------------------------

SERIES_FIELDS = (("sent", "sent_at"), ("delivered", "delivered_at"), ("replied", "replied_at"))


def _trunc(bucket: str, path: str) -> Any:
    if bucket == Bucket.HOUR:
        return TruncHour(path, tzinfo=hospital_zone())
    return TruncDay(path, tzinfo=hospital_zone())


def _floor(moment: dt.datetime, bucket: str) -> dt.datetime:
    local = timezone.localtime(moment, hospital_zone())
    if bucket == Bucket.HOUR:
        return local.replace(minute=0, second=0, microsecond=0)
    return local.replace(hour=0, minute=0, second=0, microsecond=0)


def _step(moment: dt.datetime, bucket: str) -> dt.datetime:
    # Wall-clock steps in the hospital zone, so a day bucket stays a calendar day across a DST change.
    zone = hospital_zone()
    naive = moment.astimezone(zone).replace(tzinfo=None)
    naive += dt.timedelta(hours=1) if bucket == Bucket.HOUR else DAY
    return naive.replace(tzinfo=zone)


def _bucket_label(moment: dt.datetime, bucket: str) -> str:
    return moment.strftime("%Y-%m-%d %H:00" if bucket == Bucket.HOUR else "%Y-%m-%d")


def choose_bucket(recipients: QuerySet[CampaignRecipient], asked: str | None) -> str:
    """The caller's bucket when given; else hours for a campaign that sent within two days, days otherwise."""
    span = recipients.aggregate(first=Min("sent_at"), last=Max("sent_at"))
    if asked in Bucket.values:
        bucket = str(asked)
    elif span["first"] is not None and span["last"] - span["first"] <= HOURLY_UP_TO:
        bucket = Bucket.HOUR
    else:
        bucket = Bucket.DAY
    return bucket


def series(
    recipients: QuerySet[CampaignRecipient],
    *,
    bucket: str,
    start: dt.datetime | None = None,
    end: dt.datetime | None = None,
) -> dict[str, Any]:
    """Sent, delivered and replied per bucket, every bucket from the first to the last event (zeros too).

    Counting is grouped in SQL, one query per event; the empty buckets in between are filled here.
    `start`/`end` clip the events to a period (the overview) and fix the axis to it.
    """
    counts: dict[dt.datetime, dict[str, int]] = {}
    for name, path in SERIES_FIELDS:
        qs = recipients.filter(**{f"{path}__isnull": False})
        if start is not None:
            qs = qs.filter(**{f"{path}__gte": start})
        if end is not None:
            qs = qs.filter(**{f"{path}__lt": end})
        rows = qs.annotate(b=_trunc(bucket, path)).values("b").annotate(n=Count("pk")).order_by("b")
        for row in rows:
            key = _floor(row["b"], bucket)
            counts.setdefault(key, {})[name] = row["n"]
    first = _floor(start, bucket) if start is not None else min(counts, default=None)
    last = _floor(end - dt.timedelta(microseconds=1), bucket) if end is not None else max(counts, default=None)
    points: list[dict[str, Any]] = []
    if first is not None and last is not None:
        if bucket == Bucket.HOUR and (last - first) / dt.timedelta(hours=1) >= MAX_POINTS:
            return series(recipients, bucket=Bucket.DAY, start=start, end=end)
        moment = first
        while moment <= last:
            found = counts.get(moment, {})
            points.append(
                {
                    "start": moment.isoformat(),
                    "label": _bucket_label(moment, bucket),
                    **{name: found.get(name, 0) for name, _path in SERIES_FIELDS},
                }
            )
            moment = _step(moment, bucket)
    return {"bucket": bucket, "points": points}


# --- Per campaign, per segment, overview ----------------------------------------------------------


def _breakdown(recipients: QuerySet[CampaignRecipient]) -> dict[str, Any]:
    t = totals(recipients)
    return {
        "totals": t.as_dict(),
        "rates": t.rates(),
        "failures": [row.__dict__ for row in failures(recipients)],
        "skipped": [row.__dict__ for row in skipped(recipients)],
        "funnel": funnel(t),
    }


def _local_iso(moment: dt.datetime | None) -> str | None:
    return timezone.localtime(moment, hospital_zone()).isoformat() if moment is not None else None


def campaign_summary(campaign: Campaign) -> dict[str, Any]:
    return {
        "id": campaign.pk,
        "name": campaign.name,
        "status": campaign.status,
        "status_label": str(campaign.get_status_display()),
        "segment_id": campaign.segment_id,
        "segment_name": campaign.segment.name,
        "launched_at": _local_iso(campaign.launched_at),
        "completed_at": _local_iso(campaign.completed_at),
        "conversion_window_days": campaign.conversion_window_days,
    }


def campaign_analytics(campaign: Campaign, *, bucket: str | None = None) -> dict[str, Any]:
    recipients = CampaignRecipient.objects.filter(campaign=campaign)
    return {
        "campaign": campaign_summary(campaign),
        **_breakdown(recipients),
        "series": series(recipients, bucket=choose_bucket(recipients, bucket)),
    }


def campaign_rows(recipients: QuerySet[CampaignRecipient], campaigns: QuerySet[Campaign]) -> list[dict[str, Any]]:
    """One row per campaign (every campaign given, zeros for one with no recipients), newest first."""
    grouped = {
        row["campaign_id"]: Totals.of(row)
        for row in recipients.values("campaign_id").annotate(**_counters()).order_by("campaign_id")
    }
    rows = []
    for campaign in campaigns.select_related("segment").order_by("-launched_at", "-created_at", "-id"):
        t = grouped.get(campaign.pk, Totals())
        rows.append({"campaign": campaign_summary(campaign), "totals": t.as_dict(), "rates": t.rates()})
    return rows


def segment_analytics(segment: Segment, *, bucket: str | None = None) -> dict[str, Any]:
    """Every campaign sent to the segment, added up, and each campaign on its own row."""
    recipients = CampaignRecipient.objects.filter(campaign__segment=segment)
    return {
        "segment": {"id": segment.pk, "name": segment.name, "kind": segment.kind},
        **_breakdown(recipients),
        "campaigns": campaign_rows(recipients, Campaign.objects.filter(segment=segment, launched_at__isnull=False)),
        "series": series(recipients, bucket=choose_bucket(recipients, bucket or Bucket.DAY)),
    }


@dataclass(frozen=True)
class Period:
    """Hospital calendar dates, both inclusive."""

    date_from: dt.date
    date_to: dt.date

    def bounds(self) -> tuple[dt.datetime, dt.datetime]:
        zone = hospital_zone()
        start = dt.datetime.combine(self.date_from, dt.time.min, tzinfo=zone)
        end = dt.datetime.combine(self.date_to + DAY, dt.time.min, tzinfo=zone)
        return start, end


def overview(period: Period) -> dict[str, Any]:
    """Campaigns launched in the period: their totals (whole lifetime), each campaign, each segment.

    The series is the activity of those campaigns within the period, by day.
    """
    start, end = period.bounds()
    campaigns = Campaign.objects.filter(launched_at__gte=start, launched_at__lt=end)
    recipients = CampaignRecipient.objects.filter(campaign__in=campaigns)
    by_segment = {
        row["campaign__segment_id"]: Totals.of(row)
        for row in recipients.values("campaign__segment_id").annotate(**_counters()).order_by()
    }
    launched = {
        row["segment_id"]: row["n"] for row in campaigns.values("segment_id").annotate(n=Count("pk")).order_by()
    }
    segments = []
    for segment in Segment.objects.filter(pk__in=list(launched)).order_by("name", "id"):
        t = by_segment.get(segment.pk, Totals())
        segments.append(
            {
                "segment": {"id": segment.pk, "name": segment.name},
                "campaigns": launched[segment.pk],
                "totals": t.as_dict(),
                "rates": t.rates(),
            }
        )
    t = totals(recipients)
    return {
        "period": {"from": period.date_from.isoformat(), "to": period.date_to.isoformat()},
        "totals": t.as_dict(),
        "rates": t.rates(),
        "funnel": funnel(t),
        "failures": [row.__dict__ for row in failures(recipients)],
        "campaigns": campaign_rows(recipients, campaigns),
        "segments": segments,
        "series": series(recipients, bucket=Bucket.DAY, start=start, end=end),
    }

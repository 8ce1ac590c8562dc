"""Segment rules → one SQL query over patients.

Every rule becomes a condition on the patient row or an EXISTS / correlated aggregate over visits, tags,
consent or lifecycle, so AND/OR/NOT compose in the database and nothing is filtered in Python. Facts about
the last visit are written as EXISTS pairs ("has a visit, and none on or after the cut-off") rather than
MAX() so PostgreSQL can use the (patient, -admitted_at) index and stop at the first row.

Dates in rules are calendar days in the hospital's time zone (settings.TIME_ZONE), whatever language or
time zone the marketer's browser is in; ages are counted against the hospital's today.
"""

from __future__ import annotations

import datetime as dt
import functools
import operator
from collections.abc import Callable
from decimal import Decimal
from typing import Any

from django.db.models import (
    Count,
    DecimalField,
    Exists,
    IntegerField,
    OuterRef,
    Q,
    QuerySet,
    Subquery,
    Sum,
    Value,
)
from django.db.models.functions import Coalesce
from django.db.models.lookups import GreaterThanOrEqual, LessThanOrEqual
from django.utils import timezone

from campaigns.models import PatientLifecycle, Segment, SegmentKind, StaticListMember
from campaigns.segments.rules import (
    CONSENT_EXPLICIT_OPT_IN,
    CONSENT_OPTED_OUT,
    Group,
    Leaf,
    Range,
    latest_birth_date_for_age,
    months_before,
    parse_rules,
)
from contactcenter.models import Consent, ConsentPurpose, ConsentStatus, Patient, Visit, VisitKind

NOTHING = Q(pk__in=[])


class _Context:
    def __init__(self, now: dt.datetime | None) -> None:
        self.zone = timezone.get_default_timezone()
        self.now = now or timezone.now()
        self.today = timezone.localdate(self.now, self.zone)

    def start_of(self, day: dt.date) -> dt.datetime:
        return dt.datetime.combine(day, dt.time.min, tzinfo=self.zone)


def _visits(**filters: Any) -> QuerySet[Visit]:
    return Visit.objects.filter(patient=OuterRef("pk"), **filters)


def _has_visit(**filters: Any) -> Q:
    return Q(Exists(_visits(**filters)))


def _in_range(expression: Any, bounds: Range) -> Q:
    q = Q()
    if bounds.min is not None:
        q &= Q(GreaterThanOrEqual(expression, bounds.min))
    if bounds.max is not None:
        q &= Q(LessThanOrEqual(expression, bounds.max))
    return q


def _compare(expression: Any, op: str, value: Any) -> Q:
    if op == "gte":
        return _in_range(expression, Range(value, None))
    if op == "lte":
        return _in_range(expression, Range(None, value))
    assert op == "between"
    return _in_range(expression, value)


def _choice(field: str, leaf: Leaf) -> Q:
    q = Q(**{f"{field}__in": list(leaf.value)})
    return ~q if leaf.operator == "not_in" else q


def _last_time(leaf: Leaf, ctx: _Context, *, stamp: str, base: dict[str, Any]) -> Q:
    """Conditions on the latest visit (or discharge, or health check) time."""

    def since(day: dt.date) -> Q:
        return _has_visit(**base, **{f"{stamp}__gte": ctx.start_of(day)})

    if leaf.operator == "never":
        return ~_has_visit(**base)
    if leaf.operator == "before":
        return _has_visit(**base) & ~since(leaf.value)
    if leaf.operator == "after":
        return since(leaf.value + dt.timedelta(days=1))
    if leaf.operator == "within_days":
        return since(ctx.today - dt.timedelta(days=leaf.value))
    if leaf.operator == "within_months":
        return since(months_before(ctx.today, leaf.value))
    assert leaf.operator == "more_than_months_ago"
    return _has_visit(**base) & ~since(months_before(ctx.today, leaf.value))


def _age_at_least(ctx: _Context, age: int) -> Q:
    return Q(birth_date__lte=latest_birth_date_for_age(ctx.today, age))


def _age_below(ctx: _Context, age: int) -> Q:
    return Q(birth_date__gt=latest_birth_date_for_age(ctx.today, age))


def _age_band(leaf: Leaf, ctx: _Context) -> Q:
    bands = {
        "<35": _age_below(ctx, 35),
        "35-50": _age_at_least(ctx, 35) & _age_below(ctx, 51),
        ">50": _age_at_least(ctx, 51),
    }
    return functools.reduce(operator.or_, (bands[band] for band in leaf.value))


def _age(leaf: Leaf, ctx: _Context) -> Q:
    bounds: Range = leaf.value
    q = Q(birth_date__isnull=False)
    if bounds.min is not None:
        q &= _age_at_least(ctx, bounds.min)
    if bounds.max is not None:
        q &= _age_below(ctx, bounds.max + 1)
    return q


def _visit_count() -> Any:
    counted = _visits().order_by().values("patient").annotate(n=Count("pk")).values("n")
    return Coalesce(Subquery(counted, output_field=IntegerField()), 0)


def _total_spend() -> Any:
    summed = _visits().order_by().values("patient").annotate(s=Sum("amount")).values("s")
    money = DecimalField(max_digits=16, decimal_places=2)
    return Coalesce(Subquery(summed, output_field=money), Value(Decimal("0"), output_field=money))


def _tag(names: list[str]) -> Q:
    through = Patient.tags.through.objects.filter(patient_id=OuterRef("pk"), tag__name__in=names)
    return Q(Exists(through))


def _tags(leaf: Leaf) -> Q:
    if leaf.operator == "any_of":
        return _tag(list(leaf.value))
    if leaf.operator == "none_of":
        return ~_tag(list(leaf.value))
    assert leaf.operator == "all_of"
    return functools.reduce(operator.and_, (_tag([name]) for name in leaf.value))


def _lifecycle(column: str, leaf: Leaf) -> Q:
    # No lifecycle row counts as no stage: "in" never matches it, "not_in" always does.
    q = Q(Exists(PatientLifecycle.objects.filter(patient=OuterRef("pk"), **{f"{column}__in": list(leaf.value)})))
    return ~q if leaf.operator == "not_in" else q


def _consent(leaf: Leaf) -> Q:
    def with_status(status: str) -> Q:
        rows = Consent.objects.filter(patient=OuterRef("pk"), purpose=ConsentPurpose.MARKETING, status=status)
        return Q(Exists(rows))

    if leaf.value == CONSENT_EXPLICIT_OPT_IN:
        return with_status(ConsentStatus.OPTED_IN)
    if leaf.value == CONSENT_OPTED_OUT:
        return with_status(ConsentStatus.OPTED_OUT)
    # No row: never opted out (contactcenter.actions.consent.consent_status).
    return ~with_status(ConsentStatus.OPTED_OUT)


_LEAVES: dict[str, Callable[[Leaf, _Context], Q]] = {
    "age_band": _age_band,
    "age": _age,
    "gender": lambda leaf, ctx: _choice("gender", leaf),
    "region": lambda leaf, ctx: _choice("region", leaf),
    "city": lambda leaf, ctx: _choice("city", leaf),
    "language": lambda leaf, ctx: _choice("language", leaf),
    "vip_tier": lambda leaf, ctx: _choice("vip_tier", leaf),
    "department": lambda leaf, ctx: (
        _has_visit(department__code__in=list(leaf.value))
        if leaf.operator == "any_of"
        else ~_has_visit(department__code__in=list(leaf.value))
    ),
    "last_visit": lambda leaf, ctx: _last_time(leaf, ctx, stamp="admitted_at", base={}),
    "last_discharge": lambda leaf, ctx: _last_time(
        leaf, ctx, stamp="discharged_at", base={"discharged_at__isnull": False}
    ),
    "last_health_check": lambda leaf, ctx: _last_time(
        leaf, ctx, stamp="admitted_at", base={"kind": VisitKind.HEALTH_CHECK}
    ),
    "health_check_package": lambda leaf, ctx: _has_visit(kind=VisitKind.HEALTH_CHECK, package__in=list(leaf.value)),
    "visit_count": lambda leaf, ctx: _compare(_visit_count(), leaf.operator, leaf.value),
    "total_spend": lambda leaf, ctx: _compare(_total_spend(), leaf.operator, leaf.value),
    "tags": lambda leaf, ctx: _tags(leaf),
    "lifecycle_stage": lambda leaf, ctx: _lifecycle("stage", leaf),
    "value_type": lambda leaf, ctx: _lifecycle("value_type", leaf),
    "marketing_consent": lambda leaf, ctx: _consent(leaf),
}


def _group(group: Group, ctx: _Context) -> Q:
    parts = [_group(rule, ctx) if isinstance(rule, Group) else _LEAVES[rule.field](rule, ctx) for rule in group.rules]
    if not parts:
        # Only the top group may be empty: "and" of nothing is everyone, "or" of nothing no one.
        return Q() if group.op == "and" else NOTHING
    return functools.reduce(operator.and_ if group.op == "and" else operator.or_, parts)


def live_patients() -> QuerySet[Patient]:
    """Patients that exist in their own right: merged tombstones are never an audience."""
    return Patient.objects.filter(merged_into__isnull=True)


def patients_matching(rules: dict[str, Any], *, now: dt.datetime | None = None) -> QuerySet[Patient]:
    """The live patients the rule tree selects, as one query (RulesInvalid if the tree is malformed)."""
    return live_patients().filter(_group(parse_rules(rules), _Context(now)))


def segment_patients(segment: Segment, *, now: dt.datetime | None = None) -> QuerySet[Patient]:
    """A segment's audience now: its rules evaluated, or its static list. A listed patient merged since
    the upload is reached through the survivor (followed two merges deep)."""
    if segment.kind == SegmentKind.RULES:
        return patients_matching(segment.rules, now=now)
    members = StaticListMember.objects.filter(segment=segment)
    listed = members.values("patient_id")
    merged_once = members.filter(patient__merged_into__isnull=False).values("patient__merged_into_id")
    merged_twice = members.filter(patient__merged_into__merged_into__isnull=False).values(
        "patient__merged_into__merged_into_id"
    )
    return live_patients().filter(Q(pk__in=listed) | Q(pk__in=merged_once) | Q(pk__in=merged_twice))

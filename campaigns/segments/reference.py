"""A plain-Python evaluator of segment rules over patient facts, written to be obviously right rather than
fast. The tests compare the SQL compiler against it on generated patients and rule trees; nothing in the
product calls it.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from django.utils import timezone

from campaigns.models import PatientLifecycle
from campaigns.segments.rules import (
    CONSENT_EXPLICIT_OPT_IN,
    CONSENT_NOT_OPTED_OUT,
    CONSENT_OPTED_OUT,
    Group,
    Leaf,
    Range,
    months_before,
    parse_rules,
)
from contactcenter.models import Consent, ConsentPurpose, Patient, VisitKind


@dataclass(frozen=True)
class VisitFacts:
    department: str
    kind: str
    package: str
    amount: Decimal
    admitted_at: dt.datetime
    discharged_at: dt.datetime | None


@dataclass
class PatientFacts:
    id: int
    gender: str
    birth_date: dt.date | None
    region: str
    city: str
    language: str
    vip_tier: str
    merged: bool = False
    tags: set[str] = field(default_factory=set)
    visits: list[VisitFacts] = field(default_factory=list)
    stage: str | None = None  # None: no lifecycle row
    value_type: str | None = None
    marketing_consent: str | None = None  # None: no Consent row


def load_facts() -> list[PatientFacts]:
    """Every patient (tombstones included) with what the rules look at, read naively."""
    facts: dict[int, PatientFacts] = {}
    for patient in Patient.objects.prefetch_related("tags", "visits__department"):
        facts[patient.pk] = PatientFacts(
            id=patient.pk,
            gender=patient.gender,
            birth_date=patient.birth_date,
            region=patient.region,
            city=patient.city,
            language=patient.language,
            vip_tier=patient.vip_tier,
            merged=patient.merged_into_id is not None,
            tags={tag.name for tag in patient.tags.all()},
            visits=[
                VisitFacts(
                    department=visit.department.code,
                    kind=visit.kind,
                    package=visit.package,
                    amount=visit.amount,
                    admitted_at=visit.admitted_at,
                    discharged_at=visit.discharged_at,
                )
                for visit in patient.visits.all()
            ],
        )
    for lifecycle in PatientLifecycle.objects.all():
        facts[lifecycle.patient_id].stage = lifecycle.stage
        facts[lifecycle.patient_id].value_type = lifecycle.value_type
    for consent in Consent.objects.filter(purpose=ConsentPurpose.MARKETING):
        facts[consent.patient_id].marketing_consent = consent.status
    return list(facts.values())


def _local_day(moment: dt.datetime) -> dt.date:
    return timezone.localtime(moment, timezone.get_default_timezone()).date()


def _age(birth: dt.date, today: dt.date) -> int:
    return today.year - birth.year - ((today.month, today.day) < (birth.month, birth.day))


def _within(number: Any, bounds: Range) -> bool:
    return (bounds.min is None or number >= bounds.min) and (bounds.max is None or number <= bounds.max)


def _compare(number: Any, op: str, value: Any) -> bool:
    if op == "gte":
        return bool(number >= value)
    if op == "lte":
        return bool(number <= value)
    return _within(number, value)


def _last_day(days: list[dt.date], leaf: Leaf, today: dt.date) -> bool:
    if leaf.operator == "never":
        return not days
    if not days:
        return False
    last = max(days)
    if leaf.operator == "before":
        return bool(last < leaf.value)
    if leaf.operator == "after":
        return bool(last > leaf.value)
    if leaf.operator == "within_days":
        return (today - last).days <= leaf.value
    if leaf.operator == "within_months":
        return last >= months_before(today, leaf.value)
    assert leaf.operator == "more_than_months_ago"
    return last < months_before(today, leaf.value)


def _leaf(leaf: Leaf, p: PatientFacts, today: dt.date) -> bool:
    f, op, v = leaf.field, leaf.operator, leaf.value
    if f == "age_band":
        if p.birth_date is None:
            return False
        age = _age(p.birth_date, today)
        band = "<35" if age < 35 else "35-50" if age <= 50 else ">50"
        return band in v
    if f == "age":
        return p.birth_date is not None and _within(_age(p.birth_date, today), v)
    if f in ("gender", "region", "city", "language", "vip_tier"):
        return (getattr(p, f) in v) == (op == "in")
    if f == "department":
        visited = {visit.department for visit in p.visits}
        return bool(visited & set(v)) == (op == "any_of")
    if f == "last_visit":
        return _last_day([_local_day(visit.admitted_at) for visit in p.visits], leaf, today)
    if f == "last_discharge":
        days = [_local_day(visit.discharged_at) for visit in p.visits if visit.discharged_at is not None]
        return _last_day(days, leaf, today)
    checks = [visit for visit in p.visits if visit.kind == VisitKind.HEALTH_CHECK]
    if f == "last_health_check":
        return _last_day([_local_day(visit.admitted_at) for visit in checks], leaf, today)
    if f == "health_check_package":
        return any(visit.package in v for visit in checks)
    if f == "visit_count":
        return _compare(len(p.visits), op, v)
    if f == "total_spend":
        return _compare(sum((visit.amount for visit in p.visits), Decimal(0)), op, v)
    if f == "tags":
        if op == "any_of":
            return bool(p.tags & set(v))
        if op == "all_of":
            return set(v) <= p.tags
        return not p.tags & set(v)
    if f in ("lifecycle_stage", "value_type"):
        current = p.stage if f == "lifecycle_stage" else p.value_type
        return (current is not None and current in v) == (op == "in")
    if f == "marketing_consent":
        return {
            CONSENT_EXPLICIT_OPT_IN: p.marketing_consent == "opted_in",
            CONSENT_OPTED_OUT: p.marketing_consent == "opted_out",
            CONSENT_NOT_OPTED_OUT: p.marketing_consent != "opted_out",
        }[v]
    raise AssertionError(f"no reference for {f}")


def _matches(node: Group | Leaf, p: PatientFacts, today: dt.date) -> bool:
    if isinstance(node, Leaf):
        return _leaf(node, p, today)
    results = (_matches(rule, p, today) for rule in node.rules)
    return all(results) if node.op == "and" else any(results)


def reference_matching(rules: dict[str, Any], patients: Iterable[PatientFacts], *, now: dt.datetime) -> set[int]:
    tree = parse_rules(rules)
    today = _local_day(now)
    return {p.id for p in patients if not p.merged and _matches(tree, p, today)}

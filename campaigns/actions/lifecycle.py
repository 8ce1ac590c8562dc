"""Lifecycle stages and value types: recompute them and tune their rules.

The database aggregates visits (one query per batch of patients, never one per patient); the rules in
campaigns.lifecycle classify each patient; one upsert per batch writes PatientLifecycle. Patients without
a stage (no visit, never in touch) and merged-away patients have no row.

When it runs: after record_visit commits (contactcenter.visit_hooks → the recompute_lifecycles task for
those patients), after an admin changes the rules (everyone), and once a night after 02:00 hospital time
(the due-work job run_nightly_recompute), which also repairs anything a hook missed.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import Iterable
from decimal import Decimal
from typing import Any

from django.conf import settings
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Exists, Max, Min, OuterRef, Q, QuerySet, Sum
from django.utils import timezone, translation
from django.utils.translation import gettext as _

from campaigns import lifecycle
from campaigns.models import LifecycleRules, PatientLifecycle
from contactcenter import taskrunner
from contactcenter.models import Message, MessageDirection, Patient

logger = logging.getLogger(__name__)

RECOMPUTE_TASK = "campaigns.tasks.recompute_lifecycles"
NIGHTLY_AFTER = dt.time(2, 0)

# Field → (smallest, largest) an admin may set. Long-term needs at least two visits, or first-time
# (exactly one visit) could never happen.
RULE_LIMITS: dict[str, tuple[int | Decimal, int | Decimal]] = {
    "lapsed_after_months": (1, 240),
    "long_term_min_visits": (2, 1000),
    "value_min_spend": (Decimal("0"), Decimal("9999999999.99")),
    "benefit_min_visits": (1, 1000),
    "window_months": (1, 240),
}

_UPSERT_FIELDS = [
    "stage",
    "value_type",
    "visit_count",
    "total_spend",
    "window_visit_count",
    "window_spend",
    "first_visit_at",
    "last_visit_at",
    "explanation",
    "computed_at",
]


def get_rules() -> LifecycleRules:
    """The one rules row, created with the defaults the first time anyone asks."""
    rules, _created = LifecycleRules.objects.get_or_create(pk=1)
    return rules


def recompute_patient(patient: Patient, *, now: dt.datetime | None = None) -> PatientLifecycle | None:
    """Recompute one patient; returns the stored row, or None when the patient has no stage."""
    recompute_patients(patient_ids=[patient.pk], now=now)
    return PatientLifecycle.objects.filter(patient_id=patient.pk).first()


def recompute_patients(*, patient_ids: Iterable[int], now: dt.datetime | None = None) -> int:
    """Recompute the given patients (the visit hook's path); returns how many now have a stage."""
    ids = sorted(set(patient_ids))
    if not ids:
        return 0
    rules = get_rules()
    now = now or timezone.now()
    written = 0
    for start in range(0, len(ids), 2000):
        chunk = ids[start : start + 2000]
        written += _recompute(Patient.objects.filter(pk__in=chunk), ids=chunk, rules=rules, now=now)
    return written


def recompute_all(*, batch: int = 2000, now: dt.datetime | None = None) -> int:
    """Recompute every patient in batches by id; returns how many patients have a stage."""
    rules = get_rules()
    now = now or timezone.now()
    live = Patient.objects.filter(merged_into__isnull=True).order_by("pk")
    written = 0
    after = 0
    while True:
        ids = list(live.filter(pk__gt=after).values_list("pk", flat=True)[:batch])
        if not ids:
            break
        # A range rather than IN (2000 ids): the same rows, a smaller statement.
        in_range = Patient.objects.filter(pk__gte=ids[0], pk__lte=ids[-1])
        written += _recompute(in_range, ids=ids, rules=rules, now=now)
        after = ids[-1]
    # A patient merged into another since the last run keeps no row of its own.
    PatientLifecycle.objects.filter(patient__merged_into__isnull=False).delete()
    logger.info("lifecycle recomputed: %d patient(s) with a stage", written)
    return written


def _recompute(patients: QuerySet[Patient], *, ids: list[int], rules: LifecycleRules, now: dt.datetime) -> int:
    window_from = lifecycle.window_start(rules, now)
    in_window = Q(visits__admitted_at__gte=window_from)
    enquired = Message.objects.filter(conversation__patient_id=OuterRef("pk"), direction=MessageDirection.INBOUND)
    rows = (
        patients.filter(merged_into__isnull=True)
        .annotate(
            n_visits=Count("visits"),
            spend=Sum("visits__amount"),
            n_window=Count("visits", filter=in_window),
            window_spend=Sum("visits__amount", filter=in_window),
            first_at=Min("visits__admitted_at"),
            last_at=Max("visits__admitted_at"),
            enquired=Exists(enquired),
        )
        .values_list("pk", "n_visits", "spend", "n_window", "window_spend", "first_at", "last_at", "enquired")
    )
    upserts: list[PatientLifecycle] = []
    staged: set[int] = set()
    # Stored in the site's language; lifecycle.explain_stored() words it for whoever is reading.
    with translation.override(settings.LANGUAGE_CODE):
        for pk, n_visits, spend, n_window, window_spend, first_at, last_at, was_enquired in rows:
            facts = lifecycle.VisitFacts(
                visit_count=n_visits,
                window_visit_count=n_window,
                window_spend=window_spend or Decimal("0"),
                first_visit_at=first_at,
                last_visit_at=last_at,
                enquired=bool(was_enquired),
            )
            stage, value_type, explanation = lifecycle.classify(facts, rules, now=now)
            if stage is None:
                continue
            staged.add(pk)
            upserts.append(
                PatientLifecycle(
                    patient_id=pk,
                    stage=stage,
                    value_type=value_type,
                    visit_count=n_visits,
                    total_spend=spend or Decimal("0"),
                    window_visit_count=n_window,
                    window_spend=facts.window_spend,
                    first_visit_at=first_at,
                    last_visit_at=last_at,
                    explanation=explanation,
                    computed_at=now,
                )
            )
    with transaction.atomic():
        if upserts:
            # update_conflicts: one INSERT … ON CONFLICT (patient_id) DO UPDATE per batch, on PostgreSQL
            # and on SQLite (Django 5.2 needs SQLite ≥ 3.31, which has upserts).
            PatientLifecycle.objects.bulk_create(
                upserts, update_conflicts=True, unique_fields=["patient"], update_fields=_UPSERT_FIELDS
            )
        stale = [pk for pk in ids if pk not in staged]
        if stale:
            PatientLifecycle.objects.filter(patient_id__in=stale).delete()
    return len(upserts)


def check_rules(values: dict[str, Any]) -> dict[str, int | Decimal]:
    """Validate rule values (all five fields); raises ValidationError with one message per bad field."""
    cleaned: dict[str, int | Decimal] = {}
    errors: dict[str, str] = {}
    for field, (smallest, largest) in RULE_LIMITS.items():
        raw = values.get(field)
        try:
            value: int | Decimal
            if isinstance(smallest, Decimal):
                amount = Decimal(str(raw).strip())
                if not amount.is_finite():
                    raise ValueError
                if amount != amount.quantize(Decimal("0.01")):
                    errors[field] = _("Enter an amount with at most two decimals.")
                    continue
                value = amount
            else:
                value = int(str(raw).strip())
        except (TypeError, ValueError, ArithmeticError):
            errors[field] = _("Enter a number.")
            continue
        if not smallest <= value <= largest:
            errors[field] = _("Enter a number from %(smallest)s to %(largest)s.") % {
                "smallest": smallest,
                "largest": largest,
            }
            continue
        cleaned[field] = value
    if errors:
        raise ValidationError(errors)
    return cleaned


def update_rules(*, actor: AbstractBaseUser | AnonymousUser | None, **values: Any) -> LifecycleRules:
    """Save new thresholds and recompute every patient after commit."""
    cleaned = check_rules(values)
    with transaction.atomic():
        get_rules()
        rules = LifecycleRules.objects.select_for_update().get(pk=1)
        for field, value in cleaned.items():
            setattr(rules, field, value)
        rules.save()
        transaction.on_commit(lambda: taskrunner.enqueue(RECOMPUTE_TASK))
    logger.info("lifecycle rules changed by user %s", getattr(actor, "pk", None))
    return rules


def schedule_recompute(patient_ids: list[int]) -> None:
    """The visit hook: recompute these patients in the background (already after commit)."""
    taskrunner.enqueue(RECOMPUTE_TASK, patient_ids=list(patient_ids))


def run_nightly_recompute(*, now: dt.datetime | None = None) -> int:
    """The due-work job: recompute everyone once per hospital-local night, at the first run after 02:00.

    Returns how many patients were recomputed (0 when it is not yet time or tonight's run is done).
    The night is claimed with a conditional UPDATE, so two dispatchers running at once cannot both run it.
    """
    now = now or timezone.now()
    local = timezone.localtime(now)
    if local.time() < NIGHTLY_AFTER:
        return 0
    today = local.date()
    get_rules()
    claimed = (
        LifecycleRules.objects.filter(pk=1)
        .filter(Q(nightly_recomputed_on__isnull=True) | Q(nightly_recomputed_on__lt=today))
        .update(nightly_recomputed_on=today)
    )
    if not claimed:
        return 0
    try:
        return recompute_all(now=now)
    except Exception:
        # Give the night back so the next tick tries again rather than waiting a day.
        LifecycleRules.objects.filter(pk=1, nightly_recomputed_on=today).update(nightly_recomputed_on=None)
        raise

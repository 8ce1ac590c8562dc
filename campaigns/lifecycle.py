"""Lifecycle stage and value type from a patient's visit facts: pure rules, no database.

campaigns.actions.lifecycle aggregates the facts in the database and stores the result on
PatientLifecycle; this module decides what the facts mean and says why in one or two sentences.

The rules, with the thresholds an admin tunes on LifecycleRules:
- no visit, but the patient has written or called in (an inbound message)  → potential
- no visit and never in touch (an imported contact, a family member)         → no stage (no row)
- last visit at least ``lapsed_after_months`` calendar months ago             → lapsed (whatever the count)
- at least ``long_term_min_visits`` visits (and at least 2)                   → long-term
- otherwise (1 visit, or 2 while long-term starts at 3)                       → first-time
  A second visit does not yet make a regular: "first-time" is the new-patient stage and lasts until the
  long-term threshold. An admin who wants two visits to count as long-term sets the threshold to 2.
Value type, over the last ``window_months`` months, only for patients with at least one visit:
- spent at least ``value_min_spend``                                            → value-oriented
- else at least ``benefit_min_visits`` visits                                   → benefit-oriented
- else                                                                          → occasional
A visit's time is its admission time (always known; discharge is blank for outpatients). Months are
calendar months in the hospital's time zone: a visit on 14 March is 12 months old from 14 March a year later.
"""

from __future__ import annotations

import calendar
import datetime as dt
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple, Protocol

from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.models import LifecycleStage, ValueType

EXPLANATION_MAX_LENGTH = 300


class Rules(Protocol):
    """What the rules read from LifecycleRules (the model satisfies it; tests may pass a plain object)."""

    lapsed_after_months: int
    long_term_min_visits: int
    value_min_spend: Decimal
    benefit_min_visits: int
    window_months: int


@dataclass(frozen=True)
class VisitFacts:
    visit_count: int = 0
    # Visits admitted within the look-back window (window_start(...) up to now) and what they cost.
    window_visit_count: int = 0
    window_spend: Decimal = Decimal("0")
    first_visit_at: dt.datetime | None = None
    last_visit_at: dt.datetime | None = None
    # Has ever been in touch: at least one inbound message on any channel.
    enquired: bool = False


class Lifecycle(NamedTuple):
    stage: str | None  # a LifecycleStage value; None: no visit and never in touch
    value_type: str  # a ValueType value; "" without visits
    explanation: str


def add_months(moment: dt.datetime, months: int) -> dt.datetime:
    """The same wall-clock time ``months`` calendar months later (or earlier), clamped to the month's end."""
    local = timezone.localtime(moment) if timezone.is_aware(moment) else moment
    index = local.year * 12 + (local.month - 1) + months
    year, month = divmod(index, 12)
    day = min(local.day, calendar.monthrange(year, month + 1)[1])
    return local.replace(year=year, month=month + 1, day=day)


def months_since(earlier: dt.datetime, now: dt.datetime) -> int:
    """Whole calendar months from ``earlier`` to ``now``; 0 when ``earlier`` is less than a month ago or later."""
    start = timezone.localtime(earlier) if timezone.is_aware(earlier) else earlier
    end = timezone.localtime(now) if timezone.is_aware(now) else now
    months = (end.year - start.year) * 12 + (end.month - start.month)
    if months > 0 and add_months(start, months) > end:
        months -= 1
    return max(months, 0)


def window_start(rules: Rules, now: dt.datetime) -> dt.datetime:
    """Visits admitted at or after this moment count towards the value type."""
    return add_months(now, -int(rules.window_months))


def classify(facts: VisitFacts, rules: Rules, *, now: dt.datetime) -> Lifecycle:
    if facts.visit_count == 0 or facts.last_visit_at is None:
        if facts.enquired:
            return Lifecycle(LifecycleStage.POTENTIAL.value, "", _("No visits yet, but in touch with us: potential."))
        return Lifecycle(None, "", _("No visits and never in touch: no stage."))

    stage, stage_sentence = _stage(facts, rules, now=now)
    value_type, value_sentence = _value_type(facts, rules)
    # Translated too: Chinese puts no space between sentences.
    explanation = _("%(stage)s %(value)s") % {"stage": stage_sentence, "value": value_sentence}
    return Lifecycle(stage, value_type, explanation[:EXPLANATION_MAX_LENGTH])


def _stage(facts: VisitFacts, rules: Rules, *, now: dt.datetime) -> tuple[str, str]:
    assert facts.last_visit_at is not None
    ago = months_since(facts.last_visit_at, now)
    words = {
        "visits": _visits(facts.visit_count),
        "ago": _months_ago(ago),
        "months": rules.lapsed_after_months,
        "min": max(2, rules.long_term_min_visits),
    }
    if ago >= rules.lapsed_after_months:
        return LifecycleStage.LAPSED.value, _(
            "%(visits)s, the last %(ago)s (lapsed after %(months)s months without a visit): lapsed."
        ) % words
    if facts.visit_count >= max(2, rules.long_term_min_visits):
        return LifecycleStage.LONG_TERM.value, _(
            "%(visits)s, the last %(ago)s (long-term from %(min)s visits): long-term."
        ) % words
    if facts.visit_count == 1:
        return LifecycleStage.FIRST_TIME.value, _("%(visits)s, %(ago)s: first-time.") % words
    return LifecycleStage.FIRST_TIME.value, _(
        "%(visits)s, the last %(ago)s (long-term from %(min)s visits): first-time."
    ) % words


def _value_type(facts: VisitFacts, rules: Rules) -> tuple[str, str]:
    words = {
        "window": rules.window_months,
        "visits": _visits(facts.window_visit_count),
        "spend": _money(facts.window_spend),
        "min_spend": _money(rules.value_min_spend),
        "min_visits": rules.benefit_min_visits,
    }
    if facts.window_spend >= rules.value_min_spend:
        return ValueType.VALUE.value, _(
            "In the last %(window)s months: %(visits)s, %(spend)s spent (value-oriented from %(min_spend)s): "
            "value-oriented."
        ) % words
    if facts.window_visit_count >= rules.benefit_min_visits:
        return ValueType.BENEFIT.value, _(
            "In the last %(window)s months: %(visits)s (benefit-oriented from %(min_visits)s), %(spend)s spent "
            "(below %(min_spend)s): benefit-oriented."
        ) % words
    return ValueType.OCCASIONAL.value, _(
        "In the last %(window)s months: %(visits)s, %(spend)s spent (below %(min_spend)s and fewer than "
        "%(min_visits)s visits): occasional."
    ) % words


def _visits(count: int) -> str:
    # Two plain strings rather than ngettext: the translation fragments are plain msgid/msgstr pairs, and
    # Chinese has no plural anyway.
    if count == 0:
        return _("no visits")
    if count == 1:
        return _("1 visit")
    return _("%(count)s visits") % {"count": count}


def _months_ago(months: int) -> str:
    if months == 0:
        return _("less than a month ago")
    if months == 1:
        return _("1 month ago")
    return _("%(months)s months ago") % {"months": months}


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


class StoredFacts(Protocol):
    """A PatientLifecycle row's stored facts."""

    visit_count: int
    window_visit_count: int
    window_spend: Decimal
    first_visit_at: dt.datetime | None
    last_visit_at: dt.datetime | None
    computed_at: dt.datetime


def explain_stored(row: StoredFacts, rules: Rules) -> str:
    """The row's explanation in the active language (the stored one is in the site's default language).

    Worked out from the stored facts as of when the row was computed, so it matches the stored stage.
    A stored row without visits is a potential patient (rows are only kept for patients with a stage).
    """
    facts = VisitFacts(
        visit_count=row.visit_count,
        window_visit_count=row.window_visit_count,
        window_spend=row.window_spend,
        first_visit_at=row.first_visit_at,
        last_visit_at=row.last_visit_at,
        enquired=True,
    )
    return classify(facts, rules, now=row.computed_at).explanation

"""The lifecycle page: each stage and value type with its rule in words and how many patients it has.

Marketers and supervisors read it; only admins change the thresholds. Aggregates only: no patient is
named or listed here.
"""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.db.models import Count, Max
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils.translation import gettext as _
from django.views.decorators.http import require_http_methods

from campaigns.actions.lifecycle import RULE_LIMITS, get_rules, update_rules
from campaigns.models import LifecycleRules, LifecycleStage, PatientLifecycle, ValueType
from contactcenter import access
from contactcenter.models import Patient, Role

READER_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.MARKETER})
RULE_FIELDS = list(RULE_LIMITS)


@dataclass(frozen=True)
class Row:
    value: str
    label: str
    rule: str
    count: int


@dataclass(frozen=True)
class RuleField:
    name: str
    label: str
    hint: str
    value: str
    error: str
    smallest: str
    largest: str
    step: str


def _money(amount: Decimal) -> str:
    return f"{amount:,.2f}"


def _stage_rows(rules: LifecycleRules, counts: dict[str, int]) -> list[Row]:
    words = {
        "min": max(2, rules.long_term_min_visits),
        "lapsed": rules.lapsed_after_months,
    }
    rule_of = {
        LifecycleStage.POTENTIAL: _(
            "No visit yet, but has been in touch: at least one message from them on any channel."
        ),
        LifecycleStage.FIRST_TIME: _(
            "At least one visit but fewer than %(min)s, the last less than %(lapsed)s months ago."
        )
        % words,
        LifecycleStage.LONG_TERM: _("%(min)s or more visits, the last less than %(lapsed)s months ago.") % words,
        LifecycleStage.LAPSED: _("No visit for %(lapsed)s months or more, however many visits before.") % words,
    }
    return [Row(stage.value, str(stage.label), rule_of[stage], counts.get(stage.value, 0)) for stage in LifecycleStage]


def _value_rows(rules: LifecycleRules, counts: dict[str, int]) -> list[Row]:
    words = {
        "window": rules.window_months,
        "spend": _money(rules.value_min_spend),
        "visits": rules.benefit_min_visits,
    }
    rule_of = {
        ValueType.VALUE: _("Spent %(spend)s or more in the last %(window)s months.") % words,
        ValueType.BENEFIT: _("%(visits)s or more visits in the last %(window)s months, but spent less than %(spend)s.")
        % words,
        ValueType.OCCASIONAL: _(
            "Any other patient with a visit: fewer than %(visits)s visits and less than %(spend)s spent in the last "
            "%(window)s months."
        )
        % words,
    }
    return [Row(kind.value, str(kind.label), rule_of[kind], counts.get(kind.value, 0)) for kind in ValueType]


def _rule_fields(values: dict[str, object], errors: dict[str, str]) -> list[RuleField]:
    labels = {
        "lapsed_after_months": (_("Lapsed after (months without a visit)"), ""),
        "long_term_min_visits": (_("Long-term from (visits)"), _("Fewer visits are first-time.")),
        "value_min_spend": (_("Value-oriented from (spend in the window)"), ""),
        "benefit_min_visits": (_("Benefit-oriented from (visits in the window)"), ""),
        "window_months": (_("Window for value types (months)"), ""),
    }
    fields = []
    for name in RULE_FIELDS:
        smallest, largest = RULE_LIMITS[name]
        label, hint = labels[name]
        fields.append(
            RuleField(
                name=name,
                label=label,
                hint=hint,
                value=str(values.get(name, "")),
                error=errors.get(name, ""),
                smallest=str(smallest),
                largest=str(largest),
                step="0.01" if isinstance(smallest, Decimal) else "1",
            )
        )
    return fields


@login_required
@require_http_methods(["GET", "POST"])
def lifecycle_page(request: HttpRequest) -> HttpResponse:
    role = access.role_of(request.user)
    if role not in READER_ROLES:
        raise PermissionDenied(_("Only marketers, supervisors and admins may see lifecycle stages."))
    can_edit = role == Role.ADMIN
    rules = get_rules()
    values: dict[str, object] = {name: getattr(rules, name) for name in RULE_FIELDS}
    errors: dict[str, str] = {}
    status = 200
    if request.method == "POST":
        if not can_edit:
            raise PermissionDenied(_("Only admins may change the lifecycle rules."))
        submitted = {name: request.POST.get(name, "") for name in RULE_FIELDS}
        try:
            update_rules(actor=request.user, **submitted)
        except ValidationError as error:
            errors = {field: " ".join(messages) for field, messages in error.message_dict.items()}
            values = dict(submitted)
            status = 400
        else:
            return HttpResponseRedirect(reverse("campaigns-lifecycle") + "?saved=1")

    stage_counts = dict(PatientLifecycle.objects.values_list("stage").annotate(n=Count("id")).order_by())
    value_counts = dict(
        PatientLifecycle.objects.exclude(value_type="").values_list("value_type").annotate(n=Count("id")).order_by()
    )
    staged = sum(stage_counts.values())
    live = Patient.objects.filter(merged_into__isnull=True).count()
    context = {
        "stages": _stage_rows(rules, stage_counts),
        "value_types": _value_rows(rules, value_counts),
        "without_stage": max(live - staged, 0),
        "computed_at": PatientLifecycle.objects.aggregate(at=Max("computed_at"))["at"],
        "fields": _rule_fields(values, errors),
        "can_edit": can_edit,
        "saved": request.GET.get("saved") == "1" and not errors,
        "has_errors": bool(errors),
    }
    return render(request, "campaigns/lifecycle.html", context, status=status)

"""The field catalog the rule builder renders: every field with its operators, value kinds and choices,
labels in the request's language. Open-valued fields offer the values that exist (regions, tags …);
nothing here names or describes a patient."""

from __future__ import annotations

from typing import Any

from django.db.models import QuerySet
from django.utils.translation import get_language

from campaigns.segments.rules import FIELDS, MAX_DEPTH, MAX_RULES, FieldSpec, language_choices
from contactcenter.models import Patient, Tag, Team, Visit, VisitKind

MAX_CHOICES = 500


def _distinct(rows: QuerySet[Any], column: str) -> list[dict[str, str]]:
    values = rows.exclude(**{column: ""}).order_by(column).values_list(column, flat=True).distinct()
    return [{"value": v, "label": v} for v in values[:MAX_CHOICES]]


def _open_choices(name: str) -> list[dict[str, str]] | None:
    live = Patient.objects.filter(merged_into__isnull=True)
    if name in ("region", "city"):
        return _distinct(live, name)
    if name == "department":
        chinese = (get_language() or "").lower().startswith("zh")
        return [
            {"value": team.code, "label": (team.name_zh if chinese and team.name_zh else team.name)}
            for team in Team.objects.order_by("name")[:MAX_CHOICES]
        ]
    if name == "health_check_package":
        return _distinct(Visit.objects.filter(kind=VisitKind.HEALTH_CHECK), "package")
    if name == "tags":
        return [
            {"value": n, "label": n} for n in Tag.objects.order_by("name").values_list("name", flat=True)[:MAX_CHOICES]
        ]
    if name == "language":
        known = {code: str(label) for code, label in language_choices()}
        for code in live.order_by("language").values_list("language", flat=True).distinct()[:MAX_CHOICES]:
            if code:
                known.setdefault(code, code)
        return [{"value": code, "label": label} for code, label in known.items()]
    return None


def _field(spec: FieldSpec) -> dict[str, Any]:
    offered = _open_choices(spec.name)
    choices = offered if offered is not None else [{"value": v, "label": str(label)} for v, label in spec.choices]
    return {
        "field": spec.name,
        "label": str(spec.label),
        "operators": [{"operator": op.name, "label": str(op.label), "kind": op.kind} for op in spec.operators],
        "choices": choices,
        # Open fields accept values not offered (a region typed before any patient lives there).
        "open": offered is not None and spec.name not in ("department", "tags"),
    }


def field_catalog() -> dict[str, Any]:
    return {"max_depth": MAX_DEPTH, "max_rules": MAX_RULES, "fields": [_field(spec) for spec in FIELDS.values()]}

"""The segment rule tree: its schema, its validation, and the field catalog the rule builder renders.

A tree is a group {"op": "and"|"or", "rules": [...]} whose rules are leaves
{"field": ..., "operator": ..., "value": ...} or further groups, nested at most MAX_DEPTH groups deep.
`parse_rules` turns the JSON into typed nodes (what the compiler and the reference evaluator read) or
raises RulesInvalid naming each problem by its path, e.g. "rules[1].rules[0].value: …", so the UI can
point at the rule. Dates are calendar days in the hospital's time zone.
"""

from __future__ import annotations

import calendar
import datetime as dt
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal, InvalidOperation
from typing import Any

from django.conf import settings
from django.core.exceptions import ValidationError
from django.utils.functional import Promise
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from campaigns.models import LifecycleStage, ValueType
from contactcenter.models import Gender, VipTier

GROUP_OPS = ("and", "or")
MAX_DEPTH = 3
MAX_RULES = 60
MAX_LIST = 500
MAX_TEXT = 120
MAX_AGE = 150
MAX_DAYS = 36_500
MAX_MONTHS = 1_200
MAX_COUNT = 1_000_000
MAX_SPEND = Decimal("999999999999.99")
# Far dates overflow when shifted to UTC; no hospital record is outside these.
MIN_DATE = dt.date(1900, 1, 1)
MAX_DATE = dt.date(2199, 12, 31)

AGE_BANDS = ("<35", "35-50", ">50")
# Consent as the registry answers it: no Consent row means the patient never opted out.
CONSENT_EXPLICIT_OPT_IN = "explicit_opt_in"
CONSENT_NOT_OPTED_OUT = "not_opted_out"
CONSENT_OPTED_OUT = "opted_out"


# --- Value kinds and the field catalog ---------------------------------------------------------------------


class Kind:
    """How an operator's value is written; the rule builder picks its input by this."""

    CHOICES = "choices"  # a non-empty list of values from the field's choices
    TEXTS = "texts"  # a non-empty list of strings (choices offered, others allowed unless checked)
    CHOICE = "choice"  # one value from the field's choices
    DATE = "date"  # "YYYY-MM-DD", hospital-local
    DAYS = "days"  # a whole number of days
    MONTHS = "months"  # a whole number of months
    INTEGER = "integer"
    INTEGER_RANGE = "integer_range"  # {"min": n|null, "max": n|null}, inclusive, at least one
    NUMBER = "number"  # a decimal amount, e.g. "1000" or 1000.5
    NUMBER_RANGE = "number_range"
    NONE = "none"  # no value


@dataclass(frozen=True)
class OperatorSpec:
    name: str
    label: str | Promise
    kind: str


@dataclass(frozen=True)
class FieldSpec:
    name: str
    label: str | Promise
    operators: tuple[OperatorSpec, ...]
    # Fixed choices (value, label); values outside them are refused. Fields with open values
    # (regions, tags …) get their choices from the database in the catalog instead.
    choices: tuple[tuple[str, str | Promise], ...] = ()
    strict: bool = False

    def operator(self, name: str) -> OperatorSpec | None:
        return next((op for op in self.operators if op.name == name), None)


IN = OperatorSpec("in", gettext_lazy("is any of"), Kind.CHOICES)
NOT_IN = OperatorSpec("not_in", gettext_lazy("is none of"), Kind.CHOICES)
TEXT_IN = OperatorSpec("in", gettext_lazy("is any of"), Kind.TEXTS)
TEXT_NOT_IN = OperatorSpec("not_in", gettext_lazy("is none of"), Kind.TEXTS)
ANY_OF = OperatorSpec("any_of", gettext_lazy("any of"), Kind.TEXTS)
ALL_OF = OperatorSpec("all_of", gettext_lazy("all of"), Kind.TEXTS)
NONE_OF = OperatorSpec("none_of", gettext_lazy("none of"), Kind.TEXTS)
BEFORE = OperatorSpec("before", gettext_lazy("before (date)"), Kind.DATE)
AFTER = OperatorSpec("after", gettext_lazy("after (date)"), Kind.DATE)
WITHIN_DAYS = OperatorSpec("within_days", gettext_lazy("within the last N days"), Kind.DAYS)
MORE_THAN_MONTHS = OperatorSpec("more_than_months_ago", gettext_lazy("more than N months ago"), Kind.MONTHS)
WITHIN_MONTHS = OperatorSpec("within_months", gettext_lazy("within the last N months"), Kind.MONTHS)
NEVER = OperatorSpec("never", gettext_lazy("never"), Kind.NONE)
GTE = OperatorSpec("gte", gettext_lazy("at least"), Kind.INTEGER)
LTE = OperatorSpec("lte", gettext_lazy("at most"), Kind.INTEGER)
BETWEEN = OperatorSpec("between", gettext_lazy("between"), Kind.INTEGER_RANGE)
AMOUNT_GTE = OperatorSpec("gte", gettext_lazy("at least"), Kind.NUMBER)
AMOUNT_LTE = OperatorSpec("lte", gettext_lazy("at most"), Kind.NUMBER)
AMOUNT_BETWEEN = OperatorSpec("between", gettext_lazy("between"), Kind.NUMBER_RANGE)
IS = OperatorSpec("is", gettext_lazy("is"), Kind.CHOICE)

FIELDS: dict[str, FieldSpec] = {
    spec.name: spec
    for spec in (
        FieldSpec(
            "age_band",
            gettext_lazy("Age band"),
            (IN,),
            choices=(
                ("<35", gettext_lazy("Under 35")),
                ("35-50", gettext_lazy("35–50")),
                (">50", gettext_lazy("Over 50")),
            ),
            strict=True,
        ),
        FieldSpec("age", gettext_lazy("Age (custom range)"), (BETWEEN,)),
        FieldSpec("gender", gettext_lazy("Gender"), (IN, NOT_IN), choices=tuple(Gender.choices), strict=True),
        FieldSpec("region", gettext_lazy("Region / district"), (TEXT_IN, TEXT_NOT_IN)),
        FieldSpec("city", gettext_lazy("City"), (TEXT_IN, TEXT_NOT_IN)),
        FieldSpec("department", gettext_lazy("Departments visited"), (ANY_OF, NONE_OF)),
        FieldSpec("last_visit", gettext_lazy("Last visit"), (BEFORE, AFTER, WITHIN_DAYS, MORE_THAN_MONTHS, NEVER)),
        FieldSpec("last_discharge", gettext_lazy("Last discharge"), (BEFORE, AFTER, WITHIN_DAYS, MORE_THAN_MONTHS)),
        FieldSpec("visit_count", gettext_lazy("Number of visits"), (GTE, LTE, BETWEEN)),
        FieldSpec("total_spend", gettext_lazy("Total spend"), (AMOUNT_GTE, AMOUNT_LTE, AMOUNT_BETWEEN)),
        FieldSpec("health_check_package", gettext_lazy("Health-check package"), (ANY_OF,)),
        FieldSpec("last_health_check", gettext_lazy("Last health check"), (MORE_THAN_MONTHS, WITHIN_MONTHS, NEVER)),
        FieldSpec("vip_tier", gettext_lazy("VIP tier"), (IN, NOT_IN), choices=tuple(VipTier.choices), strict=True),
        FieldSpec("tags", gettext_lazy("Tags"), (ANY_OF, ALL_OF, NONE_OF)),
        FieldSpec(
            "lifecycle_stage",
            gettext_lazy("Lifecycle stage"),
            (IN, NOT_IN),
            choices=tuple(LifecycleStage.choices),
            strict=True,
        ),
        FieldSpec(
            "value_type", gettext_lazy("Value type"), (IN, NOT_IN), choices=tuple(ValueType.choices), strict=True
        ),
        FieldSpec("language", gettext_lazy("Language"), (TEXT_IN, TEXT_NOT_IN)),
        FieldSpec(
            "marketing_consent",
            gettext_lazy("Marketing consent"),
            (IS,),
            choices=(
                (CONSENT_NOT_OPTED_OUT, gettext_lazy("Not opted out (includes never asked)")),
                (CONSENT_EXPLICIT_OPT_IN, gettext_lazy("Opted in explicitly")),
                (CONSENT_OPTED_OUT, gettext_lazy("Opted out")),
            ),
            strict=True,
        ),
    )
}


def language_choices() -> tuple[tuple[str, str | Promise], ...]:
    return tuple((code, label) for code, label in settings.LANGUAGES)


# --- The parsed tree ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Range:
    """Inclusive bounds; None is open."""

    min: Any
    max: Any


@dataclass(frozen=True)
class Leaf:
    field: str
    operator: str
    value: Any  # tuple[str, ...] | dt.date | int | Decimal | Range | str | None, by the operator's kind
    path: str

    def to_json(self) -> dict[str, Any]:
        return {"field": self.field, "operator": self.operator, "value": _value_json(self.value)}


@dataclass(frozen=True)
class Group:
    op: str
    rules: tuple[Leaf | Group, ...]
    path: str = ""

    def to_json(self) -> dict[str, Any]:
        return {"op": self.op, "rules": [rule.to_json() for rule in self.rules]}

    def leaves(self) -> list[Leaf]:
        found: list[Leaf] = []
        for rule in self.rules:
            found.extend(rule.leaves() if isinstance(rule, Group) else [rule])
        return found


def _value_json(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if isinstance(value, dt.date):
        return value.isoformat()
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, Range):
        return {"min": _value_json(value.min), "max": _value_json(value.max)}
    return value


# --- Errors ---------------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class RuleError:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class RulesInvalid(ValidationError):
    """Raised with every problem found, each naming where it is; the API answers 400 {"rules": [...]}."""

    def __init__(self, errors: Sequence[RuleError]) -> None:
        self.errors = list(errors)
        super().__init__({"rules": [str(error) for error in self.errors]})


@dataclass
class _Parser:
    errors: list[RuleError] = field(default_factory=list)
    leaf_count: int = 0

    def fail(self, path: str, message: str) -> None:
        self.errors.append(RuleError(path, message))

    def group(self, raw: Any, path: str, depth: int) -> Group | None:
        at = f"{path}." if path else ""
        if not isinstance(raw, dict):
            self.fail(path, _("A group must be an object with “op” and “rules”."))
            return None
        if depth > MAX_DEPTH:
            self.fail(path, _("Groups can be nested at most %(depth)s levels deep.") % {"depth": MAX_DEPTH})
            return None
        unknown = sorted(set(raw) - {"op", "rules"})
        if unknown:
            self.fail(path, _("Unknown keys: %(keys)s.") % {"keys": ", ".join(str(k)[:40] for k in unknown)})
        op = raw.get("op")
        if op not in GROUP_OPS:
            self.fail(f"{at}op", _("Choose “and” or “or”."))
        children = raw.get("rules")
        if not isinstance(children, list):
            self.fail(f"{at}rules", _("A group's rules must be a list."))
            return None
        if not children and depth > 1:
            self.fail(f"{at}rules", _("This group is empty; add a rule or remove the group."))
        parsed: list[Leaf | Group] = []
        for index, child in enumerate(children):
            child_path = f"{at}rules[{index}]"
            node: Leaf | Group | None
            if isinstance(child, dict) and ("op" in child or "rules" in child):
                node = self.group(child, child_path, depth + 1)
            else:
                node = self.leaf(child, child_path)
            if node is not None:
                parsed.append(node)
        return Group(op=str(op), rules=tuple(parsed), path=path)

    def leaf(self, raw: Any, path: str) -> Leaf | None:
        self.leaf_count += 1
        if self.leaf_count == MAX_RULES + 1:
            self.fail(path, _("A segment can have at most %(count)s rules.") % {"count": MAX_RULES})
        if not isinstance(raw, dict):
            self.fail(path, _("A rule must be an object with “field”, “operator” and “value”."))
            return None
        unknown = sorted(set(raw) - {"field", "operator", "value"})
        if unknown:
            self.fail(path, _("Unknown keys: %(keys)s.") % {"keys": ", ".join(str(k)[:40] for k in unknown)})
        field_name = raw.get("field")
        spec = FIELDS.get(field_name) if isinstance(field_name, str) else None
        if spec is None:
            self.fail(f"{path}.field", _("Unknown field “%(field)s”.") % {"field": str(field_name)[:40]})
            return None
        operator = spec.operator(raw["operator"]) if isinstance(raw.get("operator"), str) else None
        if operator is None:
            self.fail(
                f"{path}.operator",
                _("“%(field)s” takes one of the operators %(operators)s.")
                % {"field": spec.name, "operators": ", ".join(op.name for op in spec.operators)},
            )
            return None
        value_path = f"{path}.value"
        before = len(self.errors)
        value = self.value(spec, operator, raw.get("value"), value_path)
        if len(self.errors) > before:
            return None
        return Leaf(field=spec.name, operator=operator.name, value=value, path=path)

    def value(self, spec: FieldSpec, operator: OperatorSpec, raw: Any, path: str) -> Any:
        kind = operator.kind
        if kind == Kind.NONE:
            if raw not in (None, "", []):
                self.fail(path, _("This operator takes no value."))
            return None
        if kind in (Kind.CHOICES, Kind.TEXTS):
            return self.texts(spec, raw, path, strict=kind == Kind.CHOICES or spec.strict)
        if kind == Kind.CHOICE:
            allowed = [value for value, _label in spec.choices]
            if raw not in allowed:
                self.fail(path, _("Choose one of %(choices)s.") % {"choices": ", ".join(allowed)})
            return raw
        if kind == Kind.DATE:
            return self.date(raw, path)
        if kind == Kind.DAYS:
            return self.integer(raw, path, 0, MAX_DAYS)
        if kind == Kind.MONTHS:
            return self.integer(raw, path, 0, MAX_MONTHS)
        if kind == Kind.INTEGER:
            return self.integer(raw, path, 0, MAX_COUNT)
        if kind == Kind.NUMBER:
            return self.amount(raw, path)
        if kind in (Kind.INTEGER_RANGE, Kind.NUMBER_RANGE):
            return self.range(spec, kind, raw, path)
        raise AssertionError(f"unhandled value kind {kind}")

    def texts(self, spec: FieldSpec, raw: Any, path: str, *, strict: bool) -> tuple[str, ...]:
        if isinstance(raw, str):
            raw = [raw]
        if not isinstance(raw, list) or not raw:
            self.fail(path, _("Choose at least one value."))
            return ()
        if len(raw) > MAX_LIST:
            self.fail(path, _("At most %(count)s values.") % {"count": MAX_LIST})
            return ()
        values: list[str] = []
        allowed = {value for value, _label in spec.choices}
        for item in raw:
            text = item.strip() if isinstance(item, str) else None
            if not text or len(text) > MAX_TEXT or "\x00" in text:
                self.fail(path, _("Each value must be text of 1 to %(max)s characters.") % {"max": MAX_TEXT})
                return ()
            if strict and text not in allowed:
                self.fail(
                    path,
                    _("“%(value)s” is not one of %(choices)s.")
                    % {"value": text[:40], "choices": ", ".join(value for value, _label in spec.choices)},
                )
                return ()
            if text not in values:
                values.append(text)
        return tuple(values)

    def date(self, raw: Any, path: str) -> dt.date | None:
        day = None
        if isinstance(raw, str) and len(raw) == 10:
            try:
                day = dt.date.fromisoformat(raw)
            except ValueError:
                day = None
        if day is None:
            self.fail(path, _("Write the date as YYYY-MM-DD, e.g. 2024-03-01."))
        elif not MIN_DATE <= day <= MAX_DATE:
            self.fail(path, _("Choose a date between %(low)s and %(high)s.") % {"low": MIN_DATE, "high": MAX_DATE})
            day = None
        return day

    def integer(self, raw: Any, path: str, low: int, high: int) -> int | None:
        if isinstance(raw, bool) or not isinstance(raw, int | str):
            self.fail(path, _("Enter a whole number from %(low)s to %(high)s.") % {"low": low, "high": high})
            return None
        try:
            number = int(raw)
        except ValueError:
            number = None
        if number is None or not low <= number <= high:
            self.fail(path, _("Enter a whole number from %(low)s to %(high)s.") % {"low": low, "high": high})
            return None
        return number

    def amount(self, raw: Any, path: str) -> Decimal | None:
        message = _("Enter an amount from 0 to %(high)s, e.g. 1000 or 1000.50.") % {"high": MAX_SPEND}
        if isinstance(raw, bool) or not isinstance(raw, int | float | str):
            self.fail(path, message)
            return None
        try:
            number = Decimal(str(raw).strip())
        except InvalidOperation:
            self.fail(path, message)
            return None
        if not number.is_finite() or not Decimal(0) <= number <= MAX_SPEND:
            self.fail(path, message)
            return None
        return number.quantize(Decimal("0.01"))

    def range(self, spec: FieldSpec, kind: str, raw: Any, path: str) -> Range | None:
        if not isinstance(raw, dict) or set(raw) - {"min", "max"}:
            self.fail(path, _("Give {“min”: …, “max”: …}; either may be left empty."))
            return None
        bounds: dict[str, Any] = {}
        for key in ("min", "max"):
            item = raw.get(key)
            if item is None or item == "":
                bounds[key] = None
            elif kind == Kind.NUMBER_RANGE:
                bounds[key] = self.amount(item, f"{path}.{key}")
            else:
                high = MAX_AGE if spec.name == "age" else MAX_COUNT
                bounds[key] = self.integer(item, f"{path}.{key}", 0, high)
        if raw.get("min") in (None, "") and raw.get("max") in (None, ""):
            self.fail(path, _("Give a minimum, a maximum or both."))
            return None
        low, high = bounds["min"], bounds["max"]
        if low is not None and high is not None and low > high:
            self.fail(path, _("The minimum is larger than the maximum."))
            return None
        return Range(low, high)


def parse_rules(raw: Any) -> Group:
    """The typed tree, or RulesInvalid listing every problem with its path."""
    parser = _Parser()
    tree = parser.group(raw if raw != {} else {"op": "and", "rules": []}, "", 1)
    if parser.errors or tree is None:
        raise RulesInvalid(parser.errors or [RuleError("", _("The rules are not a group."))])
    return tree


def check_references(tree: Group) -> None:
    """Values that must name something that exists (departments, tags); done when saving or previewing,
    not when a saved segment is evaluated, so a renamed tag cannot break a running launch."""
    from contactcenter.models import Tag, Team

    errors: list[RuleError] = []
    lookups: dict[str, Callable[[Sequence[str]], set[str]]] = {
        "department": lambda values: set(Team.objects.filter(code__in=values).values_list("code", flat=True)),
        "tags": lambda values: set(Tag.objects.filter(name__in=values).values_list("name", flat=True)),
    }
    for leaf in tree.leaves():
        lookup = lookups.get(leaf.field)
        if lookup is None:
            continue
        missing = [value for value in leaf.value if value not in lookup(leaf.value)]
        if missing:
            message = (
                _("No department with the code %(values)s.")
                if leaf.field == "department"
                else _("No tag named %(values)s.")
            )
            errors.append(RuleError(f"{leaf.path}.value", message % {"values": ", ".join(missing[:5])}))
    if errors:
        raise RulesInvalid(errors)


def validate_rules(raw: Any, *, references: bool = True) -> dict[str, Any]:
    """The normalized JSON to store (values trimmed, deduplicated, typed), or RulesInvalid."""
    tree = parse_rules(raw)
    if references:
        check_references(tree)
    return tree.to_json()


# --- Calendar arithmetic shared by the compiler and the reference evaluator ---------------------------------


def months_before(day: dt.date, months: int) -> dt.date:
    """The same day of the month `months` earlier; the 31st becomes the month's last day."""
    index = day.year * 12 + day.month - 1 - months
    year, month = divmod(index, 12)
    month += 1
    return dt.date(year, month, min(day.day, calendar.monthrange(year, month)[1]))


def latest_birth_date_for_age(today: dt.date, age: int) -> dt.date:
    """Patients born on or before this date are at least `age` years old today (Feb 29 birthdays turn a
    year older on Mar 1 in common years, as Patient.age counts)."""
    year = today.year - age
    if today.month == 2 and today.day == 29 and not calendar.isleap(year):
        return dt.date(year, 2, 28)
    return dt.date(year, today.month, today.day)

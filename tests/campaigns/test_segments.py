"""Segments: the SQL compiler agrees with a plain-Python reference on generated patients and rule trees
(hypothesis, real PostgreSQL); validation names the path of each problem; static lists from CSV; the API."""

from __future__ import annotations

import datetime as dt
import random
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.db import connection, transaction
from django.test.utils import CaptureQueriesContext
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rest_framework.test import APIClient

from campaigns.actions.segments import delete_segment, import_static_list, save_segment
from campaigns.models import Campaign, CampaignStatus, LifecycleStage, PatientLifecycle, Segment, ValueType
from campaigns.segments.compiler import patients_matching, segment_patients
from campaigns.segments.reference import PatientFacts, load_facts, reference_matching
from campaigns.segments.rules import (
    RulesInvalid,
    latest_birth_date_for_age,
    months_before,
    parse_rules,
    validate_rules,
)
from contactcenter.models import (
    Consent,
    ConsentPurpose,
    ConsentStatus,
    Gender,
    IdentityKind,
    Patient,
    PatientIdentity,
    Tag,
    Team,
    VipTier,
    Visit,
    VisitKind,
)
from tests.conftest import World

SHANGHAI = dt.timezone(dt.timedelta(hours=8))
# 01:30 in Shanghai is the previous day in UTC: dates must be taken in the hospital's zone.
NOW = dt.datetime(2025, 3, 1, 1, 30, tzinfo=SHANGHAI)
LEAP_NOW = dt.datetime(2024, 2, 29, 23, 30, tzinfo=SHANGHAI)
TODAY = NOW.date()

REGIONS = ["Tianhe", "Yuexiu", "天河区", ""]
CITIES = ["Guangzhou", "Shenzhen", ""]
PACKAGES = ["Basic", "Premium", "Women's health"]
TAG_NAMES = ["diabetes-club", "newsletter", "mother-baby"]
DEPARTMENTS = ["cardiology", "orthopedics", "checkup"]
LANGUAGES = ["zh-hans", "en", "yue"]
AMOUNTS = [Decimal("0"), Decimal("50.50"), Decimal("1000"), Decimal("4999.99"), Decimal("5000"), Decimal("12000")]
DAY_OFFSETS = [0, 1, 6, 7, 8, 29, 30, 31, 180, 364, 365, 366]
MONTHS = [0, 1, 6, 11, 12, 24]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


def _pivot_days(today: dt.date) -> list[dt.date]:
    """Days where rules change their answer: N days ago, N months ago, and their neighbours."""
    days = {today - dt.timedelta(days=n) for n in DAY_OFFSETS}
    for m in MONTHS:
        edge = months_before(today, m)
        days |= {edge - dt.timedelta(days=1), edge, edge + dt.timedelta(days=1)}
    return sorted(days)


def _birth_dates(today: dt.date) -> list[dt.date | None]:
    dates: list[dt.date | None] = [None, dt.date(1960, 2, 29), dt.date(1992, 2, 29), dt.date(1988, 2, 28)]
    for age in (18, 34, 35, 36, 50, 51, 52, 70):
        edge = latest_birth_date_for_age(today, age)
        dates += [edge - dt.timedelta(days=1), edge, edge + dt.timedelta(days=1)]
    return dates


def _stamp(day: dt.date, rng: random.Random) -> dt.datetime:
    """A moment on that hospital-local day, often at its very start or end."""
    clock = rng.choice([dt.time(0, 0), dt.time(0, 0, 1), dt.time(7, 59), dt.time(12, 0), dt.time(23, 59, 59)])
    return dt.datetime.combine(day, clock, tzinfo=SHANGHAI)


@pytest.fixture
def teams(world: World) -> dict[str, Team]:
    checkup = Team.objects.create(code="checkup", name="Health check centre", name_zh="体检中心")
    return {"cardiology": world.team_a, "orthopedics": world.team_b, "checkup": checkup}


@pytest.fixture
def tags(db: Any) -> dict[str, Tag]:
    return {name: Tag.objects.create(name=name) for name in TAG_NAMES}


def _make_patients(
    rng: random.Random, count: int, teams: dict[str, Team], tags: dict[str, Tag], today: dt.date
) -> list[Patient]:
    births, pivots = _birth_dates(today), _pivot_days(today)
    patients: list[Patient] = []
    visit_no = Visit.objects.count()
    for _ in range(count):
        patient = Patient.objects.create(
            gender=rng.choice(Gender.values),
            birth_date=rng.choice(births),
            region=rng.choice(REGIONS),
            city=rng.choice(CITIES),
            language=rng.choice(LANGUAGES),
            vip_tier=rng.choice(VipTier.values),
        )
        patient.tags.set(rng.sample(list(tags.values()), rng.randint(0, 3)))
        for _v in range(rng.choice([0, 0, 1, 1, 2, 3, 4])):
            visit_no += 1
            kind = rng.choice(VisitKind.values)
            admitted = _stamp(rng.choice(pivots), rng)
            Visit.objects.create(
                patient=patient,
                visit_number=f"V{visit_no:06d}",
                kind=kind,
                department=teams[rng.choice(DEPARTMENTS)],
                admitted_at=admitted,
                discharged_at=rng.choice([None, admitted, admitted + dt.timedelta(days=rng.randint(1, 40))]),
                package=rng.choice(PACKAGES) if kind == VisitKind.HEALTH_CHECK and rng.random() < 0.8 else "",
                amount=rng.choice(AMOUNTS),
            )
        if rng.random() < 0.6:
            PatientLifecycle.objects.create(
                patient=patient,
                stage=rng.choice(LifecycleStage.values),
                value_type=rng.choice([*ValueType.values, ""]),
            )
        consent = rng.choice([None, None, ConsentStatus.OPTED_IN, ConsentStatus.OPTED_OUT])
        if consent:
            Consent.objects.create(patient=patient, purpose=ConsentPurpose.MARKETING, status=consent)
        patients.append(patient)
    # Some become merge tombstones: they still have every attribute, and must never be selected.
    for patient in rng.sample(patients, max(1, count // 12)):
        survivor = rng.choice([p for p in patients if p.pk != patient.pk])
        Patient.objects.filter(pk=patient.pk).update(merged_into=survivor)
    return patients


# --- Rule tree strategies -------------------------------------------------------------------------------------


def _subset(values: list[str]) -> st.SearchStrategy[list[str]]:
    return st.lists(st.sampled_from(values), min_size=1, max_size=len(values), unique=True)


def _leaf_strategy(today: dt.date) -> st.SearchStrategy[dict[str, Any]]:
    pivots = [d.isoformat() for d in _pivot_days(today)]
    ranges = st.fixed_dictionaries({"min": st.none() | st.integers(0, 5), "max": st.none() | st.integers(0, 5)})
    ages = st.fixed_dictionaries(
        {
            "min": st.none() | st.sampled_from([0, 34, 35, 50, 51]),
            "max": st.none() | st.sampled_from([34, 35, 50, 51, 90]),
        }
    )
    amounts = st.sampled_from([str(a) for a in AMOUNTS] + ["1000.01", "0.5"])
    money_ranges = st.fixed_dictionaries({"min": st.none() | amounts, "max": st.none() | amounts})

    def leaf(field: str, operator: str, value: st.SearchStrategy[Any]) -> st.SearchStrategy[dict[str, Any]]:
        return st.fixed_dictionaries({"field": st.just(field), "operator": st.just(operator), "value": value})

    def time_rules(field: str, with_never: bool) -> list[st.SearchStrategy[dict[str, Any]]]:
        rules = [
            leaf(field, "before", st.sampled_from(pivots)),
            leaf(field, "after", st.sampled_from(pivots)),
            leaf(field, "within_days", st.sampled_from(DAY_OFFSETS)),
            leaf(field, "more_than_months_ago", st.sampled_from(MONTHS)),
        ]
        return [*rules, leaf(field, "never", st.none())] if with_never else rules

    options = [
        leaf("age_band", "in", _subset(["<35", "35-50", ">50"])),
        leaf("age", "between", ages),
        *(leaf("gender", op, _subset(Gender.values)) for op in ("in", "not_in")),
        *(leaf("region", op, _subset([r for r in REGIONS if r] + ["Nowhere"])) for op in ("in", "not_in")),
        *(leaf("city", op, _subset([c for c in CITIES if c])) for op in ("in", "not_in")),
        *(leaf("language", op, _subset(LANGUAGES)) for op in ("in", "not_in")),
        *(leaf("vip_tier", op, _subset(VipTier.values)) for op in ("in", "not_in")),
        *(leaf("department", op, _subset(DEPARTMENTS)) for op in ("any_of", "none_of")),
        *time_rules("last_visit", with_never=True),
        *time_rules("last_discharge", with_never=False),
        leaf("last_health_check", "more_than_months_ago", st.sampled_from(MONTHS)),
        leaf("last_health_check", "within_months", st.sampled_from(MONTHS)),
        leaf("last_health_check", "never", st.none()),
        leaf("health_check_package", "any_of", _subset(PACKAGES)),
        leaf("visit_count", "gte", st.integers(0, 5)),
        leaf("visit_count", "lte", st.integers(0, 5)),
        leaf("visit_count", "between", ranges.filter(lambda r: r["min"] is not None or r["max"] is not None)),
        leaf("total_spend", "gte", amounts),
        leaf("total_spend", "lte", amounts),
        leaf("total_spend", "between", money_ranges.filter(lambda r: r["min"] is not None or r["max"] is not None)),
        *(leaf("tags", op, _subset(TAG_NAMES)) for op in ("any_of", "all_of", "none_of")),
        *(leaf("lifecycle_stage", op, _subset(LifecycleStage.values)) for op in ("in", "not_in")),
        *(leaf("value_type", op, _subset(ValueType.values)) for op in ("in", "not_in")),
        leaf("marketing_consent", "is", st.sampled_from(["explicit_opt_in", "not_opted_out", "opted_out"])),
    ]
    return st.one_of(options).filter(_valid_bounds)


def _valid_bounds(rule: dict[str, Any]) -> bool:
    value = rule["value"]
    if isinstance(value, dict) and value["min"] is not None and value["max"] is not None:
        return bool(Decimal(str(value["min"])) <= Decimal(str(value["max"])))
    if isinstance(value, dict):
        return value["min"] is not None or value["max"] is not None
    return True


def _tree(today: dt.date, depth: int = 1) -> st.SearchStrategy[dict[str, Any]]:
    child = _leaf_strategy(today) if depth == 3 else st.one_of(_leaf_strategy(today), _tree(today, depth + 1))
    return st.fixed_dictionaries(
        {"op": st.sampled_from(["and", "or"]), "rules": st.lists(child, min_size=0 if depth == 1 else 1, max_size=4)}
    )


PROPERTY = settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True
)


TREES = _tree(TODAY)
LEAP_TREES = _tree(LEAP_NOW.date())


@pytest.fixture
def population(teams: dict[str, Team], tags: dict[str, Tag]) -> list[PatientFacts]:
    _make_patients(random.Random(6), 150, teams, tags, TODAY)
    return load_facts()


@pytest.mark.django_db
@PROPERTY
@given(rules=TREES)
def test_sql_matches_the_reference_on_generated_patients_and_rule_trees(
    rules: dict[str, Any], population: list[PatientFacts]
) -> None:
    # The population is made once per test run and only read by every example.
    expected = reference_matching(rules, population, now=NOW)
    assert set(patients_matching(rules, now=NOW).values_list("id", flat=True)) == expected, rules


@pytest.mark.django_db
@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture], derandomize=True)
@given(data=st.data(), seed=st.integers(0, 10_000))
def test_sql_matches_the_reference_on_a_leap_day_for_hypothesis_generated_populations(
    data: st.DataObject, seed: int, teams: dict[str, Team], tags: dict[str, Tag]
) -> None:
    today = LEAP_NOW.date()
    # Each example gets its own population, rolled back afterwards.
    with transaction.atomic():
        _make_patients(random.Random(seed), 25, teams, tags, today)
        facts = load_facts()
        for _ in range(5):
            rules = data.draw(LEAP_TREES)
            expected = reference_matching(rules, facts, now=LEAP_NOW)
            assert set(patients_matching(rules, now=LEAP_NOW).values_list("id", flat=True)) == expected, rules
        transaction.set_rollback(True)


# --- Explicit cases ---------------------------------------------------------------------------------------------


def _visit(patient: Patient, team: Team, when: dt.datetime, **extra: Any) -> Visit:
    return Visit.objects.create(
        patient=patient,
        visit_number=f"V-{patient.pk}-{Visit.objects.count()}",
        department=team,
        admitted_at=when,
        **extra,
    )


WOMEN_OVER_50_IN_TIANHE = {
    "op": "and",
    "rules": [
        {"field": "gender", "operator": "in", "value": ["female"]},
        {"field": "age_band", "operator": "in", "value": [">50"]},
        {"field": "region", "operator": "in", "value": ["Tianhe", "天河区"]},
        {"field": "last_health_check", "operator": "more_than_months_ago", "value": 11},
        {"field": "marketing_consent", "operator": "is", "value": "not_opted_out"},
    ],
}


def test_women_over_50_in_tianhe_due_a_health_check_who_have_not_opted_out(teams: dict[str, Team]) -> None:
    checkup = teams["checkup"]
    old_check = dt.datetime(2024, 3, 1, 9, 0, tzinfo=SHANGHAI)  # 12 months before NOW

    def woman(**extra: Any) -> Patient:
        fields = {"gender": Gender.FEMALE, "birth_date": dt.date(1960, 5, 1), "region": "Tianhe", **extra}
        return Patient.objects.create(**fields)

    match = woman()
    _visit(match, checkup, old_check, kind=VisitKind.HEALTH_CHECK, package="Premium")
    chinese_district = woman(region="天河区")
    _visit(chinese_district, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    opted_in = woman()
    _visit(opted_in, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    Consent.objects.create(patient=opted_in, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN)

    opted_out = woman()
    _visit(opted_out, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    Consent.objects.create(patient=opted_out, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT)
    recent_check = woman()
    _visit(recent_check, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    _visit(recent_check, checkup, dt.datetime(2024, 6, 1, tzinfo=SHANGHAI), kind=VisitKind.HEALTH_CHECK)
    exactly_11_months = woman()  # 2024-04-01 is 11 months before 2025-03-01: not *more* than 11
    _visit(exactly_11_months, checkup, dt.datetime(2024, 4, 1, 0, 0, tzinfo=SHANGHAI), kind=VisitKind.HEALTH_CHECK)
    never_checked = woman()
    _visit(never_checked, teams["cardiology"], old_check)
    man = woman(gender=Gender.MALE)
    _visit(man, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    fifty = woman(birth_date=dt.date(1974, 3, 1))  # turns 51 on NOW's date: over 50
    _visit(fifty, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    forty_nine = woman(birth_date=dt.date(1974, 3, 2))  # still 50 on NOW's date
    _visit(forty_nine, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    yuexiu = woman(region="Yuexiu")
    _visit(yuexiu, checkup, old_check, kind=VisitKind.HEALTH_CHECK)
    tombstone = woman(merged_into=match)
    _visit(tombstone, checkup, old_check, kind=VisitKind.HEALTH_CHECK)

    found = set(patients_matching(WOMEN_OVER_50_IN_TIANHE, now=NOW).values_list("id", flat=True))

    assert found == {match.pk, chinese_district.pk, opted_in.pk, fifty.pk}
    assert found == reference_matching(WOMEN_OVER_50_IN_TIANHE, load_facts(), now=NOW)


def test_a_rule_tree_is_one_query(teams: dict[str, Team]) -> None:
    rules = {
        "op": "or",
        "rules": [
            WOMEN_OVER_50_IN_TIANHE,
            {"op": "and", "rules": [{"field": "total_spend", "operator": "gte", "value": "1000"}]},
        ],
    }
    with CaptureQueriesContext(connection) as queries:
        list(patients_matching(rules, now=NOW).values_list("id", flat=True))
    assert len(queries.captured_queries) == 1


def test_ages_count_from_the_hospitals_date_not_utc(db: Any) -> None:
    # At 01:30 on 1 March in Shanghai it is still 28 February in UTC.
    turns_35_today = Patient.objects.create(birth_date=dt.date(1990, 3, 1))
    rules = {"op": "and", "rules": [{"field": "age_band", "operator": "in", "value": ["35-50"]}]}
    assert list(patients_matching(rules, now=NOW).values_list("id", flat=True)) == [turns_35_today.pk]


def test_a_patient_without_lifecycle_has_no_stage(db: Any) -> None:
    without = Patient.objects.create()
    lapsed = Patient.objects.create()
    PatientLifecycle.objects.create(patient=lapsed, stage=LifecycleStage.LAPSED)
    is_lapsed = {"op": "and", "rules": [{"field": "lifecycle_stage", "operator": "in", "value": ["lapsed"]}]}
    not_lapsed = {"op": "and", "rules": [{"field": "lifecycle_stage", "operator": "not_in", "value": ["lapsed"]}]}
    assert set(patients_matching(is_lapsed).values_list("id", flat=True)) == {lapsed.pk}
    assert set(patients_matching(not_lapsed).values_list("id", flat=True)) == {without.pk}


def test_calendar_helpers_at_month_ends_and_leap_days() -> None:
    assert months_before(dt.date(2025, 3, 31), 1) == dt.date(2025, 2, 28)
    assert months_before(dt.date(2024, 3, 31), 1) == dt.date(2024, 2, 29)
    assert months_before(dt.date(2025, 1, 15), 13) == dt.date(2023, 12, 15)
    assert latest_birth_date_for_age(dt.date(2024, 2, 29), 1) == dt.date(2023, 2, 28)
    assert latest_birth_date_for_age(dt.date(2024, 2, 29), 4) == dt.date(2020, 2, 29)


# --- Validation --------------------------------------------------------------------------------------------------


def _errors(rules: Any) -> list[str]:
    with pytest.raises(RulesInvalid) as caught:
        validate_rules(rules)
    return [str(e) for e in caught.value.errors]


@pytest.mark.django_db
def test_validation_errors_name_the_path_of_each_problem(teams: dict[str, Team]) -> None:
    errors = _errors(
        {
            "op": "and",
            "rules": [
                {"field": "gender", "operator": "in", "value": ["female"]},
                {
                    "op": "or",
                    "rules": [
                        {"field": "age_band", "operator": "in", "value": ["over 9000"]},
                        {"field": "shoe_size", "operator": "in", "value": [42]},
                        {"field": "visit_count", "operator": "between", "value": {"min": 5, "max": 2}},
                    ],
                },
                {"field": "last_visit", "operator": "before", "value": "01/03/2024"},
                {"field": "total_spend", "operator": "gte", "value": "lots"},
                {"field": "gender", "operator": "contains", "value": "f"},
            ],
        }
    )
    assert errors[0].startswith("rules[1].rules[0].value: “over 9000” is not one of")
    assert errors[1] == "rules[1].rules[1].field: Unknown field “shoe_size”."
    assert errors[2] == "rules[1].rules[2].value: The minimum is larger than the maximum."
    assert errors[3].startswith("rules[2].value: Write the date as YYYY-MM-DD")
    assert errors[4].startswith("rules[3].value: Enter an amount")
    assert errors[5].startswith("rules[4].operator: “gender” takes one of the operators in, not_in")
    assert len(errors) == 6


@pytest.mark.django_db
def test_groups_nest_three_levels_and_no_deeper(db: Any) -> None:
    leaf = {"field": "gender", "operator": "in", "value": ["male"]}
    three = {"op": "and", "rules": [{"op": "or", "rules": [{"op": "and", "rules": [leaf]}]}]}
    assert validate_rules(three) == three
    four = {"op": "and", "rules": [{"op": "or", "rules": [{"op": "and", "rules": [{"op": "or", "rules": [leaf]}]}]}]}
    assert _errors(four) == ["rules[0].rules[0].rules[0]: Groups can be nested at most 3 levels deep."]
    assert _errors({"op": "xor", "rules": [{"op": "and", "rules": []}]}) == [
        "op: Choose “and” or “or”.",
        "rules[0].rules: This group is empty; add a rule or remove the group.",
    ]
    assert _errors("everyone") == ["A group must be an object with “op” and “rules”."]


def test_unknown_departments_and_tags_are_refused_when_saving(teams: dict[str, Team]) -> None:
    Tag.objects.create(name="newsletter")
    errors = _errors(
        {
            "op": "and",
            "rules": [
                {"field": "department", "operator": "any_of", "value": ["cardiology", "dentistry"]},
                {"field": "tags", "operator": "all_of", "value": ["newsletter", "golf"]},
            ],
        }
    )
    assert errors == ["rules[0].value: No department with the code dentistry.", "rules[1].value: No tag named golf."]


def test_saved_rules_are_normalized(world: World) -> None:
    segment = save_segment(
        segment=None,
        name="  Big spenders ",
        rules={
            "op": "and",
            "rules": [
                {"field": "total_spend", "operator": "between", "value": {"min": 1000, "max": "5000.5"}},
                {"field": "region", "operator": "in", "value": [" Tianhe ", "Tianhe"]},
                {"field": "last_visit", "operator": "within_days", "value": "30"},
            ],
        },
        actor=world.mark,
    )
    assert segment.name == "Big spenders"
    assert segment.rules["rules"] == [
        {"field": "total_spend", "operator": "between", "value": {"min": "1000.00", "max": "5000.50"}},
        {"field": "region", "operator": "in", "value": ["Tianhe"]},
        {"field": "last_visit", "operator": "within_days", "value": 30},
    ]
    assert parse_rules(segment.rules).to_json() == segment.rules
    with pytest.raises(ValidationError) as caught:
        save_segment(segment=None, name="big SPENDERS", rules={}, actor=world.mark)
    assert "name" in caught.value.message_dict


# --- Static lists ------------------------------------------------------------------------------------------------


def _with_identity(kind: str, value: str, **extra: Any) -> Patient:
    patient = Patient.objects.create(**extra)
    PatientIdentity.objects.create(patient=patient, kind=kind, value=value)
    return patient


def test_static_list_csv_keeps_good_rows_and_reports_the_rest(world: World) -> None:
    segment = save_segment(segment=None, name="Gala guests", kind="static", actor=world.mark)
    by_phone = _with_identity(IdentityKind.PHONE, "+8613800138000")
    by_mrn = _with_identity(IdentityKind.MRN, "MRN-0042")
    survivor = Patient.objects.create()
    _with_identity(IdentityKind.PHONE, "+8613900139000", merged_into=survivor)
    csv_text = (
        "手机,病案号\n"
        "138 0013 8000,\n"  # row 2: matched by phone
        ",mrn-0042\n"  # row 3: matched by MRN, normalized to upper case
        "12345,\n"  # row 4: not a phone number
        "13700137000,\n"  # row 5: nobody has it
        "0086-138-0013-8000,\n"  # row 6: same patient as row 2
        "\n"
        ",bad mrn!\n"  # row 8: invalid MRN
        "13900139000,\n"  # row 9: a merged record: its survivor is listed
        "13800138000,MRN-0042\n"  # row 10: phone and MRN of different patients
    )
    report = import_static_list(segment=segment, data=b"\xef\xbb\xbf" + csv_text.encode("utf-8"))

    assert (report.rows, report.added, report.already_listed, report.encoding) == (8, 3, 0, "utf-8-sig")
    assert [(r.row, r.value) for r in report.rejected] == [
        (4, "12345"),
        (5, "13700137000"),
        (6, "0086-138-0013-8000"),
        (8, "bad mrn!"),
        (10, "13800138000"),
    ]
    assert "not a valid phone number" in report.rejected[0].reason
    assert report.rejected[1].reason == "No patient has this phone number."
    assert report.rejected[2].reason == "Same patient as row 2; listed once."
    assert "not a medical record number" in report.rejected[3].reason
    assert report.rejected[4].reason == "The phone number and the MRN belong to different patients."
    assert set(segment_patients(segment).values_list("id", flat=True)) == {by_phone.pk, by_mrn.pk, survivor.pk}

    again = import_static_list(segment=segment, data="mrn\nMRN-0042\n".encode("gb18030"))
    assert (again.added, again.already_listed) == (0, 1)


def test_static_list_reads_gb18030_and_refuses_unusable_files(world: World) -> None:
    segment = save_segment(segment=None, name="Excel list", kind="static", actor=world.mark)
    _with_identity(IdentityKind.MRN, "BA-001")
    report = import_static_list(segment=segment, data="病案号\nba-001\n".encode("gb18030"))
    assert (report.added, report.encoding) == (1, "gb18030")

    for data, message in [
        (b"name\nWang\n", "The first row must name the column"),
        (b"PK\x03\x04rest", "Excel workbook"),
        (b"", "empty"),
    ]:
        with pytest.raises(ValidationError) as caught:
            import_static_list(segment=segment, data=data)
        assert message in caught.value.message_dict["file"][0]
    rules_segment = save_segment(segment=None, name="Rules", rules={}, actor=world.mark)
    with pytest.raises(ValidationError):
        import_static_list(segment=rules_segment, data=b"phone\n13800138000\n")


def test_a_segment_used_by_a_campaign_cannot_be_deleted(world: World) -> None:
    segment = save_segment(segment=None, name="Everyone", rules={}, actor=world.mark)
    campaign = Campaign.objects.create(name="Spring", segment=segment, inbox=world.inbox_a, body="Hi")
    with pytest.raises(ValidationError, match="Draft campaigns use this segment"):
        delete_segment(segment=segment)
    Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.COMPLETED)
    with pytest.raises(ValidationError, match="stays for their history"):
        delete_segment(segment=segment)
    unused = save_segment(segment=None, name="Unused", rules={}, actor=world.mark)
    delete_segment(segment=unused)
    assert not Segment.objects.filter(pk=unused.pk).exists()


# --- API -----------------------------------------------------------------------------------------------------------


def api(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user=user)
    return client


URL = "/api/v1/campaigns/segments/"


def test_only_marketers_supervisors_and_admins_use_segments(world: World) -> None:
    segment = save_segment(segment=None, name="Everyone", rules={}, actor=world.mark)
    for name in ("alice", "charlie", "nina"):
        client = api(getattr(world, name))
        assert client.get(URL).status_code == 403
        assert client.get(f"{URL}{segment.pk}/").status_code == 403
        assert client.post(f"{URL}preview/", {"rules": {}}, format="json").status_code == 403
        assert client.get(f"{URL}fields/").status_code == 403
    assert APIClient().get(URL).status_code in (401, 403)
    for name in ("mark", "sam", "ada"):
        response = api(getattr(world, name)).get(URL)
        assert response.status_code == 200
        assert [s["name"] for s in response.json()["results"]] == ["Everyone"]


def test_preview_counts_without_naming_anyone(world: World) -> None:
    Patient.objects.create(gender=Gender.FEMALE, name="Wang Fang")
    Patient.objects.create(gender=Gender.FEMALE, name="Li Na")
    Patient.objects.create(gender=Gender.MALE, name="Zhang Wei")
    women = {"op": "and", "rules": [{"field": "gender", "operator": "in", "value": ["female"]}]}
    response = api(world.mark).post(f"{URL}preview/", {"rules": women}, format="json")
    assert response.status_code == 200
    # Never asked about marketing: both counted, neither reachable under the default opt-in policy.
    assert response.json() == {"count": 2, "marketing_allowed": 0, "excluded_for_consent": 2}

    bad = {"op": "and", "rules": [women, {"field": "gender", "operator": "in", "value": ["fish"]}]}
    response = api(world.mark).post(f"{URL}preview/", {"rules": bad}, format="json")
    assert response.status_code == 400
    assert response.json()["rules"][0].startswith("rules[1].value: “fish” is not one of")


def test_segment_counts_say_how_many_are_left_out_for_consent_under_the_policy(world: World, settings: Any) -> None:
    from contactcenter.actions.consent import record_consent
    from contactcenter.models import ConsentSource

    def consent(patient: Patient, status: str) -> None:
        record_consent(patient=patient, purpose=ConsentPurpose.MARKETING, status=status, source=ConsentSource.API)

    asked = Patient.objects.create(gender=Gender.FEMALE)
    consent(asked, ConsentStatus.OPTED_IN)
    stopped = Patient.objects.create(gender=Gender.FEMALE)
    consent(stopped, ConsentStatus.OPTED_OUT)
    recent = Patient.objects.create(gender=Gender.FEMALE)
    Visit.objects.create(
        patient=recent,
        visit_number="V-recent",
        department=world.team_a,
        admitted_at=dt.datetime.now(dt.UTC) - dt.timedelta(days=20),
    )
    Patient.objects.create(gender=Gender.FEMALE)  # never asked, never visited
    women = {"op": "and", "rules": [{"field": "gender", "operator": "in", "value": ["female"]}]}
    saved = api(world.mark).post(URL, {"name": "Women", "rules": women}, format="json").json()

    preview = api(world.mark).post(f"{URL}preview/", {"rules": women}, format="json").json()
    detail = api(world.mark).get(f"{URL}{saved['id']}/").json()

    assert preview == {"count": 4, "marketing_allowed": 1, "excluded_for_consent": 3}
    assert (detail["count"], detail["marketing_allowed"], detail["excluded_for_consent"]) == (4, 1, 3)
    settings.MARKETING_CONSENT_POLICY = "existing_patient"
    preview = api(world.mark).post(f"{URL}preview/", {"rules": women}, format="json").json()
    assert preview == {"count": 4, "marketing_allowed": 2, "excluded_for_consent": 2}


def test_segment_crud_through_the_api(world: World) -> None:
    client = api(world.mark)
    Patient.objects.create(gender=Gender.MALE)
    rules = {"op": "and", "rules": [{"field": "gender", "operator": "in", "value": ["male"]}]}
    created = client.post(URL, {"name": "Men", "rules": rules}, format="json")
    assert created.status_code == 201, created.content
    body = created.json()
    assert (body["kind"], body["count"], body["member_count"], body["rules"]) == ("rules", 1, None, rules)

    bad = client.put(
        f"{URL}{body['id']}/", {"name": "Men", "rules": {"op": "and", "rules": [{"field": "x"}]}}, format="json"
    )
    assert bad.status_code == 400
    assert bad.json() == {"rules": ["rules[0].field: Unknown field “x”."]}

    renamed = client.put(f"{URL}{body['id']}/", {"name": "Male patients", "rules": rules}, format="json")
    assert renamed.status_code == 200
    assert client.get(f"{URL}{body['id']}/").json()["name"] == "Male patients"
    assert client.put(f"{URL}{body['id']}/", {"name": "x", "kind": "static"}, format="json").status_code == 400
    assert client.delete(f"{URL}{body['id']}/").status_code == 204
    assert client.get(f"{URL}{body['id']}/").status_code == 404


def test_static_list_upload_through_the_api(world: World) -> None:
    client = api(world.mark)
    _with_identity(IdentityKind.PHONE, "+8613800138000")
    segment = client.post(URL, {"name": "Upload", "kind": "static"}, format="json").json()
    upload = _upload(b"phone\n13800138000\nnot a phone\n")
    response = client.post(f"{URL}{segment['id']}/members/", {"file": upload}, format="multipart")
    assert response.status_code == 200, response.content
    report = response.json()
    assert (report["added"], report["member_count"], report["rejected"][0]["row"]) == (1, 1, 3)
    refused = client.post(f"{URL}{segment['id']}/members/", {"file": _upload(b"PK\x03\x04")}, format="multipart")
    assert refused.status_code == 400
    assert "Excel" in refused.json()["file"][0]


def _upload(data: bytes) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    return SimpleUploadedFile("list.csv", data, content_type="text/csv")


def test_field_catalog_offers_every_field_with_choices(world: World, teams: dict[str, Team]) -> None:
    Patient.objects.create(region="Tianhe")
    response = api(world.mark).get(f"{URL}fields/", HTTP_ACCEPT_LANGUAGE="zh-hans")
    assert response.status_code == 200
    fields = {f["field"]: f for f in response.json()["fields"]}
    assert set(fields) >= {"age_band", "gender", "region", "department", "last_visit", "tags", "marketing_consent"}
    assert fields["region"]["choices"] == [{"value": "Tianhe", "label": "Tianhe"}]
    assert {"value": "checkup", "label": "体检中心"} in fields["department"]["choices"]
    assert [op["operator"] for op in fields["last_visit"]["operators"]] == [
        "before",
        "after",
        "within_days",
        "more_than_months_ago",
        "never",
    ]


def test_the_segment_api_schema_is_clean(tmp_path: Any) -> None:
    from django.core.management import call_command

    call_command("spectacular", "--validate", "--fail-on-warn", "--file", str(tmp_path / "schema.yml"))
    schema = (tmp_path / "schema.yml").read_text()
    assert "/api/v1/campaigns/segments/preview/" in schema
    assert "SegmentFieldCatalogShape" in schema

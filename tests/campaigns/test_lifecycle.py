"""Lifecycle stages and value types: the rules at their thresholds, the recompute paths, the page."""

from __future__ import annotations

import array
import ast
import datetime as dt
import itertools
import re
import struct
import zoneinfo
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.db import connection
from django.test import Client, override_settings
from django.test.utils import CaptureQueriesContext
from django.utils import timezone, translation

from campaigns import lifecycle
from campaigns.actions.lifecycle import (
    get_rules,
    recompute_all,
    recompute_patient,
    run_nightly_recompute,
    update_rules,
)
from campaigns.lifecycle import VisitFacts, classify
from campaigns.models import LifecycleRules, LifecycleStage, PatientLifecycle, ValueType
from contactcenter import dispatch
from contactcenter.actions.visits import record_visit
from contactcenter.models import Patient, Team, VisitKind

ROOT = Path(__file__).resolve().parents[2]
# The shipped catalog: these tests fail when a lifecycle string has no Chinese there.
FRAGMENT = ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po"
LIFECYCLE_URL = "/campaigns/lifecycle/"
HOSPITAL = zoneinfo.ZoneInfo(settings.TIME_ZONE)


def at(year: int, month: int, day: int, hour: int = 10, minute: int = 0) -> dt.datetime:
    return dt.datetime(year, month, day, hour, minute, tzinfo=HOSPITAL)


@dataclass
class Rules:
    lapsed_after_months: int = 12
    long_term_min_visits: int = 3
    value_min_spend: Decimal = Decimal("10000")
    benefit_min_visits: int = 3
    window_months: int = 24


NOW = at(2026, 3, 14)


def facts(
    visits: int = 1,
    *,
    last: dt.datetime | None = None,
    window_visits: int | None = None,
    spend: str = "0",
    enquired: bool = False,
) -> VisitFacts:
    last = last or at(2026, 1, 10)
    return VisitFacts(
        visit_count=visits,
        window_visit_count=visits if window_visits is None else window_visits,
        window_spend=Decimal(spend),
        first_visit_at=last if visits else None,
        last_visit_at=last if visits else None,
        enquired=enquired,
    )


# --- the rules -----------------------------------------------------------------------------------------


def test_enquired_without_visits_is_potential_with_no_value_type() -> None:
    result = classify(VisitFacts(enquired=True), Rules(), now=NOW)
    assert (result.stage, result.value_type) == (LifecycleStage.POTENTIAL, "")
    assert result.explanation == "No visits yet, but in touch with us: potential."


def test_no_visits_and_never_in_touch_has_no_stage() -> None:
    result = classify(VisitFacts(), Rules(), now=NOW)
    assert (result.stage, result.value_type) == (None, "")


def test_one_recent_visit_is_first_time() -> None:
    stage, value_type, explanation = classify(facts(1, spend="300"), Rules(), now=NOW)
    assert (stage, value_type) == (LifecycleStage.FIRST_TIME, ValueType.OCCASIONAL)
    assert explanation == (
        "1 visit, 2 months ago: first-time. In the last 24 months: 1 visit, 300.00 spent "
        "(below 10,000.00 and fewer than 3 visits): occasional."
    )


def test_two_visits_stay_first_time_until_the_long_term_threshold() -> None:
    assert classify(facts(2), Rules(long_term_min_visits=3), now=NOW).stage == LifecycleStage.FIRST_TIME
    assert classify(facts(3), Rules(long_term_min_visits=3), now=NOW).stage == LifecycleStage.LONG_TERM
    assert classify(facts(2), Rules(long_term_min_visits=2), now=NOW).stage == LifecycleStage.LONG_TERM


def test_a_threshold_of_one_visit_still_leaves_one_visit_first_time() -> None:
    assert classify(facts(1), Rules(long_term_min_visits=1), now=NOW).stage == LifecycleStage.FIRST_TIME


def test_two_visits_explain_the_long_term_threshold() -> None:
    result = classify(facts(2, last=at(2026, 2, 1)), Rules(), now=NOW)
    assert result.explanation.startswith(
        "2 visits, the last 1 month ago (long-term from 3 visits): first-time. In the last 24 months:"
    )


def test_lapsed_exactly_at_the_threshold_not_a_second_before() -> None:
    rules = Rules(lapsed_after_months=12)
    exactly = at(2025, 3, 14, 10, 0)
    assert classify(facts(1, last=exactly), rules, now=NOW).stage == LifecycleStage.LAPSED
    just_inside = exactly + dt.timedelta(seconds=1)
    assert classify(facts(1, last=just_inside), rules, now=NOW).stage == LifecycleStage.FIRST_TIME
    assert classify(facts(5, last=just_inside), rules, now=NOW).stage == LifecycleStage.LONG_TERM


def test_lapsed_wins_over_long_term_and_is_configurable() -> None:
    last = at(2025, 1, 14)
    assert classify(facts(3, last=last), Rules(lapsed_after_months=12), now=NOW).stage == LifecycleStage.LAPSED
    assert classify(facts(3, last=last), Rules(lapsed_after_months=18), now=NOW).stage == LifecycleStage.LONG_TERM


def test_lapsed_explanation_names_the_months_and_the_threshold() -> None:
    result = classify(facts(3, last=at(2025, 1, 2), window_visits=0), Rules(), now=NOW)
    assert result.explanation == (
        "3 visits, the last 14 months ago (lapsed after 12 months without a visit): lapsed. "
        "In the last 24 months: no visits, 0.00 spent (below 10,000.00 and fewer than 3 visits): occasional."
    )


def test_value_oriented_from_exactly_the_minimum_spend() -> None:
    rules = Rules(value_min_spend=Decimal("10000"))
    assert classify(facts(1, spend="10000.00"), rules, now=NOW).value_type == ValueType.VALUE
    assert classify(facts(1, spend="9999.99"), rules, now=NOW).value_type == ValueType.OCCASIONAL
    result = classify(facts(1, spend="12000"), rules, now=NOW)
    assert result.explanation.endswith(
        "In the last 24 months: 1 visit, 12,000.00 spent (value-oriented from 10,000.00): value-oriented."
    )


def test_benefit_oriented_from_exactly_the_minimum_visits_below_the_spend() -> None:
    rules = Rules(benefit_min_visits=3)
    assert classify(facts(3, spend="500"), rules, now=NOW).value_type == ValueType.BENEFIT
    assert classify(facts(2, spend="500"), rules, now=NOW).value_type == ValueType.OCCASIONAL
    # Spending enough makes a frequent patient value-oriented rather than benefit-oriented.
    assert classify(facts(3, spend="10000"), rules, now=NOW).value_type == ValueType.VALUE
    assert classify(facts(3, spend="500"), rules, now=NOW).explanation.endswith(
        "In the last 24 months: 3 visits (benefit-oriented from 3), 500.00 spent (below 10,000.00): benefit-oriented."
    )


def test_value_type_counts_only_visits_in_the_window() -> None:
    # Five visits ever, one in the window: occasional, however loyal before.
    result = classify(facts(5, window_visits=1, spend="100"), Rules(), now=NOW)
    assert (result.stage, result.value_type) == (LifecycleStage.LONG_TERM, ValueType.OCCASIONAL)


def test_months_are_calendar_months_in_the_hospital_time_zone() -> None:
    assert lifecycle.months_since(at(2026, 1, 31), at(2026, 2, 28)) == 1
    assert lifecycle.months_since(at(2026, 1, 31), at(2026, 2, 27)) == 0
    assert lifecycle.months_since(at(2026, 3, 14, 10), at(2026, 3, 14, 9)) == 0
    assert lifecycle.months_since(at(2026, 5, 1), NOW) == 0  # a visit after "now" is not months ago
    # 23:30 on 31 Dec in Shanghai is still December there, whatever UTC says.
    utc_evening = dt.datetime(2025, 12, 31, 15, 30, tzinfo=dt.UTC)
    assert lifecycle.months_since(utc_evening, at(2026, 1, 31, 23, 30)) == 1
    assert lifecycle.window_start(Rules(window_months=24), NOW) == at(2024, 3, 14)


# --- Chinese ---------------------------------------------------------------------------------------------


def _po_entries(path: Path) -> dict[str, str]:
    entries: dict[str, str] = {}
    key: str | None = None
    current: list[str] = []
    msgid = ""

    def flush() -> None:
        nonlocal msgid
        if key == "msgid":
            msgid = "".join(current)
        elif key == "msgstr":
            entries[msgid] = "".join(current)

    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.strip()
        if line.startswith(("msgid ", "msgstr ")):
            flush()
            key, _, rest = line.partition(" ")
            current = [ast.literal_eval(rest)]
        elif line.startswith('"'):
            current.append(ast.literal_eval(line))
        else:
            flush()
            key, current = None, []
    flush()
    return entries


def _write_mo(entries: dict[str, str], path: Path) -> None:
    """GNU .mo from msgid → msgstr (as msgfmt writes it), so the test reads the fragment as Django will."""
    catalog = {"": "Content-Type: text/plain; charset=UTF-8\n", **entries}
    keys = sorted(catalog)
    ids = strs = b""
    offsets = []
    for key in keys:
        k, v = key.encode(), catalog[key].encode()
        offsets.append((len(ids), len(k), len(strs), len(v)))
        ids += k + b"\0"
        strs += v + b"\0"
    keystart = 7 * 4 + 16 * len(keys)
    valuestart = keystart + len(ids)
    table: list[int] = []
    for o1, l1, _o2, _l2 in offsets:
        table += [l1, o1 + keystart]
    for _o1, _l1, o2, l2 in offsets:
        table += [l2, o2 + valuestart]
    header = struct.pack("Iiiiiii", 0x950412DE, 0, len(keys), 7 * 4, 7 * 4 + len(keys) * 8, 0, 0)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(header + array.array("i", table).tobytes() + ids + strs)


@pytest.fixture
def fragment_catalog(tmp_path: Path) -> Any:
    """Django's own translation machinery reading this fragment ahead of the merged project catalog."""
    _write_mo(_po_entries(FRAGMENT), tmp_path / "zh_Hans" / "LC_MESSAGES" / "django.mo")
    with override_settings(LOCALE_PATHS=[tmp_path, *settings.LOCALE_PATHS]):
        yield


def _source_msgids() -> set[str]:
    found: set[str] = set()
    for name in ("campaigns/lifecycle.py", "campaigns/actions/lifecycle.py", "campaigns/lifecycle_views.py"):
        tree = ast.parse((ROOT / name).read_text(encoding="utf-8"))
        for node in ast.walk(tree):
            if (
                isinstance(node, ast.Call)
                and isinstance(node.func, ast.Name)
                and node.func.id == "_"
                and node.args
                and isinstance(node.args[0], ast.Constant)
            ):
                found.add(node.args[0].value)
    template = (ROOT / "campaigns/templates/campaigns/lifecycle.html").read_text(encoding="utf-8")
    found |= set(re.findall(r'{% translate "([^"]+)" %}', template))
    for body in re.findall(r"{% blocktranslate[^%]*%}(.*?){% endblocktranslate %}", template, re.S):
        found.add(re.sub(r"{{ (\w+) }}", r"%(\1)s", body.strip()))
    return found


def test_every_lifecycle_string_has_a_chinese_translation() -> None:
    entries = _po_entries(FRAGMENT)
    merged = _po_entries(ROOT / "locale" / "zh_Hans" / "LC_MESSAGES" / "django.po")
    missing = sorted(m for m in _source_msgids() if not (entries.get(m) or merged.get(m)))
    assert missing == []
    assert all(value for value in entries.values())


def test_explanation_in_chinese(fragment_catalog: Any) -> None:
    with translation.override("zh-hans"):
        result = classify(facts(3, last=at(2025, 1, 2), window_visits=0), Rules(), now=NOW)
    assert result.explanation == (
        "就诊 3 次，最近一次 14 个月前（满 12 个月未就诊即为流失）：流失客户。"
        "近 24 个月：无就诊，消费 0.00（低于 10,000.00，且少于 3 次）：偶然型。"
    )


# --- recomputing in the database -----------------------------------------------------------------------

_visit_numbers = itertools.count(1)


def visit(patient: Patient, team: Team, admitted_at: dt.datetime, amount: str = "0") -> str:
    number = f"V-LC-{next(_visit_numbers)}"
    record_visit(
        patient=patient,
        visit_number=number,
        department=team,
        kind=VisitKind.OUTPATIENT,
        admitted_at=admitted_at,
        amount=Decimal(amount),
    )
    return number


def test_recording_a_visit_recomputes_that_patient(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    patient = Patient.objects.create()
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        visit(patient, world.team_a, now - dt.timedelta(days=40), "800")
    row = PatientLifecycle.objects.get(patient=patient)
    assert (row.stage, row.value_type, row.visit_count, row.total_spend) == (
        LifecycleStage.FIRST_TIME,
        ValueType.OCCASIONAL,
        1,
        Decimal("800.00"),
    )
    assert row.explanation.startswith("1 visit, 1 month ago: first-time.")

    with django_capture_on_commit_callbacks(execute=True):
        visit(patient, world.team_a, now - dt.timedelta(days=20), "5000")
        visit(patient, world.team_b, now - dt.timedelta(days=10), "5000")
    row.refresh_from_db()
    assert (row.stage, row.value_type, row.visit_count, row.window_spend) == (
        LifecycleStage.LONG_TERM,
        ValueType.VALUE,
        3,
        Decimal("10800.00"),
    )


def test_a_rolled_back_visit_recomputes_nothing(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    patient = Patient.objects.create()
    with django_capture_on_commit_callbacks(execute=False) as callbacks:
        visit(patient, world.team_a, timezone.now() - dt.timedelta(days=3))
    # The hook waits for the commit; the test transaction never commits, so nothing has run yet.
    assert len(callbacks) == 1
    assert not PatientLifecycle.objects.filter(patient=patient).exists()


def test_a_visit_moved_to_another_patient_recomputes_both(world: Any, django_capture_on_commit_callbacks: Any) -> None:
    first, second = Patient.objects.create(), Patient.objects.create()
    admitted = timezone.now() - dt.timedelta(days=5)
    with django_capture_on_commit_callbacks(execute=True):
        number = visit(first, world.team_a, admitted)
    assert PatientLifecycle.objects.filter(patient=first).exists()
    with django_capture_on_commit_callbacks(execute=True):
        record_visit(
            patient=second,
            visit_number=number,
            department=world.team_a,
            kind=VisitKind.OUTPATIENT,
            admitted_at=admitted,
        )
    assert not PatientLifecycle.objects.filter(patient=first).exists()
    assert PatientLifecycle.objects.get(patient=second).stage == LifecycleStage.FIRST_TIME


def _population(world: Any, inbound: Any, now: dt.datetime) -> dict[str, Patient]:
    """One patient of each kind, visits written directly so no hook has computed anything yet."""
    from contactcenter.models import Visit

    def visits(patient: Patient, *moments: tuple[dt.datetime, str]) -> None:
        for moment, amount in moments:
            Visit.objects.create(
                patient=patient,
                visit_number=f"V-POP-{next(_visit_numbers)}",
                department=world.team_a,
                admitted_at=moment,
                amount=Decimal(amount),
            )

    people = {
        "potential": inbound(world.inbox_a, "+8613800138001", "请问体检套餐多少钱？").patient,
        "nobody": Patient.objects.create(),
        "first_time": Patient.objects.create(),
        "long_term": Patient.objects.create(),
        "lapsed": Patient.objects.create(),
        "merged": Patient.objects.create(),
    }
    visits(people["first_time"], (now - dt.timedelta(days=30), "200"))
    visits(people["long_term"], *[(now - dt.timedelta(days=d), "4000") for d in (300, 200, 100)])
    visits(people["lapsed"], (now - dt.timedelta(days=800), "100"), (now - dt.timedelta(days=400), "100"))
    visits(people["merged"], (now - dt.timedelta(days=10), "100"))
    people["merged"].merged_into = people["long_term"]
    people["merged"].save(update_fields=["merged_into"])
    return people


def test_recompute_all_classifies_everyone_and_counts_those_with_a_stage(world: Any, inbound: Any) -> None:
    now = timezone.now()
    people = _population(world, inbound, now)
    # A stale row for the merged-away patient, left from before the merge.
    PatientLifecycle.objects.create(patient=people["merged"], stage=LifecycleStage.FIRST_TIME)

    assert recompute_all(batch=2, now=now) == 4

    stages = dict(PatientLifecycle.objects.values_list("patient_id", "stage"))
    assert stages == {
        people["potential"].pk: LifecycleStage.POTENTIAL,
        people["first_time"].pk: LifecycleStage.FIRST_TIME,
        people["long_term"].pk: LifecycleStage.LONG_TERM,
        people["lapsed"].pk: LifecycleStage.LAPSED,
    }
    long_term = PatientLifecycle.objects.get(patient=people["long_term"])
    assert (long_term.value_type, long_term.total_spend, long_term.window_visit_count) == (
        ValueType.VALUE,
        Decimal("12000.00"),
        3,
    )
    lapsed = PatientLifecycle.objects.get(patient=people["lapsed"])
    assert (lapsed.value_type, lapsed.visit_count, lapsed.window_visit_count) == (ValueType.OCCASIONAL, 2, 1)
    assert PatientLifecycle.objects.get(patient=people["potential"]).value_type == ""
    # Running again changes nothing and writes no duplicate rows.
    assert recompute_all(now=now) == 4
    assert PatientLifecycle.objects.count() == 4


def test_recompute_all_costs_the_same_queries_for_more_patients(world: Any) -> None:
    from contactcenter.models import Visit

    def make(count: int) -> None:
        for _ in range(count):
            patient = Patient.objects.create()
            Visit.objects.create(
                patient=patient,
                visit_number=f"V-Q-{next(_visit_numbers)}",
                department=world.team_a,
                admitted_at=timezone.now() - dt.timedelta(days=3),
            )

    get_rules()
    make(5)
    with CaptureQueriesContext(connection) as few:
        recompute_all(batch=1000)
    make(45)
    with CaptureQueriesContext(connection) as many:
        assert recompute_all(batch=1000) == 50
    assert len(many) == len(few)


def test_recompute_patient_returns_the_row_or_none(world: Any) -> None:
    from contactcenter.models import Visit

    patient = Patient.objects.create()
    assert recompute_patient(patient) is None
    Visit.objects.create(
        patient=patient,
        visit_number="V-ONE",
        department=world.team_a,
        admitted_at=timezone.now() - dt.timedelta(days=1),
    )
    row = recompute_patient(patient)
    assert row is not None and row.stage == LifecycleStage.FIRST_TIME


def test_stored_explanation_reads_in_the_viewers_language(world: Any, fragment_catalog: Any) -> None:
    from contactcenter.models import Visit

    patient = Patient.objects.create()
    Visit.objects.create(
        patient=patient,
        visit_number="V-LANG",
        department=world.team_a,
        admitted_at=timezone.now() - dt.timedelta(days=1),
    )
    with translation.override("zh-hans"):
        row = recompute_patient(patient)
    assert row is not None
    assert row.explanation.startswith("1 visit, less than a month ago: first-time.")
    with translation.override("zh-hans"):
        assert lifecycle.explain_stored(row, get_rules()).startswith("就诊 1 次，不到一个月前：首次客户。")


# --- rules ------------------------------------------------------------------------------------------------


RULE_VALUES = {
    "lapsed_after_months": 12,
    "long_term_min_visits": 3,
    "value_min_spend": "10000",
    "benefit_min_visits": 3,
    "window_months": 24,
}


def test_rules_are_created_with_defaults_on_first_read(db: Any) -> None:
    assert not LifecycleRules.objects.exists()
    rules = get_rules()
    assert (rules.pk, rules.lapsed_after_months, rules.long_term_min_visits) == (1, 12, 3)


def test_changing_the_rules_recomputes_everyone(
    world: Any, inbound: Any, django_capture_on_commit_callbacks: Any
) -> None:
    people = _population(world, inbound, timezone.now())
    recompute_all()
    assert PatientLifecycle.objects.get(patient=people["lapsed"]).stage == LifecycleStage.LAPSED

    with django_capture_on_commit_callbacks(execute=True):
        update_rules(actor=world.ada, **{**RULE_VALUES, "lapsed_after_months": 24, "long_term_min_visits": 2})

    row = PatientLifecycle.objects.get(patient=people["lapsed"])
    assert row.stage == LifecycleStage.LONG_TERM
    assert "(long-term from 2 visits)" in row.explanation
    assert LifecycleRules.objects.get(pk=1).lapsed_after_months == 24


@pytest.mark.parametrize(
    ("field", "value", "message"),
    [
        ("lapsed_after_months", "0", "Enter a number from 1 to 240."),
        ("long_term_min_visits", "1", "Enter a number from 2 to 1000."),
        ("value_min_spend", "12.345", "Enter an amount with at most two decimals."),
        ("value_min_spend", "NaN", "Enter a number."),
        ("window_months", "twelve", "Enter a number."),
        ("benefit_min_visits", "", "Enter a number."),
    ],
)
def test_bad_rule_values_are_refused_per_field(db: Any, field: str, value: str, message: str) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as refused:
        update_rules(actor=None, **{**RULE_VALUES, field: value})
    assert refused.value.message_dict == {field: [message]}
    assert get_rules().lapsed_after_months == 12


# --- nightly ----------------------------------------------------------------------------------------------


def test_the_nightly_job_is_registered_with_the_due_work() -> None:
    assert "campaign_lifecycles_nightly" in dispatch._jobs


def test_nightly_recompute_runs_once_per_hospital_night_after_two(world: Any) -> None:
    from contactcenter.models import Visit

    patient = Patient.objects.create()
    Visit.objects.create(patient=patient, visit_number="V-NIGHT", department=world.team_a, admitted_at=at(2026, 3, 1))

    assert run_nightly_recompute(now=at(2026, 3, 14, 1, 59)) == 0
    assert not PatientLifecycle.objects.exists()

    assert run_nightly_recompute(now=at(2026, 3, 14, 2, 0)) == 1
    assert PatientLifecycle.objects.get().computed_at == at(2026, 3, 14, 2, 0)
    assert run_nightly_recompute(now=at(2026, 3, 14, 2, 5)) == 0
    assert run_nightly_recompute(now=at(2026, 3, 14, 23, 59)) == 0

    # Just after midnight is still before 02:00: the next night waits.
    assert run_nightly_recompute(now=at(2026, 3, 15, 0, 30)) == 0
    assert run_nightly_recompute(now=at(2026, 3, 15, 3, 0)) == 1
    assert PatientLifecycle.objects.get().computed_at == at(2026, 3, 15, 3, 0)
    assert LifecycleRules.objects.get(pk=1).nightly_recomputed_on == dt.date(2026, 3, 15)


def test_the_night_follows_the_hospital_clock_not_utc(world: Any) -> None:
    from contactcenter.models import Visit

    patient = Patient.objects.create()
    Visit.objects.create(patient=patient, visit_number="V-UTC", department=world.team_a, admitted_at=at(2026, 3, 1))
    hospital_two = at(2026, 3, 14, 2, 0).astimezone(dt.UTC)
    assert run_nightly_recompute(now=hospital_two - dt.timedelta(minutes=1)) == 0
    assert run_nightly_recompute(now=hospital_two) == 1


def test_a_failed_night_is_tried_again_on_the_next_run(world: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from campaigns.actions import lifecycle as actions

    def broken(**kwargs: Any) -> int:
        raise RuntimeError("database went away")

    monkeypatch.setattr(actions, "recompute_all", broken)
    with pytest.raises(RuntimeError):
        run_nightly_recompute(now=at(2026, 3, 14, 2, 0))
    assert get_rules().nightly_recomputed_on is None
    monkeypatch.undo()
    assert run_nightly_recompute(now=at(2026, 3, 14, 2, 1)) == 0  # nobody to classify, but the night ran
    assert get_rules().nightly_recomputed_on == dt.date(2026, 3, 14)


# --- the page ---------------------------------------------------------------------------------------------


def client_for(user: Any, language: str = "en") -> Client:
    client = Client()
    if user is not None:
        client.force_login(user)
    client.cookies[settings.LANGUAGE_COOKIE_NAME] = language
    return client


def test_page_redirects_anonymous_visitors_to_login(db: Any) -> None:
    response = client_for(None).get(LIFECYCLE_URL)
    assert response.status_code == 302
    assert "/login" in response["Location"]


@pytest.mark.parametrize("persona", ["alice", "charlie", "nina"])
def test_agents_and_nurses_are_refused(world: Any, persona: str) -> None:
    assert client_for(getattr(world, persona)).get(LIFECYCLE_URL).status_code == 403


@pytest.mark.parametrize("persona", ["mark", "sam"])
def test_marketers_and_supervisors_read_but_cannot_change(world: Any, persona: str) -> None:
    client = client_for(getattr(world, persona))
    response = client.get(LIFECYCLE_URL)
    assert response.status_code == 200
    page = response.content.decode()
    assert 'data-testid="lifecycle-rules-readonly"' in page
    assert 'data-testid="lifecycle-rules-form"' not in page
    assert client.post(LIFECYCLE_URL, {**RULE_VALUES, "lapsed_after_months": 6}).status_code == 403
    assert get_rules().lapsed_after_months == 12


def test_page_shows_rules_in_words_and_counts_only(world: Any, inbound: Any) -> None:
    people = _population(world, inbound, timezone.now())
    people["long_term"].name = "Wang Xiuying"
    people["long_term"].save(update_fields=["name"])
    recompute_all()
    response = client_for(world.mark).get(LIFECYCLE_URL)
    page = response.content.decode()
    for stage, count in [("potential", 1), ("first_time", 1), ("long_term", 1), ("lapsed", 1), ("none", 1)]:
        assert f'data-testid="count-{stage}">{count}</td>' in page
    assert 'data-testid="count-value">1</td>' in page  # the long-term patient spent 12,000
    assert 'data-testid="count-occasional">2</td>' in page
    assert "3 or more visits, the last less than 12 months ago." in page
    assert "Spent 10,000.00 or more in the last 24 months." in page
    assert "Wang Xiuying" not in page
    assert "+8613800138001" not in page


def test_admin_changes_the_rules_and_everyone_is_recomputed(
    world: Any, inbound: Any, django_capture_on_commit_callbacks: Any
) -> None:
    people = _population(world, inbound, timezone.now())
    recompute_all()
    client = client_for(world.ada)
    assert 'data-testid="lifecycle-rules-form"' in client.get(LIFECYCLE_URL).content.decode()
    with django_capture_on_commit_callbacks(execute=True):
        response = client.post(LIFECYCLE_URL, {**RULE_VALUES, "lapsed_after_months": 36})
    assert response.status_code == 302
    assert response["Location"] == LIFECYCLE_URL + "?saved=1"
    assert get_rules().lapsed_after_months == 36
    assert PatientLifecycle.objects.get(patient=people["lapsed"]).stage == LifecycleStage.FIRST_TIME
    page = client.get(response["Location"]).content.decode()
    assert 'data-testid="lifecycle-saved"' in page
    assert "the last less than 36 months ago" in page


def test_admin_gets_field_errors_not_a_500(world: Any) -> None:
    response = client_for(world.ada).post(
        LIFECYCLE_URL, {**RULE_VALUES, "long_term_min_visits": "1", "window_months": ""}
    )
    assert response.status_code == 400
    page = response.content.decode()
    assert 'id="rule-long_term_min_visits-error">Enter a number from 2 to 1000.</span>' in page
    assert 'id="rule-window_months-error">Enter a number.</span>' in page
    assert get_rules().long_term_min_visits == 3


def test_page_in_chinese(world: Any, fragment_catalog: Any) -> None:
    page = client_for(world.mark, "zh-hans").get(LIFECYCLE_URL).content.decode()
    assert "生命周期阶段与价值类型" in page
    assert "就诊 3 次及以上，且最近一次就诊不满 12 个月。" in page
    assert "只有管理员可以修改这些规则。" in page

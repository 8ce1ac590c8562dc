"""Campaign templates, lint, quiet hours, cost estimate, the launch snapshot, lifecycle actions and API."""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal
from typing import Any

import pytest
from django.core.exceptions import ValidationError
from django.utils import timezone
from rest_framework.test import APIClient

from campaigns.actions import campaigns as actions
from campaigns.estimate import estimate, preview
from campaigns.lint import lint_template
from campaigns.models import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    RecipientState,
    Segment,
    SegmentKind,
    StaticListMember,
)
from campaigns.quiet_hours import next_allowed_time
from campaigns.templating import compose_for, facts_for, finalize, render, template_problems
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.consent import record_consent
from contactcenter.dispatch import run_due_work
from contactcenter.models import (
    ChannelType,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    IdentityKind,
    Inbox,
    Patient,
    PatientIdentity,
    Visit,
)
from tests.conftest import World

UTC = dt.UTC
_numbers = itertools.count(1)


def make_patient(
    *,
    name: str = "王小明",
    given_name: str = "小明",
    phone: str | None = "auto",
    language: str = "zh-hans",
    time_zone: str = "Asia/Shanghai",
    vip_tier: str = "gold",
    opted_in: bool = True,
) -> Patient:
    """A patient; by default with a mobile and opted in to marketing (as the default policy requires)."""
    patient = Patient.objects.create(
        name=name, given_name=given_name, language=language, time_zone=time_zone, vip_tier=vip_tier
    )
    if phone == "auto":
        phone = f"+86138{next(_numbers):08d}"
    if phone:
        PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=phone)
    if opted_in:
        opt_in(patient)
    return patient


def static_segment(patients: list[Patient]) -> Segment:
    segment = Segment.objects.create(name="List", kind=SegmentKind.STATIC)
    StaticListMember.objects.bulk_create([StaticListMember(segment=segment, patient=p) for p in patients])
    return segment


def draft(
    world: World, segment: Segment, body: str = "{{ first_name }}您好，体检套餐八折。", **values: Any
) -> Campaign:
    values.setdefault("fallbacks", {"first_name": "您"})
    return actions.create_campaign(
        actor=world.mark, name="Spring check-up", segment=segment, inbox=world.inbox_a, body=body, **values
    )


def opt_out(patient: Patient) -> None:
    record_consent(
        patient=patient, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT, source=ConsentSource.AGENT
    )


def opt_in(patient: Patient) -> None:
    record_consent(
        patient=patient, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN, source=ConsentSource.API
    )


# --- Rendering ---------------------------------------------------------------------------------------------


def test_placeholders_are_filled_with_the_patients_values() -> None:
    out = render(
        "Hi {{ first_name }}, {{name}} — {{ department }}",
        {"first_name": "Ann", "name": "Ann Lee", "department": "Eye"},
        fallbacks={},
        rule="skip",
    )
    assert out.text == "Hi Ann, Ann Lee — Eye"
    assert out.missing == []


def test_a_missing_value_skips_the_recipient_under_the_skip_rule() -> None:
    out = render("Hi {{ first_name }}", {"first_name": ""}, fallbacks={"first_name": "there"}, rule="skip")
    assert out.text is None
    assert out.missing == ["first_name"]


def test_a_missing_value_uses_the_fallback_under_the_fallback_rule() -> None:
    out = render("Hi {{ first_name }}", {}, fallbacks={"first_name": "there"}, rule="fallback")
    assert out.text == "Hi there"
    assert out.missing == ["first_name"]


def test_a_missing_value_without_a_fallback_skips_even_under_the_fallback_rule() -> None:
    assert render("Hi {{ first_name }}", {}, fallbacks={}, rule="fallback").text is None


@pytest.mark.parametrize(
    "value",
    ["{{ hospital }}", "{% debug %}", "{{ first_name|upper }}", "<script>alert(1)</script>", "{{{{ name }}}}"],
)
def test_values_are_inserted_as_plain_text_and_never_expanded(value: str) -> None:
    out = render("Dear {{ name }}!", {"name": value, "hospital": "SECRET"}, fallbacks={}, rule="skip")
    assert out.text == f"Dear {value}!"


def test_template_syntax_other_than_placeholders_renders_as_text() -> None:
    body = "{% if x %}A{% endif %} <b>{{ {{ first_name }} }}</b> {{ first_name.__class__ }}"
    out = render(body, {"first_name": "Ann"}, fallbacks={}, rule="skip")
    assert out.text == "{% if x %}A{% endif %} <b>{{ Ann }}</b> {{ first_name.__class__ }}"


def test_unknown_placeholders_and_stray_braces_are_template_problems() -> None:
    assert template_problems("Hi {{ first_name }}, {{ department }}") == []
    assert any("frist_name" in p for p in template_problems("Hi {{ frist_name }}"))
    assert template_problems("Hi {{ {{ first_name }} }}")
    assert template_problems("Hi {{ first_name")
    assert any("__class__" not in p for p in template_problems("{{ first_name.__class__ }}"))


def test_control_characters_in_values_are_flattened() -> None:
    out = render("[{{ name }}]", {"name": "Ann\n\r\x00 Lee"}, fallbacks={}, rule="skip")
    assert out.text == "[Ann Lee]"


def test_signature_prefix_and_chinese_opt_out_tail() -> None:
    text = finalize("体检套餐八折", signature="康华医院", opt_out_tail="", language="zh-hans")
    assert text == "【康华医院】体检套餐八折。拒收请回复R"


def test_english_default_tail_and_no_signature() -> None:
    assert finalize("20% off this month!", signature="", opt_out_tail="", language="en") == (
        "20% off this month! Reply STOP to opt out"
    )


def test_the_campaigns_own_tail_replaces_the_default_and_is_not_doubled() -> None:
    once = finalize("优惠。", signature="【康华】", opt_out_tail="退订回T", language="zh-hans")
    assert once == "【康华】优惠。退订回T"
    assert finalize(once, signature="康华", opt_out_tail="退订回T", language="zh-hans") == once


def test_facts_use_the_last_visited_department_in_the_patients_language(world: World) -> None:
    zh = make_patient()
    en = make_patient(name="Ann Lee", given_name="Ann", language="en", vip_tier="none")
    for patient, team, day in ((zh, world.team_b, 1), (zh, world.team_a, 20), (en, world.team_a, 5)):
        Visit.objects.create(
            patient=patient,
            visit_number=f"V{patient.pk}-{day}",
            department=team,
            admitted_at=dt.datetime(2024, 3, day, 2, 0, tzinfo=UTC),
        )
    facts = facts_for([zh.pk, en.pk])
    assert facts[zh.pk]["department"] == "心内科"
    assert facts[zh.pk]["last_visit_date"] == "2024年3月20日"
    assert facts[zh.pk]["vip_tier"] == "金卡"
    assert facts[en.pk]["department"] == "Cardiology"
    assert facts[en.pk]["last_visit_date"] == "2024-03-05"
    assert facts[en.pk]["vip_tier"] == ""


# --- Lint ----------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("body", "term", "category"),
    [
        ("Your diabetes review is due", "diabetes", "condition"),
        ("您的糖尿病复查", "糖尿病", "condition"),
        ("Time to refill your metformin", "metformin", "medication"),
        ("请按时服用二甲双胍", "二甲双胍", "medication"),
        ("胰岛素优惠", "胰岛素", "medication"),
        ("Aspirin and statins in stock", "Aspirin", "medication"),
        ("他汀类药物", "他汀", "medication"),
        ("Your HbA1c came back", "HbA1c", "result"),
        ("Your test results are ready", "test results", "result"),
        ("您的化验结果已出", "化验结果", "result"),
        ("检查结果阳性", "检查结果", "result"),
        ("您的血糖 7.8 mmol/L", "血糖 7.8 mmol/L", "result"),
        ("血压：160/100", "血压：160/100", "result"),
        ("The result was positive", "positive", "result"),
        ("Follow-up for I21.4", "I21.4", "code"),
        ("Code E11 patients", "E11", "code"),
        ("HIV screening", "HIV", "condition"),
        ("Congratulations on your pregnancy", "pregnancy", "condition"),
        ("怀孕期间", "怀孕", "condition"),
        ("癌症筛查", "癌", "condition"),
        ("You were diagnosed last year", "diagnosed", "diagnosis"),
    ],
)
def test_lint_names_the_clinical_word_and_why(body: str, term: str, category: str) -> None:
    problems = lint_template(body)
    assert (term, category) in [(p.term, p.category) for p in problems]
    found = next(p for p in problems if p.term == term)
    assert term in found.message
    assert body[found.start : found.end] == term


@pytest.mark.parametrize(
    "body",
    [
        "Health check package 20% off this month! Book at {{ hospital }}.",
        "{{ first_name }}您好，体检套餐八折，欢迎预约。",
        "Free blood pressure check on Saturday, only 20 CNY",
        "免费测血压，仅需20元；{{ department }}义诊",
        "Your {{ vip_tier }} member gift: vitamin B12 and 维生素B12 at 10% off",
        "Hearing aids fair at Room 3, 9:00-17:00",
    ],
)
def test_lint_leaves_ordinary_marketing_alone(body: str) -> None:
    assert lint_template(body) == []


def test_a_repeated_term_is_reported_once() -> None:
    assert [p.term for p in lint_template("HIV, HIV and more HIV")] == ["HIV"]


# --- Quiet hours -------------------------------------------------------------------------------------------

NIGHT, MORNING = dt.time(21, 0), dt.time(8, 0)


def at(*args: int) -> dt.datetime:
    return dt.datetime(*args, tzinfo=UTC)


def test_the_same_instant_is_quiet_in_shanghai_and_allowed_in_new_york() -> None:
    now = at(2024, 6, 1, 13, 30)  # 21:30 in Shanghai, 09:30 in New York
    assert next_allowed_time(now, "Asia/Shanghai", NIGHT, MORNING) == at(2024, 6, 2, 0, 0)
    assert next_allowed_time(now, "America/New_York", NIGHT, MORNING) == now


def test_kolkatas_half_hour_offset() -> None:
    assert next_allowed_time(at(2024, 6, 1, 15, 0), "Asia/Kolkata", NIGHT, MORNING) == at(2024, 6, 1, 15, 0)  # 20:30
    # 21:15 IST → 08:00 IST next day = 02:30 UTC.
    assert next_allowed_time(at(2024, 6, 1, 15, 45), "Asia/Kolkata", NIGHT, MORNING) == at(2024, 6, 2, 2, 30)


def test_early_morning_side_of_a_window_crossing_midnight_ends_the_same_day() -> None:
    # 06:00 in Shanghai → 08:00 the same day.
    assert next_allowed_time(at(2024, 6, 1, 22, 0), "Asia/Shanghai", NIGHT, MORNING) == at(2024, 6, 2, 0, 0)


def test_a_window_not_crossing_midnight() -> None:
    lunch = (dt.time(12, 0), dt.time(14, 0))
    assert next_allowed_time(at(2024, 6, 1, 5, 0), "Asia/Shanghai", *lunch) == at(2024, 6, 1, 6, 0)  # 13:00 → 14:00
    assert next_allowed_time(at(2024, 6, 1, 7, 0), "Asia/Shanghai", *lunch) == at(2024, 6, 1, 7, 0)  # 15:00


def test_new_york_spring_forward_day() -> None:
    # 01:00 EST on 2024-03-10; the quiet hours end at 08:00 EDT, which is 12:00 UTC (13:00 the day before).
    assert next_allowed_time(at(2024, 3, 10, 6, 0), "America/New_York", NIGHT, MORNING) == at(2024, 3, 10, 12, 0)
    # An end of 02:30 never shows on that day's clock: the window ends when it jumps to 03:00 EDT.
    assert next_allowed_time(at(2024, 3, 10, 6, 0), "America/New_York", NIGHT, dt.time(2, 30)) == at(2024, 3, 10, 7, 0)


def test_new_york_fall_back_day_ends_at_the_first_occurrence() -> None:
    # 00:00 EDT on 2024-11-03; 01:30 happens twice, the first time at 05:30 UTC.
    assert next_allowed_time(at(2024, 11, 3, 4, 0), "America/New_York", NIGHT, dt.time(1, 30)) == at(2024, 11, 3, 5, 30)


def test_an_unknown_time_zone_falls_back_to_the_hospitals() -> None:
    assert next_allowed_time(at(2024, 6, 1, 13, 30), "Mars/Olympus", NIGHT, MORNING) == at(2024, 6, 2, 0, 0)


# --- Saving ------------------------------------------------------------------------------------------------


def test_a_draft_with_clinical_detail_is_saved_and_shows_its_problems(world: World) -> None:
    campaign = draft(world, static_segment([]), body="Refill your metformin at 20% off")
    assert campaign.status == CampaignStatus.DRAFT
    assert actions.lint_errors(campaign)["body"]


@pytest.mark.parametrize(
    ("values", "field"),
    [
        ({"body": "Hi {{ frist_name }}"}, "body"),
        ({"messages_per_second": 0}, "messages_per_second"),
        ({"messages_per_second": 1001}, "messages_per_second"),
        ({"quiet_hours_start": dt.time(8), "quiet_hours_end": dt.time(8)}, "quiet_hours_end"),
        ({"fallbacks": {}}, "fallbacks"),
        ({"fallbacks": {"surname": "x"}}, "fallbacks"),
    ],
)
def test_invalid_drafts_are_refused_with_field_errors(world: World, values: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError) as caught:
        draft(world, static_segment([]), **values)
    assert field in caught.value.message_dict


def test_the_inbox_must_be_an_active_sms_inbox(world: World) -> None:
    mail = Inbox.objects.create(name="Mail", channel_type=ChannelType.EMAIL, team=world.team_a)
    with pytest.raises(ValidationError) as caught:
        actions.create_campaign(actor=world.mark, name="x", segment=static_segment([]), inbox=mail, body="Hi")
    assert "inbox" in caught.value.message_dict
    world.inbox_a.is_active = False
    world.inbox_a.save()
    with pytest.raises(ValidationError):
        draft(world, static_segment([]))


def test_only_drafts_are_edited(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]))
    actions.update_campaign(campaign, actor=world.mark, changes={"name": "Autumn"})
    actions.launch_campaign(campaign)
    with pytest.raises(ValidationError):
        actions.update_campaign(campaign, actor=world.mark, changes={"name": "Winter"})


# --- Launch ------------------------------------------------------------------------------------------------


def test_launch_snapshots_each_recipient_with_its_state(
    world: World, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    enqueued: list[tuple[str, dict[str, Any]]] = []
    monkeypatch.setattr(actions, "enqueue", lambda name, **kw: enqueued.append((name, kw)))
    fine = make_patient(time_zone="America/New_York")
    PatientIdentity.objects.create(patient=fine, kind=IdentityKind.PHONE, value="+8613900000001")  # newer
    stopped = make_patient()
    opt_out(stopped)
    landline = make_patient(phone="+862087654321")
    no_phone = make_patient(phone=None)
    nameless = make_patient(given_name="")
    campaign = draft(
        world, static_segment([fine, stopped, landline, no_phone, nameless]), missing_value_rule="skip", fallbacks={}
    )
    now = timezone.now()
    with django_capture_on_commit_callbacks(execute=True):
        assert actions.launch_campaign(campaign, now=now) == 5
    rows = {r.patient_id: r for r in CampaignRecipient.objects.filter(campaign=campaign)}
    assert rows[fine.pk].state == RecipientState.PENDING
    assert rows[fine.pk].phone == "+8613900000001"
    assert rows[fine.pk].time_zone == "America/New_York"
    assert rows[stopped.pk].state == RecipientState.SKIPPED_OPTED_OUT
    assert rows[landline.pk].state == RecipientState.SKIPPED_INVALID
    assert rows[no_phone.pk].state == RecipientState.SKIPPED_INVALID
    assert rows[nameless.pk].state == RecipientState.SKIPPED_MISSING
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING
    assert campaign.launched_at == now
    assert campaign.next_action_at == now
    assert enqueued == [("campaigns.tasks.run_campaign", {"campaign_id": campaign.pk})]


def test_a_second_launch_does_nothing(world: World) -> None:
    campaign = draft(world, static_segment([make_patient(), make_patient()]))
    assert actions.launch_campaign(campaign) == 2
    assert actions.launch_campaign(campaign) == 0
    assert Campaign.objects.get(pk=campaign.pk).launched_at is not None
    assert CampaignRecipient.objects.filter(campaign=campaign).count() == 2


def test_launch_refuses_clinical_detail(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]), body="{{ first_name }}，请继续服用二甲双胍")
    with pytest.raises(ValidationError) as caught:
        actions.launch_campaign(campaign)
    assert "二甲双胍" in " ".join(caught.value.message_dict["body"])
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT
    assert not CampaignRecipient.objects.filter(campaign=campaign).exists()


def test_a_clinical_fallback_is_refused_too(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]), fallbacks={"first_name": "糖尿病患者"})
    with pytest.raises(ValidationError) as caught:
        actions.schedule_campaign(campaign, timezone.now() + dt.timedelta(hours=1), world.mark)
    assert "fallbacks" in caught.value.message_dict


def test_compose_for_finalizes_in_each_patients_language(world: World) -> None:
    zh = make_patient()
    en = make_patient(name="Ann Lee", given_name="Ann", language="en")
    campaign = draft(world, static_segment([zh, en]), body="{{ first_name }}: 8折 / 20% off", signature="康华医院")
    texts = {pid: r.text for pid, r in compose_for(campaign, [zh.pk, en.pk]).items()}
    assert texts[zh.pk] == "【康华医院】小明: 8折 / 20% off。拒收请回复R"
    assert texts[en.pk] == "【康华医院】Ann: 8折 / 20% off. Reply STOP to opt out"


# --- Estimate and preview --------------------------------------------------------------------------------


def test_estimate_counts_segments_over_real_recipients(world: World, settings: Any) -> None:
    settings.CAMPAIGN_PRICE_PER_SEGMENT = Decimal("0.05")
    long_name = make_patient(given_name="小" * 60)
    short = make_patient()
    stopped = make_patient()
    opt_out(stopped)
    campaign = draft(world, static_segment([long_name, short, stopped]))
    result = estimate(campaign)
    assert result["recipients"] == 2
    assert result["skipped_opted_out"] == 1
    assert result["encoding"] == "UCS-2"
    assert result["segments_per_message"] == 2  # the 60-character name pushes past 70 UCS-2 units
    assert result["total_segments"] == 4
    assert result["cost"] == Decimal("0.20")
    assert "小明" in result["sample_text"] and "小" * 60 not in result["sample_text"]


def test_estimate_of_an_empty_segment_uses_made_up_values(world: World) -> None:
    result = estimate(draft(world, static_segment([]), body="Hello {{ first_name }}"))
    assert result["recipients"] == 0
    assert result["segments_per_message"] == 1
    assert result["cost"] == Decimal("0.00")


def test_preview_masks_names_but_counts_the_real_text(world: World) -> None:
    patient = make_patient(name="Ann Lee", given_name="Ann", language="en")
    campaign = draft(
        world,
        static_segment([patient]),
        body="Dear {{ name }} ({{ first_name }})",
        fallbacks={"name": "patient", "first_name": "patient"},
    )
    [sample] = preview(campaign)
    assert sample["text"] == "Dear *** *** (***). Reply STOP to opt out"
    assert "Ann" not in sample["text"]
    assert sample["made_up"] is False
    assert sample["segments"] == 1


# --- Consent policy at launch and in the estimate -------------------------------------------------------------


def visited(world: World, patient: Patient, *, days_ago: int) -> None:
    Visit.objects.create(
        patient=patient,
        visit_number=f"V{patient.pk}-{days_ago}",
        department=world.team_a,
        kind="outpatient",
        admitted_at=timezone.now() - dt.timedelta(days=days_ago),
    )


def test_launch_skips_patients_without_marketing_consent_under_the_policy(world: World, settings: Any) -> None:
    asked = make_patient()
    recent = make_patient(opted_in=False)
    visited(world, recent, days_ago=30)
    lapsed = make_patient(opted_in=False)
    visited(world, lapsed, days_ago=1000)
    stopped = make_patient()
    opt_out(stopped)
    segment = static_segment([asked, recent, lapsed, stopped])

    opt_in_only = draft(world, segment)
    actions.launch_campaign(opt_in_only)
    settings.MARKETING_CONSENT_POLICY = "existing_patient"
    existing = draft(world, segment)
    actions.launch_campaign(existing)

    def launched(campaign: Campaign) -> dict[int, str]:
        return dict(CampaignRecipient.objects.filter(campaign=campaign).values_list("patient_id", "state"))

    assert launched(opt_in_only) == {
        asked.pk: RecipientState.PENDING,
        recent.pk: RecipientState.SKIPPED_NO_CONSENT,
        lapsed.pk: RecipientState.SKIPPED_NO_CONSENT,
        stopped.pk: RecipientState.SKIPPED_OPTED_OUT,
    }
    assert launched(existing) == {
        asked.pk: RecipientState.PENDING,
        recent.pk: RecipientState.PENDING,
        lapsed.pk: RecipientState.SKIPPED_NO_CONSENT,
        stopped.pk: RecipientState.SKIPPED_OPTED_OUT,
    }


def test_the_estimate_leaves_out_everyone_the_send_would_skip_and_no_one_for_quiet_hours(world: World) -> None:
    fine = make_patient()
    night_owl = make_patient(time_zone="America/New_York")  # in quiet hours somewhere: deferred, not excluded
    stopped = make_patient()
    opt_out(stopped)
    never_asked = make_patient(opted_in=False)
    no_phone = make_patient(phone=None)
    landline = make_patient(phone="+862087654321")
    nameless = make_patient(given_name="")
    everyone = [fine, night_owl, stopped, never_asked, no_phone, landline, nameless]
    campaign = draft(
        world,
        static_segment(everyone),
        body="{{ first_name }}您好，体检套餐八折。",
        missing_value_rule="skip",
        fallbacks={},
        quiet_hours_start=dt.time(0, 0),
        quiet_hours_end=dt.time(23, 59),
    )

    before = estimate(campaign)

    assert before["recipients"] == 2
    assert before["audience"] == len(everyone)
    assert (before["skipped_opted_out"], before["skipped_no_consent"]) == (1, 1)
    assert (before["skipped_invalid"], before["skipped_missing"]) == (2, 1)
    assert before["consent_policy"] == "opt_in"
    # Launch decides the same, patient by patient.
    actions.launch_campaign(campaign)
    after = estimate(Campaign.objects.get(pk=campaign.pk))
    assert CampaignRecipient.objects.filter(campaign=campaign, state=RecipientState.PENDING).count() == 2
    assert {k: after[k] for k in before if k.startswith(("recipients", "skipped", "audience"))} == {
        k: before[k] for k in before if k.startswith(("recipients", "skipped", "audience"))
    }


# --- Guards ---------------------------------------------------------------------------------------------------


def chinese_number_inbox(world: World) -> Inbox:
    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Kanghua SMS",
            team=world.team_a,
            account_sid="AC" + "1" * 32,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=["+862012345600"],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


def test_a_chinese_sending_number_needs_a_signature_to_send(world: World) -> None:
    inbox = chinese_number_inbox(world)
    campaign = draft(world, static_segment([make_patient()]))
    actions.update_campaign(campaign, actor=world.mark, changes={"inbox": inbox, "signature": ""})

    for attempt in (
        lambda: actions.schedule_campaign(campaign, timezone.now() + dt.timedelta(hours=1), world.mark),
        lambda: actions.send_now(campaign, world.mark),
    ):
        with pytest.raises(ValidationError) as refused:
            attempt()
        assert "【签名】" in refused.value.message_dict["signature"][0]
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT
    assert not CampaignRecipient.objects.filter(campaign=campaign).exists()

    actions.update_campaign(campaign, actor=world.mark, changes={"signature": "【康华医院】"})
    assert Campaign.objects.get(pk=campaign.pk).signature == "康华医院"
    assert actions.send_now(campaign, world.mark) == 1
    # The simulator inbox has no Chinese number of its own: no signature needed there.
    assert actions.send_now(draft(world, static_segment([make_patient()]), signature=""), world.mark) == 1


@pytest.mark.parametrize("signature", ["【】", " 【 】 ", "[]"])
def test_a_signature_of_empty_brackets_is_refused_not_emptied(world: World, signature: str) -> None:
    with pytest.raises(ValidationError) as refused:
        draft(world, static_segment([]), signature=signature)
    assert refused.value.message_dict["signature"] == ["The signature is empty once the 【】 brackets are taken off."]
    campaign = draft(world, static_segment([]), signature="康华医院")
    with pytest.raises(ValidationError):
        actions.update_campaign(campaign, actor=world.mark, changes={"signature": signature})
    assert Campaign.objects.get(pk=campaign.pk).signature == "康华医院"


def test_an_empty_segment_or_one_with_nobody_to_send_to_is_refused_at_send(world: World) -> None:
    empty = draft(world, static_segment([]))
    with pytest.raises(ValidationError) as refused:
        actions.send_now(empty, world.mark)
    assert refused.value.message_dict["segment"] == ["The segment is empty: there is nobody to send this campaign to."]

    stopped = make_patient()
    opt_out(stopped)
    nobody = draft(world, static_segment([stopped, make_patient(opted_in=False), make_patient(phone=None)]))
    with pytest.raises(ValidationError) as refused:
        actions.send_now(nobody, world.mark)
    assert "Nobody in the segment can be sent this campaign" in refused.value.message_dict["segment"][0]

    for campaign in (empty, nobody):
        assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.DRAFT
        assert not CampaignRecipient.objects.filter(campaign=campaign).exists()


def test_a_schedule_time_needs_a_time_zone_and_lies_within_a_year(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]))
    now = timezone.now()
    for at, message in [
        (dt.datetime(2030, 1, 1, 9, 0), "Give the time with its time zone."),
        (now + dt.timedelta(days=366), "Choose a time within a year from now."),
    ]:
        with pytest.raises(ValidationError) as refused:
            actions.schedule_campaign(campaign, at, world.mark, now=now)
        assert refused.value.message_dict["at"] == [message]
    actions.schedule_campaign(campaign, now + dt.timedelta(days=364), world.mark, now=now)
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SCHEDULED


def test_the_api_refuses_a_schedule_time_without_its_time_zone(world: World) -> None:
    client = client_for(world.mark)
    cid = client.post("/api/v1/campaigns/", body_for(world, static_segment([make_patient()])), format="json").json()[
        "id"
    ]
    tomorrow = (timezone.localtime() + dt.timedelta(days=1)).replace(tzinfo=None, microsecond=0)

    naive = client.post(f"/api/v1/campaigns/{cid}/schedule/", {"at": tomorrow.isoformat()}, format="json")

    assert naive.status_code == 400
    assert "time zone" in naive.json()["at"][0]
    assert Campaign.objects.get(pk=cid).status == CampaignStatus.DRAFT
    far = (timezone.now() + dt.timedelta(days=400)).isoformat()
    too_far = client.post(f"/api/v1/campaigns/{cid}/schedule/", {"at": far}, format="json")
    assert too_far.status_code == 400 and too_far.json()["at"] == ["Choose a time within a year from now."]


# --- Schedule, pause, resume, cancel ----------------------------------------------------------------------


def test_scheduling_needs_a_future_time(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]))
    with pytest.raises(ValidationError):
        actions.schedule_campaign(campaign, timezone.now() - dt.timedelta(minutes=1), world.mark)


def test_a_scheduled_campaign_is_launched_by_the_due_work_job(world: World) -> None:
    campaign = draft(world, static_segment([make_patient(), make_patient()]))
    actions.schedule_campaign(campaign, timezone.now() + dt.timedelta(hours=1), world.mark)
    assert run_due_work()["campaign_launches"] == 0
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.SCHEDULED
    # An hour passes.
    past = timezone.now() - dt.timedelta(seconds=1)
    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at=past, next_action_at=past)
    assert run_due_work()["campaign_launches"] == 1
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.RUNNING
    assert CampaignRecipient.objects.filter(campaign=campaign).count() == 2
    assert run_due_work()["campaign_launches"] == 0


def test_a_scheduled_campaign_failing_its_checks_returns_to_draft(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]))
    actions.schedule_campaign(campaign, timezone.now() + dt.timedelta(hours=1), world.mark)
    past = timezone.now() - dt.timedelta(seconds=1)
    Campaign.objects.filter(pk=campaign.pk).update(body="服用胰岛素", next_action_at=past)
    assert actions.launch_due_campaigns() == 0
    campaign.refresh_from_db()
    assert campaign.status == CampaignStatus.DRAFT
    assert campaign.next_action_at is None


def test_pause_resume_cancel(
    world: World, monkeypatch: pytest.MonkeyPatch, django_capture_on_commit_callbacks: Any
) -> None:
    enqueued: list[str] = []
    monkeypatch.setattr(actions, "enqueue", lambda name, **kw: enqueued.append(name))
    campaign = draft(world, static_segment([make_patient(), make_patient(), make_patient()]))
    with pytest.raises(ValidationError):
        actions.pause_campaign(campaign, world.mark)  # a draft is not sending
    actions.launch_campaign(campaign)
    first, second, third = CampaignRecipient.objects.filter(campaign=campaign).order_by("pk")
    CampaignRecipient.objects.filter(pk=first.pk).update(state=RecipientState.SENT)
    CampaignRecipient.objects.filter(pk=second.pk).update(state=RecipientState.DEFERRED, deferred_until=timezone.now())

    paused = actions.pause_campaign(campaign, world.mark)
    assert paused.status == CampaignStatus.PAUSED and paused.next_action_at is None
    with pytest.raises(ValidationError):
        actions.pause_campaign(campaign, world.mark)
    with django_capture_on_commit_callbacks(execute=True):
        resumed = actions.resume_campaign(campaign, world.mark)
    assert resumed.status == CampaignStatus.RUNNING and resumed.next_action_at is not None
    assert enqueued == ["campaigns.tasks.run_campaign"]

    actions.cancel_campaign(campaign, world.mark)
    states = dict(CampaignRecipient.objects.filter(campaign=campaign).values_list("pk", "state"))
    assert states == {first.pk: "sent", second.pk: "cancelled", third.pk: "cancelled"}
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.CANCELLED
    for act in (actions.pause_campaign, actions.resume_campaign, actions.cancel_campaign):
        with pytest.raises(ValidationError):
            act(campaign, world.mark)


def test_a_scheduled_campaign_can_be_cancelled_before_it_starts(world: World) -> None:
    campaign = draft(world, static_segment([make_patient()]))
    actions.schedule_campaign(campaign, timezone.now() + dt.timedelta(hours=1), world.mark)
    actions.cancel_campaign(campaign, world.mark)
    past = timezone.now() - dt.timedelta(seconds=1)
    Campaign.objects.filter(pk=campaign.pk).update(scheduled_at=past)
    assert actions.launch_due_campaigns() == 0
    assert Campaign.objects.get(pk=campaign.pk).status == CampaignStatus.CANCELLED


# --- API ---------------------------------------------------------------------------------------------------


def client_for(user: Any) -> APIClient:
    client = APIClient()
    client.force_authenticate(user)
    return client


def body_for(world: World, segment: Segment, **extra: Any) -> dict[str, Any]:
    return {
        "name": "Spring",
        "segment_id": segment.pk,
        "inbox_id": world.inbox_a.pk,
        "body": "{{ first_name }}您好，体检套餐八折",
        "fallbacks": {"first_name": "您"},
        **extra,
    }


@pytest.mark.parametrize("who", ["alice", "nina", "charlie"])
def test_other_roles_are_refused(world: World, who: str) -> None:
    client = client_for(getattr(world, who))
    campaign = draft(world, static_segment([]))
    assert client.get("/api/v1/campaigns/").status_code == 403
    assert client.post("/api/v1/campaigns/lint/", {"body": "x"}, format="json").status_code == 403
    assert client.get(f"/api/v1/campaigns/{campaign.pk}/progress/").status_code == 403
    assert client.post(f"/api/v1/campaigns/{campaign.pk}/schedule/", {"now": True}, format="json").status_code == 403


def test_anonymous_is_refused(world: World) -> None:
    assert APIClient().get("/api/v1/campaigns/").status_code in (401, 403)


@pytest.mark.parametrize("who", ["mark", "sam", "ada"])
def test_campaign_roles_create_and_list(world: World, who: str) -> None:
    client = client_for(getattr(world, who))
    response = client.post("/api/v1/campaigns/", body_for(world, static_segment([make_patient()])), format="json")
    assert response.status_code == 201, response.content
    assert response.json()["status"] == "draft"
    listed = client.get("/api/v1/campaigns/").json()
    assert [c["id"] for c in listed["results"]] == [response.json()["id"]]


def test_api_field_errors_are_400(world: World) -> None:
    client = client_for(world.mark)
    segment = static_segment([])
    bad = [
        body_for(world, segment, body="Hi {{ nope }}"),
        body_for(world, segment, messages_per_second=5000),
        body_for(world, segment, segment_id=10**20),
        body_for(world, segment, inbox_id=999999),
        body_for(world, segment, quiet_hours_start="25:00"),
        body_for(world, segment, fallbacks=["x"]),
        body_for(world, segment, body="nul \x00"),
        {"name": "x"},
    ]
    for payload in bad:
        response = client.post("/api/v1/campaigns/", payload, format="json")
        assert response.status_code == 400, (payload, response.content)
    assert client.get("/api/v1/campaigns/99999999999999999999/").status_code == 404


def test_api_lint_preview_estimate_schedule_progress(world: World) -> None:
    client = client_for(world.mark)
    patients = [make_patient(), make_patient(name="Bo Wu", given_name="Bo", language="en")]
    created = client.post("/api/v1/campaigns/", body_for(world, static_segment(patients)), format="json").json()
    cid = created["id"]

    lint = client.post(
        "/api/v1/campaigns/lint/", {"body": "阿司匹林 {{ first_name }}", "signature": "HIV"}, format="json"
    ).json()
    assert [(p["part"], p["term"]) for p in lint["problems"]] == [("body", "阿司匹林"), ("signature", "HIV")]
    assert lint["placeholders"] == ["first_name"]

    samples = client.post(f"/api/v1/campaigns/{cid}/preview/", {}, format="json").json()["samples"]
    assert len(samples) == 2
    assert all("小明" not in s["text"] and "Bo" not in s["text"] for s in samples)

    est = client.get(f"/api/v1/campaigns/{cid}/estimate/").json()
    assert est["recipients"] == 2 and est["encoding"] == "UCS-2"

    changed = client.patch(f"/api/v1/campaigns/{cid}/", {"body": "{{ first_name }}：服用二甲双胍"}, format="json")
    assert changed.status_code == 200 and changed.json()["problems"]
    refused = client.post(f"/api/v1/campaigns/{cid}/schedule/", {"now": True}, format="json")
    assert refused.status_code == 400 and "body" in refused.json()
    client.put(f"/api/v1/campaigns/{cid}/", {"body": "{{ first_name }}您好，体检八折"}, format="json")

    assert client.post(f"/api/v1/campaigns/{cid}/schedule/", {}, format="json").status_code == 400
    when = (timezone.now() + dt.timedelta(days=1)).isoformat()
    scheduled = client.post(f"/api/v1/campaigns/{cid}/schedule/", {"at": when}, format="json")
    assert scheduled.status_code == 200 and scheduled.json()["status"] == "scheduled"
    launched = client.post(f"/api/v1/campaigns/{cid}/schedule/", {"now": True}, format="json")
    assert launched.status_code == 200 and launched.json()["status"] == "running"
    assert launched.json()["total"] == 2

    progress = client.get(f"/api/v1/campaigns/{cid}/progress/").json()
    assert progress["total"] == 2 and progress["counts"]["pending"] == 2

    assert client.post(f"/api/v1/campaigns/{cid}/pause/").json()["status"] == "paused"
    assert client.post(f"/api/v1/campaigns/{cid}/pause/").status_code == 400
    assert client.put(f"/api/v1/campaigns/{cid}/", {"name": "x"}, format="json").status_code == 400
    assert client.post(f"/api/v1/campaigns/{cid}/cancel/").json()["counts"]["cancelled"] == 2

"""SMS campaigns, live, in a real browser.

Spec (issue 6): mark, a marketer, builds a segment (women over 50), sees the live count match the
database, writes a message, sees the privacy lint refuse a clinical word and fixes it, sees the estimate,
sends now, watches the progress bar reach 100 % over the websocket, and opens the analytics. The send
goes through the real path: the sending engine, send_outbound, the Twilio SDK with the simulator
transport, and signed status callbacks back into the live server. Screenshots in English and Chinese.
"""

from __future__ import annotations

import datetime as dt
import secrets
import zoneinfo
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.conf import settings
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Expect, Page

from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.models import Gender, IdentityKind, Inbox, Message, Patient, PatientIdentity
from tests.browser.conftest import login
from tests.browser.conftest import screenshot as full_page_screenshot
from tests.conftest import PASSWORD, World

expect = Expect()
expect.set_options(timeout=15_000)

T = TypeVar("T")

HOSPITAL_NUMBER = "+862088880006"
INBOX_NAME = "Marketing line 市场短信"
CLINICAL_BODY = "Dear {{ first_name }}, time for your diabetes check-up."
CLEAN_BODY = "Dear {{ first_name }}, your yearly health check is due. Book on 020-12345678."


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM work in its own thread: Playwright's sync API keeps an event loop in the test thread."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


# (given name, gender, age in years) — ages kept well away from the band edges (35, 50).
PEOPLE = [
    ("Li", Gender.FEMALE, 67),
    ("Mei", Gender.FEMALE, 58),
    ("Fang", Gender.FEMALE, 73),
    ("Hua", Gender.FEMALE, 44),
    ("Na", Gender.FEMALE, 29),
    ("Wei", Gender.MALE, 62),
    ("Jun", Gender.MALE, 39),
    ("Qing", Gender.UNKNOWN, 66),
]


def hospital_and_patients(world: World) -> list[int]:
    """The marketing SMS line and the patients; returns the ids of the women over 50 (the reference)."""
    save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name=INBOX_NAME,
            team=world.team_a,
            account_sid="AC" + secrets.token_hex(16),
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[HOSPITAL_NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    today = timezone.localdate()
    expected = []
    for index, (given, gender, age) in enumerate(PEOPLE):
        patient = Patient.objects.create(
            name=f"{given} Test",
            given_name=given,
            gender=gender,
            birth_date=today.replace(year=today.year - age) - dt.timedelta(days=40),
            language="en",
            time_zone=settings.TIME_ZONE,
        )
        PatientIdentity.objects.create(patient=patient, kind=IdentityKind.PHONE, value=f"+861380013{index:04d}")
        if gender == Gender.FEMALE and age > 50:
            expected.append(patient.pk)
    return expected


def quiet_hours_away_from_now() -> tuple[str, str]:
    """A one-hour quiet window starting two hours from now (hospital clock), so nothing is deferred."""
    local = timezone.now().astimezone(zoneinfo.ZoneInfo(settings.TIME_ZONE))
    start = local + dt.timedelta(hours=2)
    end = start + dt.timedelta(hours=1)
    return start.strftime("%H:%M"), end.strftime("%H:%M")


def screenshot(page: Page, name: str) -> None:
    # Full-page shots of a scrolled page catch the sticky top bar in the middle of the picture.
    page.evaluate("window.scrollTo(0, 0)")
    full_page_screenshot(page, name)


def signed_in(browser: Any, live_server_url: str, locale: str = "en-US") -> Page:
    page = login(browser, live_server_url, "mark", PASSWORD, locale=locale)
    # No animation: the progress bar in a screenshot shows what its data says.
    page.emulate_media(reduced_motion="reduce")
    return page


def add_rule(page: Page, field: str, operator: str, choice: str) -> None:
    page.get_by_test_id("rule-root").get_by_test_id("add-rule").last.click()
    rule = page.get_by_test_id("rule").last
    rule.get_by_test_id("rule-field").select_option(field)
    rule = page.locator(f"[data-testid=rule][data-field='{field}']").last
    rule.get_by_test_id("rule-operator").select_option(operator)
    rule.locator(f"[data-testid=rule-choice][data-value='{choice}']").check()


def sent_messages(campaign_id: int) -> list[tuple[int, int | None, str]]:
    return list(
        CampaignRecipient.objects.filter(campaign_id=campaign_id).values_list("patient_id", "message_id", "state")
    )


@pytest.mark.browser
def test_a_marketer_builds_a_segment_sends_a_campaign_and_watches_it_finish(
    transactional_db: None, world: World, live_server_url: str, browser: Any
) -> None:
    expected = off_loop(hospital_and_patients, world)
    assert len(expected) == 3
    mark = signed_in(browser, live_server_url)
    mark.goto(f"{live_server_url}/campaigns/")
    expect(mark.get_by_role("link", name="Campaigns", exact=True).first).to_have_attribute("aria-current", "page")
    expect(mark.get_by_test_id("no-campaigns")).to_be_visible()

    # --- Segment: women over 50, with the live count ---------------------------------------------------
    mark.get_by_role("link", name="Segments").click()
    mark.get_by_test_id("new-segment").click()
    expect(mark.get_by_test_id("segment-count")).to_have_attribute("data-state", "ready")
    add_rule(mark, "gender", "in", "female")
    expect(mark.get_by_test_id("segment-count")).to_have_attribute("data-count", "5")
    add_rule(mark, "age_band", "in", ">50")
    expect(mark.get_by_test_id("segment-count")).to_have_attribute("data-count", str(len(expected)))
    expect(mark.get_by_test_id("segment-count")).to_have_text(str(len(expected)))
    mark.get_by_test_id("segment-name").fill("Women over 50")
    screenshot(mark, "campaigns-segment-en")
    mark.get_by_test_id("save-segment").click()
    expect(mark.get_by_test_id("segment-saved")).to_contain_text("Women over 50")
    mark.get_by_test_id("use-segment").click()

    # --- Composer: the lint refuses clinical detail, then the estimate ----------------------------------
    expect(mark.get_by_test_id("segment-picker-count")).to_have_attribute("data-count", str(len(expected)))
    mark.get_by_test_id("campaign-name-input").fill("Autumn health check")
    mark.get_by_test_id("inbox-picker").select_option(label=INBOX_NAME)
    mark.get_by_test_id("message-body").fill(CLINICAL_BODY)
    problem = mark.get_by_test_id("lint-problem")
    expect(problem).to_have_count(1)
    expect(problem).to_contain_text("diabetes")
    expect(mark.get_by_test_id("send-button")).to_be_disabled()
    mark.get_by_test_id("message-body").fill(CLEAN_BODY)
    expect(mark.get_by_test_id("lint-ok")).to_be_visible()
    expect(mark.get_by_test_id("lint-problem")).to_have_count(0)
    mark.get_by_test_id("fallback-first_name").fill("friend")
    quiet_start, quiet_end = quiet_hours_away_from_now()
    mark.get_by_test_id("quiet-start").fill(quiet_start)
    mark.get_by_test_id("quiet-end").fill(quiet_end)
    mark.get_by_test_id("messages-per-second").fill("20")
    expect(mark.get_by_test_id("save-state")).to_have_text("Draft saved.")
    estimate = mark.get_by_test_id("estimate")
    expect(estimate).to_have_attribute("data-recipients", str(len(expected)))
    expect(mark.get_by_test_id("estimate-encoding")).to_contain_text("GSM-7")
    expect(mark.get_by_test_id("estimate-segments")).to_contain_text("1")
    expect(mark.get_by_test_id("preview-text").first).to_contain_text("Reply STOP")
    expect(mark.get_by_test_id("send-button")).to_be_enabled()
    screenshot(mark, "campaigns-composer-en")

    # --- Send now; the progress bar reaches 100 % ---------------------------------------------------------
    mark.get_by_test_id("send-button").click()
    mark.wait_for_url(f"{live_server_url}/campaigns/*/?launched=1")
    campaign_id = int(mark.url.rstrip("/").split("/campaigns/")[1].split("/")[0])
    bar = mark.get_by_test_id("progress-bar")
    expect(bar).to_have_attribute("data-percent", "100", timeout=30_000)
    expect(mark.get_by_test_id("progress-percent")).to_have_text("100%")
    expect(mark.get_by_test_id("campaign-status")).to_have_attribute("data-status", "completed", timeout=30_000)
    expect(mark.get_by_test_id("progress-connection")).to_have_attribute("data-state", "live")
    expect(mark.get_by_test_id("count-pending")).to_contain_text("0")
    screenshot(mark, "campaigns-detail-en")

    # Exactly the segment, each once, each with its own message.
    rows = off_loop(sent_messages, campaign_id)
    assert sorted(r[0] for r in rows) == sorted(expected)
    assert all(message_id is not None for _p, message_id, _s in rows)
    assert {state for *_x, state in rows} <= {RecipientState.SENT, RecipientState.DELIVERED}
    bodies = off_loop(lambda: list(Message.objects.filter(pk__in=[r[1] for r in rows]).values_list("body", flat=True)))
    assert len(bodies) == len(expected)
    assert all("diabetes" not in b and "Reply STOP" in b for b in bodies)
    campaign = off_loop(Campaign.objects.get, pk=campaign_id)
    assert campaign.status == CampaignStatus.COMPLETED
    assert off_loop(lambda: Inbox.objects.get(pk=campaign.inbox_id).name) == INBOX_NAME

    # --- The list shows it done; the analytics open -------------------------------------------------------
    mark.goto(f"{live_server_url}/campaigns/")
    row = mark.get_by_test_id("campaign-row")
    expect(row).to_have_count(1)
    expect(row.get_by_test_id("campaign-status")).to_have_attribute("data-status", "completed")
    expect(row.get_by_test_id("campaign-progress")).to_have_text(f"{len(expected)}/{len(expected)}")
    screenshot(mark, "campaigns-list-en")
    mark.goto(f"{live_server_url}/campaigns/{campaign_id}/")
    mark.get_by_test_id("analytics-link").click()
    mark.wait_for_url(f"{live_server_url}/campaigns/analytics/{campaign_id}/")
    expect(mark.locator("main")).to_contain_text("Autumn health check")
    screenshot(mark, "campaigns-analytics-en")
    mark.context.close()

    # --- The same pages in Simplified Chinese --------------------------------------------------------------
    mark_zh = signed_in(browser, live_server_url, locale="zh-CN")
    mark_zh.goto(f"{live_server_url}/campaigns/")
    expect(mark_zh.locator("html")).to_have_attribute("lang", "zh-hans")
    expect(mark_zh.get_by_test_id("campaign-row")).to_have_count(1)
    screenshot(mark_zh, "campaigns-list-zh")
    mark_zh.goto(f"{live_server_url}/campaigns/{campaign_id}/")
    expect(mark_zh.get_by_test_id("progress-bar")).to_have_attribute("data-percent", "100")
    screenshot(mark_zh, "campaigns-detail-zh")
    segment_id = campaign.segment_id
    mark_zh.goto(f"{live_server_url}/campaigns/segments/{segment_id}/")
    expect(mark_zh.get_by_test_id("segment-count")).to_have_attribute("data-count", str(len(expected)))
    screenshot(mark_zh, "campaigns-segment-zh")
    mark_zh.goto(f"{live_server_url}/campaigns/new/?segment={segment_id}")
    mark_zh.get_by_test_id("message-body").fill("{{ first_name }}您好，您的年度体检时间到了。")
    expect(mark_zh.get_by_test_id("lint-ok")).to_be_visible()
    screenshot(mark_zh, "campaigns-composer-zh")
    mark_zh.goto(f"{live_server_url}/campaigns/analytics/{campaign_id}/")
    screenshot(mark_zh, "campaigns-analytics-zh")
    mark_zh.context.close()


@pytest.mark.browser
def test_campaign_pages_refuse_agents(transactional_db: None, world: World, live_server_url: str, browser: Any) -> None:
    alice = login(browser, live_server_url, "alice", PASSWORD)
    for path in ("/campaigns/", "/campaigns/new/", "/campaigns/segments/new/"):
        response = alice.goto(f"{live_server_url}{path}")
        assert response is not None and response.status == 403, path
    expect(alice.get_by_role("link", name="Campaigns")).to_have_count(0)
    alice.context.close()

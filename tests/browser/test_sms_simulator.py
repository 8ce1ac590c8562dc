"""SMS end to end in real browsers: a patient texts from the simulator page, agents answer live.

The simulator posts a correctly signed Twilio webhook to the platform's own inbound URL; the agent's
reply goes out through the Twilio SDK (simulator transport) and its signed status callbacks come back
through the real status URL, so this drives the production SMS path, not a shortcut.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Iterator
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Expect, Page

from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.models import Inbox, Message, MessageDirection, MessageStatus
from tests.browser.conftest import login, screenshot
from tests.conftest import PASSWORD, World

# Generous waits: the browser suite shares the machine with PostgreSQL, Redis, Daphne and Chromium.
expect = Expect()
expect.set_options(timeout=10_000)

HOSPITAL_NUMBER = "+862088880001"
PATIENT_PHONE = "+8613912345678"
PATIENT_TEXT = "Hello, can I move my cardiology appointment to Friday?"
DRAFT_ENGLISH = "Yes, Friday 9:00 works."
REPLY_CHINESE = "您好，已为您改约到周五上午九点，请提前十五分钟到心内科报到。"


class QuickPBKDF2(PBKDF2PasswordHasher):
    """The algorithm the live server verifies with, in few rounds, so the personas are made in
    milliseconds rather than seconds (the server re-hashes at full strength on first sign-in)."""

    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def sms_inbox(world: World) -> Inbox:
    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology line 心内科短信",
            team=world.team_a,
            account_sid="AC" + secrets.token_hex(16),
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[HOSPITAL_NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


def show_all_conversations(page: Page) -> None:
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    page.get_by_test_id("tab-all").click()
    expect(page.get_by_test_id("tab-all")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("conversation-row")).to_have_count(0)


@pytest.fixture
def pages(
    transactional_db: None, world: World, live_server_url: str, browser: Any
) -> Iterator[tuple[Page, Page, Page]]:
    """alice (English) and bob (Simplified Chinese) in the inbox, and a patient's phone (Chinese)."""
    alice = login(browser, live_server_url, "alice", PASSWORD)
    bob = login(browser, live_server_url, "bob", PASSWORD, locale="zh-CN")
    phone_context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 860})
    phone_context.set_default_timeout(10_000)
    phone = phone_context.new_page()
    yield alice, bob, phone
    for page in (alice, bob, phone):
        page.context.close()


@pytest.mark.browser
def test_patient_texts_from_simulator_agent_replies_and_sees_it_delivered(
    pages: tuple[Page, Page, Page], world: World, live_server_url: str
) -> None:
    alice, bob, phone = pages
    inbox = sms_inbox(world)
    for agent in (alice, bob):
        show_all_conversations(agent)
        agent.evaluate("() => { window.__sameDocument = true; }")

    # The patient texts the new SMS line.
    phone.goto(f"{live_server_url}/simulator/")
    expect(phone.locator("html")).to_have_attribute("lang", "zh-hans")
    phone.get_by_test_id("sim-inbox").select_option(str(inbox.pk))
    phone.get_by_test_id("sim-phone").fill("139 1234 5678")
    expect(phone.get_by_test_id("sim-thread")).to_have_text("该号码还没有消息记录，发一条问候吧！")
    expect(phone.locator("#sim-number")).to_have_text(f"本机号码：{PATIENT_PHONE}")
    phone.get_by_test_id("sim-body").fill(PATIENT_TEXT)
    phone.get_by_test_id("sim-send").click()
    expect(phone.get_by_test_id("sim-body")).to_have_value("")
    patient_bubble = phone.get_by_test_id("sim-message").filter(has_text=PATIENT_TEXT)
    expect(patient_bubble).to_have_count(1)
    expect(patient_bubble).to_have_attribute("data-from", "patient")

    # It went through the signed webhook: stored once, on the SMS inbox, under Twilio's MessageSid.
    inbound = Message.objects.get(inbox=inbox, direction=MessageDirection.INBOUND)
    assert inbound.body == PATIENT_TEXT
    assert re.fullmatch(r"SM[0-9a-f]{32}", inbound.provider_message_id or "")

    # Both agents see it arrive without reloading.
    for agent in (alice, bob):
        row = agent.get_by_test_id("conversation-row")
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-conversation-id", str(inbound.conversation_id))
        expect(row).to_contain_text(PATIENT_TEXT)

    alice.get_by_test_id("conversation-row").click()
    received = alice.get_by_test_id("message")
    expect(received).to_have_count(1)
    expect(received).to_have_attribute("data-direction", "in")
    expect(received).to_contain_text(PATIENT_TEXT)
    # A new number made a new patient, known by that number.
    expect(alice.get_by_test_id("patient-panel")).to_contain_text(PATIENT_PHONE)

    # The composer counts SMS segments as the agent types: GSM-7 for plain English...
    counted: list[str] = []
    alice.on(
        "request",
        lambda request: (
            counted.append(json.loads(request.post_data or "{}")["text"])
            if request.url.endswith("/api/v1/sms/segments/")
            else None
        ),
    )
    composer = alice.get_by_test_id("composer-input")
    counter = alice.get_by_test_id("sms-segments")
    expect(counter).to_be_hidden()
    composer.press_sequentially(DRAFT_ENGLISH)
    expect(counter).to_have_text(f"{len(DRAFT_ENGLISH)} chars · 1 segment · GSM-7")
    expect(counter).to_have_attribute("data-encoding", "GSM-7")
    # Debounced: the server is asked once the typing pauses, not once per key.
    assert counted[-1] == DRAFT_ENGLISH
    assert len(counted) < len(DRAFT_ENGLISH)
    # ...UCS-2 as soon as one Chinese character is in, and a second segment past 70 of them.
    composer.fill(REPLY_CHINESE)
    expect(counter).to_have_text(f"{len(REPLY_CHINESE)} chars · 1 segment · UCS-2")
    composer.fill(REPLY_CHINESE * 3)
    expect(counter).to_have_text(f"{3 * len(REPLY_CHINESE)} chars · 2 segments · UCS-2")
    expect(counter).to_have_attribute("data-segments", "2")
    composer.fill(REPLY_CHINESE)
    expect(counter).to_have_text(f"{len(REPLY_CHINESE)} chars · 1 segment · UCS-2")
    screenshot(alice, "sms-agent-composer-en")

    alice.get_by_test_id("send-button").click()
    expect(composer).to_have_value("")
    expect(counter).to_be_hidden()
    reply = alice.get_by_test_id("message").filter(has_text=REPLY_CHINESE)
    expect(reply).to_have_count(1)
    expect(reply).to_have_attribute("data-direction", "out")
    # Delivered only once the simulated carrier's signed status callback came back through our URL.
    expect(reply).to_have_attribute("data-status", MessageStatus.DELIVERED)
    expect(reply.get_by_test_id("message-status")).to_have_text("Delivered")

    # The patient's phone shows the reply with its delivery status.
    hospital_bubble = phone.get_by_test_id("sim-message").filter(has_text=REPLY_CHINESE)
    expect(hospital_bubble).to_have_count(1)
    expect(hospital_bubble).to_have_attribute("data-from", "hospital")
    expect(hospital_bubble).to_have_attribute("data-status", "delivered")
    expect(hospital_bubble).to_contain_text("已送达")
    expect(phone.get_by_test_id("sim-message")).to_have_count(2)
    screenshot(phone, "sms-simulator-zh")

    outbound = Message.objects.get(inbox=inbox, direction=MessageDirection.OUTBOUND)
    assert outbound.status == MessageStatus.DELIVERED
    assert re.fullmatch(r"SM[0-9a-f]{32}", outbound.provider_message_id or "")

    # bob (in Chinese) saw all of it live; his composer counts in Chinese.
    bob_row = bob.get_by_test_id("conversation-row")
    expect(bob_row).to_contain_text(REPLY_CHINESE)
    expect(bob_row).to_contain_text("Alice")
    bob_row.click()
    bob_messages = bob.get_by_test_id("message")
    expect(bob_messages).to_have_count(2)
    expect(bob_messages.nth(1)).to_have_attribute("data-status", MessageStatus.DELIVERED)
    expect(bob_messages.nth(1).get_by_test_id("message-status")).to_have_text("已送达")
    bob.get_by_test_id("composer-input").press_sequentially("OK")
    expect(bob.get_by_test_id("sms-segments")).to_have_text("2 个字符 · 1 条短信 · GSM-7")
    expect(bob.get_by_test_id("patient-panel")).to_contain_text(PATIENT_PHONE)
    screenshot(bob, "sms-agent-composer-zh")

    # The patient page's language switcher; the thread survives the switch.
    phone.get_by_role("button", name="English").click()
    expect(phone.locator("html")).to_have_attribute("lang", "en")
    expect(phone.get_by_test_id("sim-message").filter(has_text=REPLY_CHINESE)).to_contain_text("Delivered")
    screenshot(phone, "sms-simulator-en")

    for agent in (alice, bob):
        assert agent.evaluate("() => window.__sameDocument === true"), "the inbox reloaded"

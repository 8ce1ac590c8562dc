"""Web chat in two real browsers: a patient on the demo hospital page, an agent in the inbox.

The widget is the shipped static file on the platform's demo page (its own Shadow DOM); the agent uses the
real inbox UI. Messages travel through the live Daphne, PostgreSQL and the Redis channel layer.
"""

from __future__ import annotations

import os
import re
import tempfile
from pathlib import Path
from typing import Any

import pytest
from PIL import Image, ImageDraw
from playwright.sync_api import expect

from channels_adapters.webchat.identity import identity_hash
from channels_adapters.webchat.models import WebVisitor
from contactcenter.actions.patients import create_patient
from contactcenter.models import Availability, ChannelType, IdentityKind, Inbox, Message, Role, Team
from tests.browser.conftest import login, screenshot
from tests.conftest import PASSWORD, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

SECRET_ENV = "WEBCHAT_BROWSER_TEST_SECRET"
SECRET = "browser-test-portal-secret"
# Set at import, before the session's live server starts, so the server process inherits it.
os.environ.setdefault(SECRET_ENV, SECRET)
# Uploaded images go to a throwaway folder, not the developer's var/media.
os.environ.setdefault("MEDIA_ROOT", tempfile.mkdtemp(prefix="webchat-media-"))


@pytest.fixture
def webchat_inbox(live_server_url: str) -> Inbox:
    team = Team.objects.create(code="service", name="Patient Service Center", name_zh="客服中心")
    make_staff("agent1", Role.AGENT, [team], availability=Availability.ONLINE)
    return Inbox.objects.create(
        name="Website chat",
        channel_type=ChannelType.WEBCHAT,
        team=team,
        auto_assign=True,
        config={
            "allowed_origins": [live_server_url],
            "consent_text": {"en": "I agree that Kanghua Hospital may contact me about this enquiry."},
            "identity_secret_env": SECRET_ENV,
        },
    )


def patient_page(browser: Any, url: str, *, locale: str = "en-US") -> Any:
    context = browser.new_context(locale=locale, viewport={"width": 1280, "height": 860})
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(url)
    return page


def start_chat(page: Any, name: str = "Wang Fang", phone: str = "13800138001") -> None:
    page.get_by_test_id("launcher").click()
    form = page.get_by_test_id("prechat")
    expect(form).to_be_visible()
    form.locator("input[name=name]").fill(name)
    form.locator("input[name=phone]").fill(phone)
    form.locator("input[name=consent]").check()
    form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("composer")).to_be_visible()


def send(page: Any, text: str) -> None:
    page.get_by_test_id("composer").fill(text)
    page.get_by_test_id("composer").press("Enter")


def test_patient_and_agent_chat_live(browser: Any, live_server_url: str, webchat_inbox: Inbox, tmp_path: Path) -> None:
    patient = patient_page(browser, f"{live_server_url}/webchat/demo/")
    expect(patient.get_by_test_id("launcher")).to_contain_text("Chat with us")
    start_chat(patient)
    expect(patient.get_by_test_id("status")).to_have_text("We're online")
    screenshot(patient, "webchat-1-patient-started")

    send(patient, "Hello, can I change my appointment to Friday?")
    visitor_bubble = patient.get_by_test_id("visitor-message").last
    expect(visitor_bubble).to_contain_text("change my appointment")
    expect(visitor_bubble).not_to_have_class(re.compile("pending"))

    agent = login(browser, live_server_url, "agent1", PASSWORD)
    agent.get_by_test_id("tab-all").click()
    row = agent.get_by_test_id("conversation-row").filter(has_text="Wang Fang")
    expect(row).to_be_visible()
    expect(row).to_contain_text("Web chat")
    row.click()
    expect(agent.get_by_test_id("timeline")).to_contain_text("change my appointment")

    # The patient types: the agent sees it.
    patient.get_by_test_id("composer").press_sequentially("Also", delay=30)
    expect(agent.get_by_test_id("typing-indicator")).to_contain_text("Wang Fang")

    # The agent types and answers: the patient sees both, live.
    composer = agent.get_by_test_id("composer-input")
    composer.press_sequentially("Sure", delay=30)
    expect(patient.get_by_test_id("agent-typing")).to_contain_text("is typing")
    composer.fill("Sure — Friday 9:00 is booked for you. <b>bold?</b>")
    agent.get_by_test_id("send-button").click()
    staff_bubble = patient.get_by_test_id("staff-message").last
    expect(staff_bubble).to_contain_text("Friday 9:00 is booked for you. <b>bold?</b>")
    assert staff_bubble.locator("b").count() == 0
    screenshot(agent, "webchat-2-agent-inbox")

    # A script as a message is text on both sides.
    patient.get_by_test_id("composer").fill("")
    send(patient, "<script>window.pwned = 1</script><img src=x onerror=window.pwned=2>")
    expect(patient.get_by_test_id("visitor-message").last).to_contain_text("<script>window.pwned = 1</script>")
    expect(agent.get_by_test_id("timeline")).to_contain_text("<script>window.pwned = 1</script>")
    assert patient.evaluate("window.pwned") is None
    assert agent.evaluate("window.pwned") is None
    screenshot(patient, "webchat-3-patient-conversation")

    # A reload keeps the conversation (signed visitor token in local storage, history from the server).
    patient.reload()
    patient.get_by_test_id("launcher").click()
    expect(patient.get_by_test_id("staff-message").last).to_contain_text("Friday 9:00 is booked")
    expect(patient.get_by_test_id("visitor-message")).to_have_count(2)
    expect(patient.get_by_test_id("prechat")).to_be_hidden()

    # A dropped connection reconnects and resyncs: a reply sent while it was down arrives once.
    patient.evaluate("window.hccWebchat.dropConnection()")
    composer.fill("Anything else I can help with?")
    agent.get_by_test_id("send-button").click()
    expect(patient.get_by_test_id("staff-message").last).to_contain_text("Anything else")
    expect(patient.get_by_test_id("staff-message")).to_have_count(2)
    screenshot(patient, "webchat-4-after-reload-and-reconnect")

    # The patient attaches an image: the agent sees its thumbnail (staff-only URL), and after a reload the
    # widget fetches it back with its visitor token.
    image_path = tmp_path / "rash.png"
    picture = Image.new("RGB", (320, 200), (250, 240, 230))
    ImageDraw.Draw(picture).ellipse((110, 50, 210, 150), fill=(200, 60, 50))
    picture.save(image_path)
    with patient.expect_file_chooser() as chooser:
        patient.get_by_role("button", name="Attach an image").click()
    chooser.value.set_files(str(image_path))
    mine = patient.get_by_test_id("visitor-message").last
    expect(mine.get_by_test_id("message-image")).to_be_visible()
    expect(mine).not_to_have_class(re.compile("pending"))
    thumb = agent.get_by_test_id("timeline").get_by_test_id("message-image").locator("img")
    expect(thumb).to_be_visible()
    agent.wait_for_function("img => img.complete && img.naturalWidth === 320", arg=thumb.element_handle())
    screenshot(agent, "webchat-7-agent-sees-image")
    patient.reload()
    patient.get_by_test_id("launcher").click()
    restored = patient.get_by_test_id("visitor-message").last.get_by_test_id("message-image")
    patient.wait_for_function("img => img.complete && img.naturalWidth === 320", arg=restored.element_handle())
    screenshot(patient, "webchat-8-patient-image")

    visitor = WebVisitor.objects.get()
    assert Message.objects.filter(conversation__patient=visitor.patient).count() == 5
    patient.context.close()
    agent.context.close()


def test_widget_in_chinese_and_portal_identity(browser: Any, live_server_url: str, webchat_inbox: Inbox) -> None:
    owner = create_patient(fields={"name": "门户患者"}, identities=[(IdentityKind.MRN, "MRN100077")])
    good = identity_hash(SECRET, "MRN100077")
    forged = identity_hash("guessed-secret", "MRN100077")

    page = patient_page(
        browser, f"{live_server_url}/webchat/demo/?lang=zh-hans&user=MRN100077&hash={forged}", locale="zh-CN"
    )
    expect(page.get_by_test_id("launcher")).to_contain_text("在线咨询")
    page.get_by_test_id("launcher").click()
    form = page.get_by_test_id("prechat")
    form.locator("input[name=name]").fill("冒充者")
    form.locator("input[name=phone]").fill("13800138009")
    form.locator("input[name=consent]").check()
    form.locator("button[type=submit]").click()
    expect(page.get_by_test_id("widget-error")).to_contain_text("无法确认您的门户登录身份")
    expect(page.get_by_test_id("composer")).to_be_hidden()
    assert WebVisitor.objects.count() == 0
    screenshot(page, "webchat-5-forged-identity-refused")
    page.context.close()

    page = patient_page(
        browser, f"{live_server_url}/webchat/demo/?lang=zh-hans&user=MRN100077&hash={good}", locale="zh-CN"
    )
    start_chat(page, name="门户患者")
    send(page, "我的体检报告好了吗？")
    expect(page.get_by_test_id("visitor-message").last).to_contain_text("体检报告")
    expect(page.get_by_test_id("visitor-message").last).not_to_have_class(re.compile("pending"))
    message = Message.objects.select_related("conversation").get()
    assert message.conversation.patient_id == owner.pk
    screenshot(page, "webchat-6-portal-patient-zh")
    page.context.close()


def test_page_styles_do_not_reach_the_widget(browser: Any, live_server_url: str, webchat_inbox: Inbox) -> None:
    page = patient_page(browser, f"{live_server_url}/webchat/demo/")
    page.get_by_test_id("launcher").click()
    name_input = page.get_by_test_id("prechat").locator("input[name=name]")
    expect(name_input).to_be_visible()
    # The demo page styles every input with red 20px Georgia and a dashed orange border.
    style = name_input.evaluate(
        "el => { const s = getComputedStyle(el); return [s.color, s.borderTopStyle, s.fontSize]; }"
    )
    assert style == ["rgb(17, 24, 39)", "solid", "14px"]
    page.context.close()

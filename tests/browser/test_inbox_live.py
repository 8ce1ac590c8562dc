"""The agent inbox, live, in real browsers: two agents of one team on one conversation.

Spec: two agents logged in; an inbound message appears in both lists without reload; one replies,
the other sees it; the socket is cut and restored and nothing is missing.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections
from playwright.sync_api import Expect, Page

from contactcenter.actions.inbound import InboundResult
from contactcenter.models import Conversation, Message, Note
from tests.browser.conftest import login, screenshot
from tests.conftest import PASSWORD, World

# Generous waits: the browser suite shares the machine with PostgreSQL, Redis, Daphne and Chromium.
expect = Expect()
expect.set_options(timeout=10_000)

T = TypeVar("T")

WANG_PHONE = "+8613800138000"
FIRST_TEXT = "你好，我想预约下周的复查"
REPLY_TEXT = "Hello Wang Fang, next Tuesday at 9:00 is free. Shall I book it?"
SECOND_TEXT = "好的，周二上午九点可以，谢谢！"
NOTE_TEXT = "Patient prefers mornings; check the cardiology schedule."
# A name that would become markup if anything rendered user data as HTML.
NEWCOMER_NAME = "<b>Li</b> Lei"
NEWCOMER_PHONE = "+8613900139000"
NEWCOMER_TEXT = "请问体检报告什么时候可以拿？"


class QuickPBKDF2(PBKDF2PasswordHasher):
    """The algorithm the live server verifies with, in few rounds, so the personas are made in
    milliseconds rather than seconds (the server re-hashes at full strength on first sign-in)."""

    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run an action in its own thread, as a webhook request would.

    Playwright's sync API keeps an event loop in the test thread, where publishing the events'
    channel-layer hints (async_to_sync) is refused.
    """

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def show_all_conversations(page: Page) -> None:
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    page.get_by_test_id("tab-all").click()
    expect(page.get_by_test_id("tab-all")).to_have_attribute("aria-selected", "true")
    expect(page.get_by_test_id("conversation-row")).to_have_count(0)
    # Set once; still there at the end only if the page never reloaded.
    page.evaluate("() => { window.__sameDocument = true; }")


def ids(page: Page, testid: str, attribute: str) -> list[int]:
    values = page.get_by_test_id(testid).evaluate_all(f"(els) => els.map((el) => el.dataset.{attribute})")
    return [int(v) for v in values]


@pytest.fixture
def agents(transactional_db: None, world: World, live_server_url: str, browser: Any) -> Iterator[tuple[Page, Page]]:
    alice = login(browser, live_server_url, "alice", PASSWORD)  # English
    bob = login(browser, live_server_url, "bob", PASSWORD, locale="zh-CN")  # Simplified Chinese
    for page in (alice, bob):
        show_all_conversations(page)
    yield alice, bob
    for page in (alice, bob):
        page.context.close()


@pytest.mark.browser
def test_two_agents_follow_a_conversation_live_and_miss_nothing_across_a_cut(
    agents: tuple[Page, Page], world: World, inbound: Callable[..., InboundResult]
) -> None:
    alice, bob = agents
    segment_counts: list[str] = []
    alice.on("request", lambda r: segment_counts.append(r.url) if "/sms/segments/" in r.url else None)

    # --- An inbound message appears in both lists without reload ---------------------------------
    first = off_loop(inbound, world.inbox_a, WANG_PHONE, FIRST_TEXT, name="Wang Fang")
    conversation_id = first.conversation.pk
    for page in (alice, bob):
        row = page.get_by_test_id("conversation-row")
        expect(row).to_have_count(1)
        expect(row).to_have_attribute("data-conversation-id", str(conversation_id))
        expect(row.get_by_test_id("conversation-name")).to_have_text("Wang Fang")
        expect(row).to_contain_text(FIRST_TEXT)
        expect(row.get_by_test_id("unread-badge")).to_have_text("1")
    screenshot(bob, "inbox-inbound-list-zh")

    for page in (alice, bob):
        page.get_by_test_id("conversation-row").click()
        expect(page.get_by_test_id("message")).to_have_count(1)
        expect(page.get_by_test_id("message")).to_have_attribute("data-direction", "in")
        expect(page.get_by_test_id("message")).to_contain_text(FIRST_TEXT)

    # --- One replies, the other sees it (and sees her typing first) -----------------------------
    alice.get_by_test_id("composer-input").press_sequentially("Hello Wang Fang")
    expect(bob.get_by_test_id("typing-indicator")).to_contain_text("Alice")
    alice.get_by_test_id("composer-input").fill(REPLY_TEXT)
    alice.get_by_test_id("send-button").click()
    expect(alice.get_by_test_id("composer-input")).to_have_value("")
    for page in (alice, bob):
        reply = page.get_by_test_id("message").filter(has_text=REPLY_TEXT)
        expect(reply).to_have_count(1)
        expect(reply).to_have_attribute("data-direction", "out")
        expect(reply).to_have_attribute("data-status", "delivered")
        expect(page.get_by_test_id("message")).to_have_count(2)
        # Answering an unassigned conversation makes it the replier's.
        expect(page.get_by_test_id("conversation-row")).to_contain_text("Alice")
        expect(page.get_by_test_id("conversation-row")).to_contain_text(REPLY_TEXT)
    expect(bob.get_by_test_id("typing-indicator")).to_have_text("")
    expect(bob.get_by_test_id("message").filter(has_text=REPLY_TEXT).get_by_test_id("message-status")).to_have_text(
        "已送达"
    )
    expect(alice.get_by_test_id("message").filter(has_text=REPLY_TEXT).get_by_test_id("message-status")).to_have_text(
        "Delivered"
    )

    # --- bob's socket is cut; the network stays down while things happen --------------------------
    bob.context.set_offline(True)
    bob.evaluate("() => window.inboxSocket.close()")
    status = bob.get_by_test_id("connection-status")
    expect(status).to_have_attribute("data-state", "reconnecting")
    expect(status).to_contain_text("重新连接")
    screenshot(bob, "inbox-reconnecting-zh")

    second = off_loop(inbound, world.inbox_a, WANG_PHONE, SECOND_TEXT)
    assert second.conversation.pk == conversation_id
    alice.get_by_test_id("note-toggle").check()
    alice.get_by_test_id("composer-input").fill(NOTE_TEXT)
    alice.get_by_test_id("send-button").click()
    expect(alice.get_by_test_id("note")).to_have_count(1)
    alice.get_by_test_id("assign-select").select_option(str(world.bob.pk))
    expect(alice.get_by_test_id("conversation-row").filter(has_text="Bob")).to_have_count(1)
    newcomer = off_loop(inbound, world.inbox_a, NEWCOMER_PHONE, NEWCOMER_TEXT, name=NEWCOMER_NAME)

    # alice, still live, saw all of it; bob's page has not heard of any of it.
    expect(alice.get_by_test_id("message")).to_have_count(3)
    expect(alice.get_by_test_id("conversation-row")).to_have_count(2)
    expect(status).to_have_attribute("data-state", "reconnecting")
    assert bob.get_by_test_id("message").count() == 2
    assert bob.get_by_test_id("note").count() == 0
    assert bob.get_by_test_id("conversation-row").count() == 1

    # --- The network comes back: bob catches up, nothing missing, nothing twice -------------------
    bob.context.set_offline(False)
    # Coming back online reconnects at once; allow for a retry still in its backoff as a fallback.
    expect(status).to_have_attribute("data-state", "live", timeout=15_000)
    expect(status).to_contain_text("实时")

    expect(bob.get_by_test_id("message")).to_have_count(3)
    expect(bob.get_by_test_id("message").nth(2)).to_contain_text(SECOND_TEXT)
    expect(bob.get_by_test_id("note")).to_have_count(1)
    expect(bob.get_by_test_id("note")).to_contain_text(NOTE_TEXT)
    expect(bob.get_by_test_id("note")).to_contain_text("Alice")
    expect(bob.get_by_test_id("assign-select")).to_have_value(str(world.bob.pk))
    rows = bob.get_by_test_id("conversation-row")
    expect(rows).to_have_count(2)
    # The newcomer's conversation is on top, and the markup in the name is just text.
    expect(rows.first).to_have_attribute("data-conversation-id", str(newcomer.conversation.pk))
    expect(rows.first.get_by_test_id("conversation-name")).to_have_text(NEWCOMER_NAME)
    expect(rows.first.locator("b")).to_have_count(0)
    expect(rows.nth(1)).to_contain_text(SECOND_TEXT)
    expect(rows.nth(1)).to_contain_text("Bob")

    # Exactly what the database holds, each once, in order.
    messages = list(Message.objects.filter(conversation_id=conversation_id).order_by("created_at", "id"))
    assert ids(bob, "message", "messageId") == [m.pk for m in messages]
    assert [m.body for m in messages] == [FIRST_TEXT, REPLY_TEXT, SECOND_TEXT]
    assert ids(bob, "note", "noteId") == list(
        Note.objects.filter(conversation_id=conversation_id).values_list("pk", flat=True)
    )
    assert sorted(ids(bob, "conversation-row", "conversationId")) == sorted(
        Conversation.objects.filter(inbox=world.inbox_a).values_list("pk", flat=True)
    )
    assert ids(alice, "message", "messageId") == [m.pk for m in messages]

    # The reconnected socket watches the open conversation again: typing reaches bob.
    alice.get_by_test_id("note-toggle").uncheck()
    alice.get_by_test_id("composer-input").press_sequentially("Bob will")
    expect(bob.get_by_test_id("typing-indicator")).to_contain_text("Alice")

    # A simulator inbox is not SMS: no segment counter, and nothing was asked of the calculator.
    expect(alice.get_by_test_id("sms-segments")).to_be_hidden()
    assert segment_counts == []

    screenshot(alice, "inbox-after-reconnect-en")
    screenshot(bob, "inbox-after-reconnect-zh")
    for page in (alice, bob):
        assert page.evaluate("() => window.__sameDocument === true"), "the inbox reloaded"

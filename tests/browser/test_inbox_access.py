"""The inbox page when its session or access ends while it is open, in a real browser.

Spec: an admin moves the agent to another team; the open inbox reloads itself and lists what the agent may see
now, not what she saw. Her password is changed; the open inbox goes to the sign-in page instead of reconnecting.
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections
from playwright.sync_api import Expect, Page

from contactcenter.actions import staff
from contactcenter.actions.inbound import InboundResult
from tests.browser.conftest import login, screenshot
from tests.conftest import PASSWORD, World

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

expect = Expect()
expect.set_options(timeout=15_000)
T = TypeVar("T")


class QuickPBKDF2(PBKDF2PasswordHasher):
    """The live server's algorithm in few rounds, so the personas are made quickly."""

    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run in a thread of its own: Playwright's loop in this thread refuses the channel-layer sends."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def listed(page: Page) -> list[int]:
    page.get_by_test_id("tab-all").click()
    expect(page.get_by_test_id("tab-all")).to_have_attribute("aria-selected", "true")
    values = page.get_by_test_id("conversation-row").evaluate_all("(els) => els.map((el) => el.dataset.conversationId)")
    return sorted(int(v) for v in values)


def test_a_team_change_reloads_the_open_inbox_with_what_the_agent_may_see_now(
    world: World, live_server_url: str, browser: Any, inbound: Callable[..., InboundResult]
) -> None:
    cardiology = off_loop(inbound, world.inbox_a, "+8613800138000", "Cardiology patient").conversation
    orthopedics = off_loop(inbound, world.inbox_b, "+8615011112222", "Orthopedics patient").conversation
    page = login(browser, live_server_url, "alice", PASSWORD)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    page.get_by_test_id("tab-all").click()
    expect(page.get_by_test_id("conversation-row")).to_have_count(1)
    assert listed(page) == [cardiology.pk]
    page.evaluate("() => { window.__sameDocument = true; }")

    off_loop(staff.change_staff_teams, user=world.alice, team_ids=[world.team_b.pk], actor=world.ada)

    page.wait_for_function("() => window.__sameDocument === undefined", timeout=15_000)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")
    page.get_by_test_id("tab-all").click()
    expect(page.get_by_test_id("conversation-row")).to_have_count(1)
    assert listed(page) == [orthopedics.pk]
    screenshot(page, "inbox-after-team-change")
    page.context.close()


def test_a_password_change_takes_the_open_inbox_to_the_sign_in_page(
    world: World, live_server_url: str, browser: Any, inbound: Callable[..., InboundResult]
) -> None:
    off_loop(inbound, world.inbox_a, "+8613800138000", "Cardiology patient")
    page = login(browser, live_server_url, "alice", PASSWORD)
    expect(page.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")

    def new_password() -> None:
        user = get_user_model().objects.get(pk=world.alice.pk)
        user.set_password("a-much-longer-new-passphrase-42")
        user.save()  # what every Django password form does

    off_loop(new_password)

    page.wait_for_url(f"{live_server_url}/login/**", timeout=15_000)
    assert "/login/?next=/inbox/" in page.url
    expect(page.locator("input[name=username]")).to_be_visible()
    assert "Cardiology patient" not in page.content()
    page.context.close()

"""The Content-Security-Policy in a real browser: every page works under it, Chromium reports no violation,
and the web chat widget still works when embedded on another site (under that site's rules, not ours)."""

from __future__ import annotations

import http.server
import re
import threading
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from playwright.sync_api import Expect, Page

from contactcenter.models import Availability, ChannelType, Inbox, Message, Role
from tests.browser.conftest import login
from tests.conftest import PASSWORD, World, make_staff

pytestmark = [pytest.mark.browser, pytest.mark.django_db(transaction=True)]

expect = Expect()
expect.set_options(timeout=10_000)


class HospitalSite:
    """Another website of the hospital's, on an origin of its own: a plain HTTP server embedding the widget.

    On loopback like the platform here: Chromium refuses a page on a public address loading from 127.0.0.1
    (Private Network Access), which a real site loading from the platform's public name never meets.
    """

    def __init__(self) -> None:
        self.page = b""
        site = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                self.send_response(200)
                self.send_header("Content-Type", "text/html; charset=utf-8")
                self.end_headers()
                self.wfile.write(site.page)

            def log_message(self, *args: Any) -> None:
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.origin = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    def __enter__(self) -> HospitalSite:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()
        self.thread.join(10)
        assert not self.thread.is_alive()


@pytest.fixture
def hospital_site() -> Iterator[HospitalSite]:
    with HospitalSite() as site:
        yield site


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


@pytest.fixture
def webchat_inbox(transactional_db: None, world: World, live_server_url: str, hospital_site: HospitalSite) -> Inbox:
    make_staff("agent9", Role.AGENT, [world.team_a], availability=Availability.ONLINE)
    return Inbox.objects.create(
        name="Website chat",
        channel_type=ChannelType.WEBCHAT,
        team=world.team_a,
        auto_assign=True,
        config={"allowed_origins": [live_server_url, hospital_site.origin]},
    )


def watch_for_violations(page: Page) -> list[str]:
    """Chromium logs every CSP refusal to the console ("Refused to … Content Security Policy …")."""
    seen: list[str] = []
    page.on(
        "console",
        lambda message: seen.append(message.text) if "Content Security Policy" in message.text else None,
    )
    return seen


def visit(page: Page, url: str, ready: Callable[[Page], None]) -> None:
    page.goto(url)
    ready(page)
    page.wait_for_load_state("networkidle")


STAFF_PAGES: list[tuple[str, str, Callable[[Page], None]]] = [
    ("ada", "/inbox/", lambda p: expect(p.get_by_test_id("connection-status")).to_have_attribute("data-state", "live")),
    ("ada", "/followup/", lambda p: p.wait_for_function("() => window.worklist !== undefined")),
    ("ada", "/followup/cases/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("ada", "/followup/reports/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("ada", "/audit/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("ada", "/api/v1/docs/", lambda p: expect(p.locator(".swagger-ui .info")).to_be_visible()),
    ("mark", "/campaigns/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("mark", "/campaigns/segments/new/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("mark", "/campaigns/new/", lambda p: expect(p.locator("main")).to_be_visible()),
    ("mark", "/campaigns/analytics/", lambda p: expect(p.locator("main")).to_be_visible()),
]


def test_staff_pages_run_under_the_policy(browser: Any, live_server_url: str, webchat_inbox: Inbox) -> None:
    signed_in = {name: login(browser, live_server_url, name, PASSWORD) for name in ("ada", "mark")}
    violations = {name: watch_for_violations(page) for name, page in signed_in.items()}
    for persona, path, ready in STAFF_PAGES:
        visit(signed_in[persona], live_server_url + path, ready)
        assert violations[persona] == [], (path, violations[persona])
    for page in signed_in.values():
        page.context.close()


def test_the_simulator_and_demo_pages_run_under_the_policy(
    browser: Any, live_server_url: str, webchat_inbox: Inbox
) -> None:
    context = browser.new_context()
    page = context.new_page()
    violations = watch_for_violations(page)

    visit(page, f"{live_server_url}/simulator/", lambda p: expect(p.get_by_test_id("sim-inbox")).to_be_visible())
    visit(page, f"{live_server_url}/simulator/mailbox/", lambda p: expect(p.locator("body")).to_be_visible())
    visit(page, f"{live_server_url}/webchat/demo/", lambda p: expect(p.get_by_test_id("launcher")).to_be_visible())
    page.get_by_test_id("launcher").click()
    expect(page.get_by_test_id("prechat")).to_be_visible()

    assert violations == []
    context.close()


def test_the_widget_works_embedded_on_another_site(
    browser: Any, live_server_url: str, webchat_inbox: Inbox, hospital_site: HospitalSite
) -> None:
    hospital_site.page = (
        "<!doctype html><html lang='en'><head><title>Hospital site</title></head><body><h1>Welcome</h1>"
        f"<script src='{live_server_url}/static/webchat/widget.js' data-inbox='{webchat_inbox.public_token}' async>"
        "</script></body></html>"
    ).encode()
    assert hospital_site.origin != live_server_url
    context = browser.new_context()
    context.set_default_timeout(10_000)
    page = context.new_page()
    page.goto(f"{hospital_site.origin}/")

    page.get_by_test_id("launcher").click()
    form = page.get_by_test_id("prechat")
    form.locator("input[name=name]").fill("Wang Fang")
    form.locator("input[name=phone]").fill("13800138001")
    form.locator("input[name=consent]").check()
    form.locator("button[type=submit]").click()
    page.get_by_test_id("composer").fill("Hello from the hospital's own site")
    page.get_by_test_id("composer").press("Enter")

    bubble = page.get_by_test_id("visitor-message").last
    expect(bubble).to_contain_text("Hello from the hospital's own site")
    # No longer pending: the server took it over the cross-origin socket and stored it (the one inbound path).
    expect(bubble).not_to_have_class(re.compile("pending"))
    assert Message.objects.filter(inbox=webchat_inbox, body="Hello from the hospital's own site").count() == 1
    context.close()

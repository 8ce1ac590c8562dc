"""Issue 13's access hardening: sign-in lockout, API throttles, expiring tokens, password policy, idle
sessions, Content-Security-Policy, API docs for staff only, and the simulator kept on this machine.

Personas (tests/conftest.py): alice and bob are agents, mark a marketer, ada an admin.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from axes.models import AccessAttempt
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AnonymousUser
from django.contrib.auth.password_validation import validate_password
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.core.exceptions import ValidationError
from django.test import Client
from django.urls import URLPattern
from django.utils import timezone
from rest_framework.authtoken.models import Token
from rest_framework.request import Request
from rest_framework.test import APIClient, APIRequestFactory

from channels_adapters.simulator.models import SimulatedDelivery
from channels_adapters.webchat.identity import identity_hash
from contactcenter.api.throttling import AnonymousRateThrottle, IntegrationRateThrottle, StaffRateThrottle
from contactcenter.demo import DEMO_PASSWORD
from contactcenter.models import ChannelType, Inbox, Message
from tests.conftest import PASSWORD, World
from tests.services import free_port

User = get_user_model()
ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- Sign-in lockout (django-axes) -------------------------------------------------------------------------


@pytest.fixture
def limits(settings: Any) -> Any:
    settings.LOGIN_FAILURES_PER_ACCOUNT = 3
    settings.LOGIN_FAILURES_PER_IP = 5
    settings.LOGIN_LOCKOUT_MINUTES = 15
    return settings


def sign_in(username: str, password: str, ip: str) -> Any:
    return Client().post("/login/", {"username": username, "password": password}, REMOTE_ADDR=ip)


def signed_in(response: Any) -> bool:
    return response.status_code == 302 and response["Location"] == "/inbox/"


def pass_the_cool_off(minutes: int) -> None:
    """What the clock does: every recorded failure becomes older than the lock-out period."""
    AccessAttempt.objects.update(attempt_time=timezone.now() - dt.timedelta(minutes=minutes, seconds=1))


def test_an_account_is_locked_after_its_limit_of_failures_from_any_address(world: World, limits: Any) -> None:
    answers = [sign_in("alice", "wrong-password-guess", f"10.0.0.{n + 1}").status_code for n in range(3)]
    assert answers == [200, 200, 429]  # the form again with an error, until the failure that reaches the limit

    locked = sign_in("alice", PASSWORD, "10.0.0.9")

    assert locked.status_code == 429
    assert locked["Retry-After"] == str(15 * 60)
    assert b'data-testid="login-locked"' in locked.content
    assert "_auth_user_id" not in locked.wsgi_request.session
    # Another account at the same address is not affected.
    assert signed_in(sign_in("bob", PASSWORD, "10.0.0.9"))


def test_the_failure_before_the_limit_still_lets_the_right_password_in(world: World, limits: Any) -> None:
    for _ in range(2):
        sign_in("alice", "wrong-password-guess", "10.0.0.1")

    assert signed_in(sign_in("alice", PASSWORD, "10.0.0.1"))


def test_a_locked_account_opens_again_after_the_cool_off(world: World, limits: Any) -> None:
    for _ in range(3):
        sign_in("alice", "wrong-password-guess", "10.0.0.1")
    assert sign_in("alice", PASSWORD, "10.0.0.2").status_code == 429

    pass_the_cool_off(15)

    assert signed_in(sign_in("alice", PASSWORD, "10.0.0.2"))


def test_an_address_is_locked_after_its_own_higher_limit_across_usernames(world: World, limits: Any) -> None:
    for name in ("alice", "bob", "charlie", "nobody"):
        sign_in(name, "wrong-password-guess", "10.0.0.7")
    # Four failures from one address, one per account: neither limit is reached yet.
    assert signed_in(sign_in("nina", PASSWORD, "10.0.0.7"))

    sign_in("somebody", "wrong-password-guess", "10.0.0.7")  # the fifth from this address

    assert sign_in("nina", PASSWORD, "10.0.0.7").status_code == 429
    assert signed_in(sign_in("nina", PASSWORD, "10.0.0.8"))  # from elsewhere nina is fine
    pass_the_cool_off(15)
    assert signed_in(sign_in("nina", PASSWORD, "10.0.0.7"))


def test_a_good_sign_in_does_not_wipe_the_failures_counted_against_others(world: World, limits: Any) -> None:
    for _ in range(2):
        sign_in("alice", "wrong-password-guess", "10.0.0.3")
    assert signed_in(sign_in("bob", PASSWORD, "10.0.0.3"))  # the attacker's own account, same address

    sign_in("alice", "wrong-password-guess", "10.0.0.3")

    assert sign_in("alice", PASSWORD, "10.0.0.4").status_code == 429


def test_the_django_admin_sign_in_is_locked_too(world: World, limits: Any) -> None:
    for _ in range(3):
        Client().post("/django-admin/login/", {"username": "ada", "password": "nope-nope-nope"}, REMOTE_ADDR="10.0.1.1")

    response = Client().post("/django-admin/login/", {"username": "ada", "password": PASSWORD}, REMOTE_ADDR="10.0.1.2")

    assert response.status_code == 429


def test_server_side_logins_without_a_request_still_work(world: World) -> None:
    # Django's test client (and scripts) call authenticate() without a request: nothing to lock out there.
    assert Client().login(username="alice", password=PASSWORD)


# --- Password policy ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "password",
    ["Short-pw-1", "84729163502846", "qwerty123456", "wang.fang@hospital"],
    ids=["too-short", "numeric", "common", "like-the-email"],
)
def test_weak_passwords_are_refused(db: Any, password: str) -> None:
    user = User(username="wfang", email="wang.fang@hospital.example", first_name="Fang", last_name="Wang")
    with pytest.raises(ValidationError):
        validate_password(password, user=user)


@pytest.mark.parametrize("password", [DEMO_PASSWORD, PASSWORD])
def test_the_demo_and_test_passwords_meet_the_policy(db: Any, password: str) -> None:
    validate_password(password, user=User(username="admin"))


def test_the_admin_password_form_applies_the_policy(world: World) -> None:
    from django.contrib.auth.forms import AdminPasswordChangeForm

    form = AdminPasswordChangeForm(world.alice, {"password1": "Short-pw-1", "password2": "Short-pw-1"})

    assert not form.is_valid()
    assert "password2" in form.errors


# --- Idle sessions -----------------------------------------------------------------------------------------


def session_row(client: Client) -> Session:
    return Session.objects.get(session_key=client.cookies["sessionid"].value)


def idle_for(client: Client, minutes: int, *, settings: Any) -> dt.datetime:
    """Make the session look `minutes` idle: its expiry that much nearer, its last activity that long ago."""
    row = session_row(client)
    data = row.get_decoded()
    data["_last_activity"] = int(time.time()) - minutes * 60
    expires = timezone.now() + dt.timedelta(seconds=settings.SESSION_COOKIE_AGE - minutes * 60)
    Session.objects.filter(pk=row.pk).update(session_data=Session.objects.encode(data), expire_date=expires)
    return expires


@pytest.fixture
def alice_browser(world: World, settings: Any) -> Client:
    client = Client()
    client.force_login(world.alice)
    client.get("/inbox/")
    return client


def test_the_idle_timeout_is_the_session_lifetime(settings: Any) -> None:
    assert settings.SESSION_COOKIE_AGE == settings.SESSION_IDLE_MINUTES * 60 == 30 * 60


def test_opening_a_page_counts_as_activity(alice_browser: Client, settings: Any) -> None:
    before = idle_for(alice_browser, 20, settings=settings)

    assert alice_browser.get("/inbox/").status_code == 200

    assert session_row(alice_browser).expire_date > before + dt.timedelta(minutes=19)


def test_a_change_through_the_api_counts_as_activity(alice_browser: Client, world: World, settings: Any) -> None:
    before = idle_for(alice_browser, 20, settings=settings)

    response = alice_browser.post("/api/v1/patients/", {}, content_type="application/json")

    assert response.status_code == 403  # alice may not create patients; she still did something
    assert session_row(alice_browser).expire_date > before + dt.timedelta(minutes=19)


def test_background_reads_do_not_keep_an_idle_session_alive(alice_browser: Client, settings: Any) -> None:
    before = idle_for(alice_browser, 20, settings=settings)

    assert alice_browser.get("/api/v1/conversations/").status_code == 200
    assert alice_browser.get("/api/v1/me/").status_code == 200

    assert session_row(alice_browser).expire_date == before


def test_an_idle_session_is_signed_out(alice_browser: Client, settings: Any) -> None:
    Session.objects.filter(pk=session_row(alice_browser).pk).update(
        expire_date=timezone.now() - dt.timedelta(seconds=1)
    )

    page = alice_browser.get("/inbox/")
    api = alice_browser.get("/api/v1/conversations/")

    assert page.status_code == 302
    assert page["Location"].startswith("/login/")
    assert api.status_code in (401, 403)


# --- API throttles -----------------------------------------------------------------------------------------


@pytest.fixture
def rates(settings: Any) -> Iterator[Any]:
    def set_rates(**rates: str) -> None:
        settings.REST_FRAMEWORK = {
            **settings.REST_FRAMEWORK,
            "DEFAULT_THROTTLE_RATES": {**settings.REST_FRAMEWORK["DEFAULT_THROTTLE_RATES"], **rates},
        }

    cache.delete_many(["throttle_integration_HisCaller"])
    yield set_rates
    cache.delete_many(["throttle_integration_HisCaller"])


def test_a_staff_member_over_the_rate_gets_429_with_retry_after(world: World, rates: Any) -> None:
    rates(staff="3/min")
    alice, bob = APIClient(), APIClient()
    alice.force_authenticate(world.alice)
    bob.force_authenticate(world.bob)

    answers = [alice.get("/api/v1/me/").status_code for _ in range(4)]

    assert answers == [200, 200, 200, 429]
    refused = alice.get("/api/v1/me/")
    assert refused.status_code == 429
    assert 0 < int(refused["Retry-After"]) <= 60
    assert bob.get("/api/v1/me/").status_code == 200  # counted per user


def test_the_his_is_counted_as_an_integration_not_an_anonymous_caller(world: World, rates: Any, settings: Any) -> None:
    settings.HIS_API_TOKEN = "his-token-for-throttle-tests"
    rates(anonymous="1/min", integration="1000/min")
    his = APIClient()
    his.credentials(HTTP_AUTHORIZATION="Bearer his-token-for-throttle-tests")

    answers = {his.post("/api/v1/his/discharges/", {}, format="json").status_code for _ in range(5)}

    assert answers == {400}  # refused for the empty body each time, never throttled


def test_the_his_has_its_own_rate(world: World, rates: Any, settings: Any) -> None:
    settings.HIS_API_TOKEN = "his-token-for-throttle-tests"
    rates(integration="2/min")
    his = APIClient()
    his.credentials(HTTP_AUTHORIZATION="Bearer his-token-for-throttle-tests")

    answers = [his.post("/api/v1/his/discharges/", {}, format="json").status_code for _ in range(3)]

    assert answers == [400, 400, 429]


def test_anonymous_callers_are_counted_by_their_address_not_a_header_they_send() -> None:
    factory = APIRequestFactory()
    keys = set()
    for forwarded in ("1.1.1.1", "2.2.2.2"):
        request = Request(factory.get("/", REMOTE_ADDR="10.2.0.1", HTTP_X_FORWARDED_FOR=forwarded))
        request.user = AnonymousUser()
        keys.add(AnonymousRateThrottle().get_cache_key(request, None))
        assert StaffRateThrottle().get_cache_key(request, None) is None
        assert IntegrationRateThrottle().get_cache_key(request, None) is None

    assert keys == {"throttle_anonymous_10.2.0.1"}


# --- Expiring API tokens -----------------------------------------------------------------------------------


def token_client(token: Token) -> APIClient:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    return client


def test_a_token_works_until_its_lifetime_ends(world: World, settings: Any) -> None:
    token = Token.objects.create(user=world.alice)
    Token.objects.filter(pk=token.pk).update(
        created=timezone.now() - dt.timedelta(days=settings.API_TOKEN_TTL_DAYS) + dt.timedelta(minutes=5)
    )

    assert token_client(token).get("/api/v1/me/").status_code == 200


def test_an_expired_token_is_401(world: World, settings: Any) -> None:
    token = Token.objects.create(user=world.alice)
    Token.objects.filter(pk=token.pk).update(
        created=timezone.now() - dt.timedelta(days=settings.API_TOKEN_TTL_DAYS, seconds=1)
    )

    response = token_client(token).get("/api/v1/me/")

    assert response.status_code == 401
    assert response["WWW-Authenticate"] == "Token"
    assert "expired" in response.json()["detail"]


def test_the_token_lifetime_comes_from_the_settings(world: World, settings: Any) -> None:
    settings.API_TOKEN_TTL_DAYS = 1
    token = Token.objects.create(user=world.alice)
    Token.objects.filter(pk=token.pk).update(created=timezone.now() - dt.timedelta(days=2))

    assert token_client(token).get("/api/v1/me/").status_code == 401


# --- API docs and schema: signed-in staff only -------------------------------------------------------------


def test_anonymous_callers_get_no_schema_and_no_docs(db: Any) -> None:
    client = Client()

    schema = client.get("/api/v1/schema/")
    docs = client.get("/api/v1/docs/")

    assert schema.status_code == 401
    assert docs.status_code == 302
    assert docs["Location"] == "/login/?next=/api/v1/docs/"


@pytest.mark.parametrize("persona", ["alice", "mark", "ada"])
def test_signed_in_staff_read_the_schema_and_docs(world: World, persona: str) -> None:
    client = Client()
    client.force_login(getattr(world, persona))

    schema = client.get("/api/v1/schema/")
    docs = client.get("/api/v1/docs/")
    script = client.get("/api/v1/docs/", {"script": ""})

    assert schema.status_code == docs.status_code == script.status_code == 200
    assert b"openapi:" in schema.content
    # Swagger UI from our own static files, its start-up script a file too: no CDN, no inline script.
    assert b"cdn.jsdelivr" not in docs.content
    assert re.search(
        rb'<script src="/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle\.js', docs.content
    )
    assert not re.search(rb"<script>", docs.content)
    assert script["Content-Type"].startswith("application/javascript")


def test_an_account_without_a_staff_profile_gets_no_schema(db: Any) -> None:
    client = Client()
    client.force_login(User.objects.create_user(username="stranger", password=PASSWORD))

    assert client.get("/api/v1/schema/").status_code == 403


def test_a_staff_token_reads_the_schema(world: World) -> None:
    assert token_client(Token.objects.create(user=world.alice)).get("/api/v1/schema/").status_code == 200


def test_swagger_ui_files_are_served_from_here(db: Any) -> None:
    response = Client().get("/static/drf_spectacular_sidecar/swagger-ui-dist/swagger-ui-bundle.js")

    assert response.status_code == 200


# --- Content-Security-Policy -------------------------------------------------------------------------------


def policy(response: Any) -> dict[str, list[str]]:
    directives = [d.strip().split() for d in response["Content-Security-Policy"].split(";") if d.strip()]
    return {d[0]: d[1:] for d in directives}


def test_pages_carry_a_strict_content_security_policy(db: Any) -> None:
    csp = policy(Client().get("/login/"))

    assert csp["default-src"] == ["'self'"]
    assert csp["script-src"] == ["'self'"]
    assert csp["style-src"] == ["'self'"]
    assert csp["object-src"] == ["'none'"]
    assert csp["frame-ancestors"] == ["'none'"]
    assert csp["base-uri"] == ["'none'"]


def test_only_the_api_docs_allow_inline_styles(world: World) -> None:
    client = Client()
    client.force_login(world.alice)

    assert "'unsafe-inline'" in policy(client.get("/api/v1/docs/"))["style-src"]
    assert "'unsafe-inline'" not in policy(client.get("/inbox/"))["style-src"]


INLINE_CODE = [
    (re.compile(rb"<script(?![^>]*\bsrc=)(?![^>]*type=\"application/json\")[^>]*>", re.I), "inline <script>"),
    (re.compile(rb"<style", re.I), "inline <style>"),
    (re.compile(rb"\sstyle=\"", re.I), "style attribute"),
    (re.compile(rb"\son[a-z]+=\"", re.I), "event handler attribute"),
    (re.compile(rb"javascript:", re.I), "javascript: URL"),
]

PAGES = [
    ("ada", "/inbox/"),
    ("ada", "/audit/"),
    ("ada", "/settings/inboxes/"),
    ("ada", "/followup/"),
    ("ada", "/followup/cases/"),
    ("ada", "/followup/reports/"),
    ("ada", "/followup/discharges/"),
    ("mark", "/campaigns/"),
    ("mark", "/campaigns/segments/"),
    ("mark", "/campaigns/segments/new/"),
    ("mark", "/campaigns/new/"),
    ("mark", "/campaigns/analytics/"),
    ("mark", "/campaigns/lifecycle/"),
    (None, "/login/"),
    (None, "/simulator/"),
    (None, "/simulator/mailbox/"),
    (None, "/webchat/demo/"),
]


@pytest.mark.parametrize(("persona", "url"), PAGES)
def test_pages_need_nothing_the_policy_forbids(world: World, persona: str | None, url: str) -> None:
    Inbox.objects.create(name="Website", channel_type=ChannelType.WEBCHAT, team=world.team_a)
    client = Client()
    if persona:
        client.force_login(getattr(world, persona))

    response = client.get(url)

    assert response.status_code == 200, url
    for pattern, what in INLINE_CODE:
        assert not pattern.search(response.content), f"{url} has an {what}, which the CSP blocks"


def test_the_widget_script_stays_loadable_from_other_sites(db: Any) -> None:
    response = Client().get("/static/webchat/widget.js", HTTP_ORIGIN="https://www.example-hospital.cn")

    assert response.status_code == 200
    assert response.get("Cross-Origin-Resource-Policy") in (None, "cross-origin")


# --- The simulator stays on this machine -------------------------------------------------------------------


def simulator_routes() -> list[str]:
    from channels_adapters.simulator import urls

    return ["/simulator/" + str(p.pattern) for p in urls.urlpatterns if isinstance(p, URLPattern)]


def test_every_simulator_route_is_listed() -> None:
    assert set(simulator_routes()) >= {
        "/simulator/",
        "/simulator/send/",
        "/simulator/threads/",
        "/simulator/phones/",
        "/simulator/mailbox/",
    }


@pytest.mark.parametrize("method", ["get", "post"])
@pytest.mark.parametrize("url", simulator_routes())
@pytest.mark.parametrize("address", ["10.0.0.5", "192.168.1.20", "2001:db8::1", "::ffff:10.0.0.5", ""])
def test_the_simulator_refuses_other_machines(db: Any, url: str, method: str, address: str) -> None:
    response = getattr(Client(), method)(url, {"phone": "+8613800138000"}, REMOTE_ADDR=address)

    assert response.status_code == 403


@pytest.mark.parametrize("address", ["127.0.0.1", "127.0.0.2", "::1", "::ffff:127.0.0.1"])
def test_the_simulator_answers_this_machine(db: Any, address: str) -> None:
    assert Client().get("/simulator/phones/", REMOTE_ADDR=address).status_code == 200


def test_a_remote_patient_message_is_refused_and_not_stored(world: World) -> None:
    messages = Message.objects.count()

    response = Client().post(
        "/simulator/send/", {"inbox": world.inbox_a.pk, "from": "+8613800138000", "body": "Hi"}, REMOTE_ADDR="10.0.0.5"
    )

    assert response.status_code == 403
    assert Message.objects.count() == messages
    assert not SimulatedDelivery.objects.exists()


def test_simulator_allow_remote_lets_other_machines_in(db: Any, settings: Any) -> None:
    settings.SIMULATOR_ALLOW_REMOTE = True

    assert Client().get("/simulator/phones/", REMOTE_ADDR="10.0.0.5").status_code == 200


@pytest.fixture
def portal_inbox(world: World, monkeypatch: pytest.MonkeyPatch) -> Inbox:
    monkeypatch.setenv("WEBCHAT_IDENTITY_SECRET", "installation-secret-for-this-test")
    return Inbox.objects.create(
        name="Website",
        channel_type=ChannelType.WEBCHAT,
        team=world.team_a,
        config={"identity_secret_env": "WEBCHAT_IDENTITY_SECRET", "allowed_origins": ["http://testserver"]},
    )


def test_the_demo_page_signs_a_portal_patient_with_the_installation_secret(portal_inbox: Inbox) -> None:
    page = Client().get("/webchat/demo/", {"sign_as": "MRN100000"}, REMOTE_ADDR="127.0.0.1").content.decode()

    expected = identity_hash("installation-secret-for-this-test", "MRN100000")
    assert f'data-user-hash="{expected}"' in page


def test_the_demo_page_signs_nobody_in_for_another_machine(portal_inbox: Inbox) -> None:
    page = Client().get("/webchat/demo/", {"sign_as": "MRN100000"}, REMOTE_ADDR="10.0.0.5").content.decode()

    assert "data-user-hash" not in page


# --- serve: refuses to expose the simulator, starts otherwise ---------------------------------------------

EMBEDDED_STRIP = {
    "DATABASE_URL",
    "REDIS_URL",
    "TASK_RUNNER",
    "SECRET_KEY",
    "SIMULATOR_ENABLED",
    "PUBLIC_BASE_URL",
    "ALLOWED_HOSTS",
    "TWILIO_AUTH_TOKEN",
    "TWILIO_TRANSPORT",
    "WEBCHAT_IDENTITY_SECRET",
    "HIS_API_TOKEN",
    "BEHIND_TLS_PROXY",
    "SIMULATOR_ALLOW_REMOTE",
}


def embedded_env(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in EMBEDDED_STRIP}
    env.update(DJANGO_SETTINGS_MODULE="config.settings", DATA_DIR=str(tmp_path), HL7_MLLP_PORT="0", **extra)
    return env


def run_serve(args: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "manage.py", "serve", "--no-seed", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


@pytest.mark.parametrize("hosts", ["*", "0.0.0.0", "127.0.0.1,contact.example-hospital.cn"])
def test_serve_refuses_allowed_hosts_beyond_loopback_with_the_simulator_on(tmp_path: Path, hosts: str) -> None:
    result = run_serve(["--port", str(free_port())], embedded_env(tmp_path, ALLOWED_HOSTS=hosts))

    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr
    assert "SIMULATOR_ALLOW_REMOTE" in result.stderr
    assert not (tmp_path / "hospital.sqlite3").exists()  # refused before anything ran


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.20"])
def test_serve_refuses_to_listen_beyond_loopback_with_the_simulator_on(tmp_path: Path, host: str) -> None:
    result = run_serve(["--host", host, "--port", str(free_port())], embedded_env(tmp_path))

    assert result.returncode != 0
    assert "Refusing to listen on" in result.stderr
    assert not (tmp_path / "hospital.sqlite3").exists()


def test_serve_uses_proxy_headers_only_behind_the_tls_proxy(settings: Any) -> None:
    from contactcenter.management.commands.serve import Command

    settings.BEHIND_TLS_PROXY = False
    assert "--proxy-headers" not in Command().daphne_arguments("127.0.0.1", 8000)
    settings.BEHIND_TLS_PROXY = True
    assert "--proxy-headers" in Command().daphne_arguments("127.0.0.1", 8000)


def wait_for_health(proc: subprocess.Popen[bytes], url: str, deadline_seconds: float = 180) -> None:
    deadline = time.monotonic() + deadline_seconds
    while True:
        try:
            with urllib.request.urlopen(f"{url}/healthz", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:
            pass
        assert proc.poll() is None, "serve exited before answering"
        assert time.monotonic() < deadline, "serve did not answer /healthz in time"
        time.sleep(0.2)


def stop(proc: subprocess.Popen[bytes]) -> None:
    proc.terminate()
    try:
        proc.wait(15)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(5)
    assert proc.poll() is not None


def get_status(url: str, **headers: str) -> int:
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=10) as response:
            return int(response.status)
    except urllib.error.HTTPError as exc:
        return exc.code


def test_serve_starts_on_loopback_and_when_forced(tmp_path: Path) -> None:
    """The demo as `make run` starts it, then the same installation exposed on purpose."""
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    log = (tmp_path / "serve.log").open("wb")
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-seed", "--port", str(port)],
        cwd=ROOT,
        env=embedded_env(tmp_path),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_health(proc, url)
        assert get_status(f"{url}/simulator/") == 200
        # Daphne runs without --proxy-headers here: a header cannot change who is asking.
        assert get_status(f"{url}/simulator/", **{"X-Forwarded-For": "10.0.0.9"}) == 200
        assert get_status(f"{url}/api/v1/schema/") == 401
    finally:
        stop(proc)

    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "manage.py", "serve", "--no-seed", "--port", str(port)],
        cwd=ROOT,
        env=embedded_env(tmp_path, ALLOWED_HOSTS="*", SIMULATOR_ALLOW_REMOTE="true"),
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    try:
        wait_for_health(proc, f"http://127.0.0.1:{port}")
    finally:
        stop(proc)
        log.close()
    banner = (tmp_path / "serve.log").read_text()
    assert f"HIS API token    in {tmp_path / 'his_api_token'}" in banner
    assert (tmp_path / "his_api_token").read_text().strip() not in banner

"""Sign-in lockout (django-axes, per account and per IP) and the idle-session timeout.

Settings and their reasons are in config/settings.py ("Security: passwords, sign-in lockout, idle sessions").
"""

from __future__ import annotations

import datetime as dt
import math
import time
from collections.abc import Callable
from typing import Any

from axes.backends import AxesStandaloneBackend
from axes.handlers.database import AxesDatabaseHandler
from django.conf import settings
from django.contrib.auth.forms import AuthenticationForm
from django.db.models import Sum
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

# --- Sign-in lockout ---------------------------------------------------------------------------------------


class LockoutBackend(AxesStandaloneBackend):
    """Refuses a sign-in while its account or address is locked out (raises before ModelBackend runs).

    Every sign-in over the web passes the request (Django's login form and admin do). Calls without one are
    code running on the server itself, such as Django's test client `login()`: there is no client to lock out,
    so they are left to the next backend instead of failing.
    """

    def authenticate(
        self, request: HttpRequest | None, username: str | None = None, password: str | None = None, **kwargs: Any
    ) -> None:
        if request is None:
            return None
        return super().authenticate(request, username=username, password=password, **kwargs)


class LockoutHandler(AxesDatabaseHandler):
    """Axes' database handler with a limit per account and a higher one per client IP.

    Axes compares one failure count (the larger of its per-parameter counts) with one limit. A ward's PCs
    may all reach us from one address, so the address gets its own, higher limit: its count is shifted so
    that it reaches the account limit exactly when the address reaches LOGIN_FAILURES_PER_IP.
    """

    def get_failures(self, request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
        by_username, by_ip = (
            attempts.aggregate(total=Sum("failures_since_start"))["total"] or 0
            for attempts in self.get_user_attempts(request, credentials)
        )
        head_room = settings.LOGIN_FAILURES_PER_IP - settings.LOGIN_FAILURES_PER_ACCOUNT
        return max(by_username, by_ip - head_room)


def failure_limit(request: HttpRequest, credentials: dict[str, Any] | None = None) -> int:
    return int(settings.LOGIN_FAILURES_PER_ACCOUNT)


def cool_off(request: HttpRequest | None = None) -> dt.timedelta:
    return dt.timedelta(minutes=settings.LOGIN_LOCKOUT_MINUTES)


def client_ip(request: HttpRequest) -> str | None:
    """The address Daphne reports (from X-Forwarded-For with --proxy-headers behind the TLS proxy)."""
    return request.META.get("REMOTE_ADDR") or None


def lockout_response(
    request: HttpRequest, original_response: HttpResponse | None = None, credentials: dict[str, Any] | None = None
) -> HttpResponse:
    """The sign-in page again, saying why and for how long; 429 with Retry-After for scripts."""
    minutes = settings.LOGIN_LOCKOUT_MINUTES
    form = AuthenticationForm(request, initial={"username": str(request.POST.get("username", ""))[:150]})
    response = render(
        request,
        "contactcenter/login.html",
        {"form": form, "locked_out": True, "lockout_minutes": minutes, "next": request.POST.get("next", "")},
        status=429,
    )
    response["Retry-After"] = str(minutes * 60)
    return response


# --- Idle sessions -----------------------------------------------------------------------------------------

SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
# Refresh the session's expiry at most this often: a write per request would cost a database round trip each.
TOUCH_EVERY_SECONDS = 60
LAST_ACTIVITY_KEY = "_last_activity"


def counts_as_activity(request: HttpRequest) -> bool:
    """What a person at the screen does: open a page, or send a change. Not the pages' timers.

    The inbox holds a websocket and the worklist, cases and campaign pages re-read the API on timers while
    they are open; counting those would keep an unattended screen full of patient data signed in forever.
    Everything a person does there (reply, assign, mark read, claim a call, record an outcome) is a write.
    """
    if request.method not in SAFE_METHODS:
        return True
    return not request.path.startswith("/api/")


class IdleSessionMiddleware:
    """Ends a session SESSION_IDLE_MINUTES after the last activity (see counts_as_activity).

    The session's lifetime is SESSION_COOKIE_AGE (= the idle timeout) from its last save; activity saves it
    again, so only idleness lets it run out. The database refuses an expired session and the request is
    anonymous: pages redirect to sign-in, the API answers 401/403, and sockets re-checking the session close.
    """

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        user = getattr(request, "user", None)
        if user is not None and user.is_authenticated and counts_as_activity(request):
            now = math.floor(time.time())
            last = request.session.get(LAST_ACTIVITY_KEY)
            if not isinstance(last, int) or now - last >= TOUCH_EVERY_SECONDS:
                request.session[LAST_ACTIVITY_KEY] = now  # modified → saved → expiry pushed forward
        return self.get_response(request)

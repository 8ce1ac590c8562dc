"""Riding out a database blip (a restart, a failover, a connection a firewall cut) without losing input.

Two pieces, both at the edge of a request:
- `retry_on_dead_connection` wraps webhook views whose work is idempotent (inbound messages are stored once
  per provider id, statuses only move forward): when the database connection turns out dead, it is dropped
  and the view runs again on a fresh one, backing off for a few seconds while the database restarts. A
  restart then costs the provider nothing.
- `server_error`, the project's handler500, answers 503 with Retry-After, not 500, when the database still
  cannot be reached, wherever that was noticed (a view, a middleware): Twilio retries what the operator's
  connection overrides say to retry (`#rp=5xx`, see docs/production.md), and API clients know to try again.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import sys
import time
from collections.abc import Callable
from typing import Any

from django.db import DatabaseError, InterfaceError, OperationalError, connection
from django.http import HttpRequest, HttpResponse
from django.views import defaults

logger = logging.getLogger(__name__)

RETRY_AFTER_SECONDS = 5
DEAD_CONNECTION_ERRORS = (OperationalError, InterfaceError)


def unavailable() -> HttpResponse:
    response = HttpResponse(
        "The database is unavailable for a moment; nothing was stored. Please retry.",
        status=503,
        content_type="text/plain",
    )
    response["Retry-After"] = str(RETRY_AFTER_SECONDS)
    return response


def _drop_connection() -> None:
    with contextlib.suppress(DatabaseError):
        connection.close()


# How long an idempotent webhook keeps trying a database that went away before answering 503: a PostgreSQL fast
# restart takes a second or two, and Twilio waits 15 s for an answer, so a patient's message rides it out here
# instead of depending on the operator's retry settings.
RETRY_DELAYS_SECONDS = (0.0, 0.25, 0.5, 1.0, 2.0, 2.0)


def retry_on_dead_connection(view: Callable[..., HttpResponse]) -> Callable[..., HttpResponse]:
    """Run an idempotent view again, on a fresh connection, while the database is unreachable; 503 at the end.

    Only for views whose work can be repeated: an inbound message is stored once per provider id and a status
    only moves forward, so an attempt that did commit before its connection broke is found, not repeated.
    """

    @functools.wraps(view)
    def wrapped(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        for attempt, delay in enumerate(RETRY_DELAYS_SECONDS):
            if delay:
                time.sleep(delay)
            try:
                return view(request, *args, **kwargs)
            except DEAD_CONNECTION_ERRORS as exc:
                if connection.in_atomic_block:
                    # Inside someone's transaction (ATOMIC_REQUESTS, a test): theirs to roll back, not ours to retry.
                    raise
                logger.warning(
                    "%s: database connection failed (%s), attempt %d", request.path, type(exc).__name__, attempt + 1
                )
                _drop_connection()
        logger.error(
            "%s: database unavailable after %d attempts; answered 503", request.path, len(RETRY_DELAYS_SECONDS)
        )
        return unavailable()

    return wrapped


def server_error(request: HttpRequest) -> HttpResponse:
    """handler500: a database that went away while any middleware or view ran is a 503, not a 500.

    Django calls its error handler inside the except block that caught the exception, whether a view or a
    middleware (the session read behind the idle-timeout check, say) raised it, so it is still the current one.
    """
    exc = sys.exc_info()[1]
    if isinstance(exc, DEAD_CONNECTION_ERRORS):
        _drop_connection()
        return unavailable()
    return defaults.server_error(request)

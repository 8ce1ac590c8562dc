"""Rate limits and "is the widget open right now", counted in Django's cache.

With REDIS_URL the cache is Redis, so the counts are shared by every Daphne process; the embedded mode
uses process memory, which is right for its single process.

While Redis is unreachable (a restart) nothing here may break a patient's chat: limits let the visitor
through (an outage of seconds is no flood), and presence answers "open", so a reply waits in the widget
rather than going out as an SMS the patient may not need. Each such answer is logged.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import TypeVar

from django.core.cache import cache

from contactcenter.layers import LAYER_ERRORS

logger = logging.getLogger(__name__)

_T = TypeVar("_T")


def _degraded(what: str, fallback: _T, run: Callable[[], _T]) -> _T:
    try:
        return run()
    except LAYER_ERRORS as exc:
        logger.warning("web chat %s: cache unreachable (%s); answered %r", what, type(exc).__name__, fallback)
        return fallback


PRESENCE_TTL_SECONDS = 120


def allow(scope: str, key: str, *, limit: int, window_seconds: int = 60) -> bool:
    """Count one hit in a fixed window; False once the window's limit is exceeded."""
    return _degraded(
        f"rate limit {scope}", True, lambda: _allow(scope, key, limit=limit, window_seconds=window_seconds)
    )


def _allow(scope: str, key: str, *, limit: int, window_seconds: int) -> bool:
    bucket = int(time.time() // window_seconds)
    name = f"webchat:rl:{scope}:{key}:{bucket}"
    cache.add(name, 0, timeout=window_seconds + 5)
    try:
        count = cache.incr(name)
    except ValueError:
        # Expired between add and incr.
        cache.set(name, 1, timeout=window_seconds + 5)
        count = 1
    return count <= limit


def _presence_key(visitor_id: str) -> str:
    return f"webchat:present:{visitor_id}"


def widget_opened(visitor_id: str) -> None:
    _degraded("presence", None, lambda: _widget_opened(visitor_id))


def _widget_opened(visitor_id: str) -> None:
    key = _presence_key(visitor_id)
    cache.add(key, 0, timeout=PRESENCE_TTL_SECONDS)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=PRESENCE_TTL_SECONDS)
    cache.touch(key, PRESENCE_TTL_SECONDS)


def widget_alive(visitor_id: str) -> None:
    """A heartbeat from an open widget; a crashed server's counts expire without it."""
    _degraded("presence", None, lambda: cache.touch(_presence_key(visitor_id), PRESENCE_TTL_SECONDS))


def widget_closed(visitor_id: str) -> None:
    _degraded("presence", None, lambda: _widget_closed(visitor_id))


def _widget_closed(visitor_id: str) -> None:
    try:
        if cache.decr(_presence_key(visitor_id)) <= 0:
            cache.delete(_presence_key(visitor_id))
    except ValueError:
        pass


def widget_open(visitor_id: str) -> bool:
    return _degraded("presence", True, lambda: int(cache.get(_presence_key(visitor_id)) or 0) > 0)

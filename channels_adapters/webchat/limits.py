"""Rate limits and "is the widget open right now", counted in Django's cache.

With REDIS_URL the cache is Redis, so the counts are shared by every Daphne process; the embedded mode
uses process memory, which is right for its single process.
"""

from __future__ import annotations

import time

from django.core.cache import cache

PRESENCE_TTL_SECONDS = 120


def allow(scope: str, key: str, *, limit: int, window_seconds: int = 60) -> bool:
    """Count one hit in a fixed window; False once the window's limit is exceeded."""
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
    key = _presence_key(visitor_id)
    cache.add(key, 0, timeout=PRESENCE_TTL_SECONDS)
    try:
        cache.incr(key)
    except ValueError:
        cache.set(key, 1, timeout=PRESENCE_TTL_SECONDS)
    cache.touch(key, PRESENCE_TTL_SECONDS)


def widget_alive(visitor_id: str) -> None:
    """A heartbeat from an open widget; a crashed server's counts expire without it."""
    cache.touch(_presence_key(visitor_id), PRESENCE_TTL_SECONDS)


def widget_closed(visitor_id: str) -> None:
    try:
        if cache.decr(_presence_key(visitor_id)) <= 0:
            cache.delete(_presence_key(visitor_id))
    except ValueError:
        pass


def widget_open(visitor_id: str) -> bool:
    return int(cache.get(_presence_key(visitor_id)) or 0) > 0

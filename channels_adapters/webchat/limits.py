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
from dataclasses import dataclass
from typing import Any, TypeVar

import redis.exceptions as redis_errors
from django.core.cache import DEFAULT_CACHE_ALIAS, cache, caches
from django.core.cache.backends.redis import RedisCache

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
    return _count(f"webchat:rl:{scope}:{key}:{bucket}", limit=limit, window_seconds=window_seconds)


def _count(name: str, *, limit: int, window_seconds: int) -> bool:
    cache.add(name, 0, timeout=window_seconds + 5)
    try:
        count = cache.incr(name)
    except ValueError:
        # Expired between add and incr.
        cache.set(name, 1, timeout=window_seconds + 5)
        count = 1
    return count <= limit


@dataclass(frozen=True)
class Limit:
    scope: str
    key: str
    limit: int


# Counts each limit in turn and stops at the first one exceeded, as allow() called for each in turn does (a hit the
# first limit refuses is not counted against the next: one visitor over their own limit does not use up the limit of
# everyone behind the same address). Returns the 1-based index of that limit, or 0.
_COUNT_IN_TURN = """
for i, key in ipairs(KEYS) do
  local count = redis.call('INCR', key)
  if count == 1 then redis.call('EXPIRE', key, ARGV[1]) end
  if count > tonumber(ARGV[i + 1]) then return i end
end
return 0
"""


def allow_all(limits: list[Limit], *, window_seconds: int = 60) -> Limit | None:
    """allow() for each limit in turn; the first one exceeded, or None. With Redis, one round trip for all (a
    visitor's message checks two limits: six round trips one by one)."""
    return _degraded("rate limits", None, lambda: _allow_all(limits, window_seconds=window_seconds))


def _allow_all(limits: list[Limit], *, window_seconds: int) -> Limit | None:
    if not limits:
        return None
    bucket = int(time.time() // window_seconds)
    names = [f"webchat:rl:{limit.scope}:{limit.key}:{bucket}" for limit in limits]
    redis = _redis()
    if redis is not None:
        backend, client = redis
        # The keys (prefix, version) and raw integer values cache.add and cache.incr use, so allow() and allow_all()
        # count the same windows.
        keys = [backend.make_and_validate_key(name) for name in names]
        try:
            exceeded = int(
                client.eval(_COUNT_IN_TURN, len(keys), *keys, window_seconds + 5, *(x.limit for x in limits))
            )
        except redis_errors.ResponseError as exc:
            # A Redis that refuses scripts (an ACL, a managed service): count one by one instead.
            logger.warning("web chat rate limits: Redis refused the counting script (%s)", type(exc).__name__)
        else:
            return limits[exceeded - 1] if exceeded else None
    for limit, name in zip(limits, names, strict=True):
        if not _count(name, limit=limit.limit, window_seconds=window_seconds):
            return limit
    return None


def _redis() -> tuple[RedisCache, Any] | None:
    """The cache backend and its Redis client (its own connection pool), when the cache is Django's Redis cache:
    for what Django's cache API cannot do in one round trip (a script, a pipeline). None otherwise."""
    backend = caches[DEFAULT_CACHE_ALIAS]
    if not isinstance(backend, RedisCache):
        return None
    return backend, backend._cache.get_client(None, write=True)


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


def widgets_alive(visitor_ids: list[str]) -> None:
    """widget_alive for every open widget of a server process, in one round trip with Redis."""
    _degraded("presence", None, lambda: _widgets_alive(visitor_ids))


def _widgets_alive(visitor_ids: list[str]) -> None:
    redis = _redis()
    if redis is None:
        for visitor_id in visitor_ids:
            cache.touch(_presence_key(visitor_id), PRESENCE_TTL_SECONDS)
        return
    backend, client = redis
    pipeline = client.pipeline(transaction=False)
    for visitor_id in visitor_ids:
        # What cache.touch does, for all of them at once.
        pipeline.expire(backend.make_and_validate_key(_presence_key(visitor_id)), PRESENCE_TTL_SECONDS)
    pipeline.execute()


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

"""Messages per second per sender, shared by every worker: a GCRA in one Redis Lua script.

Twilio queues (and past its limit, refuses with 30001) per sending number or Messaging Service, so
the limit is keyed by the sender, not by the campaign or the worker. Each `acquire` reserves the next
free slot on the sender's timeline (the "theoretical arrival time") and says how long to wait for
it, so N workers together keep exactly the rate, evenly spaced, with no burst after an idle spell:
a timeline left in the past restarts at now. The clock is Redis's (TIME inside the script), so
workers on different hosts do not need synchronised clocks.

Why not the `limits` library: its strategies answer "allowed now?" (retry in a polling loop) and
its windows let a whole second's budget go out at once; a reserving GCRA is fifteen lines of Lua,
smooth, and exact across workers.

Without REDIS_URL (the embedded demo, one process) the same algorithm runs in process memory.
"""

from __future__ import annotations

import functools
import threading
import time
from typing import Any

from django.conf import settings

from contactcenter.models import Inbox

KEY_PREFIX = "campaigns:throttle:"

# KEYS[1]: the sender's timeline; ARGV[1]: the slot length in microseconds; ARGV[2]: how many consecutive
# slots to reserve. Returns the wait in µs until the first of them.
# Microseconds since the epoch (~1.7e15) stay exact in Lua's doubles (2^53 ≈ 9e15).
_GCRA = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tat = tonumber(redis.call('GET', KEYS[1]) or '0')
if tat < now then tat = now end
local nxt = tat + interval * tonumber(ARGV[2] or '1')
redis.call('SET', KEYS[1], string.format('%.0f', nxt), 'PX', math.ceil((nxt - now) / 1000) + 1000)
return tat - now
"""


def sender_key(inbox: Inbox) -> str:
    """The Messaging Service SID when the inbox sends through one (Twilio limits the pool), else its
    number; inboxes without a Twilio sender (the simulator) are limited per inbox."""
    from channels_adapters.sms.models import SenderKind, TwilioSender

    senders = dict(TwilioSender.objects.filter(inbox=inbox).values_list("kind", "value"))
    sender = senders.get(SenderKind.MESSAGING_SERVICE) or senders.get(SenderKind.NUMBER)
    return KEY_PREFIX + (sender or f"inbox-{inbox.pk}")


def _interval_us(rate_per_second: float) -> int:
    if rate_per_second <= 0:
        raise ValueError("rate_per_second must be positive")
    return max(1, round(1_000_000 / rate_per_second))


@functools.cache
def _script() -> Any:
    import redis

    client = redis.Redis.from_url(settings.REDIS_URL)
    return client.register_script(_GCRA)


class _LocalTimelines:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.tat: dict[str, float] = {}

    def acquire(self, key: str, interval: float, count: int) -> float:
        with self.lock:
            now = time.monotonic()
            tat = max(self.tat.get(key, 0.0), now)
            self.tat[key] = tat + interval * count
            return tat - now


_local = _LocalTimelines()


def acquire(key: str, rate_per_second: float, count: int = 1) -> float:
    """Reserve the sender's next `count` consecutive slots; returns the seconds to wait before the first
    (0 when free now). The others follow at the rate's spacing."""
    if count < 1:
        raise ValueError("count must be at least 1")
    interval = _interval_us(rate_per_second)
    if settings.REDIS_URL:
        waited_us = int(_script()(keys=[key], args=[interval, count]))
        return max(0.0, waited_us / 1_000_000)
    return _local.acquire(key, interval / 1_000_000, count)


def take(key: str, rate_per_second: float) -> float:
    """Block until the reserved slot comes; returns how long it waited."""
    wait = acquire(key, rate_per_second)
    if wait > 0:
        time.sleep(wait)
    return wait


class Pacer:
    """Spaces one worker's sends at the sender's rate, reserving slots a block at a time.

    A block is a quarter second of sending (at most 100 slots), so at high rates the limiter costs one
    Redis call per block instead of per message, while other workers' blocks interleave on the same
    timeline and the sender's total stays exact. Slots a worker reserves and does not use (it stopped,
    or died) only delay the next reservation; they never let more through.
    """

    def __init__(self, key: str, rate_per_second: float, *, block_seconds: float = 0.25, max_block: int = 100) -> None:
        self.key = key
        self.rate = rate_per_second
        self.interval = _interval_us(rate_per_second) / 1_000_000
        self.block = max(1, min(max_block, int(rate_per_second * block_seconds)))
        self._next: float = 0.0
        self._left = 0

    def wait(self) -> float:
        """Block until this worker's next slot; returns how long it waited."""
        if self._left == 0:
            self._next = time.monotonic() + acquire(self.key, self.rate, self.block)
            self._left = self.block
        delay = self._next - time.monotonic()
        self._next += self.interval
        self._left -= 1
        if delay > 0:
            time.sleep(delay)
            return delay
        return 0.0


def reset(key: str) -> None:
    """Forget a timeline (tests, benchmarks)."""
    if settings.REDIS_URL:
        _script().registered_client.delete(key)
    with _local.lock:
        _local.tat.pop(key, None)


__all__ = ["KEY_PREFIX", "Pacer", "acquire", "reset", "sender_key", "take"]

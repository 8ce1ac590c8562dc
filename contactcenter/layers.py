"""The Redis channel layer, made to ride out a Redis restart or flush instead of killing every socket.

With plain channels_redis, Redis going away for five seconds is a ConnectionError inside every consumer's
receive loop: each open socket dies with 1011, and each reconnect's handshake fails with a 500 (its group_add
raises) until Redis is back. Yet the channel layer only carries hints here: the database is the truth and
every socket can catch up from it (contactcenter.events). So this layer degrades instead:

- receive() waits out a lost connection (retrying with backoff) rather than raising into the consumer;
- group_add() and group_discard() that cannot reach Redis are noted and skipped, so a handshake succeeds;
  consumers re-add their groups when the layer reports it is back (`generation` changes), and now and then
  anyway;
- a watcher notices within seconds that Redis lost its data (a FLUSHALL, a restart without persistence), which
  silently drops every group, and moves `generation` on too;
- group_send() of a hint or a typing signal that cannot be delivered is dropped with a log line;
- `available` tells consumers to poll the event table more often while hints cannot arrive.
"""

from __future__ import annotations

import asyncio
import logging
import time
import uuid
from typing import Any

import redis.exceptions
from channels.layers import BaseChannelLayer
from channels_redis.core import RedisChannelLayer

logger = logging.getLogger(__name__)

# What a Redis that is restarting, loading its data, or unreachable raises.
LAYER_ERRORS: tuple[type[BaseException], ...] = (
    redis.exceptions.ConnectionError,
    redis.exceptions.TimeoutError,
    redis.exceptions.BusyLoadingError,
    OSError,
)
RETRY_FIRST_SECONDS = 0.2
RETRY_MAX_SECONDS = 3.0


# A key of this process's in Redis, looked at every WATCH_SECONDS: when it is gone, Redis was flushed or restarted
# empty, and every group membership went with it, without any error to say so.
WATCH_SECONDS = 2.0
WATCH_KEY_TTL_SECONDS = 600


class ResilientRedisChannelLayer(RedisChannelLayer):
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.available = True
        # Moves on each time Redis comes back after an outage or a flush: consumers then re-add their groups.
        self.generation = 0
        self._down_since: float | None = None
        self._watch_task: asyncio.Task[None] | None = None
        self._watch_key = f"{self.prefix}:process-alive:{uuid.uuid4().hex}"

    def _ensure_watch(self) -> None:
        """One watcher per process and event loop (the server's), started with the first socket's receive."""
        loop = asyncio.get_running_loop()
        if self._watch_task is None or self._watch_task.done() or self._watch_task.get_loop() is not loop:
            self._watch_task = loop.create_task(self._watch())

    async def _watch(self) -> None:
        planted = False
        while True:
            try:
                connection = self.connection(0)
                if await connection.exists(self._watch_key):
                    await connection.expire(self._watch_key, WATCH_KEY_TTL_SECONDS)
                else:
                    if planted:
                        self.generation += 1
                        logger.warning("channel layer: Redis lost its data (flushed or restarted); sockets re-join")
                    await connection.set(self._watch_key, "1", ex=WATCH_KEY_TTL_SECONDS)
                    planted = True
            except LAYER_ERRORS as exc:
                self._down("watch", exc)
            else:
                self._up()
            # Paces a poll; nothing waits on it.
            await asyncio.sleep(WATCH_SECONDS)

    async def close_pools(self) -> None:
        if self._watch_task is not None:
            self._watch_task.cancel()
            self._watch_task = None
        await super().close_pools()

    def _down(self, where: str, exc: BaseException) -> None:
        if self.available:
            self.available = False
            self._down_since = time.monotonic()
            logger.warning(
                "channel layer unavailable (%s in %s): sockets fall back to polling", type(exc).__name__, where
            )

    def _up(self) -> None:
        if not self.available:
            self.available = True
            self.generation += 1
            outage = time.monotonic() - (self._down_since or time.monotonic())
            logger.warning("channel layer back after %.1f s", outage)

    async def receive(self, channel: str) -> dict[str, Any]:
        self._ensure_watch()
        delay = RETRY_FIRST_SECONDS
        while True:
            try:
                message: dict[str, Any] = await super().receive(channel)
            except LAYER_ERRORS as exc:
                self._down("receive", exc)
                await asyncio.sleep(delay)
                delay = min(delay * 2, RETRY_MAX_SECONDS)
                continue
            self._up()
            return message

    async def group_add(self, group: str, channel: str) -> None:
        try:
            await super().group_add(group, channel)
        except LAYER_ERRORS as exc:
            self._down("group_add", exc)
            return
        self._up()

    async def group_discard(self, group: str, channel: str) -> None:
        try:
            await super().group_discard(group, channel)
        except LAYER_ERRORS as exc:
            # The membership expires on its own (group_expiry) or went with the outage.
            self._down("group_discard", exc)

    async def group_send(self, group: str, message: dict[str, Any]) -> None:
        try:
            await super().group_send(group, message)
        except LAYER_ERRORS as exc:
            self._down("group_send", exc)
            return
        self._up()


def available(layer: BaseChannelLayer | None) -> bool:
    """Whether hints can arrive through this layer now (the in-memory layer always can)."""
    return layer.available if isinstance(layer, ResilientRedisChannelLayer) else True


def generation(layer: BaseChannelLayer | None) -> int:
    """Changes each time the layer comes back from an outage (always 0 for the in-memory layer)."""
    return layer.generation if isinstance(layer, ResilientRedisChannelLayer) else 0

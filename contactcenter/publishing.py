"""Group sends on the channel layer from sync code: actions after commit, webhooks, workers.

async_to_sync outside a running event loop starts a new loop for each call, and channels_redis keeps a
connection pool per loop, so every hint opened and closed its own Redis connection: most of a status
callback's 40 ms. With Redis, sends go instead through one loop per process on a daemon thread, with a
layer instance of its own whose pool lives as long as the process.

The in-memory layer (the embedded default, one process) still goes through async_to_sync: its queues
belong to the server's loop, which async_to_sync reaches from a request's thread.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import threading
from collections.abc import Coroutine
from typing import Any

from asgiref.sync import async_to_sync
from channels.layers import DEFAULT_CHANNEL_LAYER, BaseChannelLayer, channel_layers, get_channel_layer
from channels_redis.core import RedisChannelLayer
from django.core.signals import setting_changed
from django.dispatch import receiver

# A send that takes longer than this is given up: hints are best effort and the request has committed.
SEND_TIMEOUT_SECONDS = 5.0


class _Publisher:
    def __init__(self, layer: BaseChannelLayer) -> None:
        self.pid = os.getpid()
        self.layer = layer
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, name="layer-publisher", daemon=True)
        self.thread.start()

    def usable(self) -> bool:
        # A forked worker (Celery's prefork pool) inherits the loop but not the thread that runs it.
        return self.pid == os.getpid() and self.thread.is_alive()

    def stop(self) -> None:
        if not self.usable():
            return
        closing = asyncio.run_coroutine_threadsafe(self.layer.close_pools(), self.loop)
        # A pool that will not close goes with the loop anyway.
        with contextlib.suppress(Exception):
            closing.result(SEND_TIMEOUT_SECONDS)
        self.loop.call_soon_threadsafe(self.loop.stop)


_lock = threading.Lock()
_publisher: _Publisher | None = None


def _after_fork_in_child() -> None:
    # The child has no publisher thread, and a lock another parent thread held would never be released.
    global _lock, _publisher
    _lock = threading.Lock()
    _publisher = None


os.register_at_fork(after_in_child=_after_fork_in_child)


def _redis_publisher() -> _Publisher | None:
    """The process's publisher when the configured layer is Redis, else None."""
    global _publisher
    with _lock:
        if _publisher is not None and _publisher.usable():
            return _publisher
        if not isinstance(get_channel_layer(), RedisChannelLayer):
            return None
        # Its own instance: the shared layer's per-loop pools are flushed and closed by whoever owns them.
        _publisher = _Publisher(channel_layers.make_backend(DEFAULT_CHANNEL_LAYER))
        return _publisher


@receiver(setting_changed)
def _forget_publisher(*, setting: str, **_kwargs: Any) -> None:
    global _publisher
    if setting == "CHANNEL_LAYERS":
        with _lock:
            if _publisher is not None:
                _publisher.stop()
            _publisher = None


def group_send_all(groups: list[str], message: dict[str, Any]) -> list[BaseException | None]:
    """Send `message` to every group at once. Returns, per group, the exception its send raised or None.
    Raises only when the layer could not be reached at all (or took longer than SEND_TIMEOUT_SECONDS)."""
    if not groups:
        return []
    publisher = _redis_publisher()
    layer = publisher.layer if publisher is not None else get_channel_layer()
    if layer is None:
        return [None] * len(groups)

    async def send_all() -> list[BaseException | None]:
        results = await asyncio.gather(*(layer.group_send(group, message) for group in groups), return_exceptions=True)
        return [result if isinstance(result, BaseException) else None for result in results]

    if publisher is None:
        return async_to_sync(send_all)()
    return _run(publisher, send_all())


def _run(
    publisher: _Publisher, coroutine: Coroutine[Any, Any, list[BaseException | None]]
) -> list[BaseException | None]:
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        coroutine.close()
        # As async_to_sync refuses: waiting here would block the loop this code runs on.
        raise RuntimeError("group_send_all was called from a running event loop; await the layer instead")
    future = asyncio.run_coroutine_threadsafe(coroutine, publisher.loop)
    try:
        return future.result(SEND_TIMEOUT_SECONDS)
    except TimeoutError:
        future.cancel()
        raise

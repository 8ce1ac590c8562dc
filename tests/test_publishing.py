"""Hints from sync code (actions after commit, webhooks, workers) reach Redis over one long-lived pool."""

from __future__ import annotations

import asyncio
import os
from typing import Any

import pytest
import redis
from asgiref.sync import async_to_sync, sync_to_async
from channels.layers import get_channel_layer
from channels_redis.core import RedisChannelLayer

from contactcenter import events, publishing


@pytest.fixture
def redis_client() -> redis.Redis:
    layer = get_channel_layer()
    assert isinstance(layer, RedisChannelLayer), "the suite runs on the real Redis layer"
    return redis.Redis.from_url(os.environ["REDIS_URL"])


def test_hints_from_sync_code_share_one_redis_connection(redis_client: redis.Redis) -> None:
    events.publish_hint(1, ["events.all"])  # the first opens the publisher's pool
    before = redis_client.info("stats")["total_connections_received"]

    for n in range(25):
        events.publish_hint(n, ["events.all", "events.inbox.1", "events.team.1"])

    # async_to_sync's loop per call had opened (and closed) at least one connection per hint.
    assert redis_client.info("stats")["total_connections_received"] - before <= 1


def test_a_hint_from_sync_code_reaches_a_listening_socket(redis_client: redis.Redis) -> None:
    layer = get_channel_layer()
    assert layer is not None

    async def listen_then_publish() -> dict[str, Any]:
        channel = await layer.new_channel()
        await layer.group_add("events.inbox.77", channel)
        try:
            # An action's after-commit hook: sync code on a worker thread, as under the ASGI server.
            await sync_to_async(events.publish_hint)(4242, ["events.inbox.77"])
            return await asyncio.wait_for(layer.receive(channel), timeout=5)
        finally:
            await layer.group_discard("events.inbox.77", channel)

    assert async_to_sync(listen_then_publish)() == {"type": "event.hint", "event_id": 4242}


def test_sending_from_inside_an_event_loop_is_refused_clearly() -> None:
    async def inside() -> None:
        publishing.group_send_all(["events.all"], {"type": "event.hint", "event_id": 1})

    with pytest.raises(RuntimeError, match="running event loop"):
        asyncio.run(inside())

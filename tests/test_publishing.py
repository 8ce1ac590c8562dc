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


def test_hints_from_sync_code_share_one_redis_pool(redis_client: redis.Redis) -> None:
    groups = ["events.all", "events.inbox.1", "events.team.1"]
    hint = {"type": "event.hint", "event_id": 1}
    # The first send fills the publisher's pool: a connection per group sent to at once.
    assert publishing.group_send_all(groups, hint) == [None, None, None]
    before = redis_client.info("stats")["total_connections_received"]

    for n in range(25):
        assert publishing.group_send_all(groups, {**hint, "event_id": n}) == [None, None, None]
        events.publish_hint(n, groups)

    # async_to_sync's loop per call opened (and closed) a connection per group and hint: 150 here. The
    # count is the server's, so a stray client elsewhere may add one; a pool per call cannot hide in that.
    assert redis_client.info("stats")["total_connections_received"] - before <= 3


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

"""Agent sockets ride out a Redis restart and a FLUSHALL: no crash, no refused handshake, nothing missed.

A Redis server of this test's own (so it can be stopped and started on the same port) carries the channel
layer; the sockets are config.asgi.application's, on PostgreSQL. While Redis is down, inbound messages still
commit (their hints are lost), open sockets poll the event table, and a new socket's handshake succeeds. When
Redis is back, the sockets re-join their groups and hints flow again.
"""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import subprocess
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import redis
from channels import DEFAULT_CHANNEL_LAYER
from channels.db import database_sync_to_async
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator

from contactcenter import consumers, fanout, layers
from tests.services import _wait_for_port, free_port
from tests.test_consumers import (  # noqa: F401 (fixtures: fast_password_hashing is autouse here too)
    FRAME_TIMEOUT,
    fast_password_hashing,
    next_phone,
    open_socket,
    resync,
)

pytestmark = pytest.mark.django_db(transaction=True)


class OwnRedis:
    """A redis-server this test may stop and start again on the same port."""

    def __init__(self) -> None:
        self.port = free_port()
        self.root = Path(tempfile.mkdtemp(prefix="hospital-outage-redis-"))
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        binary = shutil.which("redis-server")
        assert binary, "redis-server is installed by .ci/run"
        self.proc = subprocess.Popen(
            [binary, "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", "--dir", str(self.root)],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        _wait_for_port(self.port, what="Redis", log=self.root / "none.log")

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            self.proc.wait(10)

    def flushall(self) -> None:
        client = redis.Redis.from_url(self.url)
        client.flushall()
        client.close()


@pytest.fixture
def own_redis(settings: Any) -> Iterator[OwnRedis]:
    server = OwnRedis()
    server.start()
    config = dict(settings.CHANNEL_LAYERS["default"])
    config["CONFIG"] = {
        **config["CONFIG"],
        "hosts": [{"address": server.url, "socket_timeout": None, "socket_connect_timeout": 2}],
    }
    settings.CHANNEL_LAYERS = {"default": config}
    yield server
    server.stop()
    shutil.rmtree(server.root, ignore_errors=True)


@pytest.fixture(autouse=True)
async def fresh_channel_layer() -> AsyncIterator[None]:
    channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    yield
    layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
    if layer is not None:
        # A pool of a stopped server may not close cleanly; the server is gone anyway.
        with contextlib.suppress(Exception):
            await layer.close_pools()


async def events_until(communicator: WebsocketCommunicator, conversation_id: int, within: float) -> list[dict]:
    """Event frames until one is about `conversation_id`; any close before that fails the test."""
    received: list[dict[str, Any]] = []
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    while not any(e.get("conversation", {}).get("id") == conversation_id for e in received):
        remaining = deadline - loop.time()
        assert remaining > 0, f"no event about conversation {conversation_id} within {within} s: {received}"
        frame = await communicator.receive_json_from(timeout=remaining)
        assert frame["type"] in ("events", "access"), frame
        received.extend(frame.get("events", []))
    return received


@pytest.fixture
def deliver(inbound: Any, world: Any) -> Any:
    async def deliver_() -> int:
        result = await database_sync_to_async(inbound)(world.inbox_a, next_phone(), "Is the clinic open?")
        return int(result.conversation.pk)

    return deliver_


async def test_sockets_ride_out_a_redis_restart(
    own_redis: OwnRedis,
    open_socket: Any,  # noqa: F811 (the fixture imported above)
    deliver: Any,
) -> None:
    sam = await open_socket("sam")
    await resync(sam, None)
    alice = await open_socket("alice")
    await resync(alice, None)

    own_redis.stop()
    # Committed while Redis is down: the hint is lost, the sockets find the event by polling the table.
    during = await deliver()
    for socket in (sam, alice):
        await events_until(socket, during, within=consumers.DEGRADED_CATCH_UP_SECONDS + 5)
    assert not layers.available(channel_layers[DEFAULT_CHANNEL_LAYER])
    # A handshake while Redis is down is not a 500: the socket opens and resyncs from the database.
    bob = await open_socket("bob")
    await resync(bob, None)

    own_redis.start()
    # Back: the first message after the outage reaches every socket by its hint, the way it did before.
    after = await deliver()
    for socket in (sam, alice, bob):
        await events_until(socket, after, within=FRAME_TIMEOUT + consumers.DEGRADED_CATCH_UP_SECONDS)
    assert layers.available(channel_layers[DEFAULT_CHANNEL_LAYER])
    for socket in (sam, alice, bob):
        assert not socket.future.done(), "a socket ended during the outage"


async def test_sockets_rejoin_their_groups_after_a_flushall(
    own_redis: OwnRedis,
    open_socket: Any,  # noqa: F811 (the fixture imported above)
    deliver: Any,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Only the layer's watcher can heal this within the bound: the periodic re-join and idle polling are pushed
    # out of the way.
    monkeypatch.setattr(consumers, "GROUP_REFRESH_SECONDS", 600.0)
    monkeypatch.setattr(fanout, "GROUP_REFRESH_SECONDS", 600.0)
    monkeypatch.setattr(fanout, "POLL_SECONDS", 600.0)
    alice = await open_socket("alice")
    await resync(alice, None)
    own_redis.flushall()
    # Every group is gone, with no error anywhere; within seconds the watcher notices and the socket is back in its
    # groups, so the next hint reaches it.
    client = redis.Redis.from_url(own_redis.url)
    try:
        for _ in range(100):
            if client.keys("*group*"):
                break
            await asyncio.sleep(0.1)
        assert client.keys("*group*"), "the socket never re-joined its groups"
    finally:
        client.close()
    conversation = await deliver()
    await events_until(alice, conversation, within=FRAME_TIMEOUT)


def test_web_chat_limits_and_presence_let_patients_through_while_the_cache_is_down(settings: Any) -> None:
    from django.core.cache import caches

    from channels_adapters.webchat import limits

    settings.CACHES = {
        "default": {
            "BACKEND": "django.core.cache.backends.redis.RedisCache",
            "LOCATION": f"redis://127.0.0.1:{free_port()}/0",
        }
    }
    caches["default"].close()
    # Nothing listens there: every call is refused, and none of it reaches the patient as an error.
    assert limits.allow("connect", "198.51.100.7", limit=1) is True
    limits.widget_opened("visitor-1")
    limits.widget_alive("visitor-1")
    limits.widget_closed("visitor-1")
    # Unknown presence counts as open: the reply waits in the widget instead of going out as an SMS.
    assert limits.widget_open("visitor-1") is True

"""A campaign's live progress bar: ws/campaigns/<id>/. Thin: authenticate, subscribe, forward.

Protocol (JSON frames, server → client only):
  {"type": "progress", "campaign_id", "status", "total", "counts": {state: n}}
sent on connect (read from the database) and then whenever senders publish, at most every
MIN_INTERVAL seconds (the latest counts win; the last change is never held back). The counts are also
re-read every REFRESH_SECONDS, so a lost frame or a quiet publisher (coalesced status callbacks) is
corrected without a reconnect. Staff who may see campaigns (marketer, admin, supervisor) only.
"""

from __future__ import annotations

import asyncio
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer

from campaigns.models import Campaign
from campaigns.sending import progress
from contactcenter import access
from contactcenter.models import Role

CAMPAIGN_ROLES = frozenset({Role.MARKETER, Role.ADMIN, Role.SUPERVISOR})
CLOSE_FORBIDDEN = 4403
CLOSE_NOT_FOUND = 4404
MIN_INTERVAL = progress.MIN_INTERVAL
REFRESH_SECONDS = 10.0


class CampaignProgressConsumer(AsyncJsonWebsocketConsumer):
    campaign_id: int
    group: str | None

    async def connect(self) -> None:
        self.group = None
        self._latest: dict[str, Any] | None = None
        self._last_sent = 0.0
        self._flush: asyncio.Task[None] | None = None
        self._refresh: asyncio.Task[None] | None = None
        self.campaign_id = int(self.scope["url_route"]["kwargs"]["campaign_id"])
        allowed, exists = await self._access()
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        if not exists:
            await self.close(code=CLOSE_NOT_FOUND)
            return
        self.group = progress.group_name(self.campaign_id)
        # Join before reading, so no publication between the read and the join is missed.
        await self.channel_layer.group_add(self.group, self.channel_name)
        await self.accept()
        await self._send_snapshot()
        self._refresh = asyncio.ensure_future(self._refresh_now_and_then())

    async def disconnect(self, code: int) -> None:
        if self.group is not None:
            await self.channel_layer.group_discard(self.group, self.channel_name)
        for task in (self._flush, self._refresh):
            if task is not None:
                task.cancel()

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        # Nothing to ask for: the snapshot comes on connect and updates follow.
        return

    async def campaign_progress(self, message: dict[str, Any]) -> None:
        self._latest = message["progress"]
        if self._flush is not None and not self._flush.done():
            return
        wait = MIN_INTERVAL - (time.monotonic() - self._last_sent)
        if wait <= 0:
            await self._send_latest()
        else:
            self._flush = asyncio.ensure_future(self._send_later(wait))

    async def _send_later(self, wait: float) -> None:
        await asyncio.sleep(wait)
        await self._send_latest()

    async def _send_latest(self) -> None:
        latest, self._latest = self._latest, None
        if latest is not None:
            self._last_sent = time.monotonic()
            await self.send_json(latest)

    async def _send_snapshot(self) -> None:
        data = await database_sync_to_async(progress.snapshot)(self.campaign_id)
        if data is not None:
            self._latest = data
            await self._send_latest()

    async def _refresh_now_and_then(self) -> None:
        while True:
            await asyncio.sleep(REFRESH_SECONDS)
            await self._send_snapshot()

    @database_sync_to_async
    def _access(self) -> tuple[bool, bool]:
        if access.role_of(self.scope.get("user")) not in CAMPAIGN_ROLES:
            return False, False
        return True, Campaign.objects.filter(pk=self.campaign_id).exists()

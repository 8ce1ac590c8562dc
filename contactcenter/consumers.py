"""The agents' websocket. Thin: authenticate, subscribe, and forward events from the database.

Protocol (JSON frames):
  client → {"op": "resync", "last_event_id": N}      everything visible after N is sent, in order
  client → {"op": "watch", "conversation_id": C}     receive typing signals for C (null stops)
  client → {"op": "typing", "conversation_id": C, "state": "start"|"stop"}
  client → {"op": "presence", "availability": "online"|"busy"|"offline"}
  client → {"op": "ping"}
  server → {"type": "events", "events": [...], "last_event_id": N}
  server → {"type": "typing", ...}, {"type": "pong"}, {"type": "error", "code": ..., "message": ...}
"""

from __future__ import annotations

import asyncio
import logging
import time
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import ValidationError
from django.db.models import Q

from contactcenter import access, events
from contactcenter.actions.presence import set_availability
from contactcenter.models import Conversation, Event

logger = logging.getLogger(__name__)

BATCH = 500
# Catch up from the database now and then even without hints, in case every hint was lost.
IDLE_CATCH_UP_SECONDS = 15.0
CLOSE_FORBIDDEN = 4403
VISIBILITY_TTL_SECONDS = 10.0


class AgentConsumer(AsyncJsonWebsocketConsumer):
    user: Any
    cursor: int | None
    groups_joined: list[str]
    watched: int | None

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        self.cursor = None
        self.groups_joined = []
        self.watched = None
        self._lock = asyncio.Lock()
        allowed, groups = await self._subscriptions()
        if not allowed:
            await self.close(code=CLOSE_FORBIDDEN)
            return
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        await self.accept()
        self._idle = asyncio.ensure_future(self._idle_catch_up())

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.watched is not None:
            await self.channel_layer.group_discard(events.conversation_group(self.watched), self.channel_name)
        idle = getattr(self, "_idle", None)
        if idle is not None:
            idle.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if not isinstance(content, dict) or not isinstance(content.get("op"), str):
            await self._error("bad_frame", "Frames are JSON objects with an op.")
            return
        op = content["op"]
        handler = {
            "resync": self._op_resync,
            "watch": self._op_watch,
            "typing": self._op_typing,
            "presence": self._op_presence,
            "ping": self._op_ping,
        }.get(op)
        if handler is None:
            await self._error("unknown_op", f"Unknown op {op[:40]!r}.")
            return
        await handler(content)

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not text_data:
            # Binary or empty frames: the base class raises, which would kill the socket.
            await self._error("bad_frame", "Frames are JSON objects with an op.")
            return
        await super().receive(text_data=text_data, **kwargs)

    async def decode_json(self, text_data: str) -> Any:
        try:
            return await super().decode_json(text_data)
        except (ValueError, RecursionError):
            return None

    async def _op_resync(self, content: dict[str, Any]) -> None:
        last = content.get("last_event_id")
        if last is None:
            self.cursor = await self._max_event_id()
        elif isinstance(last, int) and not isinstance(last, bool) and last >= 0:
            self.cursor = last
        else:
            await self._error("bad_cursor", "last_event_id must be a non-negative integer or null.")
            return
        await self.send_json({"type": "ready", "last_event_id": self.cursor})
        await self._catch_up()

    async def _op_watch(self, content: dict[str, Any]) -> None:
        conversation_id = content.get("conversation_id")
        if self.watched is not None:
            await self.channel_layer.group_discard(events.conversation_group(self.watched), self.channel_name)
            self.watched = None
        if conversation_id is None:
            return
        # bool is an int subclass: `true` must not watch conversation 1.
        valid = isinstance(conversation_id, int) and not isinstance(conversation_id, bool)
        if not valid or not await self._may_see_conversation(conversation_id):
            await self._error("forbidden", "You cannot watch this conversation.")
            return
        self.watched = conversation_id
        await self.channel_layer.group_add(events.conversation_group(conversation_id), self.channel_name)

    async def _op_typing(self, content: dict[str, Any]) -> None:
        conversation_id = content.get("conversation_id")
        state = content.get("state")
        if state not in ("start", "stop") or conversation_id != self.watched or conversation_id is None:
            await self._error("bad_typing", "Watch the conversation, then send typing start or stop.")
            return
        await self.channel_layer.group_send(
            events.conversation_group(conversation_id),
            {
                "type": "typing.signal",
                "conversation_id": conversation_id,
                "state": state,
                "who": "agent",
                "user_id": self.user.pk,
                "name": await self._display_name(),
                "sender_channel": self.channel_name,
            },
        )

    async def _op_presence(self, content: dict[str, Any]) -> None:
        try:
            await database_sync_to_async(set_availability)(user=self.user, availability=content.get("availability"))
        except ValidationError as exc:
            await self._error("bad_presence", "; ".join(exc.messages))

    async def _op_ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    # Channel layer handlers.
    async def event_hint(self, message: dict[str, Any]) -> None:
        if self.cursor is not None and message.get("event_id", 0) > self.cursor:
            await self._catch_up()

    async def typing_signal(self, message: dict[str, Any]) -> None:
        if message.get("sender_channel") == self.channel_name:
            return
        await self.send_json({k: v for k, v in message.items() if k != "sender_channel"} | {"type": "typing"})

    async def _catch_up(self) -> None:
        # One catch-up at a time per socket, so events go out once and in id order.
        async with self._lock:
            while self.cursor is not None:
                batch = await self._events_after(self.cursor)
                if not batch:
                    return
                self.cursor = batch[-1]["id"]
                await self.send_json({"type": "events", "events": batch, "last_event_id": self.cursor})
                if len(batch) < BATCH:
                    return

    async def _idle_catch_up(self) -> None:
        while True:
            await asyncio.sleep(IDLE_CATCH_UP_SECONDS)
            if self.cursor is not None:
                await self._catch_up()

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    # Database access, one thread hop each.
    @database_sync_to_async
    def _subscriptions(self) -> tuple[bool, list[str]]:
        if not access.can_use_inbox(self.user):
            return False, []
        if access.sees_everything(self.user):
            return True, [events.ALL_EVENTS_GROUP]
        teams = access.team_ids_of(self.user)
        inboxes = access.inboxes_visible_to(self.user).values_list("id", flat=True)
        return True, [
            *(events.inbox_group(i) for i in inboxes),
            *(events.team_group(t) for t in teams),
            events.user_group(self.user.pk),
        ]

    @database_sync_to_async
    def _events_after(self, cursor: int) -> list[dict[str, Any]]:
        visible = self._visibility()
        if visible is None:
            return []
        rows = Event.objects.filter(visible, id__gt=cursor).order_by("id")[:BATCH]
        return [events.serialize(row) for row in rows]

    def _visibility(self) -> Q | None:
        """The user's event filter, recomputed every VISIBILITY_TTL_SECONDS rather than per catch-up.

        Every hint would otherwise cost the role, team and inbox queries again for every socket; a
        change of teams takes effect within the TTL (and at once on reconnect).
        """
        now = time.monotonic()
        cached = getattr(self, "_visible", None)
        if cached is None or now - cached[0] > VISIBILITY_TTL_SECONDS:
            cached = (now, access.event_filter_for(self.user))
            self._visible = cached
        return cached[1]

    @database_sync_to_async
    def _max_event_id(self) -> int:
        last = Event.objects.order_by("-id").values_list("id", flat=True).first()
        return last or 0

    @database_sync_to_async
    def _may_see_conversation(self, conversation_id: int) -> bool:
        conversation = Conversation.objects.select_related("inbox").filter(pk=conversation_id).first()
        return conversation is not None and access.can_view_conversation(self.user, conversation)

    @database_sync_to_async
    def _display_name(self) -> str:
        from contactcenter.api.shapes import staff_name

        return staff_name(self.user)

"""The widget's websocket. Thin: check the inbox and origin, parse frames, call actions, forward events.

Path: /ws/webchat/<inbox public token>/. Not behind AllowedHostsOriginValidator (the widget lives on the
hospital's own sites): the Origin must be one of the inbox's config["allowed_origins"].

Protocol (JSON frames):
  server → {"type": "welcome", "staffed": bool, "consent_text": {...}, "title": {...}, "max_image_bytes": N}
  client → {"op": "start", "form": {name, phone, email, consent, language}, "identity": {id, hash}?}
  server → {"type": "session", "visitor_token": T}, then "ready" as for resume
  client → {"op": "resume", "visitor_token": T, "last_event_id": N | null}
  server → {"type": "ready", "last_event_id": N, "staffed": bool, "history": [...] | null}
           null last_event_id (a page reload) gets the recent history; N gets every event after N
  client → {"op": "message", "body": str, "client_id": str}   → {"type": "ack", "client_id", "message_id"}
           re-sending the same client_id after a reconnect stores the message once
  client → {"op": "typing", "state": "start" | "stop"}
  client → {"op": "read", "message_id": M}                    the staff's messages up to M were seen
  client → {"op": "ping"}                                     → {"type": "pong"}
  client → {"op": "sync"}           after an image upload over HTTP (views.upload_image): follow the
                                    visitor's threads again (the upload may have opened one) and catch up
  server → {"type": "events", "events": [...], "last_event_id": N}, {"type": "typing", "state", "name"}
  server → {"type": "error", "code": ..., "message": ...}   the socket stays open
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from typing import Any

from asgiref.sync import sync_to_async
from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from channels_adapters.webchat import actions, limits, selectors
from channels_adapters.webchat.identity import sign_visitor, unsign_visitor, verify_portal_identity
from channels_adapters.webchat.models import WebVisitor
from contactcenter import events, layers
from contactcenter.models import Inbox

logger = logging.getLogger(__name__)

BATCH = 200
IDLE_CATCH_UP_SECONDS = 20.0
IDLE_TICK_SECONDS = 1.0
# While the channel layer cannot carry hints (Redis restarting), the widget reads the event table this often.
DEGRADED_CATCH_UP_SECONDS = 2.0
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_INBOX = 4404
CLOSE_TOO_MANY = 4429
TYPING_MIN_INTERVAL = 1.0


def _frame_limit() -> int:
    # JSON escaping can grow text (\uXXXX is 6 characters for 1); anything beyond is not a chat message.
    return int(settings.WEBCHAT_MAX_MESSAGE_CHARS) * 6 + 1024


class WidgetConsumer(AsyncJsonWebsocketConsumer):
    inbox: Inbox | None
    visitor: WebVisitor | None
    cursor: int | None
    conversation_ids: list[int]
    groups_joined: set[str]

    async def connect(self) -> None:
        self.inbox = None
        self.visitor = None
        self.cursor = None
        self.conversation_ids = []
        self.groups_joined = set()
        self._lock = asyncio.Lock()
        self._typing_at = 0.0
        self._idle: asyncio.Future[None] | None = None
        token = str(self.scope.get("url_route", {}).get("kwargs", {}).get("token", ""))
        inbox = await self._inbox(token)
        if inbox is None:
            await self.close(code=CLOSE_UNKNOWN_INBOX)
            return
        if self._origin() not in inbox.config.get("allowed_origins", []):
            logger.info("web chat socket for inbox %s refused: origin not allowed", inbox.pk)
            await self.close(code=CLOSE_FORBIDDEN)
            return
        allowed = await sync_to_async(limits.allow)(
            "connect", self._ip(), limit=settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP
        )
        if not allowed:
            await self.close(code=CLOSE_TOO_MANY)
            return
        self.inbox = inbox
        await self.accept()
        await self.send_json(
            {
                "type": "welcome",
                "staffed": await self._staffed(),
                "title": inbox.config.get("title") or {},
                "consent_text": inbox.config.get("consent_text") or {},
                "offline_text": inbox.config.get("offline_text") or {},
                "max_image_bytes": settings.WEBCHAT_MAX_IMAGE_BYTES,
            }
        )
        self._idle = asyncio.ensure_future(self._idle_catch_up())

    async def disconnect(self, code: int) -> None:
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self._idle is not None:
            self._idle.cancel()
        if self.visitor is not None:
            await sync_to_async(limits.widget_closed)(self.visitor.visitor_id)

    # --- frames ---------------------------------------------------------------------------------

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None, **kwargs: Any) -> None:
        if not text_data:
            await self._error("bad_frame", "Frames are JSON objects with an op.")
            return
        if len(text_data) > _frame_limit():
            await self._error("too_large", "This frame is too large.")
            return
        try:
            content = json.loads(text_data)
        except (ValueError, RecursionError):
            await self._error("bad_frame", "Frames are JSON objects with an op.")
            return
        if not isinstance(content, dict) or not isinstance(content.get("op"), str):
            await self._error("bad_frame", "Frames are JSON objects with an op.")
            return
        handler = {
            "start": self._op_start,
            "resume": self._op_resume,
            "message": self._op_message,
            "typing": self._op_typing,
            "read": self._op_read,
            "ping": self._op_ping,
            "sync": self._op_sync,
        }.get(content["op"])
        if handler is None:
            await self._error("unknown_op", f"Unknown op {content['op'][:40]!r}.")
            return
        await handler(content)

    async def _op_start(self, content: dict[str, Any]) -> None:
        if self.visitor is not None:
            await self._error("already_started", "This socket already has a visitor.")
            return
        try:
            visitor = await self._start(content.get("form"), content.get("identity"))
        except ValidationError as exc:
            code = getattr(exc, "code", None) or "invalid_form"
            fields = exc.message_dict if hasattr(exc, "error_dict") else {}
            await self.send_json({"type": "error", "code": code, "message": "; ".join(exc.messages), "fields": fields})
            return
        assert self.inbox is not None
        await self.send_json(
            {"type": "session", "visitor_token": sign_visitor(inbox=self.inbox, visitor_id=visitor.visitor_id)}
        )
        await self._ready(visitor, None)

    async def _op_resume(self, content: dict[str, Any]) -> None:
        if self.visitor is not None:
            await self._error("already_started", "This socket already has a visitor.")
            return
        last = content.get("last_event_id")
        if last is not None and (not isinstance(last, int) or isinstance(last, bool) or last < 0):
            await self._error("bad_cursor", "last_event_id must be a non-negative integer or null.")
            return
        assert self.inbox is not None
        visitor_id = unsign_visitor(inbox=self.inbox, token=content.get("visitor_token"))
        visitor = await self._visitor(visitor_id) if visitor_id else None
        if visitor is None:
            await self._error("unknown_visitor", "Start a new chat.")
            return
        await self._ready(visitor, last)

    async def _op_message(self, content: dict[str, Any]) -> None:
        if self.visitor is None:
            await self._error("no_session", "Start or resume a chat first.")
            return
        client_id = content.get("client_id")
        try:
            message_id, conversation_ids = await self._send_message(content.get("body"), client_id)
        except ValidationError as exc:
            await self.send_json(
                {
                    "type": "error",
                    "code": getattr(exc, "code", None) or "invalid",
                    "message": "; ".join(exc.messages),
                    "client_id": client_id,
                }
            )
            return
        await self._follow(conversation_ids)
        # Events first, then the ack: once acked, the widget has everything up to its own message.
        await self._catch_up()
        await self.send_json({"type": "ack", "client_id": client_id, "message_id": message_id})

    async def _op_typing(self, content: dict[str, Any]) -> None:
        state = content.get("state")
        if self.visitor is None or state not in ("start", "stop"):
            await self._error("bad_typing", "Send typing start or stop during a chat.")
            return
        now = time.monotonic()
        if state == "start" and now - self._typing_at < TYPING_MIN_INTERVAL:
            return
        self._typing_at = now if state == "start" else 0.0
        if not self.conversation_ids:
            return
        conversation_id = max(self.conversation_ids)
        await self.channel_layer.group_send(
            events.conversation_group(conversation_id),
            {
                "type": "typing.signal",
                "conversation_id": conversation_id,
                "state": state,
                "who": "patient",
                "user_id": None,
                "name": "",
                "sender_channel": self.channel_name,
            },
        )

    async def _op_read(self, content: dict[str, Any]) -> None:
        message_id = content.get("message_id")
        if self.visitor is None or not isinstance(message_id, int) or isinstance(message_id, bool):
            await self._error("bad_read", "Send read with a message_id during a chat.")
            return
        await self._read(message_id)

    async def _op_ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def _op_sync(self, content: dict[str, Any]) -> None:
        if self.visitor is None:
            await self._error("no_session", "Start or resume a chat first.")
            return
        await self._follow(await self._conversation_ids(self.visitor))
        await self._catch_up()

    # --- channel layer --------------------------------------------------------------------------

    async def event_hint(self, message: dict[str, Any]) -> None:
        if self.cursor is not None and message.get("event_id", 0) > self.cursor:
            await self._catch_up()

    async def typing_signal(self, message: dict[str, Any]) -> None:
        if message.get("who") == "patient":
            return
        await self.send_json({"type": "typing", "state": message.get("state"), "name": message.get("name") or ""})

    # --- helpers --------------------------------------------------------------------------------

    async def _ready(self, visitor: WebVisitor, last: int | None) -> None:
        self.visitor = visitor
        await sync_to_async(limits.widget_opened)(visitor.visitor_id)
        cursor, conversation_ids, history = await self._initial(visitor, last)
        await self._follow(conversation_ids)
        self.cursor = cursor
        await self.send_json(
            {"type": "ready", "last_event_id": cursor, "staffed": await self._staffed(), "history": history}
        )
        await self._catch_up()

    async def _follow(self, conversation_ids: list[int]) -> None:
        self.conversation_ids = conversation_ids
        for conversation_id in conversation_ids:
            for group in (
                events.conversation_events_group(conversation_id),
                events.conversation_group(conversation_id),
            ):
                if group not in self.groups_joined:
                    await self.channel_layer.group_add(group, self.channel_name)
                    self.groups_joined.add(group)

    async def _catch_up(self) -> None:
        async with self._lock:
            while self.cursor is not None:
                batch, cursor = await self._events_after(self.cursor)
                if cursor is None:
                    return
                self.cursor = cursor
                if batch:
                    await self.send_json({"type": "events", "events": batch, "last_event_id": cursor})

    async def _idle_catch_up(self) -> None:
        generation = layers.generation(self.channel_layer)
        waited = 0.0
        while True:
            await asyncio.sleep(IDLE_TICK_SECONDS)
            waited += IDLE_TICK_SECONDS
            # While the channel layer is down no hint arrives: read the event table more often. When it comes
            # back, re-join the groups (a join may have been skipped during the outage).
            back = layers.generation(self.channel_layer) != generation
            up = layers.available(self.channel_layer)
            every = IDLE_CATCH_UP_SECONDS if up else DEGRADED_CATCH_UP_SECONDS
            if self.visitor is None or not (back or waited >= every):
                continue
            if not up:
                # Probe: a join that goes through tells the layer Redis is back (see the agent consumer).
                for group in list(self.groups_joined):
                    await self.channel_layer.group_add(group, self.channel_name)
            generation, waited = layers.generation(self.channel_layer), 0.0
            try:
                if back:
                    for group in list(self.groups_joined):
                        await self.channel_layer.group_add(group, self.channel_name)
                await sync_to_async(limits.widget_alive)(self.visitor.visitor_id)
                await self._follow(await self._conversation_ids(self.visitor))
                await self._catch_up()
            except Exception:
                # This loop is the widget's safety net: a database or cache hiccup must not end it.
                logger.exception("web chat socket of visitor %s: idle catch-up failed", self.visitor.pk)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    def _origin(self) -> str:
        for name, value in self.scope.get("headers", []):
            if name == b"origin":
                return value.decode("latin1").rstrip("/")
        return ""

    def _ip(self) -> str:
        client = self.scope.get("client")
        return str(client[0]) if client else "unknown"

    # --- database and cache, one thread hop each ------------------------------------------------

    @database_sync_to_async
    def _inbox(self, token: str) -> Inbox | None:
        return selectors.webchat_inbox(token)

    @database_sync_to_async
    def _staffed(self) -> bool:
        assert self.inbox is not None
        return selectors.is_staffed(self.inbox)

    @database_sync_to_async
    def _start(self, form: object, identity: object) -> WebVisitor:
        assert self.inbox is not None
        if not limits.allow("start", self._ip(), limit=settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP):
            raise ValidationError("Too many chats from this address; try again in a minute.", code="rate_limited")
        portal = None
        if identity is not None:
            raw = identity if isinstance(identity, dict) else {}
            portal = verify_portal_identity(inbox=self.inbox, user_id=raw.get("id"), user_hash=raw.get("hash"))
        checked = actions.check_pre_chat(form)
        return actions.start_visit(inbox=self.inbox, form=checked, portal=portal)

    @database_sync_to_async
    def _visitor(self, visitor_id: str) -> WebVisitor | None:
        assert self.inbox is not None
        return selectors.visitor_by_id(inbox=self.inbox, visitor_id=visitor_id)

    @database_sync_to_async
    def _initial(self, visitor: WebVisitor, last: int | None) -> tuple[int, list[int], list[dict[str, Any]] | None]:
        if last is not None:
            return last, selectors.conversation_ids_of(visitor), None
        # The cursor is read before the history, so anything committed in between comes as an event too;
        # the widget keys messages by id, so seeing one twice changes nothing.
        cursor = selectors.last_event_id()
        conversation_ids = selectors.conversation_ids_of(visitor)
        return cursor, conversation_ids, selectors.history(conversation_ids)

    @database_sync_to_async
    def _conversation_ids(self, visitor: WebVisitor) -> list[int]:
        return selectors.conversation_ids_of(visitor)

    @database_sync_to_async
    def _events_after(self, cursor: int) -> tuple[list[dict[str, Any]], int | None]:
        return selectors.widget_events(self.conversation_ids, cursor, BATCH)

    @database_sync_to_async
    def _send_message(self, body: object, client_id: object) -> tuple[int, list[int]]:
        visitor = self.visitor
        assert visitor is not None
        checked_id = actions.check_client_id(client_id)
        checked_body = actions.check_body(body)
        if not limits.allow("visitor", visitor.visitor_id, limit=settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR):
            raise ValidationError("You are sending messages too quickly; wait a minute.", code="rate_limited")
        if not limits.allow("ip", self._ip(), limit=settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_IP):
            raise ValidationError("Too many messages from this address; wait a minute.", code="rate_limited")
        result = actions.visitor_sends(visitor=visitor, body=checked_body, client_id=checked_id)
        ids = self.conversation_ids
        if result.conversation.pk not in ids:
            ids = selectors.conversation_ids_of(visitor)
        return result.message.pk, ids

    @database_sync_to_async
    def _read(self, message_id: int) -> None:
        assert self.visitor is not None
        actions.visitor_read(visitor=self.visitor, up_to_message_id=message_id, conversation_ids=self.conversation_ids)

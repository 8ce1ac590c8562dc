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

Threads. The database and the cache are reached through a thread hop (hops.py), one per thing done:
- frames that need neither (ping, typing, a malformed frame) and channel-layer messages (a hint the cursor already
  covers, a typing signal) are answered on the event loop: dispatch() skips the stale-connection check Channels
  runs on the process's one sync thread before every handler (each hop does its own);
- a visitor's message is one hop: rate limits, the one inbound path, and the read of the widget's events after its
  cursor; connect, start and resume are one hop each, and so is a hint's read;
- what a socket reads without a hint (the safety net for hints the layer dropped) is read for all the process's
  widgets at once by its poller (poller.py), not by each socket.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from dataclasses import dataclass
from typing import Any

from channels.consumer import get_handler_name
from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.conf import settings
from django.core.exceptions import ValidationError

from channels_adapters.webchat import actions, limits, poller, selectors
from channels_adapters.webchat.hops import cache_hop, db_hop
from channels_adapters.webchat.identity import sign_visitor, unsign_visitor, verify_portal_identity
from channels_adapters.webchat.models import WebVisitor
from contactcenter import events
from contactcenter.models import Inbox

logger = logging.getLogger(__name__)

BATCH = 200
CLOSE_FORBIDDEN = 4403
CLOSE_UNKNOWN_INBOX = 4404
CLOSE_TOO_MANY = 4429
TYPING_MIN_INTERVAL = 1.0
# A visitor's messages reuse the inbox (team, auto-assign, reopen window) the socket read for this long before one
# reads it again: receive_inbound need not read it for every message of a conversation in full flow, and a change
# an admin makes reaches a chat within this time.
INBOX_FRESH_SECONDS = 30.0


def _frame_limit() -> int:
    # JSON escaping can grow text (\uXXXX is 6 characters for 1); anything beyond is not a chat message.
    return int(settings.WEBCHAT_MAX_MESSAGE_CHARS) * 6 + 1024


@dataclass(frozen=True)
class Opened:
    """What connect found: the close code to refuse with, or the inbox and whether anyone staffs it."""

    close_code: int | None
    inbox: Inbox | None = None
    staffed: bool = False


@dataclass(frozen=True)
class Session:
    """A visitor's chat as it (re)starts: the cursor to go on from, their threads, the history for a reload."""

    visitor: WebVisitor
    cursor: int
    conversation_ids: list[int]
    history: list[dict[str, Any]] | None
    staffed: bool


@dataclass(frozen=True)
class Stored:
    """A visitor's message stored (or found stored), the visitor's threads, and their events after the cursor."""

    message_id: int
    conversation_ids: list[int]
    read: selectors.WidgetEvents
    # The inbox the message was stored with: the socket's own, or read again when that was older than
    # INBOX_FRESH_SECONDS.
    inbox: Inbox


def _session(inbox: Inbox, visitor: WebVisitor, last: int | None) -> Session:
    """A (re)starting chat's state, inside its hop."""
    conversation_ids = selectors.conversation_ids_of(visitor)
    if last is not None:
        cursor, history = last, None
    else:
        # The cursor is read before the history, so anything committed in between comes as an event too;
        # the widget keys messages by id, so seeing one twice changes nothing.
        cursor = selectors.last_event_id()
        history = selectors.history(conversation_ids)
    staffed = selectors.is_staffed(inbox)
    # Last: once the socket counts as open, disconnect() must find the visitor set to count it closed.
    limits.widget_opened(visitor.visitor_id)
    return Session(visitor, cursor, conversation_ids, history, staffed)


class WidgetConsumer(AsyncJsonWebsocketConsumer):
    """One widget's socket (see the module's docstring); also what poller.Polled asks of a socket."""

    inbox: Inbox | None
    visitor: WebVisitor | None
    cursor: int | None
    conversation_ids: list[int]
    groups_joined: set[str]

    async def dispatch(self, message: dict[str, Any]) -> None:
        # Channels' own dispatch first runs close_old_connections on the process's one sync thread: a thread hop
        # before every frame and hint, for a consumer whose database work all goes through db_hop, which does
        # that check itself in the thread it queries from.
        handler = getattr(self, get_handler_name(message), None)
        if handler is None:
            raise ValueError(f"No handler for message type {message['type']}")
        await handler(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        # As Channels' own, without its close_old_connections hop (see dispatch).
        await self.disconnect(message.get("code", 1000))
        raise StopConsumer()

    async def connect(self) -> None:
        self.inbox = None
        self.visitor = None
        self.cursor = None
        self.conversation_ids = []
        self.groups_joined = set()
        # Serialises everything that reads events or changes the cursor and followed threads: the frames (one at
        # a time already) and the idle catch-up task.
        self._lock = asyncio.Lock()
        self._typing_at = 0.0
        self._poller: poller.WidgetPoller | None = None
        token = str(self.scope.get("url_route", {}).get("kwargs", {}).get("token", ""))
        opened = await self._open(token, self._origin(), self._ip())
        if opened.inbox is None:
            await self.close(code=opened.close_code or CLOSE_UNKNOWN_INBOX)
            return
        self.inbox = inbox = opened.inbox
        self._inbox_read_at = time.monotonic()
        await self.accept()
        await self.send_json(
            {
                "type": "welcome",
                "staffed": opened.staffed,
                "title": inbox.config.get("title") or {},
                "consent_text": inbox.config.get("consent_text") or {},
                "offline_text": inbox.config.get("offline_text") or {},
                "max_image_bytes": settings.WEBCHAT_MAX_IMAGE_BYTES,
            }
        )

    async def disconnect(self, code: int) -> None:
        if self._poller is not None:
            self._poller.discard(self)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.visitor is not None:
            await cache_hop(limits.widget_closed)(self.visitor.visitor_id)

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
        assert self.inbox is not None
        try:
            session = await self._start(self.inbox, content.get("form"), content.get("identity"), self._ip())
        except ValidationError as exc:
            code = getattr(exc, "code", None) or "invalid_form"
            fields = exc.message_dict if hasattr(exc, "error_dict") else {}
            await self.send_json({"type": "error", "code": code, "message": "; ".join(exc.messages), "fields": fields})
            return
        await self.send_json(
            {"type": "session", "visitor_token": sign_visitor(inbox=self.inbox, visitor_id=session.visitor.visitor_id)}
        )
        await self._ready(session)

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
        session = await self._resume(self.inbox, visitor_id, last) if visitor_id else None
        if session is None:
            await self._error("unknown_visitor", "Start a new chat.")
            return
        await self._ready(session)

    async def _op_message(self, content: dict[str, Any]) -> None:
        if self.visitor is None:
            await self._error("no_session", "Start or resume a chat first.")
            return
        assert self.inbox is not None
        client_id = content.get("client_id")
        fresh = time.monotonic() - self._inbox_read_at < INBOX_FRESH_SECONDS
        async with self._lock:
            try:
                stored = await self._store_message(
                    self.inbox if fresh else None,
                    self.visitor,
                    content.get("body"),
                    client_id,
                    self._ip(),
                    self.cursor,
                    self.conversation_ids,
                )
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
            if not fresh:
                self.inbox, self._inbox_read_at = stored.inbox, time.monotonic()
            # Events first, then the ack: once acked, the widget has everything up to its own message.
            await self._take(stored.read, stored.conversation_ids)
        await self.send_json({"type": "ack", "client_id": client_id, "message_id": stored.message_id})

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
        await self._read(self.visitor, message_id, list(self.conversation_ids))

    async def _op_ping(self, content: dict[str, Any]) -> None:
        await self.send_json({"type": "pong"})

    async def _op_sync(self, content: dict[str, Any]) -> None:
        if self.visitor is None:
            await self._error("no_session", "Start or resume a chat first.")
            return
        async with self._lock:
            ids, read = await self._threads_and_events(self.visitor, self.cursor)
            await self._take(read, ids)

    # --- channel layer --------------------------------------------------------------------------

    async def event_hint(self, message: dict[str, Any]) -> None:
        event_id = message.get("event_id", 0)
        if self.cursor is not None and event_id > self.cursor:
            await self._catch_up(hint=event_id)

    async def typing_signal(self, message: dict[str, Any]) -> None:
        if message.get("who") == "patient":
            return
        await self.send_json({"type": "typing", "state": message.get("state"), "name": message.get("name") or ""})

    # --- helpers --------------------------------------------------------------------------------

    async def _ready(self, session: Session) -> None:
        async with self._lock:
            self.visitor = session.visitor
            joined = await self._follow(session.conversation_ids)
            self.cursor = session.cursor
            await self.send_json(
                {
                    "type": "ready",
                    "last_event_id": session.cursor,
                    "staffed": session.staffed,
                    "history": session.history,
                }
            )
            # Whatever committed after the hop's read and before the groups were joined announced itself to
            # nobody here: read it now.
            if joined:
                await self._catch_up_locked()
        # From now on the process's poller also reads for this socket, in case a hint is lost.
        self._poller = poller.poller_for(self.channel_layer)
        self._poller.add(self)

    async def _follow(self, conversation_ids: list[int]) -> bool:
        """Follow these threads (their hints and typing); True when a group was joined for the first time."""
        self.conversation_ids = conversation_ids
        joined = False
        for conversation_id in conversation_ids:
            for group in (
                events.conversation_events_group(conversation_id),
                events.conversation_group(conversation_id),
            ):
                if group not in self.groups_joined:
                    await self.channel_layer.group_add(group, self.channel_name)
                    self.groups_joined.add(group)
                    joined = True
        return joined

    async def _take(self, read: selectors.WidgetEvents, conversation_ids: list[int]) -> None:
        """Send what a hop read after the cursor, follow the threads it read them for, and read on if need be:
        the read stopped at its limit, or a new thread's group was joined after the read (a hint for it in
        between went nowhere). Call with the lock held."""
        await self._send_events(read)
        joined = await self._follow(conversation_ids)
        if joined or not read.complete:
            await self._catch_up_locked()

    async def _send_events(self, read: selectors.WidgetEvents) -> None:
        if read.cursor is None or self.cursor is None or read.cursor <= self.cursor:
            return
        self.cursor = read.cursor
        if read.events:
            await self.send_json({"type": "events", "events": read.events, "last_event_id": read.cursor})

    async def _catch_up(self, hint: int | None = None) -> None:
        async with self._lock:
            # Another read may have covered the hint while this one waited for the lock.
            if hint is not None and self.cursor is not None and self.cursor >= hint:
                return
            await self._catch_up_locked()

    async def _catch_up_locked(self) -> None:
        while self.cursor is not None and self.conversation_ids:
            read = await self._events_after(self.conversation_ids, self.cursor)
            await self._send_events(read)
            if read.complete:
                return

    # --- the process's poller (poller.py) -------------------------------------------------------

    def poll_input(self) -> tuple[WebVisitor, int] | None:
        if self.visitor is None or self.cursor is None:
            return None
        return self.visitor, self.cursor

    async def polled(self, conversation_ids: list[int], found: selectors.ThreadEvents) -> None:
        async with self._lock:
            if self.cursor is None or found.horizon <= self.cursor:
                return
            # With any thread this socket found since the poll read the threads: such a thread's events all came
            # after the horizon, which was read first.
            ids = set(conversation_ids) | set(self.conversation_ids)
            mine = sorted(
                (
                    event
                    for conversation_id in ids
                    for event in found.by_conversation.get(conversation_id, [])
                    if event["id"] > self.cursor
                ),
                key=lambda event: int(event["id"]),
            )
            # Complete up to the horizon for every thread the visitor has (see poller.py): the cursor moves there.
            await self._take(selectors.WidgetEvents(mine, found.horizon, True), sorted(ids))

    async def rejoin_groups(self) -> int:
        groups = list(self.groups_joined)
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        return len(groups)

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

    # --- database and cache: one hop each (run on the widgets' threads; they get what they need as arguments
    # rather than reading the consumer's state, which the event loop owns) ----------------------------------

    @db_hop
    def _open(self, token: str, origin: str, ip: str) -> Opened:
        inbox = selectors.webchat_inbox(token)
        if inbox is None:
            return Opened(CLOSE_UNKNOWN_INBOX)
        if origin not in inbox.config.get("allowed_origins", []):
            logger.info("web chat socket for inbox %s refused: origin not allowed", inbox.pk)
            return Opened(CLOSE_FORBIDDEN)
        if not limits.allow("connect", ip, limit=settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP):
            return Opened(CLOSE_TOO_MANY)
        return Opened(None, inbox, selectors.is_staffed(inbox))

    @db_hop
    def _start(self, inbox: Inbox, form: object, identity: object, ip: str) -> Session:
        if not limits.allow("start", ip, limit=settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP):
            raise ValidationError("Too many chats from this address; try again in a minute.", code="rate_limited")
        portal = None
        if identity is not None:
            raw = identity if isinstance(identity, dict) else {}
            portal = verify_portal_identity(inbox=inbox, user_id=raw.get("id"), user_hash=raw.get("hash"))
        checked = actions.check_pre_chat(form)
        visitor = actions.start_visit(inbox=inbox, form=checked, portal=portal)
        return _session(inbox, visitor, None)

    @db_hop
    def _resume(self, inbox: Inbox, visitor_id: str, last: int | None) -> Session | None:
        visitor = selectors.visitor_by_id(inbox=inbox, visitor_id=visitor_id)
        return _session(inbox, visitor, last) if visitor is not None else None

    @db_hop
    def _store_message(
        self,
        inbox: Inbox | None,
        visitor: WebVisitor,
        body: object,
        client_id: object,
        ip: str,
        cursor: int | None,
        conversation_ids: list[int],
    ) -> Stored:
        assert cursor is not None
        checked_id = actions.check_client_id(client_id)
        checked_body = actions.check_body(body)
        exceeded = limits.allow_all(
            [
                limits.Limit("visitor", visitor.visitor_id, settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR),
                limits.Limit("ip", ip, settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_IP),
            ]
        )
        if exceeded is not None and exceeded.scope == "visitor":
            raise ValidationError("You are sending messages too quickly; wait a minute.", code="rate_limited")
        if exceeded is not None:
            raise ValidationError("Too many messages from this address; wait a minute.", code="rate_limited")
        if inbox is None:
            inbox = Inbox.objects.get(pk=visitor.inbox_id)
        result = actions.visitor_sends(visitor=visitor, body=checked_body, client_id=checked_id, inbox=inbox)
        if result.conversation.pk not in conversation_ids:
            conversation_ids = selectors.conversation_ids_of(visitor)
        read = selectors.widget_events(conversation_ids, cursor, BATCH)
        return Stored(result.message.pk, conversation_ids, read, inbox)

    @db_hop
    def _events_after(self, conversation_ids: list[int], cursor: int) -> selectors.WidgetEvents:
        return selectors.widget_events(conversation_ids, cursor, BATCH)

    @db_hop
    def _threads_and_events(self, visitor: WebVisitor, cursor: int | None) -> tuple[list[int], selectors.WidgetEvents]:
        conversation_ids = selectors.conversation_ids_of(visitor)
        if cursor is None:
            return conversation_ids, selectors.WidgetEvents([], None, True)
        return conversation_ids, selectors.widget_events(conversation_ids, cursor, BATCH)

    @db_hop
    def _read(self, visitor: WebVisitor, message_id: int, conversation_ids: list[int]) -> None:
        actions.visitor_read(visitor=visitor, up_to_message_id=message_id, conversation_ids=conversation_ids)

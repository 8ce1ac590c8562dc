"""The agents' websocket. Thin: authenticate, subscribe, and forward events from the database.

Protocol (JSON frames):
  client → {"op": "resync", "last_event_id": N}      everything visible after N is sent, in order
  client → {"op": "watch", "conversation_id": C}     receive typing signals for C (null stops)
  client → {"op": "typing", "conversation_id": C, "state": "start"|"stop"}
  client → {"op": "presence", "availability": "online"|"busy"|"offline"}
  client → {"op": "ping"}
  server → {"type": "events", "events": [...], "last_event_id": N}
  server → {"type": "typing", ...}, {"type": "pong"}, {"type": "error", "code": ..., "message": ...}

An event about a conversation the user held but may no longer see arrives as
{"id": N, "type": "conversation", "op": "remove", "conversation_id": C} and nothing else.

The socket lives only as long as the session and the access it was opened with. It re-checks both when the
account changes (contactcenter.actions.staff pushes "access.changed" to the user's group) and at least every
ACCESS_RECHECK_SECONDS, and closes with
  4401  the session ended: signed out, expired, password changed, account deactivated (the page goes to sign-in)
  4403  the role no longer opens the inbox (also the answer at connect)
  4409  the teams or inboxes it may see narrowed (the page reloads what it shows)
Access that only widened (a new inbox for one of the user's teams, a team added) is taken in place: the socket
joins the new groups and sends {"type": "access", "op": "widened"}, and the page re-reads its lists; nobody
loses a draft because an admin set up an inbox.
"""

from __future__ import annotations

import asyncio
import logging
import time
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async
from channels.generic.websocket import AsyncJsonWebsocketConsumer
from django.core.exceptions import ValidationError

from contactcenter import access, events, fanout, layers
from contactcenter.actions.audit import record_audit
from contactcenter.actions.presence import set_availability
from contactcenter.models import AuditAction, Event

logger = logging.getLogger(__name__)

BATCH = 500
# The longest a socket goes without re-checking its session and access, when no "access.changed" push came
# (a lost push, a session that expired, an inbox moved to another team). The process's hub re-checks all its
# sockets in one batch this often (contactcenter.fanout); a database catch-up re-checks on its way when due.
ACCESS_RECHECK_SECONDS = fanout.ACCESS_RECHECK_SECONDS
# If the hub's batch re-check has not reached this socket for this long (its loop is stuck on a database that
# went away), the socket checks itself.
OWN_RECHECK_SECONDS = 2 * ACCESS_RECHECK_SECONDS
# How often the idle loop looks whether a check is due (no database work unless one is).
IDLE_TICK_SECONDS = 1.0
# While the channel layer is down, how often a socket probes it by re-joining its group.
DEGRADED_CATCH_UP_SECONDS = 2.0
# How often a socket re-joins its groups even when nothing went wrong that it could see (a FLUSHALL).
GROUP_REFRESH_SECONDS = 30.0
CLOSE_UNAVAILABLE = 1011
CLOSE_SIGNED_OUT = 4401
CLOSE_FORBIDDEN = 4403
CLOSE_ACCESS_CHANGED = 4409


@dataclass(frozen=True)
class AccessCheck:
    """What a socket found when it checked: the close code to end with, or None and the visibility to go on with."""

    close_code: int | None
    visibility: access.EventVisibility | None = None
    widened: bool = False


@dataclass
class Batch:
    frames: list[dict[str, Any]] = field(default_factory=list)
    fetched: int = 0
    last_id: int | None = None
    close_code: int | None = None
    # The access check on the way found more to see: the socket joins the new groups before sending.
    widened: access.EventVisibility | None = None


class AgentConsumer(AsyncJsonWebsocketConsumer):
    user: Any
    cursor: int | None
    groups_joined: list[str]
    watched: int | None
    visibility: access.EventVisibility | None

    async def connect(self) -> None:
        self.user = self.scope.get("user")
        session = self.scope.get("session")
        self.session_key = getattr(session, "session_key", None)
        self.cursor = None
        self.groups_joined = []
        self.watched = None
        self.visibility = None
        self.closing = False
        self._checked_at = 0.0
        self._lock = asyncio.Lock()
        self._offer_pending = False
        self._pending_catch_up: asyncio.Future[None] | None = None
        self.hub: fanout.EventHub | None = None
        self._layer_generation = layers.generation(self.channel_layer)
        self._groups_refreshed_at = time.monotonic()
        check = await database_sync_to_async(self._check_access)()
        if check.visibility is None:
            self.closing = True
            await self.close(code=CLOSE_FORBIDDEN)
            return
        self.visibility = check.visibility
        groups = check.visibility.groups()
        for group in groups:
            await self.channel_layer.group_add(group, self.channel_name)
        self.groups_joined = groups
        try:
            self.hub = await fanout.subscribe(self.channel_layer, self)
        except Exception:
            # The hub could not start (its first read failed): refuse the handshake; the page reconnects.
            logger.exception("agent socket of user %s: event hub unavailable", getattr(self.user, "pk", None))
            self.closing = True
            await self.close(code=CLOSE_UNAVAILABLE)
            return
        await self.accept()
        self._idle = asyncio.ensure_future(self._idle_catch_up())

    async def disconnect(self, code: int) -> None:
        self.closing = True
        if self.hub is not None:
            await self.hub.unsubscribe(self)
        for group in self.groups_joined:
            await self.channel_layer.group_discard(group, self.channel_name)
        if self.watched is not None:
            await self.channel_layer.group_discard(events.conversation_group(self.watched), self.channel_name)
        idle = getattr(self, "_idle", None)
        if idle is not None:
            idle.cancel()

    async def receive_json(self, content: Any, **kwargs: Any) -> None:
        if self.closing:
            return
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
        if not (last is None or (isinstance(last, int) and not isinstance(last, bool) and last >= 0)):
            await self._error("bad_cursor", "last_event_id must be a non-negative integer or null.")
            return
        # Under the socket's lock: a catch-up under way would otherwise move the cursor past what was asked for.
        async with self._lock:
            self.cursor = await self._max_event_id() if last is None else last
            await self.send_json({"type": "ready", "last_event_id": self.cursor})
        # A resync replays history: each batch of it that is about conversations is a read to audit.
        await self._catch_up(audit=True)

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

    # The process's event hub (contactcenter.fanout).
    async def hub_offer(self) -> None:
        """New events are in the hub's buffer: send what this socket may see, in memory."""
        if self._lock.locked():
            # A database catch-up or an access check is under way: take them once it is done.
            self._catch_up_soon()
            return
        async with self._lock:
            if self.cursor is None or self.closing or self.hub is None:
                return
            if self.hub.serves(self.cursor):
                await self._serve_from_hub()
                return
        # Further behind than the buffer reaches: read the database.
        self._catch_up_soon()

    def hub_skip(self, addressed: fanout.Addressed, *, before: int, newest: int) -> bool:
        """None of the hub's new rows is addressed to this socket, which had everything before them: move on."""
        if (
            self._lock.locked()
            or self.visibility is None
            or self.cursor is None
            or self.cursor < before
            or addressed.concerns(self.visibility)
        ):
            return False
        self.cursor = newest
        return True

    def access_inputs(self) -> tuple[str | None, int | None, access.EventVisibility | None]:
        return self.session_key, getattr(self.user, "pk", None), self.visibility

    async def access_checked(self, user: Any, visibility: access.EventVisibility | None) -> None:
        if self.closing or self._lock.locked():
            # Busy with a catch-up: the hub must not wait on one socket; the next round (or its own check) will do.
            return
        async with self._lock:
            self._checked_at = time.monotonic()
            await self._apply(self._judge(user, visibility))

    def _catch_up_soon(self) -> None:
        if not self._offer_pending:
            self._offer_pending = True
            self._pending_catch_up = asyncio.ensure_future(self._catch_up())

    async def _serve_from_hub(self) -> None:
        assert self.hub is not None and self.cursor is not None and self.visibility is not None
        served = self.hub.serve(self.visibility, self.cursor)
        self.cursor = max(self.cursor, served.last_id)
        if served.frame is not None:
            await self.send(text_data=served.frame)

    # Channel layer handlers.
    async def event_hint(self, message: dict[str, Any]) -> None:
        # Hints go to the hub now; one from a process of an older release (a rolling restart) still works.
        if self.cursor is not None and message.get("event_id", 0) > self.cursor:
            await self._catch_up()

    async def access_changed(self, message: dict[str, Any]) -> None:
        """The account behind this socket changed (contactcenter.actions.staff): check again now."""
        if self.closing:
            return
        ended = message.get("ended_session")
        if isinstance(ended, str) and ended == access.session_marker(self.session_key):
            # Sent at sign-out, just before Django deletes the session: no need to wait for the row to go.
            await self._shut(CLOSE_SIGNED_OUT)
            return
        async with self._lock:
            check = await database_sync_to_async(self._check_access)()
            await self._apply(check)

    async def typing_signal(self, message: dict[str, Any]) -> None:
        if self.closing or message.get("sender_channel") == self.channel_name:
            return
        await self.send_json({k: v for k, v in message.items() if k != "sender_channel"} | {"type": "typing"})

    async def _catch_up(self, *, audit: bool = False) -> None:
        # One catch-up at a time per socket, so events go out once and in id order.
        async with self._lock:
            self._offer_pending = False
            while self.cursor is not None and not self.closing:
                if not audit and self.hub is not None and self.hub.serves(self.cursor):
                    await self._serve_from_hub()
                    return
                batch = await database_sync_to_async(self._events_after)(self.cursor, audit)
                if batch.close_code is not None:
                    await self._shut(batch.close_code)
                    return
                if batch.widened is not None:
                    await self._widen(batch.widened)
                if batch.last_id is not None:
                    # Past every row read, sent or not: rows this user may not see are not read again.
                    self.cursor = batch.last_id
                for frame in batch.frames:
                    await self.send_json(frame)
                if batch.fetched < BATCH:
                    # What the hub read since (live events, not a replay: not audited) follows from memory.
                    if self.hub is not None and self.hub.serves(self.cursor) and not self.closing:
                        await self._serve_from_hub()
                    return

    async def _idle_catch_up(self) -> None:
        while not self.closing:
            await asyncio.sleep(IDLE_TICK_SECONDS)
            if self.closing:
                return
            try:
                await self._keep_groups()
                # The hub reads the events for every socket, and re-checks access for all of them in one batch;
                # a socket checks itself only when that batch has not come for a while.
                if time.monotonic() - self._checked_at >= OWN_RECHECK_SECONDS:
                    async with self._lock:
                        check = await database_sync_to_async(self._check_access)()
                        await self._apply(check)
            except Exception:
                # The loop is what re-checks the session: a database hiccup must not end it. Until a check
                # succeeds nothing is sent either, since every catch-up needs the same database.
                logger.exception("agent socket of user %s: idle check failed", getattr(self.user, "pk", None))

    async def _keep_groups(self) -> None:
        """Re-join this socket's groups when the layer came back from an outage (a join may have been skipped while
        it was down) and every GROUP_REFRESH_SECONDS anyway (a Redis FLUSHALL drops every group silently)."""
        now = time.monotonic()
        if not layers.available(self.channel_layer):
            # Probe: a join that goes through is what tells the layer (and every socket of this process) that
            # Redis is back; its receive loop only notices when a message arrives, and none can reach a socket
            # whose groups went with the restart.
            if now - self._groups_refreshed_at >= DEGRADED_CATCH_UP_SECONDS:
                self._groups_refreshed_at = now
                for group in list(self.groups_joined):
                    await self.channel_layer.group_add(group, self.channel_name)
            return
        generation = layers.generation(self.channel_layer)
        if generation == self._layer_generation and now - self._groups_refreshed_at < GROUP_REFRESH_SECONDS:
            return
        self._layer_generation = generation
        self._groups_refreshed_at = now
        for group in list(self.groups_joined):
            await self.channel_layer.group_add(group, self.channel_name)
        if self.watched is not None:
            await self.channel_layer.group_add(events.conversation_group(self.watched), self.channel_name)

    async def _apply(self, check: AccessCheck) -> None:
        if check.close_code is not None:
            await self._shut(check.close_code)
            return
        if check.widened and check.visibility is not None:
            await self._widen(check.visibility)

    async def _widen(self, visibility: access.EventVisibility) -> None:
        """More to see, nothing less: join the new groups, keep the cursor, and let the page re-read its lists
        (events of the new inboxes from before now are not replayed; the lists' REST read shows them)."""
        self.visibility = visibility
        for group in visibility.groups():
            if group not in self.groups_joined:
                await self.channel_layer.group_add(group, self.channel_name)
                self.groups_joined.append(group)
        await self.send_json({"type": "access", "op": "widened"})

    async def _shut(self, code: int) -> None:
        """Close from our side. Nothing more is sent; disconnect() leaves the groups when the close completes."""
        if self.closing:
            return
        self.closing = True
        logger.info("agent socket of user %s closed with %s", getattr(self.user, "pk", None), code)
        await self.close(code=code)

    async def _error(self, code: str, message: str) -> None:
        await self.send_json({"type": "error", "code": code, "message": message})

    # Database access, one thread hop each (these run in the database thread, not on the event loop).
    def _check_access(self) -> AccessCheck:
        """Is the session still signed in as this socket's user, and may they still see what they saw?"""
        self._checked_at = time.monotonic()
        user = access.staff_for_session(self.session_key)
        return self._judge(user, access.event_visibility_for(user) if user is not None else None)

    def _judge(self, user: Any, visibility: access.EventVisibility | None) -> AccessCheck:
        """The verdict on what a check found: the session's user now, and what they may see now."""
        if user is None or self.user is None or user.pk != self.user.pk:
            return AccessCheck(close_code=CLOSE_SIGNED_OUT)
        if visibility is None:
            return AccessCheck(close_code=CLOSE_FORBIDDEN)
        widened = False
        if self.visibility is not None and visibility != self.visibility:
            if not visibility.covers(self.visibility):
                # Teams, inboxes or role narrowed. Re-subscribing in place would leave the page showing rows it
                # may no longer show: close, and the page reloads what it shows.
                return AccessCheck(close_code=CLOSE_ACCESS_CHANGED)
            widened = True
        self.user = user
        return AccessCheck(close_code=None, visibility=visibility, widened=widened)

    def _events_after(self, cursor: int, audit: bool) -> Batch:
        widened = None
        if time.monotonic() - self._checked_at >= ACCESS_RECHECK_SECONDS:
            check = self._check_access()
            if check.close_code is not None:
                return Batch(close_code=check.close_code)
            widened = check.visibility if check.widened else None
        visibility = widened or self.visibility
        if visibility is None:
            return Batch()
        rows = list(Event.objects.filter(visibility.audience_q(), id__gt=cursor).order_by("id")[:BATCH])
        if not rows:
            return Batch(widened=widened)
        placements = access.placements_of(
            {row.conversation_id for row in rows if row.conversation_id is not None}
            if audit or not visibility.everything
            else ()
        )
        sent: list[dict[str, Any]] = []
        withdrawn: set[int] = set()
        read: set[int] = set()
        for row in rows:
            placement = placements.get(row.conversation_id) if row.conversation_id is not None else None
            verdict = visibility.delivery(
                event_type=row.type,
                inbox_id=row.inbox_id,
                team_id=row.team_id,
                user_id=row.user_id,
                conversation_id=row.conversation_id,
                placement=placement,
            )
            if verdict is access.Delivery.SEND:
                sent.append(events.serialize(row))
                if row.conversation_id is not None:
                    read.add(row.conversation_id)
            elif verdict is access.Delivery.WITHDRAW and row.conversation_id not in withdrawn:
                withdrawn.add(row.conversation_id)  # type: ignore[arg-type]
                sent.append(
                    {"id": row.id, "type": "conversation", "op": "remove", "conversation_id": row.conversation_id}
                )
        if audit and read:
            self._audit_replay(sent, read, placements)
        frames = [{"type": "events", "events": sent, "last_event_id": sent[-1]["id"]}] if sent else []
        return Batch(frames=frames, fetched=len(rows), last_id=rows[-1].id, widened=widened)

    def _audit_replay(
        self, sent: list[dict[str, Any]], read: set[int], placements: dict[int, access.Placement]
    ) -> None:
        """One entry per replayed batch that carried events about conversations: which ones, whose patients.

        Live events are not audited one by one: they are what the agent's open inbox is already showing, and
        every thread and profile it opens is read (and audited) through the API.
        """
        conversation_ids = sorted(read)
        patient_ids = sorted({placements[c].patient_id for c in conversation_ids if c in placements})
        client = self.scope.get("client") or (None, None)
        record_audit(
            actor=self.user,
            action=AuditAction.REPLAY_EVENTS,
            object_type="conversation",
            object_id="*",
            via="socket",
            ip_address=client[0],
            detail={
                "count": len(conversation_ids),
                "ids": conversation_ids,
                "patient_ids": patient_ids,
                "events": len(sent),
                "first_event_id": sent[0]["id"],
                "last_event_id": sent[-1]["id"],
            },
        )

    @database_sync_to_async
    def _max_event_id(self) -> int:
        last = Event.objects.order_by("-id").values_list("id", flat=True).first()
        return last or 0

    @database_sync_to_async
    def _may_see_conversation(self, conversation_id: int) -> bool:
        if self.visibility is None:
            return False
        return self.visibility.sees_conversation(access.placement_of(conversation_id))

    @database_sync_to_async
    def _display_name(self) -> str:
        from contactcenter.api.shapes import staff_name

        return staff_name(self.user)

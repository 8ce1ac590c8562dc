"""Typed real-time events, stored in the database and published to websocket groups after commit.

The database is the truth and the channel layer only carries hints: a hint wakes each consumer,
which then reads every event after its cursor that its user may see. A dropped frame is therefore
recovered by the next hint, the periodic catch-up, or the client's reconnect with its last event id.
"""

from __future__ import annotations

import contextlib
import functools
import logging
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, fields
from typing import Any, ClassVar, ParamSpec, TypeVar

from django.db import transaction
from django.utils import timezone

from contactcenter import publishing
from contactcenter.bulk_insert import insert_rows
from contactcenter.models import Event

logger = logging.getLogger(__name__)

P = ParamSpec("P")
R = TypeVar("R")

# Every server process's event hub listens here (contactcenter.fanout); staff sockets get their events from it.
HUB_GROUP = "events.hubs"
# Postgres advisory lock key ("evts"): serialises the commits of event-writing transactions.
_EVENT_ORDER_LOCK = 0x65767473


def user_group(user_id: int) -> str:
    return f"events.user.{user_id}"


def conversation_group(conversation_id: int) -> str:
    """Ephemeral signals (typing) for whoever is looking at one conversation right now."""
    return f"conversation.{conversation_id}"


def conversation_events_group(conversation_id: int) -> str:
    """Hints for the events of one conversation: the patient's side of it (the web chat widget) listens here."""
    return f"events.conversation.{conversation_id}"


@dataclass(frozen=True)
class Audience:
    inbox_id: int | None = None
    team_id: int | None = None
    user_id: int | None = None
    conversation_id: int | None = None
    # Whether the patient's side may be listening on the conversation's own group (the web chat widget
    # does; nobody does for SMS or email). The event row keeps conversation_id either way.
    hint_conversation: bool = True

    def groups(self) -> list[str]:
        """Where the hint goes: every process's hub (which serves the staff sockets from one read, whatever
        their inboxes and teams), and the conversation's own group when a patient's widget may listen there."""
        groups = [HUB_GROUP]
        if self.conversation_id is not None and self.hint_conversation:
            groups.append(conversation_events_group(self.conversation_id))
        return groups


@dataclass(frozen=True)
class BaseEvent:
    type: ClassVar[str]
    op: ClassVar[str]

    def payload(self) -> dict[str, Any]:
        # Shallow: the nested shapes are built fresh for the event and never mutated, and asdict's deep
        # copy of them was a fifth of a campaign chunk's time.
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass(frozen=True)
class MessageAdded(BaseEvent):
    type: ClassVar[str] = "message"
    op: ClassVar[str] = "add"
    message: dict[str, Any]


@dataclass(frozen=True)
class MessageStatusChanged(BaseEvent):
    type: ClassVar[str] = "message"
    op: ClassVar[str] = "update_status"
    conversation_id: int
    message_id: int
    status: str
    error_code: str
    error_message: str


@dataclass(frozen=True)
class ConversationAdded(BaseEvent):
    type: ClassVar[str] = "conversation"
    op: ClassVar[str] = "add"
    conversation: dict[str, Any]


@dataclass(frozen=True)
class ConversationUpdated(BaseEvent):
    """Carries the whole conversation summary so list views can replace their row."""

    type: ClassVar[str] = "conversation"
    op: ClassVar[str] = "update"
    conversation: dict[str, Any]
    changed: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class NoteAdded(BaseEvent):
    type: ClassVar[str] = "note"
    op: ClassVar[str] = "add"
    note: dict[str, Any]


@dataclass(frozen=True)
class PresenceChanged(BaseEvent):
    type: ClassVar[str] = "presence"
    op: ClassVar[str] = "update"
    user_id: int
    availability: str


@dataclass(frozen=True)
class PatientUpdated(BaseEvent):
    type: ClassVar[str] = "patient"
    op: ClassVar[str] = "update"
    patient_id: int
    merged_into: int | None = None


def record(event: BaseEvent, audience: Audience) -> Event:
    """Store an event and publish its hint after commit. Call inside the action's transaction.

    Postgres hands out sequence values at insert time, not commit time, so without the advisory lock
    a transaction holding id 7 could commit after one holding id 8 and a client that already saw 8
    would never ask for 7. The lock is transaction-scoped: held from the first event to commit.
    SQLite already serialises writers. Inside deferred(), the row is written (and its id set) when the
    block ends.
    """
    return record_many([(event, audience)])[0]


def record_many(items: list[tuple[BaseEvent, Audience]]) -> list[Event]:
    """record() for a batch written in one transaction (a campaign chunk): one lock, one insert.

    The rows keep the list's order, so a client reading after its cursor sees them as if recorded one by one.
    """
    if not items:
        return []
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        raise RuntimeError("events must be recorded inside the action's transaction")
    rows = [
        Event(
            type=event.type,
            op=event.op,
            payload=event.payload(),
            inbox_id=audience.inbox_id,
            team_id=audience.team_id,
            user_id=audience.user_id,
            conversation_id=audience.conversation_id,
        )
        for event, audience in items
    ]
    scope: _Deferred | None = getattr(connection, "_events_deferred", None)
    if scope is not None:
        scope.add(rows, [audience for _event, audience in items])
        return rows
    _write(rows, [audience for _event, audience in items])
    return rows


def _write(rows: list[Event], audiences: list[Audience]) -> None:
    connection = transaction.get_connection()
    if connection.vendor == "postgresql":
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_xact_lock(%s)", [_EVENT_ORDER_LOCK])
    insert_rows(Event, rows)
    hints = _hints_for_this_transaction()
    for row, audience in zip(rows, audiences, strict=True):
        hints.add(row.id, audience.groups())


def record_after_update(*, update_sql: str, params: list[Any], event: BaseEvent, audience: Audience) -> int | None:
    """An UPDATE and its event in one statement, for the hottest single-row paths (a status callback).

    `update_sql` is an UPDATE … WHERE … without RETURNING; its WHERE is the guard (the row still as it was
    read). When it matches, the event is inserted under the order lock in the same statement, so in autocommit
    the lock is held for that statement alone. Returns the event's id, or None when the guard matched nothing
    (nothing written). The hint goes out after commit. PostgreSQL only.
    """
    connection = transaction.get_connection()
    if connection.vendor != "postgresql":
        raise RuntimeError("record_after_update needs PostgreSQL")
    quote = connection.ops.quote_name
    payload_field = Event._meta.get_field("payload")
    # The caller's UPDATE and the table's name are code, not input; every value is a bound parameter.
    # The lock is taken only when the update matched, and before the insert draws the event's id.
    table = quote(Event._meta.db_table)
    columns = "type, op, payload, inbox_id, team_id, user_id, conversation_id, created_at"
    sql = (
        f"WITH moved AS ({update_sql} RETURNING 1), "  # noqa: S608
        "ordered AS (SELECT pg_advisory_xact_lock(%s) FROM moved LIMIT 1) "
        f"INSERT INTO {table} ({columns}) SELECT %s, %s, %s, %s, %s, %s, %s, %s FROM ordered RETURNING id"
    )
    with connection.cursor() as cursor:
        cursor.execute(
            sql,
            [
                *params,
                _EVENT_ORDER_LOCK,
                event.type,
                event.op,
                payload_field.get_db_prep_save(event.payload(), connection),
                audience.inbox_id,
                audience.team_id,
                audience.user_id,
                audience.conversation_id,
                timezone.now(),
            ],
        )
        row = cursor.fetchone()
    if row is None:
        return None
    event_id = int(row[0])
    groups = audience.groups()
    transaction.on_commit(lambda: publish_hint(event_id, groups))
    return event_id


def written_last(func: Callable[P, R]) -> Callable[P, R]:
    """An action whose events are written at its end (deferred()): put it under @transaction.atomic."""

    @functools.wraps(func)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        with deferred():
            return func(*args, **kwargs)

    return wrapper


class _Deferred:
    """The events recorded inside one deferred() block, written when it ends."""

    def __init__(self) -> None:
        self.batches: list[tuple[list[Event], list[Audience], Any]] = []

    def add(self, rows: list[Event], audiences: list[Audience]) -> None:
        # Django forgets the on-commit callbacks of a savepoint that rolls back: this marker tells, at the end,
        # whether the savepoint these events were recorded in survived (a failed hook, a lost race).
        def marker() -> None:
            return None

        transaction.on_commit(marker)
        self.batches.append((rows, audiences, marker))


@contextlib.contextmanager
def deferred() -> Iterator[None]:
    """Write the events recorded in the block at its end, in one insert, and only then take the order lock.

    The advisory lock (see record) serialises every transaction that writes events, from its first event to its
    commit. Recording as an action goes would hold it across everything after the first event (patient lookup,
    hooks, a keyword reply); deferred, it is held for one insert and the commit. Events recorded inside a
    savepoint that rolled back are dropped with it. Use it inside the transaction; nested blocks join the outer.
    """
    connection = transaction.get_connection()
    if getattr(connection, "_events_deferred", None) is not None:
        yield
        return
    if not connection.in_atomic_block:
        raise RuntimeError("events.deferred() goes inside the action's transaction")
    scope = _Deferred()
    connection._events_deferred = scope
    try:
        yield
    finally:
        connection._events_deferred = None
    # Not reached when the block raised: its transaction is rolling back, and the events with it.
    alive = {id(entry[1]) for entry in connection.run_on_commit}
    rows: list[Event] = []
    audiences: list[Audience] = []
    for batch_rows, batch_audiences, marker in scope.batches:
        if id(marker) in alive:
            rows.extend(batch_rows)
            audiences.extend(batch_audiences)
    if rows:
        _write(rows, audiences)


class _PendingHints:
    """The hints of one transaction, sent once at commit.

    A hint only wakes a socket, which then reads everything after its own cursor, so one hint with the
    transaction's newest event id per group says all the transaction's events would. An inbound SMS
    records four events: one send to the hubs' group instead of four.
    """

    def __init__(self, connection: Any) -> None:
        self.connection = connection
        self.latest_id = 0
        self.groups: set[str] = set()

    def add(self, event_id: int, groups: list[str]) -> None:
        self.latest_id = max(self.latest_id, event_id)
        self.groups.update(groups)

    def flush(self) -> None:
        if getattr(self.connection, "_event_hints_pending", None) is self:
            self.connection._event_hints_pending = None
        publish_hint(self.latest_id, sorted(self.groups))


def _hints_for_this_transaction() -> _PendingHints:
    connection = transaction.get_connection()
    pending: _PendingHints | None = getattr(connection, "_event_hints_pending", None)
    # A rolled-back block drops its on-commit callback; the next event then starts a fresh set.
    if pending is None or not any(entry[1] == pending.flush for entry in connection.run_on_commit):
        pending = _PendingHints(connection)
        connection._event_hints_pending = pending
        transaction.on_commit(pending.flush)
    return pending


def publish_hint(event_id: int, groups: list[str]) -> None:
    if not groups:
        return
    try:
        results = publishing.group_send_all(groups, {"type": "event.hint", "event_id": event_id})
    except Exception:
        # Losing a hint is survivable by design (consumers catch up from the database), so a
        # broken channel layer must not fail the request that already committed.
        logger.exception("event hint %s to %s not published", event_id, ",".join(groups))
        return
    for group, result in zip(groups, results, strict=True):
        if result is not None:
            logger.error("event hint %s to %s not published: %r", event_id, group, result)


def serialize(event: Event) -> dict[str, Any]:
    return {"id": event.id, "type": event.type, "op": event.op, **event.payload}

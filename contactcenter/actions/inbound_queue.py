"""Inbound webhooks taken in one INSERT, and turned into messages by a worker in arrival order per inbox.

A webhook used to answer only after its message, conversation changes and events had committed: 25 statements
and 60 ms of CPU, so a reply wave of a few hundred a second left most webhooks unanswered past Twilio's 15 s.
Now the webhook verifies the signature, validates the payload (the adapter's parse, so a bad one is still a 400
that stores nothing), stores the normalized record in one INSERT unique on the provider's id, and answers. The
answer means the message is safe: the row is durable, a provider's retry of it is stored once, and a worker
drains the inbox's rows:

- one drainer per inbox at a time (it holds the inbox's row lock, FOR NO KEY UPDATE, which message inserts'
  foreign-key checks do not wait for), taking the rows in id order, so a patient's messages keep their order;
- a batch of up to BATCH rows in one transaction, its events written once at the end (events.deferred): one
  order lock, one insert and one hint for the batch; each row is deleted in the transaction that stores its
  message, so a worker killed half-way leaves the rows to the next drain and nothing is stored twice;
- a batch that fails is rolled back and its rows taken one at a time; a row that fails on its own is tried
  again by the next drain, and after MAX_ATTEMPTS it is parked (out of the queue, counted on the status page);
- drains are scheduled at most once per inbox while one is pending (a cache flag the drain clears when it
  starts), and the dispatcher's sweep schedules one for any row left waiting (a lost task, a broker outage).
"""

from __future__ import annotations

import contextlib
import dataclasses
import datetime as dt
import functools
import logging
from typing import Any

from django.conf import settings
from django.core.cache import cache
from django.db import InterfaceError, OperationalError, connection, transaction
from django.db.models import Case, F, Value, When
from django.utils import timezone

from channels_adapters.base import InboundMessage, Sender
from contactcenter import events, health, taskrunner
from contactcenter.actions.inbound import BatchReads, receive_inbound, receive_new
from contactcenter.models import InboundWebhook, Inbox, Message

logger = logging.getLogger(__name__)

TASK = "contactcenter.tasks.process_inbound_webhooks"
BATCH = 50
MAX_ATTEMPTS = 5
# The sweep schedules a drain for rows that waited this long (their task was lost, or the broker was down).
SWEEP_AFTER_SECONDS = 15
# A pending drain's flag outlives its task by at most this much (a task lost with its worker): the sweep then
# schedules another.
_FLAG_SECONDS = 20


def _flag(inbox_id: int) -> str:
    return f"inbound-drain:{inbox_id}"


# --- the webhook's side ----------------------------------------------------------------------------------


def accept_inbound(record: InboundMessage) -> None:
    """Store a verified, parsed inbound record for the worker, once per provider id, and schedule a drain.

    One INSERT … ON CONFLICT DO NOTHING: a provider's retry of a row still waiting is dropped by the unique
    index, one already turned into a message is dropped by the message's (receive_inbound).
    """
    if not record.provider_message_id:
        # Nothing to keep a retry from being stored twice: the whole path now, as before.
        receive_inbound(record)
        return
    _insert_once(
        inbox_id=record.inbox_id,
        provider_message_id=record.provider_message_id,
        record=record_to_json(record),
        received_at=record.received_at or timezone.now(),
    )
    schedule_drain(record.inbox_id)


def _insert_once(**values: Any) -> None:
    """One INSERT … ON CONFLICT DO NOTHING, on its own in autocommit: bulk_create(ignore_conflicts=True) would
    wrap it in BEGIN and COMMIT, three statements on the hot path instead of one."""
    meta = InboundWebhook._meta
    quote = connection.ops.quote_name
    fields = [(meta.get_field(name), value) for name, value in values.items()]
    columns = ", ".join(quote(field.column) for field, _ in fields)  # type: ignore[union-attr, arg-type]
    marks = ", ".join(["%s"] * len(fields))
    params = [field.get_db_prep_save(value, connection) for field, value in fields]  # type: ignore[union-attr]
    with connection.cursor() as cursor:
        cursor.execute(
            f"INSERT INTO {quote(meta.db_table)} ({columns}, attempts, last_error) "  # noqa: S608 (names from the model)
            f"VALUES ({marks}, 0, '') ON CONFLICT DO NOTHING",
            params,
        )


def schedule_drain(inbox_id: int) -> None:
    """Enqueue a drain unless one is already pending for the inbox (the drain clears the flag as it starts)."""
    try:
        pending = not _flag_set(inbox_id)
    except Exception:
        # The flag's store is down: enqueue anyway; a few drains too many only wait on each other's lock.
        pending = False
    if not pending and not taskrunner.enqueue(TASK, inbox_id=inbox_id):
        # The broker refused it: no drain is pending after all, so the next webhook (or the sweep) schedules one.
        with contextlib.suppress(Exception):
            _flag_clear(inbox_id)


def _flag_set(inbox_id: int) -> bool:
    """Set the inbox's pending-drain flag; False when it was set already. Redis when there is one, through one
    client per process: Django's cache is per thread, and Daphne runs each request on a new thread, so it opened a
    Redis connection per webhook."""
    if settings.REDIS_URL:
        return bool(health.redis_client().set(_flag(inbox_id), 1, nx=True, ex=_FLAG_SECONDS))
    return bool(cache.add(_flag(inbox_id), 1, timeout=_FLAG_SECONDS))


def _flag_clear(inbox_id: int) -> None:
    if settings.REDIS_URL:
        health.redis_client().delete(_flag(inbox_id))
    else:
        cache.delete(_flag(inbox_id))


def record_to_json(record: InboundMessage) -> dict[str, Any]:
    return {
        "sender": {
            "kind": record.sender.kind,
            "value": record.sender.value,
            "name": record.sender.name,
            "also_known_as": [list(pair) for pair in record.sender.also_known_as],
        },
        "body": record.body,
        "attachments": record.attachments,
        "subject": record.subject,
        "provider_payload": dict(record.provider_payload),
    }


def record_from_row(row: InboundWebhook) -> InboundMessage:
    data = row.record
    sender = data["sender"]
    return InboundMessage(
        inbox_id=row.inbox_id,
        sender=Sender(
            kind=sender["kind"],
            value=sender["value"],
            name=sender.get("name", ""),
            also_known_as=tuple((kind, value) for kind, value in sender.get("also_known_as", [])),
        ),
        body=data.get("body", ""),
        provider_message_id=row.provider_message_id,
        attachments=data.get("attachments", []),
        subject=data.get("subject", ""),
        received_at=row.received_at,
        provider_payload=data.get("provider_payload", {}),
    )


# --- the worker's side -----------------------------------------------------------------------------------


@dataclasses.dataclass
class Drained:
    stored: int = 0
    failed: int = 0
    parked: int = 0


def drain_inbound(*, inbox_id: int) -> Drained:
    """Turn the inbox's waiting rows into messages, a batch at a time, until none is left."""
    try:
        _flag_clear(inbox_id)
    except Exception:
        logger.warning("inbound drain for inbox %s: cache unavailable; drains may be scheduled twice", inbox_id)
    outcome = Drained()
    while True:
        try:
            taken = _drain_batch(inbox_id)
        except (OperationalError, InterfaceError):
            # The database went away: the rows are still there; the task's retry or the sweep drains them.
            raise
        except Exception:
            logger.exception("inbound drain for inbox %s: batch failed; taking its rows one at a time", inbox_id)
            taken = _drain_one_by_one(inbox_id, outcome)
        else:
            outcome.stored += taken
        if taken < BATCH:
            return outcome


def _drain_batch(inbox_id: int) -> int:
    with transaction.atomic(), events.deferred():
        inbox = _locked_inbox(inbox_id)
        if inbox is None:
            return 0
        rows = _waiting(inbox_id, BATCH)
        if not rows:
            return 0
        InboundWebhook.objects.filter(pk__in=[row.pk for row in rows]).delete()
        # A provider's retry of a message drained before it arrived: already stored, nothing to do. Found in one
        # read here rather than by a unique violation that would roll the whole batch back.
        stored = set(
            Message.objects.filter(
                inbox_id=inbox_id, provider_message_id__in=[row.provider_message_id for row in rows]
            ).values_list("provider_message_id", flat=True)
        )
        records = [record_from_row(row) for row in rows if row.provider_message_id not in stored]
        batch = BatchReads.read(inbox, records)
        for record in records:
            receive_new(record, inbox=inbox, batch=batch)
        return len(rows)


def _drain_one_by_one(inbox_id: int, outcome: Drained) -> int:
    ids = list(
        InboundWebhook.objects.filter(inbox_id=inbox_id, parked_at__isnull=True)
        .order_by("id")
        .values_list("id", flat=True)[:BATCH]
    )
    for row_id in ids:
        try:
            with transaction.atomic(), events.deferred():
                inbox = _locked_inbox(inbox_id)
                row = InboundWebhook.objects.filter(pk=row_id, parked_at__isnull=True).first()
                if inbox is None or row is None:
                    continue
                row.delete()
                # The whole path, with its duplicate and race handling in savepoints.
                receive_inbound(record_from_row(row), inbox=inbox)
            outcome.stored += 1
        except (OperationalError, InterfaceError):
            raise
        except Exception as exc:
            outcome.failed += 1
            if _note_failure(row_id, exc):
                outcome.parked += 1
    return len(ids)


def _note_failure(row_id: int, exc: BaseException) -> bool:
    """Count a failed try; park the row after MAX_ATTEMPTS. True when it was parked now."""
    logger.error("inbound webhook %s failed: %s", row_id, type(exc).__name__)
    InboundWebhook.objects.filter(pk=row_id).update(
        attempts=F("attempts") + 1,
        last_error=type(exc).__name__[:300],
        parked_at=Case(When(attempts__gte=MAX_ATTEMPTS - 1, then=Value(timezone.now())), default=None),
    )
    return InboundWebhook.objects.filter(pk=row_id, parked_at__isnull=False).exists()


def _locked_inbox(inbox_id: int) -> Inbox | None:
    # One drainer per inbox. NO KEY: messages inserted meanwhile (agents' replies) check their foreign key with
    # FOR KEY SHARE, which this does not block.
    return Inbox.objects.select_for_update(no_key=True).filter(pk=inbox_id).first()


def _waiting(inbox_id: int, limit: int) -> list[InboundWebhook]:
    # Ordered as the partial index (inbox, id) is, so the planner walks it rather than the whole table's ids.
    return list(
        InboundWebhook.objects.filter(inbox_id=inbox_id, parked_at__isnull=True).order_by("inbox_id", "id")[:limit]
    )


def retry_parked(*, inbox_id: int | None = None) -> int:
    """Put parked rows back in the queue (an admin's action once the cause is fixed)."""
    rows = InboundWebhook.objects.filter(parked_at__isnull=False)
    if inbox_id is not None:
        rows = rows.filter(inbox_id=inbox_id)
    inboxes = set(rows.values_list("inbox_id", flat=True))
    count = rows.update(parked_at=None, attempts=0)
    for inbox in inboxes:
        transaction.on_commit(functools.partial(schedule_drain, inbox))
    return count


def schedule_waiting_drains() -> int:
    """The dispatcher's sweep: a drain for every inbox with rows left waiting. Returns how many were scheduled."""
    cutoff = timezone.now() - dt.timedelta(seconds=SWEEP_AFTER_SECONDS)
    inboxes = set(
        InboundWebhook.objects.filter(parked_at__isnull=True, received_at__lt=cutoff).values_list("inbox_id", flat=True)
    )
    for inbox_id in inboxes:
        # Through the flag: a drain already pending (a backlog being worked through) is not doubled.
        schedule_drain(inbox_id)
    return len(inboxes)


def queue_state() -> dict[str, Any]:
    """For /readyz and the status page: rows waiting, the oldest one's age, rows parked."""
    waiting = InboundWebhook.objects.filter(parked_at__isnull=True)
    oldest = waiting.order_by("received_at").values_list("received_at", flat=True).first()
    return {
        "waiting": waiting.count(),
        "oldest_seconds": (timezone.now() - oldest).total_seconds() if oldest else 0.0,
        "parked": InboundWebhook.objects.filter(parked_at__isnull=False).count(),
    }

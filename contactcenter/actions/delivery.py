"""Handing queued messages to their channel adapter and moving statuses forward only."""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from django.conf import settings
from django.core.cache import cache
from django.db import IntegrityError, connection, transaction
from django.db.models import QuerySet
from django.utils import timezone

from channels_adapters.base import (
    AdapterError,
    ChannelAdapter,
    LooksUpSent,
    LooksUpStatus,
    OutboundMessage,
    PreparesBatches,
    SendResult,
    StatusUpdate,
    Unconfirmed,
    adapter_for,
    channels_with,
)
from contactcenter import events
from contactcenter.actions.conversations import audience_of
from contactcenter.bulk_update import update_rows
from contactcenter.models import Message, MessageDirection, MessageStatus, PatientIdentity
from contactcenter.status_hooks import any_wants, run_status_hooks
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

# Statuses only move up this ladder; failure states sit above "sent" so a late "sent" cannot undo
# them, and "read" is the end of the happy path.
STATUS_RANK: dict[str, int] = {
    MessageStatus.QUEUED: 0,
    MessageStatus.SENDING: 1,
    MessageStatus.SENT: 2,
    MessageStatus.DELIVERED: 3,
    MessageStatus.UNDELIVERED: 3,
    MessageStatus.FAILED: 3,
    MessageStatus.READ: 4,
}
SUCCESS = frozenset({MessageStatus.SENT, MessageStatus.DELIVERED, MessageStatus.READ})
TIMESTAMP_FIELD: dict[str, str] = {
    MessageStatus.SENT: "sent_at",
    MessageStatus.DELIVERED: "delivered_at",
    MessageStatus.READ: "read_at",
}


@dataclass(frozen=True)
class DeliveryOutcome:
    message_id: int
    status: str
    retry: bool = False
    error: str = ""


def deliver_message(*, message_id: int) -> DeliveryOutcome:
    """Send one queued message through its adapter. Safe to call twice: only a queued message is sent.

    The message is moved to "sending" in its own committed transaction before the provider is
    called, so a retried task finds it no longer queued and never sends twice.
    """
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation__patient", "inbox")
            .get(pk=message_id)
        )
        if message.status != MessageStatus.QUEUED or message.provider_message_id:
            return DeliveryOutcome(message_id, message.status)
        inbox = message.inbox
        try:
            adapter = adapter_for(inbox)
        except AdapterError as exc:
            _fail(message, exc)
            return DeliveryOutcome(message_id, MessageStatus.FAILED, error=exc.message)
        address = (
            PatientIdentity.objects.filter(patient_id=message.conversation.patient_id, kind=adapter.address_kind)
            .order_by("-id")
            .values_list("value", flat=True)
            .first()
        )
        if address is None:
            missing = AdapterError(
                f"the patient has no {adapter.address_kind} to send to", permanent=True, code="no_address"
            )
            _fail(message, missing)
            return DeliveryOutcome(message_id, MessageStatus.FAILED, error=missing.message)
        _move(message, MessageStatus.SENDING)
    outbound = _outbound(message, address)
    try:
        with transaction.atomic():
            result = adapter.send(outbound)
            message = Message.objects.select_for_update(of=("self",)).get(pk=message_id)
            message.provider_message_id = result.provider_message_id
            message.save(update_fields=["provider_message_id"])
            _move(message, result.status)
    except AdapterError as exc:
        return _after_error(message_id, exc)
    return DeliveryOutcome(message_id, result.status)


def _outbound(message: Message, address: str) -> OutboundMessage:
    """What the adapter is handed: `message` comes with its conversation and inbox loaded."""
    return OutboundMessage(
        message_id=message.pk,
        inbox=message.inbox,
        to=address,
        body=message.body,
        attachments=message.attachments,
        subject=message.conversation.subject,
    )


def _announce_requeued(message: Message, reason: str) -> None:
    """Back to queued (the provider never got it): clients show it waiting again, with the reason if any."""
    events.record(
        events.MessageStatusChanged(
            conversation_id=message.conversation_id,
            message_id=message.pk,
            status=MessageStatus.QUEUED,
            error_code="",
            error_message=reason,
        ),
        audience_of(message.conversation),
    )


def _after_error(message_id: int, exc: AdapterError) -> DeliveryOutcome:
    """The provider refused or could not be reached: fail, wait for the callback, or queue for a retry."""
    with transaction.atomic():
        message = Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=message_id)
        if exc.permanent:
            _fail(message, exc)
            if exc.recipient_opted_out:
                _record_provider_opt_out(message)
            return DeliveryOutcome(message_id, MessageStatus.FAILED, error=exc.message)
        if exc.ambiguous:
            # The provider may hold the message: stay "sending" and let its callback settle it.
            Message.objects.filter(pk=message_id).update(error_message=exc.message[:500])
            return DeliveryOutcome(message_id, MessageStatus.SENDING, error=exc.message)
        # Back to queued so the retry is allowed to send; nothing reached the provider. The agent
        # sees the reason while the retry waits.
        Message.objects.filter(pk=message_id).update(status=MessageStatus.QUEUED, error_message=exc.message[:500])
        _announce_requeued(message, exc.message[:500])
    return DeliveryOutcome(message_id, MessageStatus.QUEUED, retry=True, error=exc.message)


def deliver_batch(
    *,
    messages: list[Message],
    pace: Callable[[], object] = lambda: None,
    block: int = 1,
    unannounced: frozenset[int] = frozenset(),
) -> list[DeliveryOutcome]:
    """deliver_message for a chunk of queued messages (a campaign's), at a fraction of the statements.

    Messages are claimed `block` at a time (queued → sending, committed before the first of them is
    handed to the provider) and the block's provider ids saved in one statement after its last answer;
    `pace` is called before each request (the campaign's throttle). A worker killed mid-block leaves
    the block's messages "sending" with no provider id: their status callbacks attach the ids of those
    the provider accepted, and reconcile_unconfirmed asks the provider about the rest, so none is lost
    and none is sent twice. The engine keeps a block to about a quarter second of sending.

    A block's requests run together on a pool of threads (DELIVERY_CONCURRENCY) for adapters that can
    send without the database (their `prepare` reads what they need first and says so): the provider's
    latency, not our work, would otherwise set the pace. Everything that touches the database stays on
    the caller's thread.

    A transient refusal puts the message back to queued and enqueues deliver_message for it, whose
    retries back off and finally give up, as for any message.

    `messages` come with their conversation and inbox loaded (queue_outbound_batch's); whether each is
    still queued is decided by its claim, not by these copies. `unannounced`: messages no client has been
    told about (their thread's first message, carried by its ConversationAdded); their "sending" step is
    not announced either, since whoever opens the thread reads the status with it.
    """
    rows = sorted(messages, key=lambda m: m.pk)
    adapters: dict[int, ChannelAdapter | None] = {}
    concurrent: set[int] = set()
    for message in rows:
        if message.inbox_id not in adapters:
            try:
                adapter = adapter_for(message.inbox)
                if (
                    isinstance(adapter, PreparesBatches)
                    and adapter.prepare(message.inbox)
                    and settings.DELIVERY_CONCURRENCY > 1
                ):
                    concurrent.add(message.inbox_id)
                adapters[message.inbox_id] = adapter
            except AdapterError:
                adapters[message.inbox_id] = None
    addresses = _newest_addresses(rows, adapters)
    outcomes: list[DeliveryOutcome] = []
    deliverable: list[Message] = []
    for message in rows:
        if adapters[message.inbox_id] is None or (message.conversation.patient_id, message.inbox_id) not in addresses:
            # The single path fails it with the reason the agent sees.
            outcomes.append(deliver_message(message_id=message.pk))
        else:
            deliverable.append(message)
    accepted: dict[int, tuple[Message, SendResult]] = {}
    for start in range(0, len(deliverable), max(1, block)):
        part = deliverable[start : start + max(1, block)]
        claimed = _claim(part)
        pending: list[tuple[Message, Future[SendResult]]] = []
        for message in part:
            if message.pk not in claimed:
                # Another delivery (a redelivered task) has it.
                continue
            sender = adapters[message.inbox_id]
            assert sender is not None
            outbound = _outbound(message, addresses[(message.conversation.patient_id, message.inbox_id)])
            pace()
            if message.inbox_id in concurrent:
                pending.append((message, _senders().submit(sender.send, outbound)))
            else:
                done: Future[SendResult] = Future()
                try:
                    done.set_result(sender.send(outbound))
                except AdapterError as exc:
                    done.set_exception(exc)
                pending.append((message, done))
        answered: dict[int, SendResult] = {}
        for message, future in pending:
            try:
                answered[message.pk] = future.result()
            except AdapterError as exc:
                outcome = _after_error(message.pk, exc)
                if outcome.retry:
                    enqueue("contactcenter.tasks.deliver_message", message_id=message.pk)
                outcomes.append(outcome)
        # A status callback that came first attached the same id already; writing it again is harmless.
        update_rows(Message, ["provider_message_id"], {pk: (r.provider_message_id,) for pk, r in answered.items()})
        accepted.update((m.pk, (m, answered[m.pk])) for m in part if m.pk in answered)
        outcomes.extend(DeliveryOutcome(pk, r.status) for pk, r in answered.items())
    if accepted:
        _announce_sending(accepted, unannounced)
    return outcomes


@functools.cache
def _senders() -> ThreadPoolExecutor:
    return ThreadPoolExecutor(max_workers=settings.DELIVERY_CONCURRENCY, thread_name_prefix="deliver")


def _claim(messages: list[Message]) -> set[int]:
    """queued → sending for those still queued, in one statement (its own commit outside a transaction)
    before any of them reaches the provider. Returns the ids this call moved: any other delivery that
    got there first moved the rest, and the compare-and-set in the WHERE clause keeps that exact."""
    table = connection.ops.quote_name(Message._meta.db_table)
    changed_at = Message._meta.get_field("status_changed_at").get_db_prep_save(timezone.now(), connection)
    ids = [m.pk for m in messages]
    with connection.cursor() as cursor:
        cursor.execute(
            f"UPDATE {table} SET status = %s, status_changed_at = %s "  # noqa: S608 (quoted table name only)
            f"WHERE id IN ({', '.join(['%s'] * len(ids))}) AND status = %s AND provider_message_id IS NULL "
            "RETURNING id",
            [MessageStatus.SENDING, changed_at, *ids, MessageStatus.QUEUED],
        )
        return {row[0] for row in cursor.fetchall()}


def _newest_addresses(rows: list[Message], adapters: dict[int, ChannelAdapter | None]) -> dict[tuple[int, int], str]:
    """(patient, inbox) → the patient's newest identity of the kind that inbox's channel sends to."""
    wanted: dict[str, set[int]] = {}
    for message in rows:
        adapter = adapters[message.inbox_id]
        if adapter is not None:
            wanted.setdefault(adapter.address_kind, set()).add(message.conversation.patient_id)
    newest: dict[tuple[str, int], str] = {}
    for kind, patient_ids in wanted.items():
        identities = (
            PatientIdentity.objects.filter(patient_id__in=patient_ids, kind=kind)
            .order_by("patient_id", "-id")
            .values_list("patient_id", "value")
        )
        for patient_id, value in identities:
            newest.setdefault((kind, patient_id), value)
    addresses: dict[tuple[int, int], str] = {}
    for message in rows:
        adapter = adapters[message.inbox_id]
        if adapter is not None:
            address = newest.get((adapter.address_kind, message.conversation.patient_id))
            if address is not None:
                addresses[(message.conversation.patient_id, message.inbox_id)] = address
    return addresses


@transaction.atomic
def _announce_sending(accepted: dict[int, tuple[Message, SendResult]], unannounced: frozenset[int]) -> None:
    """The chunk's queued → sending events, and any further status a provider answered with."""
    # A status callback may have moved some on already (and announced it); those are left alone.
    still = set(
        Message.objects.filter(pk__in=list(accepted), status=MessageStatus.SENDING).values_list("pk", flat=True)
    )
    rows = [accepted[pk][0] for pk in sorted(still)]
    batch: list[tuple[events.BaseEvent, events.Audience]] = []
    for message in rows:
        message.status = MessageStatus.SENDING
        run_status_hooks(message=message, old=MessageStatus.QUEUED, new=MessageStatus.SENDING)
        if message.pk in unannounced:
            continue
        batch.append(
            (
                events.MessageStatusChanged(
                    conversation_id=message.conversation_id,
                    message_id=message.pk,
                    status=MessageStatus.SENDING,
                    error_code=message.error_code,
                    error_message=message.error_message,
                ),
                audience_of(message.conversation),
            )
        )
    events.record_many(batch)
    for message in rows:
        status = accepted[message.pk][1].status
        if status != MessageStatus.SENDING:
            # Twilio answers "queued" or "accepted" (both "sending" here); a channel that confirms at once says "sent".
            _move(
                Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=message.pk),
                status,
            )


def _record_provider_opt_out(message: Message) -> None:
    from contactcenter.actions.consent import record_consent
    from contactcenter.models import ConsentPurpose, ConsentSource, ConsentStatus

    record_consent(
        patient=message.conversation.patient,
        purpose=ConsentPurpose.MARKETING,
        status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.PROVIDER,
        channel=message.inbox.channel_type,
        keyword=message.error_code,
        message=message,
    )


def _fail(message: Message, exc: AdapterError) -> None:
    message.error_code = exc.code[:40]
    message.error_message = exc.message[:500]
    message.save(update_fields=["error_code", "error_message"])
    _move(message, MessageStatus.FAILED)
    logger.warning("message %s failed permanently: %s", message.pk, exc.code or "adapter error")


def _move(message: Message, status: str) -> bool:
    """Move forward only; publish the change. Returns False when the status would go backwards."""
    if STATUS_RANK.get(status, -1) <= STATUS_RANK.get(message.status, -1) and status != message.status:
        return False
    if status == message.status:
        return False
    now = timezone.now()
    old = message.status
    message.status = status
    message.status_changed_at = now
    fields = ["status", "status_changed_at"]
    if status in SUCCESS and message.error_message and not message.error_code:
        # A transient error's text from an earlier attempt no longer describes this message.
        message.error_message = ""
        fields.append("error_message")
    stamp = TIMESTAMP_FIELD.get(status)
    if stamp and getattr(message, stamp) is None:
        setattr(message, stamp, now)
        fields.append(stamp)
    message.save(update_fields=fields)
    run_status_hooks(message=message, old=old, new=status)
    conversation = message.conversation
    events.record(
        events.MessageStatusChanged(
            conversation_id=conversation.pk,
            message_id=message.pk,
            status=status,
            error_code=message.error_code,
            error_message=message.error_message,
        ),
        audience_of(conversation),
    )
    return True


def settle_status(*, message: Message, update: StatusUpdate) -> bool:
    """A status callback for a message the webhook has just read (with its conversation): one statement when it can.

    Most callbacks move an SMS forward one step and nobody but the agents' screens follows it. Those are written
    as the status update guarded by the status that was read, and the event, in one statement
    (events.record_after_update): the callback's one indexed read (the webhook's lookup) and one write. Anything
    else (a move some status hook follows, a message that changed since it was read, a first id for a send whose
    answer was lost, SQLite) takes update_message_status's locked path. Returns whether the status moved.
    """
    new = update.status
    conversation = message.conversation if Message._meta.get_field("conversation").is_cached(message) else None
    fast = (
        connection.vendor == "postgresql"
        and not connection.in_atomic_block
        and conversation is not None
        and message.provider_message_id == update.provider_message_id
        and not any_wants(message=message, new=new)
    )
    if not fast:
        return update_message_status(inbox_id=message.inbox_id, update=update, message_id=message.pk)
    assert conversation is not None
    if STATUS_RANK.get(new, -1) <= STATUS_RANK.get(message.status, -1):
        return False  # late, duplicate or out of order: nothing changes, as on the locked path
    error_code, error_message = message.error_code, message.error_message
    if update.error_code or update.error_message:
        error_code, error_message = update.error_code[:40], update.error_message[:500]
    elif new in SUCCESS and error_message and not error_code:
        error_message = ""
    now = timezone.now()
    table = connection.ops.quote_name(Message._meta.db_table)
    assignments = ["status = %s", "status_changed_at = %s", "error_code = %s", "error_message = %s"]
    params: list[object] = [new, now, error_code, error_message]
    stamp = TIMESTAMP_FIELD.get(new)
    if stamp:
        column = connection.ops.quote_name(stamp)  # sent_at, delivered_at, read_at: named as their columns
        assignments.append(f"{column} = COALESCE({column}, %s)")
        params.append(now)
    if Message._meta.get_field("inbox").is_cached(message) and message.inbox_id == conversation.inbox_id:
        conversation.inbox = message.inbox  # tells audience_of whether a web chat widget may be listening
    event_id = events.record_after_update(
        # Names from the model's metadata; every value is a bound parameter.
        update_sql=f"UPDATE {table} SET {', '.join(assignments)} WHERE id = %s AND status = %s",  # noqa: S608
        params=[*params, message.pk, message.status],
        event=events.MessageStatusChanged(
            conversation_id=conversation.pk,
            message_id=message.pk,
            status=new,
            error_code=error_code,
            error_message=error_message,
        ),
        audience=audience_of(conversation),
    )
    if event_id is None:
        # Moved by someone else since the webhook read it: decide again under the row lock.
        return update_message_status(inbox_id=message.inbox_id, update=update, message_id=message.pk)
    return True


@transaction.atomic
def update_message_status(*, inbox_id: int, update: StatusUpdate, message_id: int | None = None) -> bool:
    """A provider's status callback. Late, duplicate or out-of-order callbacks change nothing.

    `message_id` (our id, carried on the callback URL) settles a send whose API answer was lost: the
    message has no provider id yet, so the callback's id is attached before the status moves.
    """
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(inbox_id=inbox_id, provider_message_id=update.provider_message_id)
        .first()
    )
    if message is None and message_id is not None:
        message = (
            Message.objects.select_for_update(of=("self",))
            .select_related("conversation")
            .filter(pk=message_id, inbox_id=inbox_id, provider_message_id__isnull=True)
            .first()
        )
        if message is not None:
            message.provider_message_id = update.provider_message_id
            message.save(update_fields=["provider_message_id"])
    if message is None:
        logger.info("status for unknown provider message on inbox %s ignored", inbox_id)
        return False
    if STATUS_RANK.get(update.status, -1) <= STATUS_RANK.get(message.status, -1):
        return False
    if update.error_code or update.error_message:
        message.error_code = update.error_code[:40]
        message.error_message = update.error_message[:500]
        message.save(update_fields=["error_code", "error_message"])
    return _move(message, update.status)


@transaction.atomic
def abandon_delivery(*, message_id: int, reason: str) -> None:
    """Transient errors that never cleared: fail the message so the agent sees it and can resend."""
    message = Message.objects.select_for_update(of=("self",)).select_related("conversation").get(pk=message_id)
    if message.status == MessageStatus.QUEUED:
        _fail(message, AdapterError(f"gave up after repeated transient errors: {reason}", code="retries_exhausted"))


@dataclass(frozen=True)
class Reconciled:
    found: int = 0
    requeued: int = 0
    failed: int = 0
    unknown: int = 0

    @property
    def settled(self) -> int:
        return self.found + self.requeued + self.failed


def reconcile_unconfirmed(*, now: dt.datetime | None = None, limit: int = 200) -> Reconciled:
    """Settle messages handed to a provider whose answer was never saved: "sending", no provider id, and no
    status callback for DELIVERY_UNCONFIRMED_MINUTES (a worker killed between the request and saving its
    answer, or before the request of a claimed block). Every such message ends settled, never "sending"
    forever:

    - a channel that can look a send up (LooksUpSent) is asked: a message the provider has gets its id and
      status; one it does not have goes back to queued and is delivered again. When the provider cannot say
      (unreachable, an unreadable answer) the message waits for the next sweep, until
      DELIVERY_UNCONFIRMED_GIVE_UP_HOURS, when it is failed with that reason for staff to check and resend;
    - a channel that cannot look up follows its adapter's `unconfirmed` rule: sent again where a second copy
      is harmless (Unconfirmed.RESEND), else failed with the reason (Unconfirmed.FAIL), because a blind
      resend could reach the patient twice.

    The wait is long enough for the provider's own records to show the message, so "not there" means it
    never arrived. One message's trouble is logged and left for the next sweep; it never stops the others.
    """
    now = now or timezone.now()
    cutoff = now - dt.timedelta(minutes=settings.DELIVERY_UNCONFIRMED_MINUTES)
    give_up = now - dt.timedelta(hours=settings.DELIVERY_UNCONFIRMED_GIVE_UP_HOURS)
    rows = list(
        Message.objects.filter(
            status=MessageStatus.SENDING,
            direction=MessageDirection.OUTBOUND,
            provider_message_id__isnull=True,
            status_changed_at__lt=cutoff,
        )
        .select_related("conversation", "inbox")
        .order_by("status_changed_at", "pk")[:limit]
    )
    adapters: dict[int, ChannelAdapter | None] = {}
    for message in rows:
        if message.inbox_id not in adapters:
            try:
                adapters[message.inbox_id] = adapter_for(message.inbox)
            except AdapterError:
                adapters[message.inbox_id] = None
    addresses = _newest_addresses(rows, adapters)
    counts = {"found": 0, "requeued": 0, "failed": 0, "unknown": 0}
    for message in rows:
        try:
            outcome = _settle_unconfirmed(
                message,
                adapters[message.inbox_id],
                addresses.get((message.conversation.patient_id, message.inbox_id)),
                give_up=give_up,
            )
        except Exception:
            # Whatever went wrong with this one (a provider answer we could not read, a database error),
            # the others are still settled; this one is looked at again next sweep.
            logger.exception("message %s: unconfirmed send not settled this sweep", message.pk)
            outcome = "unknown"
        counts[outcome] += 1
    if rows:
        logger.warning(
            "unconfirmed sends: %(found)d found at the provider, %(requeued)d requeued, %(failed)d failed, "
            "%(unknown)d unknown",
            counts,
        )
    return Reconciled(**counts)


def _settle_unconfirmed(
    message: Message, adapter: ChannelAdapter | None, address: str | None, *, give_up: dt.datetime
) -> str:
    if adapter is None:
        return "failed" if _fail_unconfirmed(message.pk, "the inbox's channel can no longer send") else "unknown"
    if not isinstance(adapter, LooksUpSent):
        if adapter.unconfirmed == Unconfirmed.RESEND:
            return "requeued" if _requeue_unsent(message.pk) else "unknown"
        reason = "the send was interrupted and cannot be confirmed with the provider; check before resending"
        return "failed" if _fail_unconfirmed(message.pk, reason) else "unknown"
    if address is None:
        return (
            "failed"
            if _fail_unconfirmed(message.pk, "the patient has no address to look the send up by")
            else "unknown"
        )
    outbound = _outbound(message, address)
    # The claim's moment, less a little for clocks: the provider cannot have it from before then.
    since = message.status_changed_at - dt.timedelta(minutes=2)
    try:
        result = adapter.find_sent(outbound, since=since, exclude=_attached_provider_ids(message, since))
    except AdapterError as exc:
        if message.status_changed_at < give_up:
            reason = f"the provider could not confirm this send for {settings.DELIVERY_UNCONFIRMED_GIVE_UP_HOURS} h"
            return "failed" if _fail_unconfirmed(message.pk, reason) else "unknown"
        logger.warning("message %s: could not ask the provider (%s); next sweep", message.pk, exc.code)
        return "unknown"
    if result is None:
        return "requeued" if _requeue_unsent(message.pk) else "unknown"
    try:
        update_message_status(
            inbox_id=message.inbox_id,
            update=StatusUpdate(provider_message_id=result.provider_message_id, status=result.status),
            message_id=message.pk,
        )
    except IntegrityError:
        # Another row took that provider id between the lookup and now; ask again next sweep.
        logger.warning("message %s: the provider's match is attached to another message; next sweep", message.pk)
        return "unknown"
    return "found"


def _attached_provider_ids(message: Message, since: dt.datetime) -> frozenset[str]:
    """Provider ids already on our other messages to this patient from this inbox, sent since `since`: a
    lookup must not take one of those for `message` (two identical replies, one confirmed, one not)."""
    ids = (
        Message.objects.filter(
            inbox_id=message.inbox_id,
            conversation__patient_id=message.conversation.patient_id,
            direction=MessageDirection.OUTBOUND,
            provider_message_id__isnull=False,
            created_at__gte=since - dt.timedelta(days=1),
        )
        .exclude(pk=message.pk)
        .values_list("provider_message_id", flat=True)
    )
    return frozenset(i for i in ids if i)


@transaction.atomic
def _fail_unconfirmed(message_id: int, reason: str) -> bool:
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(pk=message_id, status=MessageStatus.SENDING, provider_message_id__isnull=True)
        .first()
    )
    if message is None:
        return False
    _fail(message, AdapterError(reason, permanent=True, code="unconfirmed"))
    return True


def redeliver_stalled(*, now: dt.datetime | None = None, limit: int = 5000) -> int:
    """Hand queued outbound messages whose delivery task was lost to delivery again; returns how many.

    A message is written "queued" and its task enqueued after commit. The task is lost when the broker was
    down at that moment (enqueue logs and goes on: the message is saved and the agent was told so), when the
    in-process runner's server stopped, or when a worker died holding it. Any of those leaves the row queued
    with no provider id: after DELIVERY_STALLED_SECONDS (or, for one waiting on a transient error's retry,
    after that retry's whole backoff has had time to run) it is enqueued again. Exactly once still holds:
    delivery claims a message queued → sending in a committed compare-and-set, so a late original task and
    this one never both send it. Campaign messages are included; the campaign's own sweep does the same.
    """
    now = now or timezone.now()
    stalled = Message.objects.filter(
        direction=MessageDirection.OUTBOUND,
        status=MessageStatus.QUEUED,
        provider_message_id__isnull=True,
        status_changed_at__lt=now - dt.timedelta(seconds=settings.DELIVERY_STALLED_SECONDS),
    ).exclude(error_message__gt="", status_changed_at__gte=now - RETRY_WINDOW)
    handed = hand_over(stalled.order_by("status_changed_at", "pk"), now=now, limit=limit)
    if handed:
        logger.warning("%d stalled outbound message(s) handed to delivery again", handed)
    return handed


def hand_over(stalled: QuerySet[Message], *, now: dt.datetime, limit: int = 5000) -> int:
    """Enqueue delivery again for the queued messages of `stalled` (in its order, at most `limit`); returns how many.

    The one mechanism behind every stalled-delivery sweep (this module's, a campaign's): each message's clock is
    restarted, so the next sweep does not hand it over again while its task waits in the queue, and the task is
    enqueued after commit (at once outside a transaction). Delivery's claim keeps a late original task and this
    one from both sending.
    """
    ids = list(stalled.values_list("pk", flat=True)[:limit])
    if not ids:
        return 0
    Message.objects.filter(pk__in=ids, status=MessageStatus.QUEUED).update(status_changed_at=now)
    for message_id in ids:
        transaction.on_commit(functools.partial(enqueue, "contactcenter.tasks.deliver_message", message_id=message_id))
    return len(ids)


def poll_unsettled_statuses(*, now: dt.datetime | None = None, limit: int = 100) -> int:
    """Ask the provider about messages it accepted whose status never moved on: "sending" with a provider id for
    DELIVERY_STATUS_POLL_MINUTES. Their status callbacks were lost (our server was down or restarting when they
    came, and the provider does not retry by default). Returns how many changed.

    Each message is asked about at most once per poll interval (remembered in the cache), and only for three
    days: past that the provider's answer is as final as it will get, and the row shows what it said last.
    """
    now = now or timezone.now()
    interval = dt.timedelta(minutes=settings.DELIVERY_STATUS_POLL_MINUTES)
    channels = channels_with(LooksUpStatus)
    rows = list(
        Message.objects.filter(
            status=MessageStatus.SENDING,
            provider_message_id__isnull=False,
            status_changed_at__lt=now - interval,
            status_changed_at__gte=now - dt.timedelta(days=3),
            inbox__channel_type__in=channels,
        )
        .select_related("inbox")
        .order_by("status_changed_at", "pk")[: limit * 4]
    )
    due: list[Message] = []
    for message in rows:
        # The cache remembers who was asked this interval; the scan stops as soon as enough are due.
        if cache.add(f"delivery:status-polled:{message.pk}", 1, timeout=int(interval.total_seconds())):
            due.append(message)
            if len(due) == limit:
                break
    moved = 0
    adapters: dict[int, ChannelAdapter] = {}
    for message in due:
        try:
            if message.inbox_id not in adapters:
                adapters[message.inbox_id] = adapter_for(message.inbox)
            adapter = adapters[message.inbox_id]
            assert isinstance(adapter, LooksUpStatus)
            update = adapter.fetch_status(message.inbox, str(message.provider_message_id))
            if update is not None and update_message_status(
                inbox_id=message.inbox_id, update=update, message_id=message.pk
            ):
                moved += 1
        except AdapterError as exc:
            logger.warning("message %s: status not looked up (%s); next interval", message.pk, exc.code)
        except Exception:
            logger.exception("message %s: status lookup failed; next interval", message.pk)
    if moved:
        logger.warning("%d message status(es) settled from the provider after lost callbacks", moved)
    return moved


# A transient error's retries back off 2 + 4 + … + 64 s (contactcenter.tasks.deliver_message); a message
# still waiting on one after this long lost its retry with the worker that held it.
RETRY_WINDOW = dt.timedelta(minutes=10)


@transaction.atomic
def _requeue_unsent(message_id: int) -> bool:
    """The provider never got it: "sending" was never true, so back to queued, and delivered again."""
    message = (
        Message.objects.select_for_update(of=("self",))
        .select_related("conversation")
        .filter(pk=message_id, status=MessageStatus.SENDING, provider_message_id__isnull=True)
        .first()
    )
    if message is None:
        # A status callback settled it meanwhile.
        return False
    message.status = MessageStatus.QUEUED
    message.status_changed_at = timezone.now()
    message.save(update_fields=["status", "status_changed_at"])
    _announce_requeued(message, "")
    transaction.on_commit(lambda: enqueue("contactcenter.tasks.deliver_message", message_id=message_id))
    logger.warning("message %s never reached the provider; delivering it again", message_id)
    return True

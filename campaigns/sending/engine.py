"""Sending a running campaign: each recipient once, throttled per sender, inside quiet hours and consent.

A run works in chunks (up to BATCH_SIZE recipients, about half a second of sending at the campaign's
rate). Each chunk has two steps:

1. Queue, in one transaction: claim the chunk's due recipients (SELECT … FOR UPDATE SKIP LOCKED, so
   concurrent runs take disjoint chunks), re-read the campaign's status (a pause or cancel committed before
   this point stops the chunk), decide each recipient — deferred to its quiet-hours window, skipped
   (opted out or no marketing consent as the consent registry answers now, no phone, missing value,
   merged into someone already reached), or written as a queued
   message through contactcenter.actions.outbound.queue_outbound_batch — and save every recipient's
   state with its `message` link. The message rows and the SENT states commit together or not at all,
   which is what makes the campaign exactly-once: a recipient leaves PENDING only with its one message.
2. Deliver: contactcenter.actions.delivery.deliver_batch hands the chunk's messages to Twilio a block at
   a time (about a quarter second of sending): the block is claimed (queued → sending, committed), its
   requests go out together on the worker's delivery threads, paced by the sender's shared limiter
   (throttle.Pacer), and their SIDs are saved in one statement.

A worker killed during step 1 leaves its chunk pending for the next run. Killed during step 2, it leaves
the chunk's later blocks queued: the dispatcher's sweep (redeliver_stalled) hands them to the delivery
task once they are STALLED_DELIVERY old, and the compare-and-set claim means a message is never handed
over twice. The block in flight is left "sending" with no SIDs: Twilio's status callbacks (our message id
is on their URL) attach the SIDs of those it accepted, and reconcile_unconfirmed asks Twilio about any
still unconfirmed after DELIVERY_UNCONFIRMED_MINUTES, adopting the ones it has and delivering again the
ones it never got. Twilio offers no idempotency key for Messages, so nothing is resent blind.

Pause and cancel take effect at the next chunk: at most about half a second of sending after the click.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field

from django.db import connection, connections, transaction
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState
from campaigns.quiet_hours import next_allowed_time
from campaigns.sending import progress, throttle
from campaigns.templating import compose_for
from contactcenter.actions.consent import REFUSED_NO_CONSENT, REFUSED_OPTED_OUT, marketing_refusals
from contactcenter.actions.conversations import open_outbound_conversations
from contactcenter.actions.delivery import deliver_batch, hand_over
from contactcenter.actions.outbound import Draft, queue_outbound_batch
from contactcenter.bulk_update import update_rows
from contactcenter.dispatch import skip_locked
from contactcenter.models import ConsentPurpose, Message, MessageStatus, Patient, SenderKind
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

BATCH_SIZE = 500
# How long a run may go silent before the dispatcher assumes its worker died and starts another.
LEASE = dt.timedelta(seconds=60)
# A campaign message still queued this long after it was written lost its delivery (a worker killed
# between the chunk's commit and its turn); delivery is idempotent, so it is simply handed over again.
STALLED_DELIVERY = dt.timedelta(minutes=2)

SENT, DEFERRED, SKIPPED = "sent", "deferred", "skipped"
# The consent registry's refusals (contactcenter.actions.consent) → the recipient's state.
_SKIPPED_FOR = {
    REFUSED_OPTED_OUT: RecipientState.SKIPPED_OPTED_OUT,
    REFUSED_NO_CONSENT: RecipientState.SKIPPED_NO_CONSENT,
}
# What a chunk reads of each recipient and writes back.
RECIPIENT_FIELDS = (
    "id",
    "patient_id",
    "phone",
    "time_zone",
    "state",
    "deferred_until",
    "error_code",
    "message_id",
    "sent_at",
)


@dataclass
class BatchResult:
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    # True when the campaign is no longer running (paused, cancelled, completed): stop the run.
    stopped: bool = False
    # How many recipients were claimed; fewer than the limit means no more work is due right now.
    examined: int = 0
    states: Counter[str] = field(default_factory=Counter)
    # Written this chunk, with their conversation and inbox loaded, for delivery.
    messages: list[Message] = field(default_factory=list)
    unannounced: frozenset[int] = frozenset()


def claimable(campaign_id: int, now: dt.datetime) -> QuerySet[CampaignRecipient]:
    return CampaignRecipient.objects.filter(campaign_id=campaign_id).filter(
        Q(state=RecipientState.PENDING) | Q(state=RecipientState.DEFERRED, deferred_until__lte=now)
    )


def chunk_size(messages_per_second: int) -> int:
    """About half a second of sending: how far a pause can lag behind the click."""
    return max(1, min(BATCH_SIZE, messages_per_second // 2))


def claim_block(messages_per_second: int) -> int:
    """Messages claimed for delivery together, and so at most in flight to Twilio at once: a quarter second
    of sending, at most 50. Enough to cover Twilio's latency at the configured rate; a worker killed
    mid-block leaves them for the status callbacks and reconcile_unconfirmed to settle."""
    return max(1, min(50, messages_per_second // 4))


def send_batch(
    campaign_id: int,
    *,
    now: dt.datetime | None = None,
    limit: int = BATCH_SIZE,
    pacer: throttle.Pacer | None = None,
) -> BatchResult:
    """Queue up to `limit` due recipients of a running campaign in one transaction, then deliver them.

    `now` pins the clock for quiet hours (tests); by default the chunk is judged at its own moment.
    """
    campaign, result = queue_batch(campaign_id, now=now, limit=limit)
    if campaign is not None:
        deliver_chunk(campaign, result, pacer)
    return result


def queue_batch(
    campaign_id: int, *, now: dt.datetime | None = None, limit: int = BATCH_SIZE
) -> tuple[Campaign | None, BatchResult]:
    """Step 1 alone: the chunk's recipients decided and its messages written, not yet delivered."""
    campaign = Campaign.objects.select_related("inbox").get(pk=campaign_id)
    if campaign.status != CampaignStatus.RUNNING:
        return None, BatchResult(stopped=True)
    return campaign, _queue_chunk(campaign, now=now, limit=limit)


def deliver_chunk(campaign: Campaign, result: BatchResult, pacer: throttle.Pacer | None = None) -> None:
    """Step 2: hand the chunk's messages to Twilio, then tell the progress bar."""
    if result.messages:
        pacer = pacer or throttle.Pacer(throttle.sender_key(campaign.inbox), campaign.messages_per_second)
        deliver_batch(
            messages=result.messages,
            pace=pacer.wait,
            block=claim_block(campaign.messages_per_second),
            unannounced=result.unannounced,
        )
    if result.examined or result.stopped:
        # After the chunk's deliveries, whatever the coalescing held back.
        progress.changed(campaign.pk, force=True)


@transaction.atomic
def _queue_chunk(campaign: Campaign, *, now: dt.datetime | None, limit: int) -> BatchResult:
    result = BatchResult()
    moment = now or timezone.now()
    recipients = list(
        skip_locked(claimable(campaign.pk, moment).order_by("id"))
        .select_related("patient")
        .only(*RECIPIENT_FIELDS, "patient__merged_into_id")[:limit]
    )
    result.examined = len(recipients)
    if not recipients:
        return result
    # Read inside the chunk's transaction: a pause or cancel committed before this point stops it.
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).get()
    if status != CampaignStatus.RUNNING:
        result.stopped = True
        result.examined = 0
        return result
    transaction.on_commit(lambda: progress.changed(campaign.pk))

    def skip(recipient: CampaignRecipient, state: str, reason: str) -> None:
        recipient.state = state
        recipient.error_code = reason[:20]
        result.skipped += 1
        result.states[SKIPPED] += 1

    due: list[CampaignRecipient] = []
    for recipient in recipients:
        allowed = next_allowed_time(moment, recipient.time_zone, campaign.quiet_hours_start, campaign.quiet_hours_end)
        if allowed > moment:
            recipient.state = RecipientState.DEFERRED
            recipient.deferred_until = allowed
            result.deferred += 1
            result.states[DEFERRED] += 1
        elif not recipient.phone:
            skip(recipient, RecipientState.SKIPPED_INVALID, "no_phone")
        else:
            due.append(recipient)
    target = _targets(campaign, due)
    for recipient in due:
        if recipient.pk not in target:
            skip(recipient, RecipientState.SKIPPED_INVALID, "merged")
    due = [r for r in due if r.pk in target]
    # The consent registry's answer now (an opt-out since launch, or consent withdrawn, skips the send).
    refusals = marketing_refusals(set(target.values()), now=moment)
    texts = compose_for(campaign, {r.patient_id for r in due})
    drafts: list[Draft] = []
    writable: list[CampaignRecipient] = []
    for recipient in due:
        rendered = texts.get(recipient.patient_id)
        refusal = refusals.get(target[recipient.pk])
        if refusal is not None:
            skip(recipient, _SKIPPED_FOR[refusal], refusal)
        elif rendered is None or rendered.text is None:
            skip(recipient, RecipientState.SKIPPED_MISSING, "missing")
        else:
            writable.append(recipient)
    if writable:
        opened = open_outbound_conversations(inbox=campaign.inbox, patient_ids=[target[r.pk] for r in writable])
        for recipient in writable:
            text = texts[recipient.patient_id].text
            assert text is not None
            conversation_id = opened.by_patient[target[recipient.pk]]
            drafts.append(Draft(key=recipient.pk, conversation_id=conversation_id, body=text))
        queued = queue_outbound_batch(
            drafts=drafts,
            sender_kind=SenderKind.CAMPAIGN,
            purpose=ConsentPurpose.MARKETING,
            new_conversations=opened.added,
        )
        result.unannounced = queued.unannounced
        for recipient in writable:
            message = queued.messages.get(recipient.pk)
            if message is None:
                # The registry is the last word (an opt-out recorded between our read and the write).
                code = queued.refused.get(recipient.pk, "invalid")
                skip(recipient, _SKIPPED_FOR.get(code, RecipientState.SKIPPED_INVALID), code)
                continue
            recipient.message = message
            recipient.state = RecipientState.SENT
            recipient.sent_at = message.created_at
            recipient.deferred_until = None
            result.sent += 1
            result.states[SENT] += 1
            result.messages.append(message)
    update_rows(
        CampaignRecipient,
        ["state", "deferred_until", "error_code", "message", "sent_at"],
        {r.pk: (r.state, r.deferred_until, r.error_code, r.message_id, r.sent_at) for r in recipients},
    )
    return result


def _targets(campaign: Campaign, recipients: list[CampaignRecipient]) -> dict[int, int]:
    """Recipient id → the patient to send to. A patient merged since launch is reached through the
    survivor, unless the survivor is a recipient in their own right or was already reached this way."""
    target = {r.pk: r.patient_id for r in recipients if r.patient.merged_into_id is None}
    merged = [r for r in recipients if r.patient.merged_into_id is not None]
    if not merged:
        return target
    survivors = {r.patient.merged_into_id for r in merged if r.patient.merged_into_id is not None}
    taken = set(
        CampaignRecipient.objects.filter(campaign_id=campaign.pk, patient_id__in=survivors).values_list(
            "patient_id", flat=True
        )
    ) | set(
        CampaignRecipient.objects.filter(
            campaign_id=campaign.pk, message__conversation__patient_id__in=survivors
        ).values_list("message__conversation__patient_id", flat=True)
    )
    live = set(Patient.objects.filter(pk__in=survivors).values_list("pk", flat=True))
    for recipient in merged:
        survivor = recipient.patient.merged_into_id
        if survivor in live and survivor not in taken:
            taken.add(survivor)
            target[recipient.pk] = survivor
    return target


# --- After a run -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Settled:
    status: str
    next_action_at: dt.datetime | None


@transaction.atomic
def settle(campaign_id: int, *, now: dt.datetime | None = None) -> Settled:
    """What a running campaign waits for after a run: completed when nobody is pending or deferred; else
    the dispatcher's next look (the earliest deferral, or a lease when pending ones remain)."""
    now = now or timezone.now()
    campaign = Campaign.objects.select_for_update(of=("self",)).get(pk=campaign_id)
    if campaign.status != CampaignStatus.RUNNING:
        return Settled(campaign.status, campaign.next_action_at)
    waiting = CampaignRecipient.objects.filter(
        campaign_id=campaign_id, state__in=[RecipientState.PENDING, RecipientState.DEFERRED]
    ).aggregate(
        pending=Count("id", filter=Q(state=RecipientState.PENDING)),
        earliest=Min("deferred_until", filter=Q(state=RecipientState.DEFERRED)),
    )
    if waiting["pending"]:
        campaign.next_action_at = now + LEASE
        campaign.save(update_fields=["next_action_at"])
    elif waiting["earliest"] is not None:
        campaign.next_action_at = waiting["earliest"]
        campaign.save(update_fields=["next_action_at"])
    else:
        redeliver_stalled(campaign_id, now=now)
        campaign.status = CampaignStatus.COMPLETED
        campaign.completed_at = now
        campaign.next_action_at = None
        campaign.save(update_fields=["status", "completed_at", "next_action_at"])
        logger.info("campaign %s completed", campaign_id)
        transaction.on_commit(lambda: progress.changed(campaign_id, force=True))
    return Settled(campaign.status, campaign.next_action_at)


def extend_lease(campaign_id: int, *, now: dt.datetime | None = None) -> None:
    """A live run says so between batches, so the dispatcher does not start a second one."""
    Campaign.objects.filter(pk=campaign_id, status=CampaignStatus.RUNNING).update(
        next_action_at=(now or timezone.now()) + LEASE
    )


def redeliver_stalled(campaign_id: int | None = None, *, now: dt.datetime | None = None) -> int:
    """Hand campaign messages whose delivery was lost (queued for STALLED_DELIVERY, with no transient error
    waiting on its own retry) to the delivery task again; returns how many. One campaign's, or all."""
    now = now or timezone.now()
    stalled = Message.objects.filter(
        status=MessageStatus.QUEUED,
        sender_kind=SenderKind.CAMPAIGN,
        error_message="",
        status_changed_at__lt=now - STALLED_DELIVERY,
    )
    if campaign_id is not None:
        stalled = stalled.filter(
            pk__in=CampaignRecipient.objects.filter(campaign_id=campaign_id, state=RecipientState.SENT).values(
                "message_id"
            )
        )
    handed = hand_over(stalled.order_by("pk"), now=now)
    if handed:
        logger.warning("campaign %s: %d stalled deliveries enqueued again", campaign_id or "*", handed)
    return handed


def run_campaign(campaign_id: int) -> str:
    """Send chunks until nothing is due or the campaign stops; then settle. The Celery task's body.

    On PostgreSQL the next chunk is written while the previous one is delivered (on a thread with its own
    connection): the database's work and Twilio's then overlap instead of taking turns. A pause therefore
    lands after the chunk being delivered and the one already written: about a second of sending.
    """
    campaign = Campaign.objects.filter(pk=campaign_id).select_related("inbox").first()
    if campaign is None or campaign.status != CampaignStatus.RUNNING:
        return campaign.status if campaign is not None else "missing"
    limit = chunk_size(campaign.messages_per_second)
    # One pacer for the whole run, so its reserved block of slots carries over from chunk to chunk.
    pacer = throttle.Pacer(throttle.sender_key(campaign.inbox), campaign.messages_per_second)
    with _ChunkDelivery(overlap=connection.vendor == "postgresql") as delivery:
        while True:
            extend_lease(campaign_id)
            queued, result = queue_batch(campaign_id, limit=limit)
            delivery.start(queued, result, pacer)
            if result.stopped:
                return "stopped"
            if result.examined < limit:
                break
    return settle(campaign_id).status


class _ChunkDelivery:
    """Delivers one chunk at a time, in the background when `overlap`; start() waits for the one before."""

    def __init__(self, *, overlap: bool) -> None:
        self.executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="campaign-delivery") if overlap else None
        self.running: Future[None] | None = None

    def __enter__(self) -> _ChunkDelivery:
        return self

    def start(self, campaign: Campaign | None, result: BatchResult, pacer: throttle.Pacer) -> None:
        self.wait()
        if campaign is None:
            return
        if self.executor is None:
            deliver_chunk(campaign, result, pacer)
        else:
            self.running = self.executor.submit(deliver_chunk, campaign, result, pacer)

    def wait(self) -> None:
        if self.running is not None:
            running, self.running = self.running, None
            running.result()

    def __exit__(self, *exc: object) -> None:
        try:
            self.wait()
        finally:
            if self.executor is not None:
                # The delivery thread's own database connection goes with it.
                self.executor.submit(connections.close_all).result()
                self.executor.shutdown()


# --- The dispatcher's job --------------------------------------------------------------------------


def dispatch_due_campaigns(*, now: dt.datetime | None = None, limit: int = 50) -> int:
    """Start a run for each running campaign whose next action has come: deferred recipients now due,
    or a run whose lease expired (its worker died); and hand stalled deliveries over again. Claimed with
    SKIP LOCKED so concurrent dispatchers start each run once; the new lease keeps the next tick from
    starting it again."""
    now = now or timezone.now()
    redeliver_stalled(now=now)
    with transaction.atomic():
        due = Campaign.objects.filter(status=CampaignStatus.RUNNING, next_action_at__lte=now).order_by(
            "next_action_at", "id"
        )
        due = skip_locked(due)
        ids = list(due.values_list("id", flat=True)[:limit])
        if not ids:
            return 0
        Campaign.objects.filter(pk__in=ids).update(next_action_at=now + LEASE)
        for campaign_id in ids:
            transaction.on_commit(functools.partial(enqueue, "campaigns.tasks.run_campaign", campaign_id=campaign_id))
    logger.info("campaign dispatcher started %d run(s)", len(ids))
    return len(ids)

"""Sending a running campaign: each recipient once, throttled per sender, inside quiet hours and consent.

Exactly once. A recipient leaves PENDING (or a due DEFERRED) in one transaction that holds its row lock
(SELECT … FOR UPDATE SKIP LOCKED) and re-reads its state: the message row (send_outbound, status queued)
and the recipient's SENT state with its `message` link commit together or not at all. Any number of
workers and retried tasks may run the same campaign; a second claimer either skips the locked row or
finds it no longer pending. A worker killed mid-transaction leaves the recipient pending for the next
run; a worker killed after commit has already written both.

The provider call is the delivery task's (contactcenter.actions.delivery.deliver_message), enqueued on
commit. It commits "sending" before calling Twilio, so a retried or redelivered task never sends a
message twice. The one window left is a worker killed after Twilio accepted the message and before the
answer (its SID) was saved: the message stays "sending" with no SID and is not sent again (Twilio
offers no idempotency key for Messages, so a resend could double it); the status callback, which
carries our message id on its URL, attaches the SID and settles the status. The window is the length
of one HTTPS request.

The throttle slot is taken inside the recipient's transaction, just before the message is written, so
skipped and deferred recipients use none. The one lock held while waiting for the slot is the
recipient's own row.
"""

from __future__ import annotations

import datetime as dt
import functools
import logging
from collections import Counter
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Count, Min, Q, QuerySet
from django.utils import timezone

from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState
from campaigns.quiet_hours import next_allowed_time
from campaigns.sending import progress, throttle
from campaigns.templating import Rendered, compose_for
from contactcenter.actions.consent import consent_status
from contactcenter.actions.conversations import open_outbound_conversation
from contactcenter.actions.outbound import send_outbound
from contactcenter.dispatch import skip_locked
from contactcenter.models import ConsentPurpose, ConsentStatus, Message, MessageStatus, Patient, SenderKind
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

BATCH_SIZE = 200
# How long a run may go silent before the dispatcher assumes its worker died and starts another.
LEASE = dt.timedelta(seconds=60)
# A campaign message still queued this long after it was written lost its delivery task (a worker killed
# between commit and enqueue); delivery is idempotent, so it is simply enqueued again.
STALLED_DELIVERY = dt.timedelta(minutes=2)

SENT, DEFERRED, SKIPPED, GONE, STOPPED = "sent", "deferred", "skipped", "gone", "stopped"


@dataclass
class BatchResult:
    sent: int = 0
    deferred: int = 0
    skipped: int = 0
    # True when the campaign is no longer running (paused, cancelled, completed): stop the run.
    stopped: bool = False
    # How many candidates were looked at; fewer than the limit means no more work is due right now.
    examined: int = 0
    states: Counter[str] = field(default_factory=Counter)


def claimable(campaign_id: int, now: dt.datetime) -> QuerySet[CampaignRecipient]:
    return CampaignRecipient.objects.filter(campaign_id=campaign_id).filter(
        Q(state=RecipientState.PENDING) | Q(state=RecipientState.DEFERRED, deferred_until__lte=now)
    )


def send_batch(campaign_id: int, *, now: dt.datetime | None = None, limit: int = BATCH_SIZE) -> BatchResult:
    """Send to up to `limit` due recipients of a running campaign, one transaction each.

    `now` pins the clock for quiet hours (tests); by default each recipient is judged at its own moment,
    since a throttled batch can take a while.
    """
    result = BatchResult()
    campaign = Campaign.objects.select_related("inbox").get(pk=campaign_id)
    if campaign.status != CampaignStatus.RUNNING:
        result.stopped = True
        return result
    candidates = list(
        claimable(campaign_id, now or timezone.now()).order_by("id").values_list("id", "patient_id")[:limit]
    )
    result.examined = len(candidates)
    if not candidates:
        return result
    # Facts for the whole batch in a few queries; a recipient skipped later just leaves its text unused.
    texts = compose_for(campaign, {patient_id for _, patient_id in candidates})
    key = throttle.sender_key(campaign.inbox)
    for recipient_id, _patient_id in candidates:
        outcome = _send_one(campaign, recipient_id, texts=texts, key=key, now=now)
        if outcome == STOPPED:
            result.stopped = True
            break
        if outcome == SENT:
            result.sent += 1
        elif outcome == DEFERRED:
            result.deferred += 1
        elif outcome != GONE:
            result.skipped += 1
        result.states[outcome] += 1
    if result.sent or result.deferred or result.skipped or result.stopped:
        # After the batch's last commit, whatever the per-message coalescing held back.
        progress.changed(campaign_id, force=True)
    return result


@transaction.atomic
def _send_one(
    campaign: Campaign, recipient_id: int, *, texts: dict[int, Rendered], key: str, now: dt.datetime | None
) -> str:
    moment = now or timezone.now()
    rows = claimable(campaign.pk, moment).filter(pk=recipient_id)
    rows = skip_locked(rows)
    # SQLite (embedded demo) has no row locks; its transactions are IMMEDIATE, one writer at a time.
    recipient = rows.select_related("patient").first()
    if recipient is None:
        # Another worker holds it or already sent it.
        return GONE
    # Read inside the recipient's transaction: a pause or cancel committed before this point stops
    # the very next message.
    status = Campaign.objects.filter(pk=campaign.pk).values_list("status", flat=True).get()
    if status != CampaignStatus.RUNNING:
        return STOPPED
    transaction.on_commit(lambda: progress.changed(campaign.pk))
    allowed = next_allowed_time(moment, recipient.time_zone, campaign.quiet_hours_start, campaign.quiet_hours_end)
    if allowed > moment:
        recipient.state = RecipientState.DEFERRED
        recipient.deferred_until = allowed
        recipient.save(update_fields=["state", "deferred_until"])
        return DEFERRED
    patient = recipient.patient
    if patient.merged_into_id is not None:
        # Merged since launch: the survivor gets it, unless they are a recipient in their own right.
        patient = Patient.objects.get(pk=patient.merged_into_id)
        if CampaignRecipient.objects.filter(campaign_id=campaign.pk, patient=patient).exists():
            return _skip(recipient, RecipientState.SKIPPED_INVALID, "merged")
    if not recipient.phone:
        return _skip(recipient, RecipientState.SKIPPED_INVALID, "no_phone")
    if consent_status(patient=patient, purpose=ConsentPurpose.MARKETING) == ConsentStatus.OPTED_OUT:
        return _skip(recipient, RecipientState.SKIPPED_OPTED_OUT, "opted_out")
    rendered = texts.get(recipient.patient_id)
    if rendered is None or rendered.text is None:
        return _skip(recipient, RecipientState.SKIPPED_MISSING, "missing")
    conversation = open_outbound_conversation(inbox=campaign.inbox, patient=patient)
    throttle.take(key, campaign.messages_per_second)
    try:
        message = send_outbound(
            conversation=conversation,
            body=rendered.text,
            author=None,
            sender_kind=SenderKind.CAMPAIGN,
            purpose=ConsentPurpose.MARKETING,
        )
    except ValidationError as exc:
        # The registry is the last word (an opt-out recorded between our check and the send).
        code = getattr(exc, "code", None) or next((e.code for e in exc.error_list if e.code), None)
        state = RecipientState.SKIPPED_OPTED_OUT if code == "opted_out" else RecipientState.SKIPPED_INVALID
        return _skip(recipient, state, code or "invalid")
    recipient.message = message
    recipient.state = RecipientState.SENT
    recipient.sent_at = message.created_at
    recipient.deferred_until = None
    recipient.save(update_fields=["message", "state", "sent_at", "deferred_until"])
    return SENT


def _skip(recipient: CampaignRecipient, state: str, reason: str) -> str:
    recipient.state = state
    recipient.error_code = reason[:20]
    recipient.save(update_fields=["state", "error_code"])
    return SKIPPED


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


def redeliver_stalled(campaign_id: int, *, now: dt.datetime | None = None) -> int:
    """Enqueue delivery again for campaign messages whose task was lost; returns how many."""
    cutoff = (now or timezone.now()) - STALLED_DELIVERY
    ids = list(
        Message.objects.filter(
            pk__in=CampaignRecipient.objects.filter(campaign_id=campaign_id, state=RecipientState.SENT).values(
                "message_id"
            ),
            status=MessageStatus.QUEUED,
            created_at__lt=cutoff,
        ).values_list("pk", flat=True)
    )
    for message_id in ids:
        transaction.on_commit(functools.partial(enqueue, "contactcenter.tasks.deliver_message", message_id=message_id))
    if ids:
        logger.warning("campaign %s: %d stalled deliveries enqueued again", campaign_id, len(ids))
    return len(ids)


def run_campaign(campaign_id: int) -> str:
    """Send batches until nothing is due or the campaign stops; then settle. The Celery task's body."""
    campaign = Campaign.objects.filter(pk=campaign_id).only("messages_per_second", "status").first()
    if campaign is None or campaign.status != CampaignStatus.RUNNING:
        return campaign.status if campaign is not None else "missing"
    # A batch takes about ten seconds of throttled sending, well inside the lease.
    limit = max(1, min(BATCH_SIZE, campaign.messages_per_second * 10))
    while True:
        extend_lease(campaign_id)
        result = send_batch(campaign_id, limit=limit)
        if result.stopped:
            return "stopped"
        if result.examined < limit:
            break
    return settle(campaign_id).status


# --- The dispatcher's job --------------------------------------------------------------------------


def dispatch_due_campaigns(*, now: dt.datetime | None = None, limit: int = 50) -> int:
    """Start a run for each running campaign whose next action has come: deferred recipients now due,
    or a run whose lease expired (its worker died). Claimed with SKIP LOCKED so concurrent dispatchers
    start each run once; the new lease keeps the next tick from starting it again."""
    now = now or timezone.now()
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

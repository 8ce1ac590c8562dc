"""Replies to campaigns: link a patient's inbound message to the campaign that reached them.

Registered as an inbound hook (contactcenter.inbound_hooks), so it runs inside receive_inbound's
transaction for every newly stored inbound message, after the consent registry has applied keywords:

- the campaign replied to is the latest one sent to the patient whose conversion window
  (Campaign.conversion_window_days) still covers the message, preferring campaigns sent from the inbox
  the reply arrived in (a Messaging Service may answer from another number of the pool, hence only
  "preferring"; a web chat or email to another inbox is not taken for an answer to an SMS campaign);
- a reply sets CampaignRecipient.replied_at (the first reply only) and labels the conversation
  "campaign: <name>", so the agent answering sees which campaign the patient is writing back to;
- an opt-out keyword (STOP, 退订, …) is not counted as a reply: it sets opted_out_at instead, and the
  patient's recipients still waiting in running or paused campaigns are skipped at once. The consent
  registry has already suppressed marketing; this makes the campaign's own numbers say so now rather
  than when the sender reaches the row.
"""

from __future__ import annotations

import datetime as dt
import logging
from functools import partial

from django.db import OperationalError, transaction
from django.utils import timezone

from campaigns.models import CampaignRecipient, CampaignStatus, RecipientState
from campaigns.sending import progress
from contactcenter.actions.consent import OPT_OUT
from contactcenter.actions.conversations import set_labels
from contactcenter.models import ChannelType, Conversation, Label, Message, MessageDirection, Patient

logger = logging.getLogger(__name__)

LABEL_PREFIX = "campaign: "
# A patient is in a handful of campaigns at most; the newest few sends are all a reply can answer.
_CANDIDATES = 20
# Rows the sender has not sent yet and will not, once the patient opted out.
WAITING_STATES = (RecipientState.PENDING, RecipientState.DEFERRED)
LIVE_CAMPAIGN_STATUSES = (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED)
SMS_CHANNELS = (ChannelType.SMS, ChannelType.SIMULATOR)


def campaign_label(name: str) -> str:
    """The conversation label for replies to a campaign; Label.name holds 60 characters."""
    max_length = Label._meta.get_field("name").max_length or 60
    return (LABEL_PREFIX + name.strip())[:max_length]


def recipient_replied_to(*, patient: Patient, inbox_id: int, at: dt.datetime) -> CampaignRecipient | None:
    """The campaign recipient row a message from this patient at `at` answers, or None.

    One indexed query on the patient's recipient rows (the patient_id foreign-key index): nothing
    comes back for the great majority of inbound messages, which are not from campaign recipients.
    """
    candidates = list(
        CampaignRecipient.objects.select_related("campaign")
        .filter(patient=patient, sent_at__isnull=False, sent_at__lte=at)
        .exclude(state=RecipientState.FAILED)
        .order_by("-sent_at", "-id")[:_CANDIDATES]
    )
    in_window = [
        r
        for r in candidates
        if r.sent_at is not None and at <= r.sent_at + dt.timedelta(days=r.campaign.conversion_window_days)
    ]
    same_inbox = [r for r in in_window if r.campaign.inbox_id == inbox_id]
    found = same_inbox or in_window
    return found[0] if found else None


def skip_waiting_recipients(*, patient: Patient) -> int:
    """Take the patient out of every campaign still sending: their waiting rows become skipped_opted_out.

    SKIP LOCKED: a row the sender holds is being sent or deferred right now. Waiting for it could
    deadlock (the sender may want this patient's conversation, which receive_inbound holds); the
    sender's own consent check sees the opt-out once this transaction commits.
    """
    rows = list(
        CampaignRecipient.objects.select_for_update(of=("self",), skip_locked=True)
        .filter(patient=patient, state__in=WAITING_STATES, campaign__status__in=LIVE_CAMPAIGN_STATUSES)
        .values_list("pk", "campaign_id")
    )
    if not rows:
        return 0
    skipped = CampaignRecipient.objects.filter(pk__in=[pk for pk, _c in rows], state__in=WAITING_STATES).update(
        # The reason the sender gives for the same skip (campaigns.sending.engine).
        state=RecipientState.SKIPPED_OPTED_OUT,
        error_code="opted_out",
        deferred_until=None,
    )
    for campaign_id in sorted({c for _pk, c in rows}):
        # The live progress bars of those campaigns move now, not when the sender reaches the rows.
        transaction.on_commit(partial(progress.changed, campaign_id))
    return skipped


def stamp_first(*, recipient_id: int, field: str, at: dt.datetime) -> None:
    """Set replied_at or opted_out_at unless already set: the first reply (or opt-out) wins.

    The recipient row may be held by a delivery status callback for the same message (a patient who
    answers at once), which runs its status hook before it records its event; receive_inbound holds
    the event-order lock by now. Waiting here could deadlock, so the row is taken with NOWAIT and, if
    busy, stamped right after this transaction commits (the conditional update keeps it first-wins).
    """

    def stamp() -> None:
        CampaignRecipient.objects.filter(pk=recipient_id, **{f"{field}__isnull": True}).update(**{field: at})

    try:
        with transaction.atomic():
            locked = CampaignRecipient.objects.select_for_update(of=("self",), nowait=True).filter(pk=recipient_id)
            list(locked.values_list("pk", flat=True))
            stamp()
    except OperationalError:
        transaction.on_commit(stamp)


def label_conversation(*, conversation: Conversation, campaign_name: str) -> bool:
    label = campaign_label(campaign_name)
    names = list(conversation.labels.values_list("name", flat=True))
    if label in names:
        return False
    set_labels(conversation=conversation, label_names=[*names, label], actor=None)
    return True


def may_answer_a_campaign(
    *, message: Message, conversation: Conversation, patient: Patient, keyword: str | None
) -> bool:
    """The hook's interest check: an opt-out (it skips waiting rows), or a patient some campaign was sent to."""
    if message.direction != MessageDirection.INBOUND:
        return False
    return keyword == OPT_OUT or CampaignRecipient.objects.filter(patient=patient, sent_at__isnull=False).exists()


def patients_campaigns_reached(*, inbox_id: int, patient_ids: set[int]) -> set[int]:
    """may_answer_a_campaign for a batch of messages that are no keyword: the patients some campaign was sent to."""
    return set(
        CampaignRecipient.objects.filter(patient_id__in=patient_ids, sent_at__isnull=False)
        .order_by()
        .values_list("patient_id", flat=True)
        .distinct()
    )


def handle_inbound(*, message: Message, conversation: Conversation, patient: Patient, keyword: str | None) -> None:
    """The inbound hook: record a reply (or an opt-out) against the campaign the patient answers."""
    if message.direction != MessageDirection.INBOUND:
        return
    at = message.created_at or timezone.now()
    if keyword == OPT_OUT:
        skipped = skip_waiting_recipients(patient=patient)
        if skipped:
            logger.info("patient %s opted out: %s waiting campaign recipients skipped", patient.pk, skipped)
    recipient = recipient_replied_to(patient=patient, inbox_id=conversation.inbox_id, at=at)
    if recipient is None:
        return
    if recipient.campaign.inbox_id != conversation.inbox_id and conversation.inbox.channel_type not in SMS_CHANNELS:
        # An SMS from another number of the hospital may answer the campaign; a web chat or an email
        # is the patient starting something else.
        return
    stamp_first(recipient_id=recipient.pk, field="opted_out_at" if keyword == OPT_OUT else "replied_at", at=at)
    label_conversation(conversation=conversation, campaign_name=recipient.campaign.name)
    logger.info(
        "inbound message %s linked to campaign %s recipient %s", message.pk, recipient.campaign_id, recipient.pk
    )

"""The one inbound path: every channel hands its normalized record to receive_inbound."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass, field

from django.db import IntegrityError, transaction
from django.utils import timezone

from channels_adapters.base import InboundMessage
from contactcenter import events
from contactcenter.actions.consent import apply_inbound_keywords, keyword_reply
from contactcenter.actions.conversations import assign_round_robin, audience_of
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import live_patient, resolve_patient
from contactcenter.api.shapes import conversation_data, message_data
from contactcenter.inbound_hooks import HookAnswers, batch_interest, run_inbound_hooks
from contactcenter.models import (
    Conversation,
    ConversationStatus,
    Inbox,
    Label,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    PatientIdentity,
    SenderKind,
)

logger = logging.getLogger(__name__)


@dataclass
class BatchReads:
    """What a drain batch reads once for all its messages instead of once per message
    (contactcenter.actions.inbound_queue): the senders' patients, their live conversations in the inbox (locked),
    those conversations' labels, and which inbound hooks may be interested in which patients."""

    patients: dict[tuple[str, str], Patient]
    live: dict[int, Conversation]
    hooks: HookAnswers
    # Teams whose agents were all busy (or offline) when this batch tried to assign: not asked again in the batch.
    full_teams: set[int] = field(default_factory=set)

    @classmethod
    def read(cls, inbox: Inbox, records: list[InboundMessage]) -> BatchReads:
        values = {r.sender.value for r in records}
        patients: dict[tuple[str, str], Patient] = {}
        for identity in PatientIdentity.objects.select_related("patient").filter(value__in=values).order_by():
            patients[(identity.kind, identity.value)] = live_patient(identity.patient)
        patient_ids = {p.pk for p in patients.values()}
        live: dict[int, Conversation] = {}
        # In id order, as every multi-row locker should, so two of them cannot deadlock on each other.
        for conversation in (
            Conversation.objects.select_for_update(no_key=True, of=("self",))
            .select_related("assignee__agent_profile")
            .filter(inbox=inbox, patient_id__in=patient_ids)
            .exclude(status=ConversationStatus.RESOLVED)
            .order_by("pk")
        ):
            live.setdefault(conversation.patient_id, conversation)
        _prefetch_labels(list(live.values()))
        return cls(patients=patients, live=live, hooks=batch_interest(inbox_id=inbox.pk, patient_ids=patient_ids))


def _prefetch_labels(conversations: list[Conversation]) -> None:
    """Fill each conversation's labels as prefetch_related would, in one query for all of them."""
    if not conversations:
        return
    found: dict[int, list[Label]] = {c.pk: [] for c in conversations}
    links = Conversation.labels.through.objects.filter(conversation_id__in=found).select_related("label")
    for link in links.order_by("label_id"):
        found[link.conversation_id].append(link.label)
    for conversation in conversations:
        labels = conversation.labels.all()
        # What prefetch_related leaves behind; add/remove/set on the labels clear it, as after a prefetch.
        labels._result_cache = found[conversation.pk]
        labels._prefetch_done = True  # type: ignore[attr-defined]
        conversation._prefetched_objects_cache = {"labels": labels}  # type: ignore[attr-defined]


@dataclass(frozen=True)
class InboundResult:
    message: Message
    conversation: Conversation
    patient: Patient
    # False when the provider retried a message we already stored: nothing new was written.
    created: bool


def receive_inbound(record: InboundMessage, *, inbox: Inbox | None = None) -> InboundResult:
    """Identity resolution → conversation reopened or created → message → events on commit.

    Idempotent on (inbox, provider_message_id): a provider retry returns the stored message and
    publishes nothing. Concurrent duplicates race on the unique constraint; the loser's savepoint
    rolls back and it returns the winner's row. `inbox`, when the caller has it, saves reading it again.
    """
    if record.provider_message_id:
        existing = _stored(record)
        if existing is not None:
            return existing
    try:
        with transaction.atomic(), events.deferred():
            return receive_new(record, inbox=inbox)
    except IntegrityError:
        if record.provider_message_id:
            existing = _stored(record)
            if existing is not None:
                return existing
    # Lost the race to open (or reopen) this patient's live conversation in the inbox; the winner's
    # row is committed now, so one more attempt appends to it.
    with transaction.atomic(), events.deferred():
        return receive_new(record, inbox=inbox)


def _stored(record: InboundMessage) -> InboundResult | None:
    # Asked of every message and almost always "no": a bare probe of the unique index (no join, no model, no
    # ORDER BY), and the message with its conversation and patient read only on a hit.
    found = (
        Message.objects.filter(inbox_id=record.inbox_id, provider_message_id=record.provider_message_id)
        .order_by()
        .values_list("pk", flat=True)[:1]
    )
    pk = next(iter(found), None)
    if pk is None:
        return None
    message = Message.objects.select_related("conversation__patient").get(pk=pk)
    return InboundResult(message, message.conversation, message.conversation.patient, created=False)


def receive_new(
    record: InboundMessage, *, inbox: Inbox | None = None, batch: BatchReads | None = None
) -> InboundResult:
    """receive_inbound's work for a message not stored yet, inside the caller's transaction (and, for its events
    to be written last, its events.deferred() block). A duplicate provider id raises IntegrityError. `batch`: what
    a drain batch read for all its messages (the caller holds the inbox's drain lock)."""
    if inbox is None:
        inbox = Inbox.objects.get(pk=record.inbox_id)
    patient = batch.patients.get((record.sender.kind, record.sender.value)) if batch is not None else None
    new_patient = False
    if patient is None:
        resolved = resolve_patient(
            kind=record.sender.kind,
            value=record.sender.value,
            name=record.sender.name,
            also_known_as=record.sender.also_known_as,
        )
        patient, new_patient = resolved.patient, resolved.created
        if batch is not None:
            batch.patients[(record.sender.kind, record.sender.value)] = patient
    received_at = record.received_at or timezone.now()
    live = batch.live.get(patient.pk) if batch is not None else None
    if live is not None:
        conversation, created_conversation, changed = live, False, _woken(live)
    else:
        conversation, created_conversation, changed = _live_conversation(
            inbox=inbox,
            patient=patient,
            now=received_at,
            # The batch read every live conversation of the patients it knew; a patient just created has none at all.
            none_live=batch is not None or new_patient,
            none_at_all=new_patient,
        )
        if batch is not None:
            _prefetch_labels([conversation])
            batch.live[patient.pk] = conversation
    # Known already: the event payloads below need not read them again.
    conversation.inbox = inbox
    conversation.patient = patient

    message = Message.objects.create(
        conversation=conversation,
        inbox=inbox,
        direction=MessageDirection.INBOUND,
        sender_kind=SenderKind.PATIENT,
        body=record.body,
        attachments=record.attachments,
        status=MessageStatus.RECEIVED,
        provider_message_id=record.provider_message_id,
        provider_payload=dict(record.provider_payload),
        created_at=received_at,
        status_changed_at=received_at,
    )
    # Before the hooks, with the context they claim: "N" answering a survey's yes/no question is no opt-out.
    keyword = apply_inbound_keywords(
        message=message, conversation=conversation, patient=patient, channel=inbox.channel_type
    )
    # The row is locked (_live_conversation) or new, so the counters are computed here rather than re-read.
    conversation.unread_count += 1
    conversation.last_message_at = received_at
    # An image-only message still needs something in the list; the paperclip needs no translation.
    conversation.last_message_preview = record.body[:140] or ("📎" if record.attachments else "")
    conversation.save(update_fields=["unread_count", "last_message_at", "last_message_preview"])
    if inbox.auto_assign and conversation.assignee_id is None:
        if batch is None or conversation.team_id not in batch.full_teams:
            assign_round_robin(conversation=conversation)
        if conversation.assignee_id is not None:
            changed.append("assignee")
        elif batch is not None:
            batch.full_teams.add(conversation.team_id)

    audience = audience_of(conversation)
    if created_conversation:
        events.record(events.ConversationAdded(conversation=conversation_data(conversation)), audience)
    else:
        events.record(
            events.ConversationUpdated(
                conversation=conversation_data(conversation), changed=[*changed, "last_message_at", "unread_count"]
            ),
            audience,
        )
    events.record(events.MessageAdded(message=message_data(message)), audience)
    # After the message's own events, so a survey's next question lands after the reply it answers.
    hooks_ran = run_inbound_hooks(
        message=message,
        conversation=conversation,
        patient=patient,
        keyword=keyword.kind if keyword else None,
        known=batch.hooks if batch is not None else None,
    )
    if hooks_ran and batch is not None:
        # A hook may have labelled the conversation through its own copy of the row: the batch's next message
        # about it reads the labels again rather than announce the ones read before.
        getattr(conversation, "_prefetched_objects_cache", {}).pop("labels", None)
    reply = keyword_reply(keyword, patient=patient) if keyword is not None else None
    if reply is not None:
        # Carriers expect HELP answered and STOP/START confirmed; service messages, sent whatever the consent.
        send_outbound(conversation=conversation, body=reply, author=None, sender_kind=SenderKind.SYSTEM)
    logger.info(
        "inbound message %s inbox %s conversation %s patient %s", message.pk, inbox.pk, conversation.pk, patient.pk
    )
    return InboundResult(message, conversation, patient, created=True)


def _woken(live: Conversation) -> list[str]:
    """A patient writing back is exactly what snoozed and pending conversations wait for: open them."""
    if live.status in (ConversationStatus.SNOOZED, ConversationStatus.PENDING):
        live.status = ConversationStatus.OPEN
        live.snoozed_until = None
        live.save(update_fields=["status", "snoozed_until"])
        return ["status"]
    return []


def _live_conversation(
    *, inbox: Inbox, patient: Patient, now: dt.datetime, none_live: bool = False, none_at_all: bool = False
) -> tuple[Conversation, bool, list[str]]:
    """The patient's live thread in this inbox; else the last one reopened if recent; else a new one.

    `none_live`: the caller knows there is no live thread (a drain batch read them all); `none_at_all`: the patient
    was created just now. Should a concurrent transaction open one meanwhile, the partial unique index on live
    threads refuses the second, and the caller's retry finds it."""
    # NO KEY UPDATE: a concurrent delivery's deferred foreign-key check (FOR KEY SHARE on this row,
    # taken at its commit while it holds the event-order lock) must not wait behind us, or we deadlock.
    live = (
        None
        if none_live or none_at_all
        # The assignee comes along for the event payload; only the conversation's row is locked.
        else (
            Conversation.objects.select_for_update(no_key=True, of=("self",))
            .select_related("assignee__agent_profile")
            .filter(inbox=inbox, patient=patient)
            .exclude(status=ConversationStatus.RESOLVED)
            .first()
        )
    )
    if live is not None:
        return live, False, _woken(live)
    recent = (
        None
        if none_at_all
        else (
            Conversation.objects.select_for_update(no_key=True)
            .filter(
                inbox=inbox,
                patient=patient,
                status=ConversationStatus.RESOLVED,
                resolved_at__gte=now - dt.timedelta(hours=inbox.reopen_window_hours),
            )
            .order_by("-resolved_at")
            .first()
        )
    )
    if recent is not None:
        recent.status = ConversationStatus.OPEN
        recent.resolved_at = None
        recent.save(update_fields=["status", "resolved_at"])
        return recent, False, ["status"]
    conversation = Conversation.objects.create(
        inbox=inbox, patient=patient, team_id=inbox.team_id, last_message_at=now, created_at=now
    )
    return conversation, True, []

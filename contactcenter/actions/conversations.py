"""Conversation state: assignment (manual and round robin), resolve/reopen/snooze, labels, notes."""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction
from django.db.models import Count, F
from django.utils import timezone

from contactcenter import access, events
from contactcenter.api.shapes import conversation_data, note_data
from contactcenter.models import (
    AgentProfile,
    Availability,
    ChannelType,
    Conversation,
    ConversationStatus,
    Inbox,
    Label,
    Note,
    Patient,
    Role,
    Team,
)

logger = logging.getLogger(__name__)

ASSIGNABLE_ROLES = (Role.AGENT, Role.NURSE, Role.SUPERVISOR)


def audience_of(conversation: Conversation) -> events.Audience:
    return events.Audience(
        inbox_id=conversation.inbox_id,
        team_id=conversation.team_id,
        user_id=conversation.assignee_id,
        conversation_id=conversation.pk,
        hint_conversation=_patient_may_listen(conversation),
    )


def _patient_may_listen(conversation: Conversation) -> bool:
    """Only the web chat widget listens on a conversation's own group. A campaign chunk touches hundreds of
    SMS conversations, and hinting each group nobody joined costs a Redis round trip apiece. When the
    inbox is not loaded, hint anyway rather than spend a query to find out."""
    if Conversation._meta.get_field("inbox").is_cached(conversation):
        return conversation.inbox.channel_type == ChannelType.WEBCHAT
    return True


def publish_conversation_update(conversation: Conversation, changed: list[str]) -> None:
    events.record(
        events.ConversationUpdated(conversation=conversation_data(conversation), changed=changed),
        audience_of(conversation),
    )


def _locked(conversation: Conversation) -> Conversation:
    return (
        Conversation.objects.select_for_update(of=("self",), no_key=True)
        .select_related("inbox", "patient")
        .get(pk=conversation.pk)
    )


@transaction.atomic
@events.written_last
def assign_conversation(*, conversation: Conversation, assignee: User | None, actor: User | None) -> Conversation:
    """Manual assignment (or unassignment with None). The assignee must be able to see the conversation."""
    conversation = _locked(conversation)
    if assignee is not None and (
        access.role_of(assignee) not in ASSIGNABLE_ROLES or not access.can_view_conversation(assignee, conversation)
    ):
        raise ValidationError({"assignee": ["This person cannot work on this conversation's inbox."]})
    previous = conversation.assignee_id
    if previous == (assignee.pk if assignee else None):
        return conversation
    conversation.assignee = assignee
    conversation.save(update_fields=["assignee"])
    publish_conversation_update(conversation, ["assignee"])
    if previous is not None:
        # The previous assignee may not see the inbox otherwise; tell them it left their list.
        events.record(
            events.ConversationUpdated(conversation=conversation_data(conversation), changed=["assignee"]),
            events.Audience(user_id=previous, conversation_id=conversation.pk),
        )
    return conversation


def assign_round_robin(*, conversation: Conversation) -> Conversation:
    """Hand the conversation to the online agent of its team who has waited longest, within capacity.

    Call inside a transaction. Candidate profiles are locked (in a stable order, so two assigners
    cannot deadlock) before counting their open conversations, so concurrent assignments cannot push
    an agent over capacity.
    """
    candidates = list(
        # Only the profiles: locking the joined auth_user rows too would deadlock against event
        # inserts, whose foreign key check takes a share lock on the same user row.
        AgentProfile.objects.select_for_update(of=("self",))
        .filter(teams=conversation.team_id, role=Role.AGENT, availability=Availability.ONLINE, user__is_active=True)
        .order_by("pk")
    )
    if not candidates:
        return conversation
    load = dict(
        Conversation.objects.filter(
            assignee_id__in=[p.user_id for p in candidates],
        )
        .exclude(status=ConversationStatus.RESOLVED)
        .values_list("assignee_id")
        .annotate(n=Count("id"))
        .values_list("assignee_id", "n")
    )
    free = [p for p in candidates if load.get(p.user_id, 0) < p.capacity]
    if not free:
        return conversation
    epoch = dt.datetime.min.replace(tzinfo=dt.UTC)
    chosen = min(free, key=lambda p: (p.last_assigned_at or epoch, p.pk))
    chosen.last_assigned_at = timezone.now()
    chosen.save(update_fields=["last_assigned_at"])
    conversation.assignee_id = chosen.user_id
    conversation.save(update_fields=["assignee"])
    logger.info("conversation %s auto-assigned to user %s", conversation.pk, chosen.user_id)
    return conversation


def open_outbound_conversation(*, inbox: Inbox, patient: Patient) -> Conversation:
    """The patient's live thread in this inbox for a message we start (a survey), else a new pending one.

    Pending: it waits on the patient, and their reply opens it (see inbound._live_conversation), so
    an unanswered system message does not sit in the agents' open queue.
    """
    live = Conversation.objects.filter(inbox=inbox, patient=patient).exclude(status=ConversationStatus.RESOLVED).first()
    if live is not None:
        return live
    try:
        with transaction.atomic():
            conversation = Conversation.objects.create(
                inbox=inbox, patient=patient, team_id=inbox.team_id, status=ConversationStatus.PENDING
            )
    except IntegrityError:
        # The patient wrote in at the same moment and their message opened the thread; use it.
        return (
            Conversation.objects.filter(inbox=inbox, patient=patient).exclude(status=ConversationStatus.RESOLVED).get()
        )
    events.record(events.ConversationAdded(conversation=conversation_data(conversation)), audience_of(conversation))
    return conversation


@dataclass(frozen=True)
class OpenedConversations:
    # Patient id → the id of their live conversation in the inbox.
    by_patient: dict[int, int]
    # Those this call created. Not yet announced: queue_outbound_batch announces each with its first message.
    added: frozenset[int]


def open_outbound_conversations(*, inbox: Inbox, patient_ids: list[int]) -> OpenedConversations:
    """open_outbound_conversation for a batch (a campaign chunk): the live thread per patient, new pending
    ones for the rest, in three statements. Call inside the caller's transaction.

    A thread a patient's own message opens at the same moment wins: the insert skips the conflict on the
    one-live-thread constraint and the second read finds it.
    """
    wanted = set(patient_ids)

    def live() -> dict[int, int]:
        rows = Conversation.objects.filter(inbox=inbox, patient_id__in=wanted).exclude(
            status=ConversationStatus.RESOLVED
        )
        return dict(rows.values_list("patient_id", "pk"))

    found = live()
    missing = wanted - set(found)
    if not missing:
        return OpenedConversations(found, frozenset())
    Conversation.objects.bulk_create(
        [
            Conversation(inbox=inbox, patient_id=pid, team_id=inbox.team_id, status=ConversationStatus.PENDING)
            for pid in sorted(missing)
        ],
        ignore_conflicts=True,
    )
    found = live()
    return OpenedConversations(found, frozenset(pk for pid, pk in found.items() if pid in missing))


@transaction.atomic
@events.written_last
def resolve_conversation(*, conversation: Conversation, actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    if conversation.status == ConversationStatus.RESOLVED:
        return conversation
    conversation.status = ConversationStatus.RESOLVED
    conversation.resolved_at = timezone.now()
    conversation.snoozed_until = None
    conversation.unread_count = 0
    conversation.save(update_fields=["status", "resolved_at", "snoozed_until", "unread_count"])
    publish_conversation_update(conversation, ["status"])
    return conversation


@transaction.atomic
@events.written_last
def reopen_conversation(*, conversation: Conversation, actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    if conversation.status == ConversationStatus.OPEN:
        return conversation
    if conversation.status == ConversationStatus.RESOLVED and (
        Conversation.objects.filter(patient_id=conversation.patient_id, inbox_id=conversation.inbox_id)
        .exclude(status=ConversationStatus.RESOLVED)
        .exists()
    ):
        raise ValidationError("This patient already has a live conversation in this inbox.")
    conversation.status = ConversationStatus.OPEN
    conversation.snoozed_until = None
    conversation.resolved_at = None
    conversation.save(update_fields=["status", "snoozed_until", "resolved_at"])
    publish_conversation_update(conversation, ["status"])
    return conversation


@transaction.atomic
@events.written_last
def set_pending(*, conversation: Conversation, actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    if conversation.status == ConversationStatus.RESOLVED:
        raise ValidationError("Reopen a resolved conversation before marking it pending.")
    conversation.status = ConversationStatus.PENDING
    conversation.snoozed_until = None
    conversation.save(update_fields=["status", "snoozed_until"])
    publish_conversation_update(conversation, ["status"])
    return conversation


@transaction.atomic
@events.written_last
def snooze_conversation(*, conversation: Conversation, until: dt.datetime, actor: User | None) -> Conversation:
    """The conversation comes back by itself at `until` (the dispatcher wakes it) or on a new message."""
    if until <= timezone.now():
        raise ValidationError({"until": ["Snooze until a time in the future."]})
    conversation = _locked(conversation)
    if conversation.status == ConversationStatus.RESOLVED:
        raise ValidationError("A resolved conversation cannot be snoozed.")
    conversation.status = ConversationStatus.SNOOZED
    conversation.snoozed_until = until
    conversation.save(update_fields=["status", "snoozed_until"])
    publish_conversation_update(conversation, ["status", "snoozed_until"])
    return conversation


def wake_snoozed_conversations(*, now: dt.datetime | None = None, limit: int = 200) -> int:
    """Periodic: reopen conversations whose snooze ran out. Safe to run from several dispatchers."""
    now = now or timezone.now()
    woken = 0
    with transaction.atomic():
        due = (
            Conversation.objects.select_for_update(skip_locked=True, of=("self",), no_key=True)
            .filter(status=ConversationStatus.SNOOZED, snoozed_until__lte=now)
            .select_related("inbox", "patient")
            .order_by("snoozed_until")[:limit]
        )
        for conversation in due:
            conversation.status = ConversationStatus.OPEN
            conversation.snoozed_until = None
            conversation.save(update_fields=["status", "snoozed_until"])
            publish_conversation_update(conversation, ["status"])
            woken += 1
    return woken


@transaction.atomic
@events.written_last
def set_labels(*, conversation: Conversation, label_names: list[str], actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    labels = [Label.objects.get_or_create(name=name.strip()[:60])[0] for name in label_names if name.strip()]
    conversation.labels.set(labels)
    publish_conversation_update(conversation, ["labels"])
    return conversation


@transaction.atomic
@events.written_last
def set_priority(*, conversation: Conversation, priority: int, actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    conversation.priority = priority
    conversation.save(update_fields=["priority"])
    publish_conversation_update(conversation, ["priority"])
    return conversation


@transaction.atomic
@events.written_last
def transfer_to_team(*, conversation: Conversation, team: Team, actor: User | None) -> Conversation:
    conversation = _locked(conversation)
    previous_team, previous_assignee = conversation.team_id, conversation.assignee_id
    conversation.team = team
    conversation.assignee = None
    conversation.save(update_fields=["team", "assignee"])
    publish_conversation_update(conversation, ["team", "assignee"])
    left_team = previous_team if previous_team != team.pk else None
    if left_team is not None or previous_assignee is not None:
        # The old team and assignee may not see the inbox; tell them it left their lists.
        events.record(
            events.ConversationUpdated(conversation=conversation_data(conversation), changed=["team", "assignee"]),
            events.Audience(team_id=left_team, user_id=previous_assignee, conversation_id=conversation.pk),
        )
    return conversation


@transaction.atomic
@events.written_last
def mark_read(*, conversation: Conversation, actor: User | None) -> Conversation:
    updated = Conversation.objects.filter(pk=conversation.pk, unread_count__gt=0).update(unread_count=0)
    if updated:
        conversation = _locked(conversation)
        publish_conversation_update(conversation, ["unread_count"])
    return conversation


@transaction.atomic
@events.written_last
def add_note(*, conversation: Conversation, author: User, body: str) -> Note:
    body = body.strip()
    if not body:
        raise ValidationError({"body": ["A note cannot be empty."]})
    note = Note.objects.create(conversation=conversation, author=author, body=body[:10000])
    events.record(events.NoteAdded(note=note_data(note)), audience_of(conversation))
    return note


def open_load_for(user_ids: list[int]) -> dict[int, int]:
    rows = (
        Conversation.objects.filter(assignee_id__in=user_ids)
        .exclude(status=ConversationStatus.RESOLVED)
        .values("assignee_id")
        .annotate(n=Count("id"))
    )
    return {row["assignee_id"]: row["n"] for row in rows}


def bump_unread(conversation_id: int) -> None:
    Conversation.objects.filter(pk=conversation_id).update(unread_count=F("unread_count") + 1)

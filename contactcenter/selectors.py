"""Reads for views, APIs and sockets. Every one starts from what the user may see."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from django.db.models import Count, Q, QuerySet

from contactcenter import access
from contactcenter.access import StaffUser
from contactcenter.models import (
    CannedResponse,
    ConsentPurpose,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Event,
    Message,
    Patient,
)


def conversation_list_for(
    *,
    user: StaffUser,
    view: str = "all",
    status: str = ConversationStatus.OPEN,
    inbox_id: int | None = None,
    label: str | None = None,
    patient_id: int | None = None,
) -> QuerySet[Conversation]:
    qs = access.conversations_visible_to(user).select_related("patient", "inbox", "assignee__agent_profile")
    if view == "mine":
        qs = qs.filter(assignee_id=user.pk)
    elif view == "unassigned":
        qs = qs.filter(assignee__isnull=True)
    if status != "any":
        qs = qs.filter(status=status)
    if inbox_id is not None:
        qs = qs.filter(inbox_id=inbox_id)
    if label:
        qs = qs.filter(labels__name=label)
    if patient_id is not None:
        qs = qs.filter(patient_id=patient_id)
    return qs.prefetch_related("labels").order_by("-priority", "-last_message_at", "-id")


def conversation_for(*, user: StaffUser, conversation_id: int) -> Conversation | None:
    return (
        access.conversations_visible_to(user)
        .select_related("patient", "inbox", "assignee__agent_profile")
        .prefetch_related("labels")
        .filter(pk=conversation_id)
        .first()
    )


def message_page_for(*, conversation: Conversation, limit: int = 50, before_id: int | None = None) -> list[Message]:
    """The latest `limit` messages of a conversation (found with conversation_for), oldest first.

    To page back, pass the oldest id already shown as before_id. Reading newest-first with a LIMIT
    walks the end of the (conversation, created_at) index, so a thread with thousands of messages
    costs what a short one does; the whole thread is never loaded.
    """
    qs = conversation.messages.select_related("author__agent_profile")
    if before_id is not None:
        anchor = (
            Message.objects.filter(pk=before_id, conversation_id=conversation.pk)
            .values_list("created_at", flat=True)
            .first()
        )
        if anchor is None:
            return []
        # The redundant `created_at <= anchor` bounds the index range; the OR alone would be a filter
        # applied to every newer message the backward scan passes first.
        qs = qs.filter(created_at__lte=anchor).filter(Q(created_at__lt=anchor) | Q(id__lt=before_id))
    page = list(qs.order_by("-created_at", "-id")[:limit])
    page.reverse()
    return page


@dataclass(frozen=True)
class UnreadCounts:
    """Conversations with unread patient messages, as the inbox's badges show them.

    by_inbox maps inbox id to its count; an inbox the user may see but that is absent has none.
    """

    mine: int
    unassigned: int
    total: int
    by_inbox: dict[int, int]


def unread_counts_for(*, user: StaffUser, status: str = ConversationStatus.OPEN) -> UnreadCounts:
    """Counts over the same conversations conversation_list_for would list for `status`, in one query."""
    qs = access.conversations_visible_to(user).filter(unread_count__gt=0)
    if status != "any":
        qs = qs.filter(status=status)
    # Counting the never-null inbox_id rather than id keeps every column read inside conv_unread_idx,
    # so the index alone answers (Django allows no COUNT(*) with a filter).
    rows = (
        qs.order_by()
        .values("inbox_id")
        .annotate(
            total=Count("inbox_id"),
            mine=Count("inbox_id", filter=Q(assignee_id=user.pk)),
            unassigned=Count("inbox_id", filter=Q(assignee__isnull=True)),
        )
    )
    by_inbox: dict[int, int] = {}
    mine = unassigned = 0
    for row in rows:
        by_inbox[row["inbox_id"]] = row["total"]
        mine += row["mine"]
        unassigned += row["unassigned"]
    return UnreadCounts(mine=mine, unassigned=unassigned, total=sum(by_inbox.values()), by_inbox=by_inbox)


def patient_search(*, user: StaffUser, query: str = "") -> QuerySet[Patient]:
    qs = access.patients_visible_to(user)
    query = query.strip()
    if query:
        match = Q(name__icontains=query) | Q(identities__value__icontains=query)
        if query.isascii() and query.isdigit():  # "²" is a digit to isdigit(), not to int()
            match |= Q(pk=int(query))
        qs = qs.filter(match).distinct()
    return qs.order_by("-updated_at", "-id")


def patient_for(*, user: StaffUser, patient_id: int) -> Patient | None:
    return access.patients_visible_to(user).filter(pk=patient_id).prefetch_related("tags").first()


def patient_360(*, user: StaffUser, patient: Patient) -> dict[str, Any]:
    """Identities, demographics, visits and every past conversation the user may see, across channels."""
    from contactcenter.api.shapes import ConversationSerializer, IdentitySerializer, VisitSerializer

    conversations = (
        access.conversations_visible_to(user)
        .filter(patient=patient)
        .select_related("patient", "inbox", "assignee__agent_profile")
        .prefetch_related("labels")
        .order_by("-last_message_at")
    )
    return {
        "id": patient.pk,
        "name": patient.name,
        "given_name": patient.given_name,
        "gender": patient.gender,
        "birth_date": patient.birth_date.isoformat() if patient.birth_date else None,
        "age": patient.age(),
        "age_band": patient.age_band,
        "region": patient.region,
        "city": patient.city,
        "language": patient.language,
        "time_zone": patient.time_zone,
        "vip_tier": patient.vip_tier,
        "tags": sorted(t.name for t in patient.tags.all()),
        "custom_attributes": patient.custom_attributes,
        "identities": IdentitySerializer(patient.identities.all(), many=True).data,
        "visits": VisitSerializer(patient.visits.select_related("department")[:50], many=True).data,
        "conversations": ConversationSerializer(conversations[:50], many=True).data,
        "consent": consent_summary(patient=patient),
    }


def consent_summary(*, patient: Patient) -> dict[str, Any]:
    current = dict(patient.consents.values_list("purpose", "status"))
    history = patient.consent_changes.select_related("actor")[:10]
    return {
        # Marketing starts unknown (never granted by default); service goes unless refused.
        "marketing": current.get(ConsentPurpose.MARKETING, ConsentStatus.UNKNOWN),
        "service": current.get(ConsentPurpose.SERVICE, ConsentStatus.OPTED_IN),
        "history": [
            {
                "purpose": c.purpose,
                "status": c.status,
                "source": c.source,
                "channel": c.channel,
                "keyword": c.keyword,
                "by": c.actor.get_username() if c.actor else "",
                "at": c.at.isoformat(),
            }
            for c in history
        ],
    }


def canned_responses_for(*, user: StaffUser, query: str = "") -> QuerySet[CannedResponse]:
    qs = CannedResponse.objects.filter(Q(team__isnull=True) | Q(team_id__in=access.team_ids_of(user)))
    if query:
        qs = qs.filter(Q(short_code__icontains=query) | Q(content__icontains=query))
    return qs


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

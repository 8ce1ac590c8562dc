"""Reads for views, APIs and sockets. Every one starts from what the user may see."""

from __future__ import annotations

from typing import Any

from django.db.models import Q, QuerySet

from contactcenter import access
from contactcenter.access import StaffUser
from contactcenter.models import CannedResponse, Conversation, ConversationStatus, Event, Patient


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


def patient_search(*, user: StaffUser, query: str = "") -> QuerySet[Patient]:
    qs = access.patients_visible_to(user)
    query = query.strip()
    if query:
        match = Q(name__icontains=query) | Q(identities__value__icontains=query)
        if query.isdigit():
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
    }


def canned_responses_for(*, user: StaffUser, query: str = "") -> QuerySet[CannedResponse]:
    qs = CannedResponse.objects.filter(Q(team__isnull=True) | Q(team_id__in=access.team_ids_of(user)))
    if query:
        qs = qs.filter(Q(short_code__icontains=query) | Q(content__icontains=query))
    return qs


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

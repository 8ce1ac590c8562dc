"""Who may see what. Every view, API endpoint and socket asks here; nothing decides on its own.

Agents and nurses see their teams' inboxes; supervisors and admins see everything; marketers see no
conversations or patient profiles (they work with segments and campaigns).
"""

from __future__ import annotations

from django.contrib.auth.models import AnonymousUser, User
from django.db.models import Q, QuerySet

from contactcenter.models import AgentProfile, Conversation, Inbox, Patient, Role

StaffUser = User | AnonymousUser

INBOX_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR, Role.AGENT, Role.NURSE})
SEE_ALL_ROLES = frozenset({Role.ADMIN, Role.SUPERVISOR})


def profile_of(user: StaffUser | None) -> AgentProfile | None:
    if user is None or not user.is_authenticated:
        return None
    try:
        return user.agent_profile
    except AgentProfile.DoesNotExist:
        return None


def role_of(user: StaffUser | None) -> str | None:
    profile = profile_of(user)
    return profile.role if profile else None


def can_use_inbox(user: StaffUser | None) -> bool:
    return role_of(user) in INBOX_ROLES


def sees_everything(user: StaffUser | None) -> bool:
    return role_of(user) in SEE_ALL_ROLES


def is_admin(user: StaffUser | None) -> bool:
    return role_of(user) == Role.ADMIN


def team_ids_of(user: StaffUser | None) -> set[int]:
    profile = profile_of(user)
    if profile is None:
        return set()
    return set(profile.teams.values_list("id", flat=True))


def inboxes_visible_to(user: StaffUser | None) -> QuerySet[Inbox]:
    if not can_use_inbox(user):
        return Inbox.objects.none()
    if sees_everything(user):
        return Inbox.objects.all()
    return Inbox.objects.filter(team_id__in=team_ids_of(user))


def conversations_visible_to(user: StaffUser | None) -> QuerySet[Conversation]:
    if not can_use_inbox(user):
        return Conversation.objects.none()
    if sees_everything(user):
        return Conversation.objects.all()
    teams = team_ids_of(user)
    return Conversation.objects.filter(Q(inbox__team_id__in=teams) | Q(team_id__in=teams))


def patients_visible_to(user: StaffUser | None) -> QuerySet[Patient]:
    """Agents reach a patient through a conversation in their inboxes or a visit to their department."""
    live = Patient.objects.filter(merged_into__isnull=True)
    if not can_use_inbox(user):
        return Patient.objects.none()
    if sees_everything(user):
        return live
    teams = team_ids_of(user)
    return live.filter(
        Q(conversations__inbox__team_id__in=teams)
        | Q(conversations__team_id__in=teams)
        | Q(visits__department_id__in=teams)
    ).distinct()


def can_view_conversation(user: StaffUser | None, conversation: Conversation) -> bool:
    if not can_use_inbox(user):
        return False
    if sees_everything(user):
        return True
    teams = team_ids_of(user)
    return conversation.inbox.team_id in teams or conversation.team_id in teams


def can_view_patient(user: StaffUser | None, patient: Patient) -> bool:
    return patients_visible_to(user).filter(pk=patient.pk).exists()


def event_filter_for(user: StaffUser | None) -> Q | None:
    """The Q over Event rows this user may read; None means nothing at all."""
    if not can_use_inbox(user):
        return None
    if sees_everything(user):
        return Q()
    teams = team_ids_of(user)
    inbox_ids = list(Inbox.objects.filter(team_id__in=teams).values_list("id", flat=True))
    assert user is not None
    return Q(inbox_id__in=inbox_ids) | Q(team_id__in=teams) | Q(user_id=user.pk)

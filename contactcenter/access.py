"""Who may see what. Every view, API endpoint and socket asks here; nothing decides on its own.

Agents and nurses see their teams' inboxes; supervisors and admins see everything; marketers see no
conversations or patient profiles (they work with segments and campaigns).

The agent socket asks the same questions as REST, but answers them from a snapshot (EventVisibility) that it
takes at connect and re-takes whenever the staff member's account changes (contactcenter.actions.staff) or
every few seconds, so each event is checked in memory instead of with a query per socket.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable
from dataclasses import dataclass
from enum import Enum
from importlib import import_module

from django.conf import settings
from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY, get_user_model, load_backend
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db.models import Q, QuerySet
from django.utils.crypto import constant_time_compare

from contactcenter import events
from contactcenter.models import AgentProfile, Conversation, Inbox, Patient, Role, Team

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


# --- The agent socket ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Placement:
    """Where a conversation is now: what can_view_conversation looks at, and whose patient it is (for the audit)."""

    inbox_id: int
    team_id: int
    patient_id: int


class Delivery(Enum):
    SEND = "send"
    # A conversation event addressed to this user (they held the conversation) about a conversation they may no
    # longer see: they get its id and nothing else, so their list can drop the row.
    WITHDRAW = "withdraw"
    SKIP = "skip"


@dataclass(frozen=True)
class EventVisibility:
    """What one staff member may read from the event stream, taken once and then checked in memory.

    Two snapshots compare equal when they allow the same: the socket re-takes its snapshot when told the
    account changed (or every few seconds) and closes when the answer differs.
    """

    user_id: int
    everything: bool
    team_ids: frozenset[int]
    inbox_ids: frozenset[int]

    def sees_conversation(self, placement: Placement | None) -> bool:
        """can_view_conversation, from the conversation's current placement (None: it no longer exists)."""
        if placement is None:
            return False
        if self.everything:
            return True
        return placement.inbox_id in self.inbox_ids or placement.team_id in self.team_ids

    def audience_q(self) -> Q:
        """The events addressed to this user when they were written (by inbox, team or user).

        A superset of what delivery() sends: it is the database's half of the check, delivery() the rest.
        """
        if self.everything:
            return Q()
        return Q(inbox_id__in=self.inbox_ids) | Q(team_id__in=self.team_ids) | Q(user_id=self.user_id)

    def delivery(
        self,
        *,
        event_type: str,
        inbox_id: int | None,
        team_id: int | None,
        user_id: int | None,
        conversation_id: int | None,
        placement: Placement | None,
    ) -> Delivery:
        """Whether to send one stored event, given its audience and its conversation's placement now.

        An event about a conversation goes out only while the user may see that conversation: REST's rule, at
        the moment of sending. Its user audience (the assignee) never widens that, so a conversation kept by
        someone who left its team stops reaching them. Events about no conversation (presence) go to their
        audience, the user's own included.
        """
        if self.everything:
            return Delivery.SEND
        addressed = inbox_id in self.inbox_ids or team_id in self.team_ids or user_id == self.user_id
        if not addressed:
            return Delivery.SKIP
        if conversation_id is None or self.sees_conversation(placement):
            return Delivery.SEND
        if user_id == self.user_id and event_type == "conversation":
            return Delivery.WITHDRAW
        return Delivery.SKIP

    def covers(self, other: EventVisibility) -> bool:
        """Everything `other` allows, this allows too, within the same kind of role (the same user, given a team
        or a new inbox of a team). A move to or from seeing everything is a role change, which the page renders
        differently: not a widening."""
        if self.user_id != other.user_id or self.everything != other.everything:
            return False
        return self.everything or (self.team_ids >= other.team_ids and self.inbox_ids >= other.inbox_ids)

    def groups(self) -> list[str]:
        """The channel-layer groups a socket of this user joins: the user's own, where account changes are pushed
        (contactcenter.actions.staff.notify_sockets). Events reach it through the process's hub
        (contactcenter.fanout), whatever its inboxes and teams."""
        return [events.user_group(self.user_id)]


def event_visibility_for(user: StaffUser | None) -> EventVisibility | None:
    """The snapshot for a user, or None when their role (or a deactivated account) gives no inbox at all."""
    if user is None or not user.is_authenticated:
        return None
    assert isinstance(user, User)
    # The batch rule for one: teams and their inboxes in one query (sockets re-take this every few seconds).
    return event_visibilities_for([user]).get(user.pk)


def placements_of(conversation_ids: Iterable[int]) -> dict[int, Placement]:
    """The current placement of each conversation, in one query; a missing id is a conversation that is gone."""
    wanted = set(conversation_ids)
    if not wanted:
        return {}
    # No ORDER BY: the model's default ordering would sort rows a dict does not need sorted.
    rows = Conversation.objects.filter(pk__in=wanted).order_by().values_list("pk", "inbox_id", "team_id", "patient_id")
    return {pk: Placement(inbox_id=inbox, team_id=team, patient_id=patient) for pk, inbox, team, patient in rows}


def placement_of(conversation_id: int) -> Placement | None:
    row = Conversation.objects.filter(pk=conversation_id).values_list("inbox_id", "team_id", "patient_id").first()
    return Placement(inbox_id=row[0], team_id=row[1], patient_id=row[2]) if row else None


def event_filter_for(user: StaffUser | None) -> Q | None:
    """The Q over Event rows this user may read in full; None means nothing at all.

    The same rule as EventVisibility.delivery(), in SQL: addressed to the user, and (if it is about a
    conversation) about one they may see now.
    """
    visibility = event_visibility_for(user)
    if visibility is None:
        return None
    if visibility.everything:
        return Q()
    visible_now = Conversation.objects.filter(
        Q(inbox_id__in=visibility.inbox_ids) | Q(team_id__in=visibility.team_ids)
    ).values("pk")
    return visibility.audience_q() & (Q(conversation_id__isnull=True) | Q(conversation_id__in=visible_now))


def session_marker(session_key: str | None) -> str:
    """A digest that names a session in channel-layer messages without carrying the key itself."""
    return hashlib.sha256((session_key or "").encode()).hexdigest()


def staff_for_session(session_key: str | None) -> User | None:
    """The user a session is signed in as right now, or None: Django's own get_user() rules, read-only.

    get_user() is the rule HTTP requests live by (session still stored and unexpired, backend still configured,
    user still active, session auth hash still matching the password), but it flushes or re-keys the session
    it checks. A socket re-checking in the background must not do either to the browser's session, so this
    repeats the checks without writing; the next HTTP request applies get_user() itself.
    """
    if not session_key:
        return None
    store = import_module(settings.SESSION_ENGINE).SessionStore(session_key)
    try:
        user_id = get_user_model()._meta.pk.to_python(store[SESSION_KEY])
        backend_path = store[BACKEND_SESSION_KEY]
    except (KeyError, ValidationError):
        return None
    if backend_path not in settings.AUTHENTICATION_BACKENDS:
        return None
    user = load_backend(backend_path).get_user(user_id)
    if not isinstance(user, User) or not user.is_active:
        return None
    session_hash = store.get(HASH_SESSION_KEY)
    return user if session_hash and _hash_matches(user, session_hash) else None


def _hash_matches(user: User, session_hash: str) -> bool:
    """The session's auth hash is the user's now, or one made with a SECRET_KEY_FALLBACKS key (still valid:
    get_user re-keys it on the next request)."""
    return constant_time_compare(session_hash, user.get_session_auth_hash()) or any(
        constant_time_compare(session_hash, h) for h in user.get_session_auth_fallback_hash()
    )


_MODEL_BACKEND = "django.contrib.auth.backends.ModelBackend"
_DB_SESSIONS = "django.contrib.sessions.backends.db"


def staff_and_visibility_for_sessions(
    session_keys: Iterable[str | None],
) -> dict[str, tuple[User | None, EventVisibility | None]]:
    """staff_for_session() and event_visibility_for() for many sockets at once: the periodic re-check of every
    agent socket of a process (contactcenter.fanout). With database sessions and the model backend (this
    project's setup) that is four queries whatever the number of sockets; any other setup is checked one by one.
    """
    keys = {key for key in session_keys if key}
    users: dict[str, User | None] = {}
    if settings.SESSION_ENGINE == _DB_SESSIONS:
        users = _staff_for_db_sessions(keys)
    for key in keys - users.keys():
        users[key] = staff_for_session(key)
    visibilities = event_visibilities_for([user for user in users.values() if user is not None])
    return {key: (user, visibilities.get(user.pk) if user is not None else None) for key, user in users.items()}


def _staff_for_db_sessions(keys: set[str]) -> dict[str, User | None]:
    """The same checks as staff_for_session(), for database sessions signed in through the model backend; a
    session signed in through another backend is left out (the caller checks it one by one)."""
    from django.contrib.sessions.models import Session
    from django.utils import timezone

    store = import_module(settings.SESSION_ENGINE).SessionStore()
    found: dict[str, User | None] = dict.fromkeys(keys)
    claims: dict[str, tuple[int, str]] = {}
    for session_key, data in Session.objects.filter(session_key__in=keys, expire_date__gt=timezone.now()).values_list(
        "session_key", "session_data"
    ):
        decoded = store.decode(data)
        backend_path = decoded.get(BACKEND_SESSION_KEY)
        if backend_path != _MODEL_BACKEND:
            if backend_path in settings.AUTHENTICATION_BACKENDS:
                del found[session_key]  # another backend's user: checked one by one
            continue
        if _MODEL_BACKEND not in settings.AUTHENTICATION_BACKENDS or not decoded.get(HASH_SESSION_KEY):
            continue
        try:
            user_id = get_user_model()._meta.pk.to_python(decoded[SESSION_KEY])
        except (KeyError, ValueError, ValidationError):
            continue  # a session whose user id is unreadable signs nobody in
        claims[session_key] = (user_id, decoded[HASH_SESSION_KEY])
    accounts = {
        user.pk: user
        for user in get_user_model()
        .objects.select_related("agent_profile")
        .filter(pk__in={user_id for user_id, _ in claims.values()}, is_active=True)
    }
    for session_key, (user_id, session_hash) in claims.items():
        user = accounts.get(user_id)
        if user is None:
            continue
        if _hash_matches(user, session_hash):
            found[session_key] = user
    return found


def event_visibilities_for(users: Iterable[User]) -> dict[int, EventVisibility]:
    """event_visibility_for() for many users, with one query for all their teams and inboxes."""
    result: dict[int, EventVisibility] = {}
    scoped: list[User] = []
    for user in users:
        if not user.is_active or not can_use_inbox(user):
            continue
        if sees_everything(user):
            result[user.pk] = EventVisibility(
                user_id=user.pk, everything=True, team_ids=frozenset(), inbox_ids=frozenset()
            )
        else:
            scoped.append(user)
    teams: dict[int, set[int]] = {user.pk: set() for user in scoped}
    inboxes: dict[int, set[int]] = {user.pk: set() for user in scoped}
    if scoped:
        rows = (
            Team.objects.filter(members__user_id__in=teams.keys())
            .order_by()
            .values_list("members__user_id", "id", "inboxes__id")
        )
        for user_id, team, inbox in rows:
            teams[user_id].add(team)
            if inbox is not None:
                inboxes[user_id].add(inbox)
    for user in scoped:
        result[user.pk] = EventVisibility(
            user_id=user.pk, everything=False, team_ids=frozenset(teams[user.pk]), inbox_ids=frozenset(inboxes[user.pk])
        )
    return result

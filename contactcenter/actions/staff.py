"""Staff accounts: role, teams, deactivation, password changes and sign-outs.

Whatever changes what a staff member may see or whether they may sign in goes through here, so that the same
things always happen with it:
- conversations they may no longer see are unassigned (an assignee can always open what they hold, and no
  conversation's events stay addressed to someone who may not read them), each with its conversation.update;
- the change is audited (who changed whose access, from what to what, which conversations were let go);
- their open agent sockets are told after commit to check their session and access at once
  (contactcenter.consumers closes them: signed out, forbidden, or access changed);
- on a password change or deactivation their API tokens are deleted.

Django itself changes passwords (admin's password form, the password change and reset views, `manage.py
changepassword`) and flips is_active in the admin's user form. Those are caught where they all meet, the save
of the user row (on_user_pre_save / on_user_post_save below), and handed to the actions here; the receivers do
nothing else.
"""

from __future__ import annotations

import contextlib
import contextvars
import logging
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from django.contrib.auth import get_user_model
from django.contrib.auth.hashers import is_password_usable
from django.contrib.auth.models import User
from django.contrib.auth.signals import user_logged_out
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Q
from django.db.models.signals import post_save, pre_save
from django.utils.translation import gettext as _
from rest_framework.authtoken.models import Token

from contactcenter import access, events, publishing
from contactcenter.actions.audit import record_audit
from contactcenter.actions.conversations import ASSIGNABLE_ROLES, publish_conversation_update
from contactcenter.actions.presence import set_availability
from contactcenter.models import AgentProfile, AuditAction, Availability, Conversation, Role, Team

logger = logging.getLogger(__name__)

# The message the agent consumer handles as access_changed().
ACCESS_CHANGED = "access.changed"


@dataclass(frozen=True)
class StaffChange:
    user_id: int
    changed: bool
    unassigned: list[int]


# --- Telling open sockets -----------------------------------------------------------------------------------


def notify_sockets(user_id: int, *, ended_session: str | None = None) -> None:
    """After commit, tell the user's open agent sockets to check their session and access now.

    Call it before recording the change's events: on-commit callbacks run in the order they were registered,
    so the push reaches the socket ahead of the hints for those events and it re-checks before it reads them.
    A lost push is not fatal: every socket re-checks by itself within seconds (ACCESS_RECHECK_SECONDS).
    """
    message: dict[str, Any] = {"type": ACCESS_CHANGED}
    if ended_session is not None:
        message["ended_session"] = ended_session
    transaction.on_commit(lambda: _push(user_id, message))


def _push(user_id: int, message: dict[str, Any]) -> None:
    try:
        [result] = publishing.group_send_all([events.user_group(user_id)], message)
    except Exception:
        logger.exception("access change of user %s not pushed to their sockets", user_id)
        return
    if result is not None:
        logger.error("access change of user %s not pushed to their sockets: %r", user_id, result)


# --- Role and teams -----------------------------------------------------------------------------------------


def change_staff_teams(*, user: User, team_ids: Iterable[int], actor: User | None, via: str = "ui") -> StaffChange:
    return update_staff_access(user=user, team_ids=team_ids, actor=actor, via=via)


def change_staff_role(*, user: User, role: str, actor: User | None, via: str = "ui") -> StaffChange:
    return update_staff_access(user=user, role=role, actor=actor, via=via)


@transaction.atomic
def update_staff_access(
    *,
    user: User,
    actor: User | None,
    via: str = "ui",
    role: str | None = None,
    team_ids: Iterable[int] | None = None,
) -> StaffChange:
    """Set a staff member's role and/or teams (None leaves one as it is), in one audited step."""
    profile = AgentProfile.objects.select_for_update().get(user=user)
    before_role = profile.role
    before_teams = sorted(profile.teams.values_list("id", flat=True))
    after_role = before_role if role is None else role
    if after_role not in Role.values:
        raise ValidationError({"role": [_("Choose one of %(roles)s.") % {"roles": ", ".join(Role.values)}]})
    after_teams = before_teams if team_ids is None else sorted(set(team_ids))
    if team_ids is not None and Team.objects.filter(pk__in=after_teams).count() != len(after_teams):
        raise ValidationError({"teams": [_("No such team.")]})
    if (after_role, after_teams) == (before_role, before_teams):
        return StaffChange(user_id=user.pk, changed=False, unassigned=[])

    notify_sockets(user.pk)
    if after_role != before_role:
        profile.role = after_role
        profile.save(update_fields=["role"])
    if after_teams != before_teams:
        profile.teams.set(after_teams)
    unassigned = _unassign(user=user, keep_visible=True)
    record_audit(
        actor=actor,
        action=AuditAction.CHANGE_STAFF_ACCESS,
        object_type="user",
        object_id=user.pk,
        via=via,
        detail={
            "role": {"before": before_role, "after": after_role},
            "teams": {"before": before_teams, "after": after_teams},
            "unassigned": unassigned,
        },
    )
    logger.info("access of user %s changed; %s conversations unassigned", user.pk, len(unassigned))
    return StaffChange(user_id=user.pk, changed=True, unassigned=unassigned)


def _unassign(*, user: User, keep_visible: bool) -> list[int]:
    """Unassign the conversations this user may no longer hold (all of them unless keep_visible), each with
    its conversation.update for the lists that show it. Call inside the action's transaction.

    Resolved conversations too: a new message reopens a resolved conversation with its assignee kept.
    """
    held = Conversation.objects.filter(assignee=user)
    # The user as stored now: the caller's instance may carry a cached, older profile.
    fresh = get_user_model().objects.select_related("agent_profile").get(pk=user.pk)
    if keep_visible and access.role_of(fresh) in ASSIGNABLE_ROLES:
        if access.sees_everything(fresh):
            return []
        # What they keep is what access.can_view_conversation still lets them open.
        teams = access.team_ids_of(fresh)
        held = held.exclude(Q(inbox__team_id__in=teams) | Q(team_id__in=teams))
    ids = []
    locked = held.select_for_update(of=("self",), no_key=True).select_related("inbox", "patient").order_by("pk")
    for conversation in locked:
        conversation.assignee = None
        conversation.save(update_fields=["assignee"])
        publish_conversation_update(conversation, ["assignee"])
        ids.append(conversation.pk)
    return ids


# --- Deactivation, passwords, sign-out ----------------------------------------------------------------------


@transaction.atomic
def deactivate_staff(*, user: User, actor: User | None, via: str = "ui") -> StaffChange:
    """The account may no longer sign in: its conversations are let go, its tokens deleted, its sockets closed.

    Also what a save that turned is_active off elsewhere (the admin's user form) is handed to, after the fact.
    """
    notify_sockets(user.pk)
    # A queryset update: no save signal, so this does not come back here through on_user_post_save.
    get_user_model().objects.filter(pk=user.pk).update(is_active=False)
    user.is_active = False
    unassigned = _unassign(user=user, keep_visible=False)
    revoked, _ = Token.objects.filter(user=user).delete()
    if AgentProfile.objects.filter(user=user).exclude(availability=Availability.OFFLINE).exists():
        # Round robin already skips inactive users; this tells their team they are gone.
        set_availability(user=user, availability=Availability.OFFLINE)
    record_audit(
        actor=actor,
        action=AuditAction.DEACTIVATE_STAFF,
        object_type="user",
        object_id=user.pk,
        via=via,
        detail={"unassigned": unassigned, "tokens_revoked": revoked},
    )
    logger.info("user %s deactivated; %s conversations unassigned", user.pk, len(unassigned))
    return StaffChange(user_id=user.pk, changed=True, unassigned=unassigned)


@transaction.atomic
def password_changed(*, user: User, actor: User | None, via: str = "ui") -> None:
    """The password was just changed (the row is saved): end what the old password opened.

    Sessions end by themselves, since their auth hash no longer matches (Django's rule; the sockets apply it
    too). API tokens do not depend on the password, so they are deleted here.
    """
    notify_sockets(user.pk)
    revoked, _ = Token.objects.filter(user=user).delete()
    record_audit(
        actor=actor,
        action=AuditAction.CHANGE_PASSWORD,
        object_type="user",
        object_id=user.pk,
        via=via,
        detail={"tokens_revoked": revoked},
    )
    logger.info("password of user %s changed; %s API tokens revoked", user.pk, revoked)


def signed_out(*, user: User, session_key: str | None) -> None:
    """A session signed out: its sockets close at once (the others of the same user stay)."""
    notify_sockets(user.pk, ended_session=access.session_marker(session_key))


# --- Who is acting, for changes Django's own views make ------------------------------------------------------

_acting: contextvars.ContextVar[User | None] = contextvars.ContextVar("staff_change_actor", default=None)


@contextlib.contextmanager
def changes_by(actor: User | None) -> Iterator[None]:
    """Name who makes the user saves inside the block (the admin's forms), for the audit entries they cause."""
    token = _acting.set(actor)
    try:
        yield
    finally:
        _acting.reset(token)


# --- Receivers: they only notice and call the actions above ---------------------------------------------------

_PENDING = "_staff_account_change"


def on_user_pre_save(sender: type[User], instance: User, update_fields: Any = None, **_kwargs: Any) -> None:
    """Before a user row is saved, notice a new password or a deactivation by comparing with the stored row.

    Why on save: every way Django changes a password (admin form, PasswordChangeView, the reset views,
    changepassword) ends in user.save(), and the admin's user form saves is_active the same way, so one
    receiver catches them all, including views added later, instead of each view remembering to call us.
    """
    if instance.pk is None or (update_fields is not None and not {"password", "is_active"} & set(update_fields)):
        return
    stored = get_user_model().objects.filter(pk=instance.pk).values_list("password", "is_active").first()
    if stored is None:
        return
    old_password, was_active = stored
    # Django re-hashes a password on sign-in when its hasher settings changed (check_password's setter saves
    # update_fields=["password"] and no new raw password): the same password, so nothing to end.
    rehash = (
        update_fields is not None
        and set(update_fields) == {"password"}
        and getattr(instance, "_password", None) is None
        and is_password_usable(instance.password)
    )
    new_password = instance.password != old_password and not rehash
    deactivated = was_active and not instance.is_active
    if new_password or deactivated:
        setattr(instance, _PENDING, (new_password, deactivated))


def on_user_post_save(sender: type[User], instance: User, created: bool = False, **_kwargs: Any) -> None:
    pending = instance.__dict__.pop(_PENDING, None)
    if pending is None or created:
        return
    new_password, deactivated = pending
    actor = _acting.get()
    if deactivated:
        deactivate_staff(user=instance, actor=actor)
    if new_password:
        password_changed(user=instance, actor=actor)


def on_user_logged_out(sender: Any, request: Any, user: User | None, **_kwargs: Any) -> None:
    # Sent before Django deletes the session, so the sockets are told which session ended rather than left to
    # find it gone (they would, within seconds).
    if user is not None and request is not None:
        signed_out(user=user, session_key=getattr(getattr(request, "session", None), "session_key", None))


def connect_receivers() -> None:
    """Called once from ContactCenterConfig.ready()."""
    user_model = get_user_model()
    pre_save.connect(on_user_pre_save, sender=user_model, dispatch_uid="staff-account-pre-save")
    post_save.connect(on_user_post_save, sender=user_model, dispatch_uid="staff-account-post-save")
    user_logged_out.connect(on_user_logged_out, dispatch_uid="staff-signed-out")

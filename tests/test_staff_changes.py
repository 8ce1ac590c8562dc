"""Changing who a staff member is (teams, role, active, password, session) changes what reaches them, at once.

The agent socket runs on the real ASGI application over the Redis channel layer and PostgreSQL, signed in with
the cookie of a real login, as tests/test_consumers.py does. Changes come through the product's own paths: the
actions in contactcenter/actions/staff.py, Django admin's forms, Django's password form and the logout view.

Rules under test:
- an agent's socket carries, live and on resync, only what REST lets them read at that moment; a conversation
  they held but may no longer see reaches them as its id only ("conversation.remove");
- changing an agent's teams or role unassigns what they may no longer see, records conversation.update for
  it, is audited, and closes their sockets (4409 access changed, 4403 role without inbox) before any of
  those events could reach them;
- sign-out, deactivation and a password change close the sockets (4401) within seconds, and the last two
  delete the account's API tokens; a socket also notices a change whose push was lost, on its own.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import AsyncIterator, Awaitable, Callable
from dataclasses import dataclass
from html.parser import HTMLParser
from typing import Any

import pytest
from channels.db import database_sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings
from django.contrib.auth import get_user_model
from django.contrib.auth.forms import PasswordChangeForm
from django.contrib.sessions.models import Session
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from config.asgi import application
from contactcenter import consumers, events
from contactcenter.actions import staff
from contactcenter.actions.conversations import assign_conversation
from contactcenter.models import AgentProfile, AuditAction, AuditLogEntry, ChannelType, Conversation, Event, Inbox, Role
from tests.conftest import PASSWORD, World
from tests.test_consumers import (  # noqa: F401 (fresh_channel_layer is an autouse fixture here too)
    FRAME_TIMEOUT,
    ORIGIN,
    WS_PATH,
    assert_silent,
    assert_usable,
    fresh_channel_layer,
    last_event_id,
    next_phone,
    receive_events,
    resync,
)

pytestmark = pytest.mark.django_db(transaction=True)

User = get_user_model()

# A pushed change must close the socket about as fast as a frame travels.
CLOSED_WITHIN = 3.0
# A change nobody pushed (lost push, expired session) is found by the socket's own periodic check.
FOUND_WITHIN = consumers.ACCESS_RECHECK_SECONDS + consumers.IDLE_TICK_SECONDS + 2
NEW_PASSWORD = "a-much-longer-new-passphrase-42"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


# --- signing in and sockets ------------------------------------------------------------------------------------


@dataclass
class SignedIn:
    """One browser: its test client (to sign out, change a password) and its session cookie."""

    client: Client
    cookie: str

    @property
    def session_key(self) -> str:
        return self.cookie


def _sign_in(username: str) -> SignedIn:
    client = Client()
    assert client.login(username=username, password=PASSWORD), f"{username} could not log in"
    return SignedIn(client=client, cookie=client.cookies[settings.SESSION_COOKIE_NAME].value)


sign_in = database_sync_to_async(_sign_in)
Opener = Callable[..., Awaitable[WebsocketCommunicator]]


@pytest.fixture
async def open_socket() -> AsyncIterator[Opener]:
    """Sockets on the real ASGI application; at teardown every one has ended, and none crashed."""
    opened: list[WebsocketCommunicator] = []

    async def open_(who: SignedIn, *, expect_connected: bool = True) -> WebsocketCommunicator:
        cookie = f"{settings.SESSION_COOKIE_NAME}={who.cookie}".encode()
        communicator = WebsocketCommunicator(application, WS_PATH, headers=[(b"origin", ORIGIN), (b"cookie", cookie)])
        opened.append(communicator)
        connected, detail = await communicator.connect(timeout=FRAME_TIMEOUT)
        assert connected is expect_connected, (connected, detail)
        return communicator

    yield open_
    crashed: list[BaseException] = []
    for communicator in opened:
        if not communicator.future.done():
            await communicator.disconnect(timeout=1)
        assert communicator.future.done(), "a consumer outlived its test"
        if not communicator.future.cancelled() and communicator.future.exception() is not None:
            crashed.append(communicator.future.exception())  # type: ignore[arg-type]
    if crashed:
        raise AssertionError(f"{len(crashed)} consumer(s) crashed during the test") from crashed[0]


async def streaming(open_socket: Opener, who: SignedIn) -> WebsocketCommunicator:
    communicator = await open_socket(who)
    await resync(communicator, None)
    return communicator


async def closed_with(communicator: WebsocketCommunicator, within: float) -> tuple[int | None, list[dict[str, Any]]]:
    """Wait for the server to close the socket; its close code, and the frames that came before it."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + within
    frames: list[dict[str, Any]] = []
    while True:
        remaining = deadline - loop.time()
        if remaining <= 0:
            pytest.fail(f"the socket was still open after {within} s; it sent {frames}")
        try:
            output = await communicator.receive_output(timeout=remaining)
        except TimeoutError:
            pytest.fail(f"the socket was still open after {within} s; it sent {frames}")
        if output["type"] == "websocket.close":
            return output.get("code"), frames
        frames.append(json.loads(output["text"]))


async def receive_frames_until(
    communicator: WebsocketCommunicator, done: Callable[[list[dict[str, Any]]], bool]
) -> list[dict[str, Any]]:
    """Events from `events` frames until done(events) holds; a timeout or any other frame fails."""
    received: list[dict[str, Any]] = []
    while not done(received):
        frame = await communicator.receive_json_from(timeout=FRAME_TIMEOUT)
        assert frame["type"] == "events", frame
        received.extend(frame["events"])
    return received


# --- database helpers -----------------------------------------------------------------------------------------


def _conversation_ids_rest_shows(user: Any) -> set[int]:
    client = APIClient()
    client.force_authenticate(user=user)
    response = client.get("/api/v1/conversations/", {"status": "any", "limit": 100})
    assert response.status_code == 200
    return {row["id"] for row in response.json()["results"]}


rest_shows = database_sync_to_async(_conversation_ids_rest_shows)


def _conversation_ids_with_events() -> set[int]:
    return set(Event.objects.exclude(conversation_id=None).values_list("conversation_id", flat=True))


conversations_with_events = database_sync_to_async(_conversation_ids_with_events)


def _held_by(user: Any) -> list[int]:
    return sorted(Conversation.objects.filter(assignee=user).values_list("id", flat=True))


held_by = database_sync_to_async(_held_by)


@pytest.fixture
def deliver(inbound: Callable[..., Any]) -> Callable[..., Awaitable[Any]]:
    async def deliver_(inbox: Any, phone: str, body: str = "Hello") -> Any:
        return await database_sync_to_async(inbound)(inbox, phone, body)

    return deliver_


@pytest.fixture
def alice_holds(world: World, inbound: Callable[..., Any]) -> Callable[[], Awaitable[Conversation]]:
    """A Cardiology conversation assigned to alice."""

    def make() -> Conversation:
        conversation = inbound(world.inbox_a, next_phone(), "Chest pain since this morning").conversation
        return assign_conversation(conversation=conversation, assignee=world.alice, actor=world.sam)

    return database_sync_to_async(make)


def full_events(batch: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for e in batch if (e["type"], e["op"]) != ("conversation", "remove")]


def conversation_of(event: dict[str, Any]) -> int | None:
    """The conversation an event is about, read from its payload the way the inbox reads it."""
    if "conversation" in event:
        return int(event["conversation"]["id"])
    for key in ("message", "note"):
        if key in event:
            return int(event[key]["conversation_id"])
    return event.get("conversation_id")


# --- item 1: a team change ------------------------------------------------------------------------------------


async def test_moving_an_agent_to_another_team_closes_her_socket_before_any_of_the_old_teams_events(
    world, open_socket, deliver, alice_holds
) -> None:
    held = await alice_holds()
    await deliver(world.inbox_b, next_phone(), "Knee still hurts")
    alice = await streaming(open_socket, await sign_in("alice"))
    bob = await streaming(open_socket, await sign_in("bob"))

    change = await database_sync_to_async(staff.change_staff_teams)(
        user=world.alice, team_ids=[world.team_b.pk], actor=world.ada
    )

    code, before_close = await closed_with(alice, CLOSED_WITHIN)
    assert code == consumers.CLOSE_ACCESS_CHANGED
    assert before_close == [], "events reached the socket after its access changed"
    # Her old assignment is let go, with an update the team that still sees it receives...
    assert change.unassigned == [held.pk]
    assert await held_by(world.alice) == []
    [update] = await receive_events(bob, 1)
    assert (update["type"], update["op"], update["changed"]) == ("conversation", "update", ["assignee"])
    assert (update["conversation"]["id"], update["conversation"]["assignee"]) == (held.pk, None)
    # ...and the change is audited.
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.CHANGE_STAFF_ACCESS)
    assert (entry.actor_id, entry.object_type, entry.object_id, entry.via) == (
        world.ada.pk,
        "user",
        str(world.alice.pk),
        "ui",
    )
    assert entry.detail == {
        "role": {"before": Role.AGENT, "after": Role.AGENT},
        "teams": {"before": [world.team_a.pk], "after": [world.team_b.pk]},
        "unassigned": [held.pk],
    }


async def test_after_a_team_change_the_socket_carries_exactly_what_rest_shows(
    world, open_socket, deliver, alice_holds
) -> None:
    held = await alice_holds()
    await deliver(world.inbox_a, next_phone(), "Another cardiology patient")
    await deliver(world.inbox_b, next_phone(), "Knee still hurts")
    await database_sync_to_async(staff.change_staff_teams)(
        user=world.alice, team_ids=[world.team_b.pk], actor=world.ada
    )
    cursor = await last_event_id()

    # Resync from the very beginning: the whole history she could ask for.
    alice = await open_socket(await sign_in("alice"))
    await resync(alice, 0)
    visible = await rest_shows(world.alice)
    expected = visible & await conversations_with_events()
    assert expected, "the scene has no team B conversation"
    replay = await receive_frames_until(
        alice, lambda got: {conversation_of(e) for e in full_events(got)} >= expected and bool(got)
    )
    await assert_silent(alice)
    about = {conversation_of(e) for e in full_events(replay)}
    assert about == expected
    # The Cardiology conversation she held reaches her as its id, nothing of what is in it.
    removed = [e for e in replay if (e["type"], e["op"]) == ("conversation", "remove")]
    assert [set(e) for e in removed] == [{"id", "type", "op", "conversation_id"}]
    assert removed[0]["conversation_id"] == held.pk and held.pk not in visible
    assert "Chest pain" not in json.dumps(replay)

    # Live: Cardiology's patients write again; nothing of it reaches her. Orthopedics' do.
    await deliver(world.inbox_a, next_phone(), "cardiology again")
    await assert_silent(alice)
    orthopedics = await deliver(world.inbox_b, next_phone(), "new knee patient")
    live = await receive_events(alice, 2)
    assert {conversation_of(e) for e in live} == {orthopedics.conversation.pk}
    assert all(e["id"] > cursor for e in live)


async def test_events_addressed_to_a_former_assignee_carry_nothing_of_the_conversation(
    world, open_socket, deliver, alice_holds
) -> None:
    """The team is changed behind the actions' back (a data fix), so alice still holds the Cardiology
    conversation and its events still name her. Her socket must notice the change on its own, and what the
    events say must not reach her: REST no longer lets her read that conversation."""
    held = await alice_holds()
    alice = await streaming(open_socket, await sign_in("alice"))

    def move_without_the_action() -> None:
        AgentProfile.objects.get(user=world.alice).teams.set([world.team_b])

    await database_sync_to_async(move_without_the_action)()
    code, before_close = await closed_with(alice, FOUND_WITHIN)
    assert code == consumers.CLOSE_ACCESS_CHANGED
    assert before_close == []

    alice = await streaming(open_socket, await sign_in("alice"))
    patient_phone = await database_sync_to_async(lambda: held.patient.identities.get().value)()
    result = await deliver(world.inbox_a, patient_phone, "My results are in, what do they say?")
    assert result.conversation.pk == held.pk and result.conversation.assignee_id == world.alice.pk
    [told] = await receive_events(alice, 1)
    assert told == {"id": told["id"], "type": "conversation", "op": "remove", "conversation_id": held.pk}
    await assert_silent(alice)
    assert held.pk not in await rest_shows(world.alice)


async def test_a_conversation_transferred_away_from_its_assignee_is_removed_from_her_list(
    world, open_socket, deliver
) -> None:
    from contactcenter.actions.conversations import transfer_to_team

    # charlie (Orthopedics) holds a Cardiology-inbox conversation transferred to his team...
    result = await deliver(world.inbox_a, next_phone(), "Referred to orthopedics")

    def to_charlie() -> None:
        transfer_to_team(conversation=result.conversation, team=world.team_b, actor=world.sam)
        assign_conversation(conversation=result.conversation, assignee=world.charlie, actor=world.sam)

    await database_sync_to_async(to_charlie)()
    charlie = await streaming(open_socket, await sign_in("charlie"))
    # ...and it goes back to Cardiology: he is told it left, and nothing else.
    await database_sync_to_async(transfer_to_team)(conversation=result.conversation, team=world.team_a, actor=world.sam)
    [told] = await receive_events(charlie, 1)
    assert told == {"id": told["id"], "type": "conversation", "op": "remove", "conversation_id": result.conversation.pk}
    await assert_silent(charlie)


# --- item 2: role, deactivation, password, sign-out -----------------------------------------------------------


@pytest.mark.parametrize(
    ("role", "code"),
    [(Role.MARKETER, consumers.CLOSE_FORBIDDEN), (Role.SUPERVISOR, consumers.CLOSE_ACCESS_CHANGED)],
)
async def test_a_role_change_closes_the_socket(world, open_socket, alice_holds, role, code) -> None:
    held = await alice_holds()
    who = await sign_in("alice")
    alice = await streaming(open_socket, who)
    await database_sync_to_async(staff.change_staff_role)(user=world.alice, role=role, actor=world.ada)
    assert (await closed_with(alice, CLOSED_WITHIN))[0] == code
    # A marketer may hold no conversation; a supervisor keeps what she holds.
    assert await held_by(world.alice) == ([] if role == Role.MARKETER else [held.pk])
    if role == Role.MARKETER:
        await open_socket(who, expect_connected=False)
    else:
        await assert_usable(await open_socket(who))


async def test_signing_out_closes_that_sessions_sockets_and_no_others(world, open_socket) -> None:
    desk, phone = await sign_in("alice"), await sign_in("alice")
    at_desk = await streaming(open_socket, desk)
    on_phone = await streaming(open_socket, phone)

    response = await database_sync_to_async(desk.client.post)("/logout/")
    assert response.status_code == 302

    assert (await closed_with(at_desk, CLOSED_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT
    await assert_usable(on_phone)
    # The signed-out cookie opens nothing any more.
    await open_socket(desk, expect_connected=False)


async def test_a_session_that_ends_without_a_push_is_noticed_by_the_socket_itself(world, open_socket) -> None:
    """An expired session (or a push the channel layer lost) sends nobody anything: the socket's own check finds it."""
    who = await sign_in("alice")
    alice = await streaming(open_socket, who)
    await database_sync_to_async(Session.objects.filter(session_key=who.session_key).delete)()
    assert (await closed_with(alice, FOUND_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT


async def test_a_lost_push_still_closes_the_socket_within_seconds(world, open_socket, monkeypatch) -> None:
    alice = await streaming(open_socket, await sign_in("alice"))
    pushed: list[int] = []
    monkeypatch.setattr(staff, "_push", lambda user_id, message: pushed.append(user_id))
    await database_sync_to_async(staff.change_staff_teams)(
        user=world.alice, team_ids=[world.team_b.pk], actor=world.ada
    )
    assert pushed == [world.alice.pk]  # swallowed: nothing told the socket
    assert (await closed_with(alice, FOUND_WITHIN))[0] == consumers.CLOSE_ACCESS_CHANGED


def _token_for(user: Any) -> str:
    return Token.objects.get_or_create(user=user)[0].key


def _token_works(key: str) -> bool:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {key}")
    return client.get("/api/v1/me/").status_code == 200


token_for = database_sync_to_async(_token_for)
token_works = database_sync_to_async(_token_works)


async def test_deactivation_closes_sockets_deletes_tokens_and_lets_go_of_conversations(
    world, open_socket, alice_holds
) -> None:
    held = await alice_holds()
    key = await token_for(world.alice)
    assert await token_works(key)
    who = await sign_in("alice")
    alice = await streaming(open_socket, who)

    change = await database_sync_to_async(staff.deactivate_staff)(user=world.alice, actor=world.ada)

    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT
    assert change.unassigned == [held.pk]
    assert await held_by(world.alice) == []
    assert not await token_works(key)
    assert not await database_sync_to_async(Token.objects.filter(user=world.alice).exists)()
    await open_socket(who, expect_connected=False)
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.DEACTIVATE_STAFF)
    assert (entry.actor_id, entry.object_id, entry.detail) == (
        world.ada.pk,
        str(world.alice.pk),
        {"unassigned": [held.pk], "tokens_revoked": 1},
    )


async def test_a_password_changed_with_djangos_form_closes_sockets_and_deletes_tokens(world, open_socket) -> None:
    key = await token_for(world.alice)
    alice = await streaming(open_socket, await sign_in("alice"))

    def change_password() -> None:
        user = User.objects.get(pk=world.alice.pk)
        form = PasswordChangeForm(
            user, {"old_password": PASSWORD, "new_password1": NEW_PASSWORD, "new_password2": NEW_PASSWORD}
        )
        assert form.is_valid(), form.errors
        form.save()  # what PasswordChangeView does

    await database_sync_to_async(change_password)()
    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT
    assert not await token_works(key)
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.CHANGE_PASSWORD)
    assert (entry.object_id, entry.detail) == (str(world.alice.pk), {"tokens_revoked": 1})


def test_a_password_rehashed_at_sign_in_is_not_a_password_change(world, settings) -> None:
    """Django re-hashes a stored password on sign-in when the preferred hasher changed: same password, so the
    account's tokens and sessions must survive it."""
    from django.contrib.auth.hashers import PBKDF2PasswordHasher

    settings.PASSWORD_HASHERS = [
        "django.contrib.auth.hashers.MD5PasswordHasher",
        "django.contrib.auth.hashers.PBKDF2PasswordHasher",
    ]
    # Stored with the older hasher (few iterations, to stay quick); MD5 is now the preferred one.
    stored = PBKDF2PasswordHasher().encode(PASSWORD, "rehashsalt", iterations=1000)
    User.objects.filter(pk=world.alice.pk).update(password=stored)
    key = _token_for(world.alice)
    assert Client().login(username="alice", password=PASSWORD)
    assert User.objects.get(pk=world.alice.pk).password.startswith("md5$"), "the test needs a re-hash to happen"
    assert _token_works(key)
    assert not AuditLogEntry.objects.filter(action=AuditAction.CHANGE_PASSWORD).exists()


# --- the same changes through Django admin --------------------------------------------------------------------


class _FormFields(HTMLParser):
    """What a browser would submit from the page's form: inputs, checked boxes, selected options, textareas."""

    def __init__(self) -> None:
        super().__init__()
        self.fields: list[tuple[str, str]] = []
        self._select: str | None = None
        self._textarea: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = {k: v or "" for k, v in attrs}
        name = a.get("name")
        if tag == "input" and name:
            kind = a.get("type", "text")
            if kind in ("checkbox", "radio") and "checked" not in a:
                return
            if kind not in ("submit", "button", "file"):
                self.fields.append((name, a.get("value", "on" if kind == "checkbox" else "")))
        elif tag == "select" and name:
            self._select = name
        elif tag == "option" and self._select and "selected" in a:
            self.fields.append((self._select, a.get("value", "")))
        elif tag == "textarea" and name:
            self._textarea = name
            self.fields.append((name, ""))

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None
        elif tag == "textarea":
            self._textarea = None

    def handle_data(self, data: str) -> None:
        if self._textarea is not None:
            name, value = self.fields[-1]
            self.fields[-1] = (name, value + data)


def submit_admin_form(client: Client, url: str, changes: dict[str, list[str]]) -> Any:
    """GET the admin page, change some fields as a person would, and POST the whole form back."""
    page = client.get(url)
    assert page.status_code == 200
    parser = _FormFields()
    parser.feed(page.content.decode())
    data: dict[str, list[str]] = {}
    for name, value in parser.fields:
        data.setdefault(name, []).append(value)
    data.update(changes)
    data = {name: values for name, values in data.items() if values != []}
    response = client.post(url, data)
    assert response.status_code == 302, response.content.decode()[:3000]
    return response


@pytest.fixture
def admin_client(world: World) -> Client:
    root = User.objects.create_superuser(username="root", password=PASSWORD)
    AgentProfile.objects.create(user=root, role=Role.ADMIN)
    client = Client()
    client.force_login(root)
    client.root = root  # type: ignore[attr-defined]
    return client


async def test_teams_changed_in_django_admin_go_through_the_action(
    world, open_socket, alice_holds, admin_client
) -> None:
    held = await alice_holds()
    alice = await streaming(open_socket, await sign_in("alice"))
    url = f"/django-admin/auth/user/{world.alice.pk}/change/"
    await database_sync_to_async(submit_admin_form)(
        admin_client, url, {"agent_profile-0-teams": [str(world.team_b.pk)], "agent_profile-0-display_name": ["Ali"]}
    )

    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_ACCESS_CHANGED
    profile = await database_sync_to_async(
        lambda: AgentProfile.objects.prefetch_related("teams").get(user=world.alice)
    )()
    assert [t.pk for t in profile.teams.all()] == [world.team_b.pk]
    assert profile.display_name == "Ali"  # the form's other fields are saved as before
    assert await held_by(world.alice) == []
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.CHANGE_STAFF_ACCESS)
    assert (entry.actor_id, entry.detail["unassigned"]) == (admin_client.root.pk, [held.pk])


async def test_a_role_changed_in_django_admin_goes_through_the_action(world, open_socket, admin_client) -> None:
    alice = await streaming(open_socket, await sign_in("alice"))
    url = f"/django-admin/auth/user/{world.alice.pk}/change/"
    await database_sync_to_async(submit_admin_form)(admin_client, url, {"agent_profile-0-role": [Role.MARKETER]})
    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_FORBIDDEN
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.CHANGE_STAFF_ACCESS)
    assert entry.detail["role"] == {"before": Role.AGENT, "after": Role.MARKETER}


async def test_deactivating_in_django_admin_closes_sockets_and_deletes_tokens(
    world, open_socket, alice_holds, admin_client
) -> None:
    held = await alice_holds()
    key = await token_for(world.alice)
    alice = await streaming(open_socket, await sign_in("alice"))
    url = f"/django-admin/auth/user/{world.alice.pk}/change/"
    await database_sync_to_async(submit_admin_form)(admin_client, url, {"is_active": []})

    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT
    assert not await token_works(key)
    assert await held_by(world.alice) == []
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.DEACTIVATE_STAFF)
    assert (entry.actor_id, entry.detail["unassigned"]) == (admin_client.root.pk, [held.pk])


async def test_a_password_set_in_django_admin_closes_sockets_and_deletes_tokens(
    world, open_socket, admin_client
) -> None:
    key = await token_for(world.alice)
    alice = await streaming(open_socket, await sign_in("alice"))
    url = f"/django-admin/auth/user/{world.alice.pk}/password/"
    await database_sync_to_async(submit_admin_form)(
        admin_client, url, {"password1": [NEW_PASSWORD], "password2": [NEW_PASSWORD]}
    )

    assert (await closed_with(alice, CLOSED_WITHIN))[0] == consumers.CLOSE_SIGNED_OUT
    assert not await token_works(key)
    entry = await database_sync_to_async(AuditLogEntry.objects.get)(action=AuditAction.CHANGE_PASSWORD)
    assert (entry.actor_id, entry.object_id) == (admin_client.root.pk, str(world.alice.pk))


def test_an_unchanged_admin_save_changes_no_access_and_writes_no_entry(world, admin_client) -> None:
    submit_admin_form(admin_client, f"/django-admin/auth/user/{world.alice.pk}/change/", {})
    assert list(AgentProfile.objects.get(user=world.alice).teams.values_list("pk", flat=True)) == [world.team_a.pk]
    assert not AuditLogEntry.objects.exists()


def test_a_team_change_to_the_same_teams_is_no_change(world) -> None:
    change = staff.change_staff_teams(user=world.alice, team_ids=[world.team_a.pk], actor=world.ada)
    assert (change.changed, change.unassigned) == (False, [])
    assert not AuditLogEntry.objects.exists()


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda w: staff.change_staff_role(user=w.alice, role="janitor", actor=w.ada), "role"),
        (lambda w: staff.change_staff_teams(user=w.alice, team_ids=[987654], actor=w.ada), "teams"),
    ],
    ids=["unknown-role", "unknown-team"],
)
def test_an_invalid_change_names_the_field_and_changes_nothing(world, call, field) -> None:
    from django.core.exceptions import ValidationError

    with pytest.raises(ValidationError) as caught:
        call(world)
    assert field in caught.value.message_dict
    profile = AgentProfile.objects.get(user=world.alice)
    assert (profile.role, list(profile.teams.values_list("pk", flat=True))) == (Role.AGENT, [world.team_a.pk])
    assert not AuditLogEntry.objects.exists()


def test_the_push_goes_to_the_users_own_group(world) -> None:
    """The consumer joins events.user_group for every role, supervisors included; that is where pushes go."""
    from contactcenter import access

    for user in (world.alice, world.sam):
        visibility = access.event_visibility_for(user)
        assert visibility is not None
        assert events.user_group(user.pk) in visibility.groups()


async def test_a_new_inbox_for_her_team_widens_her_socket_in_place(world, open_socket, deliver) -> None:
    """An admin setting up an inbox must not reload every agent's page: the socket joins the new inbox's group,
    says so, and carries its events from then on."""
    alice = await streaming(open_socket, await sign_in("alice"))
    inbox = await database_sync_to_async(Inbox.objects.create)(
        name="Cardiology web chat", channel_type=ChannelType.SIMULATOR, team=world.team_a, auto_assign=False
    )
    frame = await alice.receive_json_from(timeout=FOUND_WITHIN)
    assert frame == {"type": "access", "op": "widened"}
    result = await deliver(inbox, "+8613800138123", "A first message in the new inbox")
    events = await receive_frames_until(
        alice, lambda got: any(conversation_of(e) == result.conversation.pk for e in got)
    )
    assert {conversation_of(e) for e in events} == {result.conversation.pk}
    await assert_usable(alice)

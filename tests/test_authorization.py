"""Who may do what: every persona against every endpoint, page and the agent socket.

Rules under test (contactcenter/access.py): agents and nurses see their own team's inboxes, supervisors
and admins see everything, marketers see no conversations or patients, only supervisors and admins
create and merge patients, only admins read the audit log, and anonymous callers are refused.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.testing import WebsocketCommunicator
from django.conf import settings as django_settings
from django.contrib.auth import get_user_model
from django.template import TemplateDoesNotExist
from django.test import Client
from rest_framework.authtoken.models import Token
from rest_framework.test import APIClient

from contactcenter.actions.staff import change_staff_role, change_staff_teams
from contactcenter.models import Conversation, Event, Patient, Role
from tests.conftest import World

User = get_user_model()

PERSONAS = ("alice", "bob", "charlie", "nina", "sam", "ada", "mark", "anonymous")
TEAM_OF = {"alice": "a", "bob": "a", "nina": "a", "charlie": "b"}
OVERSIGHT = ("sam", "ada")

PHONE_A = "+8613912345678"
PHONE_A2 = "+8613800138000"
PHONE_B = "+8615011112222"


@pytest.fixture(autouse=True)
def fast_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]


@dataclass
class Scene:
    world: World
    conversation_a: Conversation
    conversation_b: Conversation
    patient_a: Patient
    patient_a2: Patient
    patient_b: Patient

    def ids(self, team: str) -> dict[str, int]:
        """URL placeholders for the resources of one team ("a" or "b")."""
        if team == "a":
            return {"conversation": self.conversation_a.pk, "patient": self.patient_a.pk, "other": self.patient_a2.pk}
        return {"conversation": self.conversation_b.pk, "patient": self.patient_b.pk, "other": self.patient_a2.pk}


@pytest.fixture
def scene(world: World, inbound: Any) -> Scene:
    a = inbound(world.inbox_a, PHONE_A, "I need to move my cardiology appointment")
    a2 = inbound(world.inbox_a, PHONE_A2, "Second cardiology patient")
    b = inbound(world.inbox_b, PHONE_B, "My knee still hurts")
    return Scene(
        world=world,
        conversation_a=a.conversation,
        conversation_b=b.conversation,
        patient_a=a.patient,
        patient_a2=a2.patient,
        patient_b=b.patient,
    )


def client_for(world: World, persona: str) -> APIClient:
    client = APIClient()
    if persona != "anonymous":
        client.force_authenticate(user=getattr(world, persona))
    return client


def call(client: APIClient, method: str, url: str, body: Any = None) -> Any:
    if method == "get":
        return client.get(url)
    return getattr(client, method)(url, body if body is not None else {}, format="json")


# --- Team-scoped endpoints: conversations and patient profiles ------------------------------------------

# (name, method, url, body, status on success). Placeholders come from Scene.ids(team).
TEAM_SCOPED = [
    ("conversation detail", "get", "/api/v1/conversations/{conversation}/", None, 200),
    ("conversation messages", "get", "/api/v1/conversations/{conversation}/messages/", None, 200),
    ("send message", "post", "/api/v1/conversations/{conversation}/messages/", {"body": "See you at 9"}, 201),
    ("conversation notes", "get", "/api/v1/conversations/{conversation}/notes/", None, 200),
    ("add note", "post", "/api/v1/conversations/{conversation}/notes/", {"body": "Called back"}, 201),
    ("assignable staff", "get", "/api/v1/conversations/{conversation}/assignable/", None, 200),
    ("action priority", "post", "/api/v1/conversations/{conversation}/priority/", {"priority": 3}, 200),
    ("action resolve", "post", "/api/v1/conversations/{conversation}/resolve/", None, 200),
    ("action read", "post", "/api/v1/conversations/{conversation}/read/", None, 200),
    ("action labels", "post", "/api/v1/conversations/{conversation}/labels/", {"labels": ["follow-up"]}, 200),
    ("action unassign", "post", "/api/v1/conversations/{conversation}/assign/", {"assignee_id": None}, 200),
    ("patient detail", "get", "/api/v1/patients/{patient}/", None, 200),
    ("patient update", "patch", "/api/v1/patients/{patient}/", {"city": "Shanghai"}, 200),
    (
        "add identity",
        "post",
        "/api/v1/patients/{patient}/identities/",
        {"kind": "email", "value": "patient@example.com"},
        201,
    ),
]


def expected_team_scoped(persona: str, team: str, success: int) -> int:
    if persona == "anonymous":
        return 401
    if persona == "mark":
        return 403
    if persona in OVERSIGHT or TEAM_OF[persona] == team:
        return success
    return 404


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("team", ["a", "b"])
@pytest.mark.parametrize(("name", "method", "url", "body", "success"), TEAM_SCOPED, ids=[r[0] for r in TEAM_SCOPED])
def test_team_scoped_endpoint_matrix(
    scene: Scene, persona: str, team: str, name: str, method: str, url: str, body: Any, success: int
) -> None:
    response = call(client_for(scene.world, persona), method, url.format(**scene.ids(team)), body)
    assert response.status_code == expected_team_scoped(persona, team, success), response.content


# --- The same matrix after an admin changed someone's teams ------------------------------------------------

# persona → their teams after the change: alice moves to B, nina leaves every team, charlie joins A too, and bob's
# change is to the teams he already has.
TEAM_CHANGES = {"alice": {"b"}, "nina": set(), "charlie": {"a", "b"}, "bob": {"a"}}


def change_teams(scene: Scene, persona: str, teams: set[str]) -> None:
    team_of = {"a": scene.world.team_a.pk, "b": scene.world.team_b.pk}
    change_staff_teams(user=getattr(scene.world, persona), team_ids=[team_of[t] for t in teams], actor=scene.world.ada)


@pytest.mark.parametrize("persona", sorted(TEAM_CHANGES))
@pytest.mark.parametrize("team", ["a", "b"])
@pytest.mark.parametrize(("name", "method", "url", "body", "success"), TEAM_SCOPED, ids=[r[0] for r in TEAM_SCOPED])
def test_team_scoped_endpoint_matrix_after_a_team_change(
    scene: Scene, persona: str, team: str, name: str, method: str, url: str, body: Any, success: int
) -> None:
    change_teams(scene, persona, TEAM_CHANGES[persona])
    response = call(client_for(scene.world, persona), method, url.format(**scene.ids(team)), body)
    assert response.status_code == (success if team in TEAM_CHANGES[persona] else 404), response.content


@pytest.mark.parametrize("persona", sorted(TEAM_CHANGES))
def test_lists_after_a_team_change_hold_only_the_new_teams(scene: Scene, persona: str) -> None:
    change_teams(scene, persona, TEAM_CHANGES[persona])
    client = client_for(scene.world, persona)
    by_team = {
        "a": {scene.conversation_a.pk, Conversation.objects.get(patient=scene.patient_a2).pk},
        "b": {scene.conversation_b.pk},
    }
    conversations = client.get("/api/v1/conversations/", {"status": "any"}).json()["results"]
    assert {row["id"] for row in conversations} == set().union(*(by_team[t] for t in TEAM_CHANGES[persona]))
    patients_by_team = {"a": {scene.patient_a.pk, scene.patient_a2.pk}, "b": {scene.patient_b.pk}}
    patients = client.get("/api/v1/patients/").json()["results"]
    assert {row["id"] for row in patients} == set().union(*(patients_by_team[t] for t in TEAM_CHANGES[persona]))


@pytest.mark.parametrize(("role", "expected"), [(Role.MARKETER, 403), (Role.SUPERVISOR, 200), (Role.NURSE, 404)])
def test_a_role_change_applies_to_the_next_request(scene: Scene, role: str, expected: int) -> None:
    """charlie (team B) reads a team A conversation as whatever his new role allows."""
    change_staff_role(user=scene.world.charlie, role=role, actor=scene.world.ada)
    client = APIClient()
    client.force_authenticate(user=User.objects.get(pk=scene.world.charlie.pk))  # as the next request loads him
    assert client.get(f"/api/v1/conversations/{scene.conversation_a.pk}/").status_code == expected


# --- Role-gated endpoints -------------------------------------------------------------------------------

INBOX_ROLES_OK = {"alice": 200, "bob": 200, "charlie": 200, "nina": 200, "sam": 200, "ada": 200, "mark": 403}
SUPERVISORS_OK = {"alice": 403, "bob": 403, "charlie": 403, "nina": 403, "sam": 200, "ada": 200, "mark": 403}
ADMIN_OK = {"alice": 403, "bob": 403, "charlie": 403, "nina": 403, "sam": 403, "ada": 200, "mark": 403}
EVERY_STAFF_OK = dict.fromkeys(INBOX_ROLES_OK, 200)

ROLE_GATED = [
    ("me", "get", "/api/v1/me/", None, EVERY_STAFF_OK),
    ("conversation list", "get", "/api/v1/conversations/", None, INBOX_ROLES_OK),
    ("patient list", "get", "/api/v1/patients/", None, INBOX_ROLES_OK),
    ("labels", "get", "/api/v1/labels/", None, INBOX_ROLES_OK),
    ("canned responses", "get", "/api/v1/canned-responses/", None, INBOX_ROLES_OK),
    (
        "create patient",
        "post",
        "/api/v1/patients/",
        {"name": "Zhang Min", "identities": [{"kind": "phone", "value": "13900139000"}]},
        {**SUPERVISORS_OK, "sam": 201, "ada": 201},
    ),
    ("merge patients", "post", "/api/v1/patients/{patient}/merge/", {"drop_id": "{other}"}, SUPERVISORS_OK),
    ("audit log", "get", "/api/v1/audit/", None, ADMIN_OK),
]


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize(("name", "method", "url", "body", "expected"), ROLE_GATED, ids=[r[0] for r in ROLE_GATED])
def test_role_gated_endpoint_matrix(
    scene: Scene, persona: str, name: str, method: str, url: str, body: Any, expected: dict[str, int]
) -> None:
    ids = scene.ids("a")
    if isinstance(body, dict) and body.get("drop_id") == "{other}":
        body = {"drop_id": ids["other"]}
    response = call(client_for(scene.world, persona), method, url.format(**ids), body)
    assert response.status_code == expected.get(persona, 401), response.content


def test_only_supervisors_merge_so_a_refused_merge_changes_nothing(scene: Scene) -> None:
    response = client_for(scene.world, "alice").post(
        f"/api/v1/patients/{scene.patient_a.pk}/merge/", {"drop_id": scene.patient_a2.pk}, format="json"
    )
    assert response.status_code == 403
    scene.patient_a2.refresh_from_db()
    assert scene.patient_a2.merged_into_id is None


def test_refused_patient_creation_writes_no_patient(scene: Scene) -> None:
    before = Patient.objects.count()
    response = client_for(scene.world, "bob").post(
        "/api/v1/patients/",
        {"name": "Nobody", "identities": [{"kind": "phone", "value": "13900139000"}]},
        format="json",
    )
    assert response.status_code == 403
    assert Patient.objects.count() == before


# --- Lists only contain what the persona may see ---------------------------------------------------------

VISIBLE_TEAMS = {"alice": {"a"}, "bob": {"a"}, "nina": {"a"}, "charlie": {"b"}, "sam": {"a", "b"}, "ada": {"a", "b"}}


@pytest.mark.parametrize("persona", sorted(VISIBLE_TEAMS))
def test_conversation_list_holds_only_visible_teams(scene: Scene, persona: str) -> None:
    response = client_for(scene.world, persona).get("/api/v1/conversations/", {"status": "any"})
    assert response.status_code == 200
    got = {row["id"] for row in response.json()["results"]}
    by_team = {"a": {scene.conversation_a.pk, Conversation.objects.get(patient=scene.patient_a2).pk}}
    by_team["b"] = {scene.conversation_b.pk}
    assert got == set().union(*(by_team[t] for t in VISIBLE_TEAMS[persona]))


@pytest.mark.parametrize("persona", sorted(VISIBLE_TEAMS))
def test_patient_list_holds_only_visible_teams(scene: Scene, persona: str) -> None:
    response = client_for(scene.world, persona).get("/api/v1/patients/")
    assert response.status_code == 200
    got = {row["id"] for row in response.json()["results"]}
    by_team = {"a": {scene.patient_a.pk, scene.patient_a2.pk}, "b": {scene.patient_b.pk}}
    assert got == set().union(*(by_team[t] for t in VISIBLE_TEAMS[persona]))


def test_agent_of_team_b_cannot_find_team_a_patient_by_searching_their_phone(scene: Scene) -> None:
    response = client_for(scene.world, "charlie").get("/api/v1/patients/", {"q": "12345678"})
    assert response.status_code == 200
    assert response.json()["results"] == []
    response = client_for(scene.world, "alice").get("/api/v1/patients/", {"q": "12345678"})
    assert [row["id"] for row in response.json()["results"]] == [scene.patient_a.pk]


def test_agent_of_team_b_filtering_by_team_a_inbox_gets_nothing(scene: Scene) -> None:
    response = client_for(scene.world, "charlie").get(
        "/api/v1/conversations/", {"inbox": scene.world.inbox_a.pk, "status": "any"}
    )
    assert response.status_code == 200
    assert response.json()["results"] == []


def test_patient_profile_lists_only_the_conversations_the_reader_may_see(scene: Scene, inbound: Any) -> None:
    inbound(scene.world.inbox_b, PHONE_A, "Now about my knee")  # the team A patient writes to team B too
    ids = {"sam": set(), "alice": set(), "charlie": set()}
    for persona in ids:
        response = client_for(scene.world, persona).get(f"/api/v1/patients/{scene.patient_a.pk}/")
        if response.status_code == 200:
            ids[persona] = {c["inbox"]["team_id"] for c in response.json()["conversations"]}
    assert ids["sam"] == {scene.world.team_a.pk, scene.world.team_b.pk}
    # An agent sees the patient, but only their own team's threads in the profile.
    assert ids["alice"] == {scene.world.team_a.pk}
    assert ids["charlie"] == {scene.world.team_b.pk}


def test_assignable_staff_for_team_a_conversation_excludes_other_team_and_marketers(scene: Scene) -> None:
    response = client_for(scene.world, "alice").get(f"/api/v1/conversations/{scene.conversation_a.pk}/assignable/")
    ids = {row["id"] for row in response.json()}
    w = scene.world
    assert ids == {w.alice.pk, w.bob.pk, w.nina.pk, w.sam.pk}


def test_me_of_agent_of_team_b_lists_only_team_b_inboxes(scene: Scene) -> None:
    body = client_for(scene.world, "charlie").get("/api/v1/me/").json()
    assert [i["id"] for i in body["inboxes"]] == [scene.world.inbox_b.pk]
    assert body["role"] == "agent"


def test_me_refuses_an_account_without_staff_profile(scene: Scene) -> None:
    stranger = User.objects.create_user(username="stranger", password="x-long-password")
    client = APIClient()
    client.force_authenticate(user=stranger)
    assert client.get("/api/v1/me/").status_code == 403
    assert client.get("/api/v1/conversations/").status_code == 403


# --- Authentication mechanisms ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("persona", "expected"),
    [("alice", 200), ("nina", 200), ("charlie", 404), ("sam", 200), ("mark", 403)],
)
def test_token_auth_applies_the_same_visibility_rules(scene: Scene, persona: str, expected: int) -> None:
    token = Token.objects.create(user=getattr(scene.world, persona))
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(f"/api/v1/conversations/{scene.conversation_a.pk}/").status_code == expected


def test_token_auth_identifies_the_token_owner(scene: Scene) -> None:
    token = Token.objects.create(user=scene.world.nina)
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get("/api/v1/me/").json()["username"] == "nina"


@pytest.mark.parametrize("header", ["Token not-a-real-token", "Token ", "Bearer abc", "Token a b"])
def test_bad_token_is_refused_with_401(scene: Scene, header: str) -> None:
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=header)
    assert client.get(f"/api/v1/conversations/{scene.conversation_a.pk}/").status_code == 401


def test_token_of_deactivated_user_is_refused(scene: Scene) -> None:
    token = Token.objects.create(user=scene.world.alice)
    scene.world.alice.is_active = False
    scene.world.alice.save()
    client = APIClient()
    client.credentials(HTTP_AUTHORIZATION=f"Token {token.key}")
    assert client.get(f"/api/v1/conversations/{scene.conversation_a.pk}/").status_code == 401


@pytest.mark.parametrize(("persona", "expected"), [("alice", 200), ("charlie", 404), ("mark", 403)])
def test_session_auth_applies_the_same_visibility_rules(scene: Scene, persona: str, expected: int) -> None:
    client = APIClient()
    client.force_login(getattr(scene.world, persona))
    assert client.get(f"/api/v1/patients/{scene.patient_a.pk}/").status_code == expected


def test_session_auth_enforces_csrf_on_writes(scene: Scene) -> None:
    client = APIClient(enforce_csrf_checks=True)
    client.force_login(scene.world.alice)
    response = client.post(f"/api/v1/conversations/{scene.conversation_a.pk}/notes/", {"body": "forged"}, format="json")
    assert response.status_code == 403
    assert not scene.conversation_a.notes.exists()


# --- HTML pages --------------------------------------------------------------------------------------------

TEMPLATE_MISSING = "rendered (template not written yet)"


def fetch_page(client: Client, url: str) -> int | str:
    """The status, or TEMPLATE_MISSING when the view got as far as rendering: permission was granted."""
    try:
        return client.get(url).status_code
    except TemplateDoesNotExist:
        return TEMPLATE_MISSING


PAGES = {
    "/inbox/": {"alice", "bob", "charlie", "nina", "sam", "ada"},
    "/audit/": {"ada"},
}


@pytest.mark.parametrize("persona", PERSONAS)
@pytest.mark.parametrize("url", sorted(PAGES))
def test_page_matrix(scene: Scene, persona: str, url: str) -> None:
    client = Client()
    if persona == "anonymous":
        response = client.get(url)
        assert response.status_code == 302
        assert response["Location"] == f"/login/?next={url}"
        return
    client.force_login(getattr(scene.world, persona))
    outcome = fetch_page(client, url)
    if persona in PAGES[url]:
        assert outcome in (200, TEMPLATE_MISSING)
    else:
        assert outcome == 403


# --- The agent websocket -------------------------------------------------------------------------------------

ORIGIN = (b"origin", b"http://testserver")


def session_cookie(user: Any) -> bytes:
    client = Client()
    client.force_login(user)
    name = django_settings.SESSION_COOKIE_NAME
    return f"{name}={client.cookies[name].value}".encode()


@pytest.fixture
def cookies(world: World) -> dict[str, bytes]:
    return {name: session_cookie(user) for name, user in world.users().items()}


def socket(cookie: bytes | None, origin: tuple[bytes, bytes] = ORIGIN) -> WebsocketCommunicator:
    from config.asgi import application

    headers = [origin]
    if cookie is not None:
        headers.append((b"cookie", cookie))
    return WebsocketCommunicator(application, "/ws/agent/", headers=headers)


async def ended(communicator: WebsocketCommunicator) -> None:
    """Disconnect and check the consumer task really finished, and finished without crashing."""
    await communicator.disconnect(timeout=1)
    assert communicator.future.done(), "the consumer outlived its socket"
    assert communicator.future.cancelled() or communicator.future.exception() is None


async def receive_until(communicator: WebsocketCommunicator, expected: set[int]) -> list[dict[str, Any]]:
    """Frames until every expected event id has arrived (or one that is not expected: then stop and let the
    caller's assertion show it); each wait is bounded, so a missing event fails instead of hanging."""
    frames: list[dict[str, Any]] = []
    while not expected <= event_ids(frames):
        frame = await communicator.receive_json_from(timeout=5)
        frames.append(frame)
        if event_ids([frame]) - expected:
            break
    return frames


async def assert_quiet(communicator: WebsocketCommunicator) -> None:
    """Nothing more arrives. An absence can only be observed over a window; it follows the explicit waits above."""
    if not await communicator.receive_nothing(timeout=0.5):
        pytest.fail(f"unexpected frame {await communicator.receive_json_from(timeout=5)}")


def event_ids(frames: list[dict[str, Any]]) -> set[int]:
    return {event["id"] for frame in frames if frame["type"] == "events" for event in frame["events"]}


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", ["alice", "bob", "charlie", "nina", "sam", "ada"])
async def test_inbox_staff_can_open_the_agent_socket(world: World, cookies: dict[str, bytes], persona: str) -> None:
    communicator = socket(cookies[persona])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await communicator.send_json_to({"op": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", ["mark", "anonymous"])
async def test_marketer_and_anonymous_sockets_are_closed(world: World, cookies: dict[str, bytes], persona: str) -> None:
    communicator = socket(cookies.get(persona))
    connected, code = await communicator.connect(timeout=10)
    assert not connected
    assert code == 4403
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
async def test_socket_from_a_foreign_origin_is_refused(world: World, cookies: dict[str, bytes]) -> None:
    communicator = socket(cookies["alice"], origin=(b"origin", b"https://evil.example"))
    connected, _ = await communicator.connect(timeout=10)
    assert not connected
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
async def test_socket_of_a_deactivated_user_is_closed(world: World, cookies: dict[str, bytes]) -> None:
    await sync_to_async(User.objects.filter(pk=world.alice.pk).update)(is_active=False)
    communicator = socket(cookies["alice"])
    connected, code = await communicator.connect(timeout=10)
    assert not connected
    assert code == 4403
    await ended(communicator)


# persona → which teams' events its socket must carry
SOCKET_VISIBILITY = [
    ("alice", {"a"}),
    ("nina", {"a"}),
    ("charlie", {"b"}),
    ("sam", {"a", "b"}),
    ("ada", {"a", "b"}),
]


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("persona", "teams"), SOCKET_VISIBILITY)
async def test_socket_carries_exactly_the_events_of_visible_teams(
    world: World, inbound: Any, cookies: dict[str, bytes], persona: str, teams: set[str]
) -> None:
    deliver = sync_to_async(inbound)
    inbox_of = {"a": world.inbox_a.pk, "b": world.inbox_b.pk}
    # History written before the socket connects, replayed by a resync from 0.
    await deliver(world.inbox_a, PHONE_A, "history for cardiology")
    await deliver(world.inbox_b, PHONE_B, "history for orthopedics")

    communicator = socket(cookies[persona])
    connected, _ = await communicator.connect(timeout=10)
    assert connected
    await communicator.send_json_to({"op": "resync", "last_event_id": 0})
    ready = await communicator.receive_json_from(timeout=5)
    assert ready == {"type": "ready", "last_event_id": 0}

    @sync_to_async
    def expected_ids(after: int, upto: int | None) -> set[int]:
        rows = Event.objects.filter(id__gt=after, inbox_id__in=[inbox_of[t] for t in teams])
        if upto is not None:
            rows = rows.filter(id__lte=upto)
        return set(rows.values_list("id", flat=True))

    @sync_to_async
    def hidden_ids() -> set[int]:
        hidden = [inbox_of[t] for t in ("a", "b") if t not in teams]
        return set(Event.objects.filter(inbox_id__in=hidden).values_list("id", flat=True))

    @sync_to_async
    def newest() -> int:
        return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    cursor = await newest()
    history = await receive_until(communicator, await expected_ids(0, cursor))
    await assert_quiet(communicator)

    # Live: team A first, then team B, so a leak of A would arrive before the B frames we wait for.
    await deliver(world.inbox_a, PHONE_A2, "live for cardiology")
    await deliver(world.inbox_b, "+8613800138004", "live for orthopedics")
    live = await receive_until(communicator, await expected_ids(cursor, None))
    await assert_quiet(communicator)
    await ended(communicator)

    history_ids, live_ids = event_ids(history), event_ids(live)
    assert history_ids, "the resync replayed nothing"
    assert live_ids, "no live event reached the socket"
    assert history_ids == await expected_ids(0, cursor)
    assert live_ids == await expected_ids(cursor, None)
    assert not (history_ids | live_ids) & await hidden_ids()


@pytest.mark.django_db(transaction=True)
async def test_agent_of_team_b_socket_never_receives_team_a_events(
    world: World, inbound: Any, cookies: dict[str, bytes]
) -> None:
    communicator = socket(cookies["charlie"])
    assert (await communicator.connect(timeout=10))[0]
    await communicator.send_json_to({"op": "resync", "last_event_id": None})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    for i in range(3):
        await sync_to_async(inbound)(world.inbox_a, PHONE_A, f"cardiology message {i}")
    # A team B delivery after them is the signal that the hints of team A's had their chance to arrive.
    await sync_to_async(inbound)(world.inbox_b, PHONE_B, "orthopedics")
    frames = await receive_until(communicator, await sync_to_async(team_b_event_ids)(world))
    assert all(e["conversation"]["inbox"]["id"] == world.inbox_b.pk for e in conversation_events(frames))
    # Nothing at all of team A: no hint reaches charlie's groups, and a catch-up would find nothing visible.
    await assert_quiet(communicator)
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize(("persona", "allowed"), [("alice", True), ("nina", True), ("sam", True), ("charlie", False)])
async def test_watching_a_team_a_conversation(
    world: World, inbound: Any, cookies: dict[str, bytes], persona: str, allowed: bool
) -> None:
    result = await sync_to_async(inbound)(world.inbox_a, PHONE_A, "hello")
    communicator = socket(cookies[persona])
    assert (await communicator.connect(timeout=10))[0]
    await communicator.send_json_to({"op": "watch", "conversation_id": result.conversation.pk})
    if not allowed:
        frame = await communicator.receive_json_from(timeout=5)
        assert frame["type"] == "error"
        assert frame["code"] == "forbidden"
    # Frames are handled in order: the pong says the watch was handled, silently when it was allowed.
    await communicator.send_json_to({"op": "ping"})
    assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
async def test_typing_in_a_team_a_conversation_does_not_reach_team_b(
    world: World, inbound: Any, cookies: dict[str, bytes]
) -> None:
    result = await sync_to_async(inbound)(world.inbox_a, PHONE_A, "hello")
    conversation_id = result.conversation.pk
    alice, bob, charlie = (socket(cookies[p]) for p in ("alice", "bob", "charlie"))
    for communicator in (alice, bob, charlie):
        assert (await communicator.connect(timeout=10))[0]
    await bob.send_json_to({"op": "watch", "conversation_id": conversation_id})
    await charlie.send_json_to({"op": "watch", "conversation_id": conversation_id})
    assert (await charlie.receive_json_from(timeout=5))["code"] == "forbidden"
    await alice.send_json_to({"op": "watch", "conversation_id": conversation_id})
    # The pongs say each watch was handled (frames are handled in order), so the groups are joined.
    for communicator in (alice, bob):
        await communicator.send_json_to({"op": "ping"})
        assert await communicator.receive_json_from(timeout=5) == {"type": "pong"}
    await alice.send_json_to({"op": "typing", "conversation_id": conversation_id, "state": "start"})
    typing = await bob.receive_json_from(timeout=5)
    assert typing["type"] == "typing"
    assert typing["user_id"] == world.alice.pk
    # bob got it; charlie, who is not in the group, gets nothing, not even late.
    await assert_quiet(charlie)
    for communicator in (alice, bob, charlie):
        await ended(communicator)


def team_b_event_ids(world: World) -> set[int]:
    return set(Event.objects.filter(inbox_id=world.inbox_b.pk).values_list("id", flat=True))


def conversation_events(frames: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [e for f in frames if f["type"] == "events" for e in f["events"] if e["type"] == "conversation"]


# --- The socket after a team or role change ------------------------------------------------------------------


@pytest.mark.django_db(transaction=True)
@pytest.mark.parametrize("persona", sorted(TEAM_CHANGES))
async def test_socket_after_a_team_change_carries_exactly_the_new_teams(
    world: World, inbound: Any, cookies: dict[str, bytes], persona: str
) -> None:
    deliver = sync_to_async(inbound)
    await deliver(world.inbox_a, PHONE_A, "history for cardiology")
    await deliver(world.inbox_b, PHONE_B, "history for orthopedics")
    teams = TEAM_CHANGES[persona]
    team_of = {"a": world.team_a.pk, "b": world.team_b.pk}
    await sync_to_async(change_staff_teams)(
        user=getattr(world, persona), team_ids=[team_of[t] for t in teams], actor=world.ada
    )

    @sync_to_async
    def ids_of(inboxes: set[str]) -> set[int]:
        inbox_of = {"a": world.inbox_a.pk, "b": world.inbox_b.pk}
        return set(Event.objects.filter(inbox_id__in=[inbox_of[t] for t in inboxes]).values_list("id", flat=True))

    communicator = socket(cookies[persona])
    assert (await communicator.connect(timeout=10))[0]
    await communicator.send_json_to({"op": "resync", "last_event_id": 0})
    assert (await communicator.receive_json_from(timeout=5))["type"] == "ready"
    replay = await receive_until(communicator, await ids_of(teams))
    await assert_quiet(communicator)
    assert event_ids(replay) == await ids_of(teams)
    assert not event_ids(replay) & await ids_of({"a", "b"} - teams)
    await ended(communicator)


@pytest.mark.django_db(transaction=True)
async def test_socket_of_an_agent_made_marketer_is_refused(world: World, cookies: dict[str, bytes]) -> None:
    await sync_to_async(change_staff_role)(user=world.alice, role=Role.MARKETER, actor=world.ada)
    communicator = socket(cookies["alice"])
    connected, code = await communicator.connect(timeout=10)
    assert (connected, code) == (False, 4403)
    await ended(communicator)

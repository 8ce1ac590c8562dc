"""Personas and helpers shared by every test.

Team A is Cardiology, team B is Orthopedics. alice and bob are agents of A, charlie is an agent of B
(and must never see anything of A), nina is a nurse of A, sam a supervisor, ada an admin, mark a marketer.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from django.contrib.auth import get_user_model
from django.contrib.auth.models import AbstractBaseUser

from channels_adapters.base import InboundMessage, Sender
from contactcenter.actions.inbound import InboundResult, receive_inbound
from contactcenter.models import AgentProfile, Availability, ChannelType, Event, IdentityKind, Inbox, Role, Team

User = get_user_model()
PASSWORD = "correct-horse-battery"


@dataclass
class World:
    team_a: Team
    team_b: Team
    inbox_a: Inbox
    inbox_b: Inbox
    alice: AbstractBaseUser
    bob: AbstractBaseUser
    charlie: AbstractBaseUser
    nina: AbstractBaseUser
    sam: AbstractBaseUser
    ada: AbstractBaseUser
    mark: AbstractBaseUser

    def users(self) -> dict[str, AbstractBaseUser]:
        return {n: getattr(self, n) for n in ("alice", "bob", "charlie", "nina", "sam", "ada", "mark")}


def make_staff(
    username: str, role: str, teams: list[Team], availability: str = Availability.OFFLINE
) -> AbstractBaseUser:
    user = User.objects.create_user(username=username, password=PASSWORD)
    profile = AgentProfile.objects.create(
        user=user, role=role, display_name=username.title(), availability=availability
    )
    profile.teams.set(teams)
    return user


@pytest.fixture
def world(db: Any) -> World:
    team_a = Team.objects.create(code="cardiology", name="Cardiology", name_zh="心内科")
    team_b = Team.objects.create(code="orthopedics", name="Orthopedics", name_zh="骨科")
    inbox_a = Inbox.objects.create(
        name="Cardiology SMS", channel_type=ChannelType.SIMULATOR, team=team_a, auto_assign=False
    )
    inbox_b = Inbox.objects.create(
        name="Orthopedics SMS", channel_type=ChannelType.SIMULATOR, team=team_b, auto_assign=False
    )
    return World(
        team_a=team_a,
        team_b=team_b,
        inbox_a=inbox_a,
        inbox_b=inbox_b,
        alice=make_staff("alice", Role.AGENT, [team_a]),
        bob=make_staff("bob", Role.AGENT, [team_a]),
        charlie=make_staff("charlie", Role.AGENT, [team_b]),
        nina=make_staff("nina", Role.NURSE, [team_a]),
        sam=make_staff("sam", Role.SUPERVISOR, []),
        ada=make_staff("ada", Role.ADMIN, []),
        mark=make_staff("mark", Role.MARKETER, []),
    )


_provider_ids = itertools.count(1)


@pytest.fixture
def inbound() -> Callable[..., InboundResult]:
    """Deliver a patient's message through the one inbound path, as any adapter would."""

    def deliver(
        inbox: Inbox, phone: str, body: str = "Hello", *, provider_id: str | None = None, name: str = ""
    ) -> InboundResult:
        return receive_inbound(
            InboundMessage(
                inbox_id=inbox.pk,
                sender=Sender(kind=IdentityKind.PHONE, value=phone, name=name),
                body=body,
                provider_message_id=provider_id or f"TEST-{next(_provider_ids)}",
            )
        )

    return deliver


class EventCapture:
    def __init__(self) -> None:
        self.start = Event.objects.order_by("-id").values_list("id", flat=True).first() or 0

    def all(self) -> list[Event]:
        return list(Event.objects.filter(id__gt=self.start).order_by("id"))

    def kinds(self) -> list[str]:
        return [f"{e.type}.{e.op}" for e in self.all()]


@pytest.fixture
def capture_events(db: Any) -> Callable[[], EventCapture]:
    return EventCapture


@pytest.hookimpl(trylast=True)
def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Browser tests last: they share one live server process, and a failure there reads better
    after the fast tests have told what they know."""
    items.sort(key=lambda item: item.get_closest_marker("browser") is not None)

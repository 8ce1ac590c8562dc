"""The chaos run's hospital: one team with a Twilio SMS inbox, agents and supervisors with sessions, an API token
for the replying agent, and open conversations to reply to. Built in the runner's own process (Django set up
against the layout's database) before the servers start."""

from __future__ import annotations

import secrets
from dataclasses import dataclass

from bench.realtime_fanout import session_cookie
from bench.sms_inbound import INBOX_NUMBER
from bench.sms_inbound import World as SmsWorld


@dataclass(frozen=True)
class Staff:
    """One socket's user. In the chaos world nothing moves between teams, so what a socket may see is what is
    addressed to it (docs/architecture.md), written out here rather than taken from access.py."""

    user_id: int
    supervisor: bool
    team_ids: frozenset[int]
    inbox_ids: frozenset[int]
    cookie: str

    def may_see(self, inbox_id: int | None, team_id: int | None, user_id: int | None) -> bool:
        return (
            self.supervisor
            or (inbox_id is not None and inbox_id in self.inbox_ids)
            or (team_id is not None and team_id in self.team_ids)
            or (user_id is not None and user_id == self.user_id)
        )


@dataclass(frozen=True)
class ChaosWorld:
    sms: SmsWorld  # what bench.sms_inbound.Twilio signs webhooks with (base = the proxy)
    staff: list[Staff]  # one socket each
    reply_token: str  # the replying agent's API token
    conversation_ids: list[int]  # open conversations the agent replies in, round robin
    team_id: int
    inbox_id: int


def create_world(*, base: str, port: int, token: str, agents: int, supervisors: int, senders: int) -> ChaosWorld:
    from django.contrib.auth.hashers import make_password
    from django.contrib.auth.models import User
    from rest_framework.authtoken.models import Token

    from channels_adapters.base import InboundMessage, Sender
    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
    from contactcenter.actions.inbound import receive_inbound
    from contactcenter.models import AgentProfile, Availability, IdentityKind, Role, Team

    team = Team.objects.create(code="chaos-desk", name="Patient service desk", name_zh="患者服务台")
    account_sid = "AC" + secrets.token_hex(16)
    inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Service desk SMS",
            team=team,
            account_sid=account_sid,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[INBOX_NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    unusable = make_password(None)  # sessions are made directly; no password hashing needed
    staff: list[Staff] = []
    reply_user: User | None = None
    for i in range(agents + supervisors):
        supervisor = i >= agents
        user = User.objects.create(username=f"chaos-{'supervisor' if supervisor else 'agent'}{i}", password=unusable)
        profile = AgentProfile.objects.create(
            user=user,
            role=Role.SUPERVISOR if supervisor else Role.AGENT,
            availability=Availability.ONLINE,
            display_name=f"{'Supervisor' if supervisor else 'Agent'} {i}",
        )
        if not supervisor:
            profile.teams.add(team)
            reply_user = reply_user or user
        staff.append(
            Staff(
                user_id=user.pk,
                supervisor=supervisor,
                team_ids=frozenset() if supervisor else frozenset({team.pk}),
                inbox_ids=frozenset() if supervisor else frozenset({inbox.pk}),
                cookie=session_cookie(user),
            )
        )
    assert reply_user is not None, "at least one agent replies"
    numbers = [f"+86139{i:08d}" for i in range(senders)]
    # Half the senders have written before: the replies go to their conversations, and the load mixes
    # follow-ups with first contacts.
    conversation_ids = [
        receive_inbound(
            InboundMessage(
                inbox_id=inbox.pk,
                sender=Sender(kind=IdentityKind.PHONE, value=number),
                body="Hello, I have a question about my appointment.",
                provider_message_id=f"SMchaosprime{n:020d}",
            )
        ).conversation.pk
        for n, number in enumerate(numbers[: max(1, senders // 2)])
    ]
    sms = SmsWorld(
        base=base,
        port=port,
        token=token,
        account_sid=account_sid,
        inbox_id=inbox.pk,
        agent_cookie=staff[0].cookie,
        senders=numbers,
        agents=agents,
        capacity=0,
    )
    return ChaosWorld(
        sms=sms,
        staff=staff,
        reply_token=Token.objects.create(user=reply_user).key,
        conversation_ids=conversation_ids,
        team_id=team.pk,
        inbox_id=inbox.pk,
    )

"""Configuring a Twilio SMS inbox: the only writer of SMS inbox settings and their sender routing."""

from __future__ import annotations

from dataclasses import dataclass

from django.core.exceptions import ValidationError
from django.db import transaction

from channels_adapters.sms.models import SenderKind, TwilioSender
from contactcenter.models import ChannelType, Inbox, Team


@dataclass(frozen=True)
class SmsInboxSettings:
    name: str
    team: Team
    account_sid: str
    auth_token_env: str
    phone_numbers: list[str]  # E.164, already normalized
    messaging_service_sid: str
    auto_assign: bool


@transaction.atomic
def save_sms_inbox(*, inbox: Inbox | None, settings: SmsInboxSettings) -> Inbox:
    """Create or update an SMS inbox and the numbers/service it owns.

    A number or service already owned by another inbox is refused: inbound routing must be unambiguous.
    """
    if not settings.phone_numbers and not settings.messaging_service_sid:
        raise ValidationError({"phone_numbers": ["Give at least one number or a Messaging Service SID."]})
    wanted = [(SenderKind.NUMBER, n) for n in settings.phone_numbers]
    if settings.messaging_service_sid:
        wanted.append((SenderKind.MESSAGING_SERVICE, settings.messaging_service_sid))
    taken = TwilioSender.objects.filter(value__in=[v for _k, v in wanted])
    if inbox is not None:
        taken = taken.exclude(inbox=inbox)
    clash = taken.select_related("inbox").first()
    if clash is not None:
        raise ValidationError({"phone_numbers": [f"{clash.value} already belongs to the inbox “{clash.inbox.name}”."]})
    config = {"account_sid": settings.account_sid, "auth_token_env": settings.auth_token_env}
    if inbox is None:
        inbox = Inbox.objects.create(
            name=settings.name,
            channel_type=ChannelType.SMS,
            team=settings.team,
            config=config,
            auto_assign=settings.auto_assign,
        )
    else:
        inbox.name = settings.name
        inbox.team = settings.team
        inbox.config = {**inbox.config, **config}
        inbox.auto_assign = settings.auto_assign
        inbox.save(update_fields=["name", "team", "config", "auto_assign"])
    TwilioSender.objects.filter(inbox=inbox).exclude(value__in=[v for _k, v in wanted]).delete()
    for kind, value in wanted:
        TwilioSender.objects.get_or_create(inbox=inbox, kind=kind, value=value)
    return inbox

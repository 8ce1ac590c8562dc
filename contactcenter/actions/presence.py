from __future__ import annotations

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction

from contactcenter import events
from contactcenter.models import AgentProfile, Availability


@transaction.atomic
def set_availability(*, user: User, availability: str) -> AgentProfile:
    if availability not in Availability.values:
        raise ValidationError({"availability": [f"Choose one of {', '.join(Availability.values)}."]})
    profile = AgentProfile.objects.select_for_update().get(user=user)
    if profile.availability == availability:
        return profile
    profile.availability = availability
    profile.save(update_fields=["availability"])
    payload = events.PresenceChanged(user_id=user.pk, availability=availability)
    for team_id in profile.teams.values_list("id", flat=True):
        events.record(payload, events.Audience(team_id=team_id))
    events.record(payload, events.Audience(user_id=user.pk))
    return profile

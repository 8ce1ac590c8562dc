"""The consent registry: one place that records and answers "may we send this patient marketing?".

Keywords are whole-body, single-word and case-insensitive (what carriers and Twilio honour); anything
longer that reads like an opt-out is only flagged for the agent, because "stop the reminders for my
mother" is not the patient leaving every campaign.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from contactcenter import events
from contactcenter.models import (
    Consent,
    ConsentChange,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Message,
    Patient,
)

OPT_OUT, OPT_IN, HELP = "opt_out", "opt_in", "help"
LIKELY_OPT_OUT_FLAG = "likely_opt_out"

_TRIM = " \t\r\n\u3000\u00a0.!。！,，;；\"'“”"
_LIKELY_OPT_OUT = re.compile(
    r"(^\s*stop\b(?!\s+by\b)|stop\s+(texting|messaging|sending|contacting)|don'?t\s+(text|message|contact)|do\s+not\s+(text|message|contact)"
    r"|unsubscribe|opt\s*-?\s*out|remove\s+me|no\s+more\s+(texts|messages|sms)"
    r"|不要再?发|别再?发|不要.{0,4}短信|取消订阅|拒收|别.{0,3}联系我|不要.{0,3}联系我)",
    re.IGNORECASE,
)


def classify_keyword(body: str) -> str | None:
    word = body.strip(_TRIM).upper()
    if not word or " " in word:
        return None
    if word in settings.SMS_OPT_OUT_KEYWORDS:
        return OPT_OUT
    if word in settings.SMS_OPT_IN_KEYWORDS:
        return OPT_IN
    if word in settings.SMS_HELP_KEYWORDS:
        return HELP
    return None


def looks_like_opt_out(body: str) -> bool:
    return classify_keyword(body) is None and bool(_LIKELY_OPT_OUT.search(body))


def consent_status(*, patient: Patient, purpose: str) -> str:
    row = Consent.objects.filter(patient=patient, purpose=purpose).values_list("status", flat=True).first()
    return row or ConsentStatus.OPTED_IN


def check_may_send(*, patient: Patient, purpose: str) -> None:
    """Refuse marketing to a patient who opted out, with a reason staff can act on."""
    if purpose != ConsentPurpose.MARKETING:
        return
    change = (
        ConsentChange.objects.filter(patient=patient, purpose=purpose).order_by("-at", "-id").first()
        if consent_status(patient=patient, purpose=purpose) == ConsentStatus.OPTED_OUT
        else None
    )
    if change is not None:
        raise ValidationError(
            _("This patient opted out of marketing messages (%(source)s, %(when)s); marketing cannot be sent.")
            % {"source": change.get_source_display(), "when": timezone.localtime(change.at).strftime("%Y-%m-%d %H:%M")},
            code="opted_out",
        )


@dataclass(frozen=True)
class ConsentResult:
    changed: bool
    status: str


@transaction.atomic
def record_consent(
    *,
    patient: Patient,
    purpose: str,
    status: str,
    source: str,
    channel: str = "",
    keyword: str = "",
    message: Message | None = None,
    actor: User | None = None,
) -> ConsentResult:
    """Set a patient's consent for one purpose on all channels, and keep the history of why."""
    current, created = Consent.objects.select_for_update().get_or_create(
        patient=patient, purpose=purpose, defaults={"status": status}
    )
    changed = created or current.status != status
    if not changed:
        return ConsentResult(False, status)
    if not created:
        current.status = status
        current.changed_at = timezone.now()
        current.save(update_fields=["status", "changed_at"])
    ConsentChange.objects.create(
        patient=patient,
        purpose=purpose,
        status=status,
        source=source,
        channel=channel,
        keyword=keyword[:40],
        message=message,
        actor=actor,
    )
    events.record(events.PatientUpdated(patient_id=patient.pk), events.Audience())
    return ConsentResult(True, status)


def apply_inbound_keywords(*, message: Message, patient: Patient, channel: str) -> str | None:
    """Called by receive_inbound inside its transaction. Returns the keyword kind that applied."""
    kind = classify_keyword(message.body)
    if kind in (OPT_OUT, OPT_IN):
        record_consent(
            patient=patient,
            purpose=ConsentPurpose.MARKETING,
            status=ConsentStatus.OPTED_OUT if kind == OPT_OUT else ConsentStatus.OPTED_IN,
            source=ConsentSource.KEYWORD,
            channel=channel,
            keyword=message.body.strip(_TRIM),
            message=message,
        )
    elif kind is None and looks_like_opt_out(message.body):
        message.flags = [*message.flags, LIKELY_OPT_OUT_FLAG]
        message.save(update_fields=["flags"])
    return kind

"""The consent registry: one place that records and answers "may we send this patient marketing?".

Keywords are an SMS convention (carriers and Twilio act on them): whole-body, single-word, case-insensitive
and read after Unicode NFKC folding, so a full-width "ＳＴＯＰ" from a Chinese keyboard is "STOP". Which
keyword kinds a channel honours is KEYWORD_KINDS; elsewhere (web chat, email) an opt-out word is only
flagged for staff, and "HELP" is just a word. Context wins over keywords: a reply that a feature is waiting
for as an answer ("N" to a survey's yes/no question, contactcenter.inbound_hooks) is that answer, not a
consent change. Anything longer that reads like an opt-out is only flagged for the agent, because "stop the
reminders for my mother" is not the patient leaving every campaign.

Marketing consent starts unknown (no row), never granted; who may be sent marketing is decided by one
function, marketing_permitted, under settings.MARKETING_CONSENT_POLICY. Service messages (a callback the
patient asked for, a survey, an answer to their chat) are a separate purpose and go unless refused.
"""

from __future__ import annotations

import calendar
import datetime as dt
import logging
import re
import unicodedata
from collections.abc import Iterable
from dataclasses import dataclass

from django.conf import settings
from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.db.models import Exists, OuterRef, Q
from django.utils import timezone
from django.utils.translation import gettext as _

from contactcenter import events
from contactcenter.inbound_hooks import claimed_as_answer
from contactcenter.models import (
    ChannelType,
    Consent,
    ConsentChange,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Conversation,
    Message,
    Patient,
    Visit,
)

logger = logging.getLogger(__name__)

OPT_OUT, OPT_IN, HELP = "opt_out", "opt_in", "help"
LIKELY_OPT_OUT_FLAG = "likely_opt_out"

# The keyword kinds each channel honours. SMS (and the simulator, which plays an SMS handset) answers all
# three, as carriers expect. A web chat or an email is written to people, not to a carrier: "STOP" there
# is at most flagged for staff to confirm, and "HELP" is a question for the agent, not the SMS help text.
KEYWORD_KINDS: dict[str, frozenset[str]] = {
    ChannelType.SMS: frozenset({OPT_OUT, OPT_IN, HELP}),
    ChannelType.SIMULATOR: frozenset({OPT_OUT, OPT_IN, HELP}),
}

# settings.MARKETING_CONSENT_POLICY values.
POLICY_OPT_IN = "opt_in"
POLICY_EXISTING_PATIENT = "existing_patient"

# Why marketing_refusals refuses a patient.
REFUSED_OPTED_OUT = "opted_out"
REFUSED_NO_CONSENT = "no_consent"

_TRIM = " \t\r\n\u3000\u00a0.!。！,，;；\"'“”"
_LIKELY_OPT_OUT = re.compile(
    r"(^\s*stop\b(?!\s+by\b)|stop\s+(texting|messaging|sending|contacting)|don'?t\s+(text|message|contact)|do\s+not\s+(text|message|contact)"
    r"|unsubscribe|opt\s*-?\s*out|remove\s+me|no\s+more\s+(texts|messages|sms)"
    r"|退订|不要再?发|别再?发|不要.{0,4}短信|取消订阅|拒收|别.{0,3}联系我|不要.{0,3}联系我)",
    re.IGNORECASE,
)

# The one SMS that confirms a change made by keyword, in the patient's language; both when it is unknown.
# Service messages: they carry no offer and nothing clinical, and the patient asked for the change.
_CONFIRMATIONS: dict[str, dict[str, str]] = {
    OPT_OUT: {
        "en": "You will get no more marketing messages from us. Messages about your care still reach you. "
        "Reply START to subscribe again.",
        "zh-hans": "您已退订本院营销短信，与您就诊相关的服务通知仍会发送。回复START可重新订阅。",
    },
    OPT_IN: {
        "en": "You are subscribed to our news and offers again. Reply STOP to unsubscribe.",
        "zh-hans": "您已重新订阅本院资讯短信。回复R或退订可随时取消。",
    },
}


def _fold(text: str) -> str:
    return unicodedata.normalize("NFKC", text)


def _word(body: str) -> str:
    return _fold(body).strip(_TRIM)


def classify_keyword(body: str) -> str | None:
    """The keyword kind of a whole message body, on any channel (KEYWORD_KINDS says where it counts)."""
    word = _word(body).upper()
    if not word or " " in word:
        return None
    if word in _keywords("SMS_OPT_OUT_KEYWORDS"):
        return OPT_OUT
    if word in _keywords("SMS_OPT_IN_KEYWORDS"):
        return OPT_IN
    if word in _keywords("SMS_HELP_KEYWORDS"):
        return HELP
    return None


def _keywords(name: str) -> frozenset[str]:
    # Folded like the bodies, so a full-width keyword in the environment matches too.
    return frozenset(_fold(k).upper() for k in getattr(settings, name))


def looks_like_opt_out(body: str) -> bool:
    return classify_keyword(body) is None and bool(_LIKELY_OPT_OUT.search(_fold(body)))


def consent_status(*, patient: Patient, purpose: str) -> str:
    """The patient's recorded consent for a purpose; unknown when nothing was ever recorded."""
    row = Consent.objects.filter(patient=patient, purpose=purpose).values_list("status", flat=True).first()
    return row or ConsentStatus.UNKNOWN


# --- Who may be sent marketing -------------------------------------------------------------------------


def _months_before(moment: dt.datetime, months: int) -> dt.datetime:
    index = moment.year * 12 + moment.month - 1 - months
    year, month = divmod(index, 12)
    return moment.replace(year=year, month=month + 1, day=min(moment.day, calendar.monthrange(year, month + 1)[1]))


def marketing_permitted(*, now: dt.datetime | None = None) -> Q:
    """The patients (a condition on Patient) who may be sent marketing under settings.MARKETING_CONSENT_POLICY.

    - "opt_in": only an explicit opt-in (a keyword, the hospital system, staff, the patient's own form).
    - "existing_patient": an explicit opt-in, or consent never recorded (unknown) and a visit in the last
      MARKETING_EXISTING_PATIENT_MONTHS: the existing relationship is the basis.
    An opt-out always wins. The campaign estimate, segment counts, launch snapshot and sender all ask
    here (or marketing_refusals, built on this), so what the marketer is shown is what is sent.
    """
    rows = Consent.objects.filter(patient=OuterRef("pk"), purpose=ConsentPurpose.MARKETING)
    opted_in = Q(Exists(rows.filter(status=ConsentStatus.OPTED_IN)))
    if settings.MARKETING_CONSENT_POLICY == POLICY_OPT_IN:
        return opted_in
    cutoff = _months_before(now or timezone.now(), settings.MARKETING_EXISTING_PATIENT_MONTHS)
    recorded = Q(Exists(rows.exclude(status=ConsentStatus.UNKNOWN)))
    visited = Q(
        Exists(
            Visit.objects.filter(patient=OuterRef("pk")).filter(
                Q(admitted_at__gte=cutoff) | Q(discharged_at__gte=cutoff)
            )
        )
    )
    return opted_in | (~recorded & visited)


def marketing_opted_out() -> Q:
    """The patients who opted out of marketing (a condition on Patient): counted apart in estimates."""
    return Q(
        Exists(
            Consent.objects.filter(
                patient=OuterRef("pk"), purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT
            )
        )
    )


def marketing_refusals(patient_ids: Iterable[int], *, now: dt.datetime | None = None) -> dict[int, str]:
    """Patient id → why marketing may not be sent to them (REFUSED_OPTED_OUT or REFUSED_NO_CONSENT); the
    patients not in the answer may be sent marketing. Two queries for any number of patients."""
    ids = set(patient_ids)
    if not ids:
        return {}
    opted_out = set(
        Consent.objects.filter(
            patient_id__in=ids, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT
        ).values_list("patient_id", flat=True)
    )
    allowed = set(
        Patient.objects.filter(pk__in=ids - opted_out).filter(marketing_permitted(now=now)).values_list("pk", flat=True)
    )
    return {pid: REFUSED_OPTED_OUT if pid in opted_out else REFUSED_NO_CONSENT for pid in ids if pid not in allowed}


def check_may_send(*, patient: Patient, purpose: str) -> None:
    """Refuse marketing the registry does not allow, with a reason staff can act on. Service always passes."""
    if purpose != ConsentPurpose.MARKETING:
        return
    refusal = marketing_refusals([patient.pk]).get(patient.pk)
    if refusal == REFUSED_OPTED_OUT:
        change = ConsentChange.objects.filter(patient=patient, purpose=purpose).order_by("-at", "-id").first()
        if change is None:
            raise ValidationError(
                _("This patient opted out of marketing messages; marketing cannot be sent."), code="opted_out"
            )
        raise ValidationError(
            _("This patient opted out of marketing messages (%(source)s, %(when)s); marketing cannot be sent.")
            % {"source": change.get_source_display(), "when": timezone.localtime(change.at).strftime("%Y-%m-%d %H:%M")},
            code="opted_out",
        )
    if refusal == REFUSED_NO_CONSENT:
        raise ValidationError(
            _("This patient has not agreed to marketing messages; marketing cannot be sent."), code="no_consent"
        )


# --- Recording ----------------------------------------------------------------------------------------


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


# --- Keywords on the inbound path --------------------------------------------------------------------------


@dataclass(frozen=True)
class AppliedKeyword:
    kind: str  # OPT_OUT, OPT_IN or HELP
    # The keyword changed the registry (a first STOP; not a second one while already opted out).
    changed: bool = False


def apply_inbound_keywords(
    *, message: Message, conversation: Conversation, patient: Patient, channel: str
) -> AppliedKeyword | None:
    """Called by receive_inbound inside its transaction, before any inbound hook. Returns the keyword that
    applied, or None: no keyword, a channel where it is not one, or a reply a feature claims as its answer."""
    kind = classify_keyword(message.body)
    if kind is not None and kind in KEYWORD_KINDS.get(channel, frozenset()):
        claimant = claimed_as_answer(message=message, conversation=conversation, patient=patient)
        if claimant is not None:
            # Context wins: "N" to a yes/no question is "no", not an opt-out. The claimant reads it as its answer.
            logger.info("message %s: keyword-like reply claimed as an answer by %s", message.pk, claimant)
            return None
        if kind == HELP:
            return AppliedKeyword(HELP)
        result = record_consent(
            patient=patient,
            purpose=ConsentPurpose.MARKETING,
            status=ConsentStatus.OPTED_OUT if kind == OPT_OUT else ConsentStatus.OPTED_IN,
            source=ConsentSource.KEYWORD,
            channel=channel,
            keyword=_word(message.body),
            message=message,
        )
        return AppliedKeyword(kind, changed=result.changed)
    if _LIKELY_OPT_OUT.search(_fold(message.body)):
        # Words for staff to confirm; off SMS this includes a bare "STOP", which is no keyword there.
        message.flags = [*message.flags, LIKELY_OPT_OUT_FLAG]
        message.save(update_fields=["flags"])
    return None


def keyword_reply(applied: AppliedKeyword, *, patient: Patient) -> str | None:
    """What receive_inbound answers a keyword with, as a service message: the help text to HELP (every
    time: the patient asked), and one confirmation of a consent change (none for a repeated STOP)."""
    if applied.kind == HELP:
        return str(settings.SMS_HELP_TEXT)
    if not applied.changed or applied.kind not in _CONFIRMATIONS:
        return None
    texts = _CONFIRMATIONS[applied.kind]
    language = (patient.language or "").lower()
    if language.startswith("zh"):
        return texts["zh-hans"]
    if language.startswith("en"):
        return texts["en"]
    return f"{texts['zh-hans']}\n{texts['en']}"

"""Campaign lifecycle: draft → scheduled → running ⇄ paused → completed, or cancelled.

    draft ──schedule──► scheduled ──(due-work job at scheduled_at)──► running ──(sender)──► completed
      │                    │                                         │   ▲
      └──────send_now──────┴──────────────► launch ──────────────────┘   │ pause / resume
                                                                      paused
    scheduled, running, paused ──cancel──► cancelled (waiting recipients → cancelled)

Every transition takes the campaign's row lock (SELECT … FOR UPDATE) and checks the status it starts from,
so two clicks, two dispatchers or a click racing the dispatcher make one transition. The sender
(campaigns.sending.engine) re-reads the status between recipients under the same lock discipline, so a
pause or cancel stops it within one recipient.

Launch snapshots the audience into CampaignRecipient rows in bulk, each with its state decided once
(pending, or skipped with the reason), and hands the campaign to the sender after commit. A launch with
nobody left to send to is refused; so is a campaign from a Chinese (+86) number without its 【签名】.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
from collections.abc import Iterator, Mapping
from typing import Any

import phonenumbers
from django.contrib.auth.models import AbstractBaseUser, AnonymousUser
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from campaigns.lint import lint_template
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, MissingValueRule, RecipientState, Segment
from campaigns.segments.compiler import segment_patients
from campaigns.sending import progress
from campaigns.templating import (
    MAX_BODY_CHARS,
    MAX_FALLBACK_CHARS,
    MAY_BE_MISSING,
    PLACEHOLDERS,
    clean_signature,
    clean_value,
    facts_for,
    parse,
    render,
    template_problems,
)
from channels_adapters.sms.models import SenderKind as TwilioSenderKind
from channels_adapters.sms.models import TwilioSender
from contactcenter.actions.consent import REFUSED_OPTED_OUT, marketing_refusals
from contactcenter.dispatch import skip_locked
from contactcenter.models import ChannelType, IdentityKind, Inbox, PatientIdentity
from contactcenter.taskrunner import enqueue

logger = logging.getLogger(__name__)

Actor = AbstractBaseUser | AnonymousUser | None

SMS_CHANNELS = (ChannelType.SMS, ChannelType.SIMULATOR)
MAX_MESSAGES_PER_SECOND = 1000
MAX_CONVERSION_WINDOW_DAYS = 365
SNAPSHOT_BATCH = 5000
# How far ahead a campaign may be scheduled: a time years away is a typo, not a plan.
MAX_SCHEDULE_AHEAD = dt.timedelta(days=365)
# Mainland China's country code: carriers there refuse marketing SMS without the sender's 【签名】.
CHINA_PREFIX = "+86"
RUN_TASK = "campaigns.tasks.run_campaign"

EDITABLE_FIELDS = (
    "name",
    "segment",
    "inbox",
    "body",
    "fallbacks",
    "missing_value_rule",
    "signature",
    "opt_out_tail",
    "messages_per_second",
    "quiet_hours_start",
    "quiet_hours_end",
    "conversion_window_days",
)
WAITING_STATES = (RecipientState.PENDING, RecipientState.DEFERRED)
LAUNCHABLE = (CampaignStatus.DRAFT, CampaignStatus.SCHEDULED)

# Mainland China mobiles are most of our audience: a regex answers for them without parsing.
_CN_MOBILE = re.compile(r"\+861[3-9]\d{9}")
_MOBILE_TYPES = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)


# --- Validation --------------------------------------------------------------------------------------


def campaign_errors(campaign: Campaign) -> dict[str, list[str]]:
    """Field errors that stop a campaign from being saved at all (lint problems are not among them)."""
    errors: dict[str, list[str]] = {}

    def add(name: str, message: str) -> None:
        errors.setdefault(name, []).append(message)

    if not campaign.name.strip():
        add("name", _("Give the campaign a name."))
    elif len(campaign.name) > 120:
        add("name", _("A name can be at most 120 characters."))
    inbox = campaign.inbox if campaign.inbox_id else None
    if inbox is None:
        add("inbox", _("Choose the SMS inbox to send from."))
    elif inbox.channel_type not in SMS_CHANNELS:
        add("inbox", _("Campaigns are sent from an SMS inbox."))
    elif not inbox.is_active:
        add("inbox", _("This inbox is switched off."))
    if not campaign.segment_id:
        add("segment", _("Choose the segment to send to."))
    body = campaign.body or ""
    if not body.strip():
        add("body", _("Write the message."))
    elif len(body) > MAX_BODY_CHARS:
        add("body", _("A message can be at most %(max)d characters.") % {"max": MAX_BODY_CHARS})
    elif "\x00" in body:
        add("body", _("Null characters are not allowed."))
    else:
        for problem in template_problems(body):
            add("body", problem)
    fallbacks = campaign.fallbacks
    if not isinstance(fallbacks, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in fallbacks.items()
    ):
        add("fallbacks", _('Fallbacks are a text per placeholder, e.g. {"first_name": "Patient"}.'))
    else:
        for name, value in fallbacks.items():
            if name not in PLACEHOLDERS:
                add("fallbacks", _("“%(name)s” is not a placeholder.") % {"name": name})
            elif len(value) > MAX_FALLBACK_CHARS or "{{" in value or "}}" in value or "\x00" in value:
                add(
                    "fallbacks",
                    _("The fallback for %(name)s must be plain text of at most %(max)d characters.")
                    % {"name": name, "max": MAX_FALLBACK_CHARS},
                )
        if campaign.missing_value_rule == MissingValueRule.FALLBACK and "body" not in errors:
            lacking = sorted(
                n for n in parse(body).placeholders & MAY_BE_MISSING if not str(fallbacks.get(n, "")).strip()
            )
            if lacking:
                add(
                    "fallbacks",
                    _("Give a fallback for %(names)s, or skip recipients with missing values.")
                    % {"names": ", ".join(lacking)},
                )
    if campaign.missing_value_rule not in MissingValueRule.values:
        add("missing_value_rule", _("Choose skip or fallback."))
    if len(campaign.signature or "") > 30:
        add("signature", _("A signature can be at most 30 characters."))
    elif campaign.signature and not clean_signature(campaign.signature):
        add("signature", _("The signature is empty once the 【】 brackets are taken off."))
    if len(campaign.opt_out_tail or "") > 60:
        add("opt_out_tail", _("The opt-out text can be at most 60 characters."))
    for name in ("signature", "opt_out_tail"):
        value = getattr(campaign, name) or ""
        if "{{" in value or "}}" in value or "\x00" in value:
            add(name, _("Plain text only; placeholders are for the message."))
    mps = campaign.messages_per_second
    if not isinstance(mps, int) or not 1 <= mps <= MAX_MESSAGES_PER_SECOND:
        add(
            "messages_per_second",
            _("Messages per second must be between 1 and %(max)d.") % {"max": MAX_MESSAGES_PER_SECOND},
        )
    if not isinstance(campaign.quiet_hours_start, dt.time):
        add("quiet_hours_start", _("Enter a time such as 21:00."))
    if not isinstance(campaign.quiet_hours_end, dt.time):
        add("quiet_hours_end", _("Enter a time such as 08:00."))
    elif campaign.quiet_hours_start == campaign.quiet_hours_end:
        add("quiet_hours_end", _("Quiet hours must start and end at different times."))
    days = campaign.conversion_window_days
    if not isinstance(days, int) or not 1 <= days <= MAX_CONVERSION_WINDOW_DAYS:
        add(
            "conversion_window_days",
            _("The conversion window is 1 to %(max)d days.") % {"max": MAX_CONVERSION_WINDOW_DAYS},
        )
    return errors


def lint_errors(campaign: Campaign) -> dict[str, list[str]]:
    """Clinical detail in anything the patient will read: refuses scheduling and launch, not saving."""
    texts = {"body": campaign.body, "signature": campaign.signature, "opt_out_tail": campaign.opt_out_tail}
    texts.update({"fallbacks": " / ".join(str(v) for v in (campaign.fallbacks or {}).values())})
    errors: dict[str, list[str]] = {}
    for name, text in texts.items():
        problems = lint_template(text or "")
        if problems:
            errors[name] = [p.message for p in problems]
    return errors


def sends_from_china(inbox: Inbox) -> bool:
    """Whether the inbox sends from a mainland China number (+86), where a 【签名】 is required."""
    return TwilioSender.objects.filter(
        inbox=inbox, kind=TwilioSenderKind.NUMBER, value__startswith=CHINA_PREFIX
    ).exists()


def send_errors(campaign: Campaign) -> dict[str, list[str]]:
    """What stops a saved draft from being scheduled or sent, beyond campaign_errors and the lint."""
    errors: dict[str, list[str]] = {}
    if campaign.inbox_id and not clean_signature(campaign.signature or "") and sends_from_china(campaign.inbox):
        errors["signature"] = [
            _(
                "This inbox sends from a Chinese number (+86): carriers there refuse marketing without the "
                "hospital's 【签名】 signature. Enter it, e.g. 康华医院."
            )
        ]
    return errors


def _check_sendable(campaign: Campaign) -> None:
    errors = campaign_errors(campaign)
    for source in (lint_errors(campaign), {} if errors else send_errors(campaign)):
        for name, messages in source.items():
            errors.setdefault(name, []).extend(messages)
    if errors:
        raise ValidationError(errors)


def _status_error(campaign: Campaign, message: str) -> ValidationError:
    """`message` names the status with %(status)s: whole sentences, so they translate."""
    return ValidationError(message % {"status": campaign.get_status_display().lower()}, code="bad_status")


def _locked(campaign: Campaign) -> Campaign:
    return Campaign.objects.select_for_update(of=("self",)).select_related("inbox", "segment").get(pk=campaign.pk)


# --- Drafts ------------------------------------------------------------------------------------------


def _apply(campaign: Campaign, values: Mapping[str, Any]) -> None:
    unknown = set(values) - set(EDITABLE_FIELDS)
    if unknown:
        raise ValidationError({name: [_("This field cannot be changed here.")] for name in sorted(unknown)})
    for name, value in values.items():
        setattr(campaign, name, value)
    if isinstance(campaign.signature, str):
        cleaned = clean_signature(campaign.signature)
        # "【】" stays as typed, so campaign_errors refuses it by name rather than it quietly becoming "".
        campaign.signature = cleaned if cleaned else campaign.signature.strip()
    if isinstance(campaign.name, str):
        campaign.name = campaign.name.strip()


@transaction.atomic
def create_campaign(*, actor: Actor, name: str, segment: Segment, inbox: Inbox, body: str, **values: Any) -> Campaign:
    """A new draft. Lint problems do not stop a draft (the composer shows them); field errors do."""
    creator: Any = actor if isinstance(actor, AbstractBaseUser) else None
    campaign = Campaign(created_by=creator)
    _apply(campaign, {"name": name, "segment": segment, "inbox": inbox, "body": body, **values})
    errors = campaign_errors(campaign)
    if errors:
        raise ValidationError(errors)
    campaign.save()
    logger.info("campaign %s created", campaign.pk)
    return campaign


@transaction.atomic
def update_campaign(campaign: Campaign, *, actor: Actor, changes: Mapping[str, Any]) -> Campaign:
    """Edit a draft; once scheduled or sent, what was approved is what goes out."""
    locked = _locked(campaign)
    if locked.status != CampaignStatus.DRAFT:
        raise _status_error(locked, _("Only a draft can be edited; this campaign is %(status)s."))
    _apply(locked, changes)
    errors = campaign_errors(locked)
    if errors:
        raise ValidationError(errors)
    locked.save()
    return locked


# --- Scheduling and launch ---------------------------------------------------------------------------


@transaction.atomic
def schedule_campaign(campaign: Campaign, at: dt.datetime, actor: Actor, *, now: dt.datetime | None = None) -> Campaign:
    """Send at `at` (a draft, or a scheduled campaign moved to another time). Lint must be clean."""
    now = now or timezone.now()
    locked = _locked(campaign)
    if locked.status not in LAUNCHABLE:
        raise _status_error(locked, _("Only a draft or scheduled campaign can be scheduled; this one is %(status)s."))
    if timezone.is_naive(at):
        raise ValidationError({"at": [_("Give the time with its time zone.")]})
    if at <= now:
        raise ValidationError({"at": [_("The time must be in the future; use Send now to send at once.")]})
    if at > now + MAX_SCHEDULE_AHEAD:
        raise ValidationError({"at": [_("Choose a time within a year from now.")]})
    _check_sendable(locked)
    locked.status = CampaignStatus.SCHEDULED
    locked.scheduled_at = at
    # The launch job finds scheduled campaigns by (status, next_action_at): the campaign_due index.
    locked.next_action_at = at
    locked.save(update_fields=["status", "scheduled_at", "next_action_at"])
    logger.info("campaign %s scheduled", locked.pk)
    return locked


def send_now(campaign: Campaign, actor: Actor, *, now: dt.datetime | None = None) -> int:
    """Launch a draft or scheduled campaign at once; returns how many recipients were snapshotted."""
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.status not in LAUNCHABLE:
            raise _status_error(locked, _("Only a draft or scheduled campaign can be sent; this one is %(status)s."))
        return launch_campaign(locked, now=now)


def launch_campaign(campaign: Campaign, *, now: dt.datetime | None = None) -> int:
    """Snapshot the recipients, start sending; returns how many recipient rows were written.

    Idempotent: under the row lock a campaign that is no longer draft/scheduled is left alone (0), and
    the (campaign, patient) unique constraint keeps a recipient from being snapshotted twice.
    """
    now = now or timezone.now()
    with transaction.atomic():
        locked = _locked(campaign)
        if locked.status not in LAUNCHABLE:
            return 0
        _check_sendable(locked)
        written = _snapshot(locked)
        _check_audience(locked, written)
        locked.status = CampaignStatus.RUNNING
        locked.launched_at = now
        locked.scheduled_at = locked.scheduled_at or now
        locked.next_action_at = now
        locked.save(update_fields=["status", "launched_at", "scheduled_at", "next_action_at"])
        campaign_id = locked.pk
        transaction.on_commit(lambda: enqueue(RUN_TASK, campaign_id=campaign_id))
    campaign.refresh_from_db()
    logger.info("campaign %s launched with %d recipients", campaign_id, written)
    return written


def is_valid_mobile(e164: str) -> bool:
    if not e164:
        return False
    if _CN_MOBILE.fullmatch(e164):
        return True
    try:
        number = phonenumbers.parse(e164, None)
    except phonenumbers.NumberParseException:
        return False
    return phonenumbers.is_valid_number(number) and phonenumbers.number_type(number) in _MOBILE_TYPES


def _newest_phones(patient_ids: list[int]) -> dict[int, str]:
    rows = (
        PatientIdentity.objects.filter(kind=IdentityKind.PHONE, patient_id__in=patient_ids)
        .order_by("patient_id", "created_at", "id")
        .values_list("patient_id", "value")
    )
    # Ordered oldest first, so the newest of each patient is the one left in the dict.
    return dict(rows)


def _missing_skips(campaign: Campaign, patient_ids: list[int]) -> set[int]:
    """Patients this campaign would skip for a missing value; only read when that can happen at all."""
    used = parse(campaign.body).placeholders & MAY_BE_MISSING
    fallbacks = campaign.fallbacks or {}
    if not used or (
        campaign.missing_value_rule == MissingValueRule.FALLBACK
        and all(clean_value(fallbacks.get(n, "")) for n in used)
    ):
        return set()
    facts = facts_for(patient_ids, needed=used)
    return {
        pid
        for pid, f in facts.items()
        if render(campaign.body, f, fallbacks=fallbacks, rule=campaign.missing_value_rule).text is None
    }


def decide_recipients(campaign: Campaign, batch: list[tuple[int, str]]) -> list[CampaignRecipient]:
    """The unsaved recipient rows for (patient id, time zone) pairs of the audience, each with its state
    decided: opted out of marketing, no marketing consent under the policy (the consent registry's one
    answer, marketing_refusals), no valid mobile, a missing value under the skip rule, or pending. Quiet
    hours are not decided here: they only defer a send. Launch writes these; the estimate counts them.
    """
    ids = [pid for pid, _tz in batch]
    phones = _newest_phones(ids)
    refusals = marketing_refusals(ids)
    missing = _missing_skips(campaign, ids)
    rows = []
    for pid, tz in batch:
        phone = phones.get(pid, "")
        refusal = refusals.get(pid)
        if refusal == REFUSED_OPTED_OUT:
            state = RecipientState.SKIPPED_OPTED_OUT
        elif refusal is not None:
            state = RecipientState.SKIPPED_NO_CONSENT
        elif not is_valid_mobile(phone):
            state = RecipientState.SKIPPED_INVALID
        elif pid in missing:
            state = RecipientState.SKIPPED_MISSING
        else:
            state = RecipientState.PENDING
        rows.append(CampaignRecipient(campaign=campaign, patient_id=pid, phone=phone, time_zone=tz, state=state))
    return rows


def audience_batches(campaign: Campaign) -> Iterator[list[CampaignRecipient]]:
    """decide_recipients over the segment's audience now, SNAPSHOT_BATCH patients at a time, in id order."""
    audience = segment_patients(campaign.segment).order_by("pk").values_list("pk", "time_zone")
    batch: list[tuple[int, str]] = []
    for row in audience.iterator(chunk_size=SNAPSHOT_BATCH):
        batch.append(row)
        if len(batch) >= SNAPSHOT_BATCH:
            yield decide_recipients(campaign, batch)
            batch = []
    if batch:
        yield decide_recipients(campaign, batch)


def _snapshot(campaign: Campaign) -> int:
    """Write one CampaignRecipient per audience member, in batches of SNAPSHOT_BATCH with bulk inserts.

    Call holding the campaign's row lock. The state of each row is decided here, once (decide_recipients).
    Consent is checked again at send time; this snapshot makes the campaign's own numbers honest from the
    first second.
    """
    written = 0
    for rows in audience_batches(campaign):
        # ignore_conflicts: a rules query that yields a patient twice must not fail the launch.
        CampaignRecipient.objects.bulk_create(rows, batch_size=SNAPSHOT_BATCH, ignore_conflicts=True)
        written += len(rows)
    return written


def _check_audience(campaign: Campaign, written: int) -> None:
    """Refuse a launch with nobody to send to (the caller's transaction then drops the snapshot)."""
    if not written:
        raise ValidationError({"segment": [_("The segment is empty: there is nobody to send this campaign to.")]})
    if CampaignRecipient.objects.filter(campaign=campaign, state=RecipientState.PENDING).exists():
        return
    raise ValidationError(
        {
            "segment": [
                _(
                    "Nobody in the segment can be sent this campaign (opted out, no marketing consent, no valid "
                    "mobile or a missing value): %(count)d patients, none left to send to."
                )
                % {"count": written}
            ]
        }
    )


# --- While sending -----------------------------------------------------------------------------------


@transaction.atomic
def pause_campaign(campaign: Campaign, actor: Actor) -> Campaign:
    """Stop sending after the recipient in hand; nothing is lost, resume carries on."""
    locked = _locked(campaign)
    if locked.status != CampaignStatus.RUNNING:
        raise _status_error(locked, _("Only a sending campaign can be paused; this one is %(status)s."))
    locked.status = CampaignStatus.PAUSED
    # The sender's dispatcher looks at running campaigns only; nothing is due while paused.
    locked.next_action_at = None
    locked.save(update_fields=["status", "next_action_at"])
    _progress_changed(locked.pk)
    logger.info("campaign %s paused", locked.pk)
    return locked


@transaction.atomic
def resume_campaign(campaign: Campaign, actor: Actor, *, now: dt.datetime | None = None) -> Campaign:
    locked = _locked(campaign)
    if locked.status != CampaignStatus.PAUSED:
        raise _status_error(locked, _("Only a paused campaign can be resumed; this one is %(status)s."))
    locked.status = CampaignStatus.RUNNING
    locked.next_action_at = now or timezone.now()
    locked.save(update_fields=["status", "next_action_at"])
    campaign_id = locked.pk
    transaction.on_commit(lambda: enqueue(RUN_TASK, campaign_id=campaign_id))
    _progress_changed(campaign_id)
    logger.info("campaign %s resumed", campaign_id)
    return locked


@transaction.atomic
def cancel_campaign(campaign: Campaign, actor: Actor, *, now: dt.datetime | None = None) -> Campaign:
    """Stop for good: recipients not yet sent become cancelled; sent ones keep their state."""
    locked = _locked(campaign)
    if locked.status not in (CampaignStatus.SCHEDULED, CampaignStatus.RUNNING, CampaignStatus.PAUSED):
        raise _status_error(
            locked, _("Only a scheduled, sending or paused campaign can be cancelled; this one is %(status)s.")
        )
    # A sender holding a recipient's row lock finishes first; PostgreSQL then re-checks the state, so a
    # recipient sent in that instant stays sent.
    cancelled = CampaignRecipient.objects.filter(campaign=locked, state__in=WAITING_STATES).update(
        state=RecipientState.CANCELLED, deferred_until=None
    )
    locked.status = CampaignStatus.CANCELLED
    locked.next_action_at = None
    locked.completed_at = now or timezone.now()
    locked.save(update_fields=["status", "next_action_at", "completed_at"])
    _progress_changed(locked.pk)
    logger.info("campaign %s cancelled; %d waiting recipients cancelled", locked.pk, cancelled)
    return locked


def _progress_changed(campaign_id: int) -> None:
    """Tell the live progress bar after commit: a pause or cancel shows at once, not at the next send."""

    transaction.on_commit(lambda: progress.changed(campaign_id, force=True))


# --- The due-work job --------------------------------------------------------------------------------


def launch_due_campaigns(*, now: dt.datetime | None = None, limit: int = 20) -> int:
    """Launch scheduled campaigns whose time has come; returns how many were launched.

    Each is claimed with SELECT … FOR UPDATE SKIP LOCKED in its own transaction, so several dispatchers
    share the work and a long snapshot does not hold the others up. A campaign that no longer passes the
    checks (the lint grew since it was scheduled) goes back to draft with a log line, not round and round.
    """
    now = now or timezone.now()
    launched = 0
    skip: list[int] = []
    while launched + len(skip) < limit:
        with transaction.atomic():
            due = (
                Campaign.objects.filter(status=CampaignStatus.SCHEDULED, next_action_at__lte=now)
                .exclude(pk__in=skip)
                .order_by("next_action_at", "pk")
            )
            due = skip_locked(due)
            campaign = due.first()
            if campaign is None:
                break
            try:
                launch_campaign(campaign, now=now)
                launched += 1
            except ValidationError:
                logger.warning("scheduled campaign %s fails its checks; returned to draft", campaign.pk)
                Campaign.objects.filter(pk=campaign.pk).update(status=CampaignStatus.DRAFT, next_action_at=None)
                skip.append(campaign.pk)
    return launched

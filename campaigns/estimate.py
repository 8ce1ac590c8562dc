"""What a campaign will cost (recipients × SMS segments per message × the price per segment), and the
composer's preview.

Segments depend on the rendered text (a long department name, a Chinese name forcing UCS-2), so the
count is the maximum over the texts rendered for a sample of real recipients, finalized exactly as they
will be sent. Only numbers leave this module from real recipients: the `sample_text` shown to the
marketer is rendered with made-up values (templating.sample_facts), never a patient's.

The preview shows the message for the first few recipients of the segment as they would get it, with
one decision about privacy: marketers must not see who is in a segment, so the identifying values
(`name`, `first_name`) are masked with as many ＊ as the name has characters (* for a name in the GSM-7
alphabet, so the mask does not change the encoding shown); the other values (department, last visit
date, VIP tier, hospital) are what the segment's rules already told the marketer. The segment count and
encoding reported per sample are those of the real, unmasked text. Only an empty segment falls back to
made-up values, flagged `made_up`.
"""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from django.conf import settings
from django.db.models import Count

from campaigns.actions.campaigns import audience_batches
from campaigns.models import Campaign, CampaignRecipient, RecipientState
from campaigns.segments.compiler import segment_patients
from campaigns.templating import compose, compose_for, facts_for, language_key, parse, sample_facts
from channels_adapters.sms.segments import count_segments

SAMPLE_SIZE = 200
SKIPPED_STATES = (
    RecipientState.SKIPPED_OPTED_OUT,
    RecipientState.SKIPPED_NO_CONSENT,
    RecipientState.SKIPPED_INVALID,
    RecipientState.SKIPPED_MISSING,
    RecipientState.CANCELLED,
)
# The reasons a recipient is left out, as the estimate reports them (each a RecipientState value).
EXCLUDED = (
    RecipientState.SKIPPED_OPTED_OUT,
    RecipientState.SKIPPED_NO_CONSENT,
    RecipientState.SKIPPED_INVALID,
    RecipientState.SKIPPED_MISSING,
)


def sample_text(campaign: Campaign, *, language: str = "zh-hans") -> str:
    """The campaign's message as a patient would get it, with made-up values in place of theirs."""
    rendered = compose(
        body=campaign.body,
        facts=sample_facts(language),
        fallbacks=campaign.fallbacks or {},
        rule=campaign.missing_value_rule,
        signature=campaign.signature,
        opt_out_tail=campaign.opt_out_tail,
        language=language,
    )
    return rendered.text or ""


def estimate(campaign: Campaign, *, sample_size: int = SAMPLE_SIZE) -> dict[str, Any]:
    """Recipients, segments and cost, and who is left out and why.

    Before launch from the segment as it is now, each patient decided exactly as launch will decide them
    (campaigns.actions.campaigns.decide_recipients: opted out, no marketing consent under the policy, no
    valid mobile, a missing value under the skip rule); the ones left out are skipped and cost nothing.
    Quiet hours only defer a send, so they leave nobody out. After launch from the snapshot.
    """
    excluded: dict[str, int] = dict.fromkeys(EXCLUDED, 0)
    if campaign.launched_at is not None:
        recipients = CampaignRecipient.objects.filter(campaign=campaign).exclude(state__in=SKIPPED_STATES)
        count = recipients.count()
        for state, n in (
            CampaignRecipient.objects.filter(campaign=campaign, state__in=EXCLUDED)
            .values_list("state")
            .annotate(n=Count("pk"))
            .order_by()
        ):
            excluded[state] = n
        sample_ids = list(recipients.order_by("pk").values_list("patient_id", flat=True)[:sample_size])
    else:
        count = 0
        sample_ids = []
        for rows in audience_batches(campaign):
            for row in rows:
                if row.state == RecipientState.PENDING:
                    count += 1
                    if len(sample_ids) < sample_size:
                        sample_ids.append(row.patient_id)
                else:
                    excluded[row.state] += 1
    texts = [r.text for r in compose_for(campaign, sample_ids).values() if r.text is not None]
    shown = sample_text(campaign)
    if not texts:
        # Nobody to sample (an empty segment, or everyone skipped): the made-up texts in both languages.
        texts = [shown, sample_text(campaign, language="en")]
    counts = [count_segments(t) for t in texts if t]
    per_message = max((c.segments for c in counts), default=0)
    encoding = "UCS-2" if any(c.encoding == "UCS-2" for c in counts) else "GSM-7"
    total = per_message * count
    price: Decimal = settings.CAMPAIGN_PRICE_PER_SEGMENT
    return {
        "recipients": count,
        "audience": count + sum(excluded.values()),
        "skipped_opted_out": excluded[RecipientState.SKIPPED_OPTED_OUT],
        "skipped_no_consent": excluded[RecipientState.SKIPPED_NO_CONSENT],
        "skipped_invalid": excluded[RecipientState.SKIPPED_INVALID],
        "skipped_missing": excluded[RecipientState.SKIPPED_MISSING],
        "consent_policy": settings.MARKETING_CONSENT_POLICY,
        "sample_text": shown,
        "characters": len(shown),
        "segments_per_message": per_message,
        "encoding": encoding,
        "total_segments": total,
        "price_per_segment": price,
        "currency": settings.CAMPAIGN_CURRENCY,
        "cost": (price * total).quantize(Decimal("0.01")),
    }


IDENTIFYING = ("name", "first_name")
MAX_PREVIEW = 10


def _mask(value: str) -> str:
    if not value:
        return value
    star = "*" if count_segments(value).encoding == "GSM-7" else "＊"
    return "".join(" " if ch == " " else star for ch in value)


def _sample(campaign: Campaign, body: str, facts: dict[str, str], *, made_up: bool) -> dict[str, Any]:
    language = facts.get("language", "zh-hans")
    parts: dict[str, Any] = {
        "fallbacks": campaign.fallbacks or {},
        "rule": campaign.missing_value_rule,
        "signature": campaign.signature,
        "opt_out_tail": campaign.opt_out_tail,
        "language": language,
    }
    real = compose(body=body, facts=facts, **parts)
    shown = compose(body=body, facts={**facts, **{k: _mask(facts.get(k, "")) for k in IDENTIFYING}}, **parts)
    counted = count_segments(real.text) if real.text is not None else None
    return {
        "text": shown.text,
        "language": language_key(language),
        "missing": real.missing,
        "skipped": real.text is None,
        "made_up": made_up,
        "segments": counted.segments if counted else None,
        "encoding": counted.encoding if counted else None,
    }


def preview(campaign: Campaign, *, body: str | None = None, count: int = 3) -> list[dict[str, Any]]:
    """The message for the first `count` recipients (names masked); `body` previews unsaved text."""
    body = campaign.body if body is None else body
    count = max(1, min(count, MAX_PREVIEW))
    if campaign.launched_at is not None:
        ids = list(
            CampaignRecipient.objects.filter(campaign=campaign)
            .order_by("pk")
            .values_list("patient_id", flat=True)[:count]
        )
    else:
        ids = list(segment_patients(campaign.segment).order_by("pk").values_list("pk", flat=True)[:count])
    facts = facts_for(ids, needed=parse(body).placeholders)
    if facts:
        return [_sample(campaign, body, facts[pid], made_up=False) for pid in ids if pid in facts]
    return [
        _sample(campaign, body, {**sample_facts(lang), "language": lang}, made_up=True) for lang in ("zh-hans", "en")
    ]

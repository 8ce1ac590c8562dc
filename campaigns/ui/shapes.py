"""What the campaign API returns. Built as plain dicts here; the *Shape serializers document them for OpenAPI.

Nothing here names a patient: marketers see counts, made-up sample values and masked names only.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from django.db.models import Count
from rest_framework import serializers

from campaigns.lint import CATEGORIES, lint_template
from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, MissingValueRule, RecipientState
from campaigns.templating import template_problems
from contactcenter.api.shapes import StaffRefSerializer, staff_name


def recipient_counts(campaign_ids: Iterable[int]) -> dict[int, dict[str, int]]:
    """{campaign_id: {state: n for every state}} in one query."""
    ids = list(campaign_ids)
    out = {cid: dict.fromkeys(RecipientState.values, 0) for cid in ids}
    rows = (
        CampaignRecipient.objects.filter(campaign_id__in=ids)
        .values("campaign_id", "state")
        .annotate(n=Count("id"))
        .order_by()
    )
    for row in rows:
        out[row["campaign_id"]][row["state"]] = row["n"]
    return out


def problems_of(campaign: Campaign) -> list[dict[str, Any]]:
    """Lint problems of every part the patient reads, each naming its part (body, signature, …)."""
    parts = {
        "body": campaign.body,
        "fallbacks": " / ".join(str(v) for v in (campaign.fallbacks or {}).values()),
        "signature": campaign.signature,
        "opt_out_tail": campaign.opt_out_tail,
    }
    return [{"part": part, **p.as_dict()} for part, text in parts.items() for p in lint_template(text or "")]


def campaign_data(campaign: Campaign, *, counts: dict[str, int] | None = None) -> dict[str, Any]:
    counts = counts if counts is not None else recipient_counts([campaign.pk])[campaign.pk]
    return {
        "id": campaign.pk,
        "name": campaign.name,
        "status": campaign.status,
        "segment": {"id": campaign.segment_id, "name": campaign.segment.name},
        "inbox": {"id": campaign.inbox_id, "name": campaign.inbox.name, "channel_type": campaign.inbox.channel_type},
        "body": campaign.body,
        "fallbacks": campaign.fallbacks or {},
        "missing_value_rule": campaign.missing_value_rule,
        "signature": campaign.signature,
        "opt_out_tail": campaign.opt_out_tail,
        "messages_per_second": campaign.messages_per_second,
        "quiet_hours_start": campaign.quiet_hours_start,
        "quiet_hours_end": campaign.quiet_hours_end,
        "conversion_window_days": campaign.conversion_window_days,
        "scheduled_at": campaign.scheduled_at,
        "launched_at": campaign.launched_at,
        "completed_at": campaign.completed_at,
        "created_at": campaign.created_at,
        "created_by": (
            {"id": campaign.created_by_id, "name": staff_name(campaign.created_by)} if campaign.created_by_id else None
        ),
        "problems": problems_of(campaign),
        "template_errors": template_problems(campaign.body),
        "total": sum(counts.values()),
        "counts": counts,
    }


# --- Documentation-only shapes ---------------------------------------------------------------------------


class CampaignSegmentRefShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CampaignInboxRefShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    channel_type = serializers.CharField()


class LintProblemShape(serializers.Serializer[Any]):
    part = serializers.ChoiceField(choices=["body", "fallbacks", "signature", "opt_out_tail"])
    term = serializers.CharField(help_text="The words as written.")
    # A plain string, not an enum: "category" is an enum of service cases elsewhere in the schema.
    category = serializers.CharField(help_text="One of: " + ", ".join(CATEGORIES) + ".")
    start = serializers.IntegerField(help_text="Offset of the words in that part.")
    end = serializers.IntegerField()
    message = serializers.CharField()


class RecipientCountsShape(serializers.Serializer[Any]):
    pending = serializers.IntegerField()
    deferred = serializers.IntegerField()
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped_opted_out = serializers.IntegerField()
    skipped_no_consent = serializers.IntegerField()
    skipped_invalid = serializers.IntegerField()
    skipped_missing = serializers.IntegerField()
    cancelled = serializers.IntegerField()


class CampaignShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.ChoiceField(choices=CampaignStatus.choices)
    segment = CampaignSegmentRefShape()
    inbox = CampaignInboxRefShape()
    body = serializers.CharField(help_text="Template: {{ first_name }}, {{ department }} …")
    fallbacks = serializers.DictField(child=serializers.CharField())
    missing_value_rule = serializers.ChoiceField(choices=MissingValueRule.choices)
    signature = serializers.CharField(help_text="Sent as 【signature】 before the text.")
    opt_out_tail = serializers.CharField(help_text="Blank: the default for the patient's language.")
    messages_per_second = serializers.IntegerField()
    quiet_hours_start = serializers.TimeField()
    quiet_hours_end = serializers.TimeField()
    conversion_window_days = serializers.IntegerField()
    scheduled_at = serializers.DateTimeField(allow_null=True)
    launched_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()
    created_by = StaffRefSerializer(allow_null=True)
    problems = LintProblemShape(many=True, help_text="Clinical detail found; scheduling is refused until none.")
    template_errors = serializers.ListField(child=serializers.CharField())
    total = serializers.IntegerField(help_text="Recipients snapshotted at launch (0 before).")
    counts = RecipientCountsShape()


class LintResultShape(serializers.Serializer[Any]):
    problems = LintProblemShape(many=True)
    template_errors = serializers.ListField(child=serializers.CharField(), help_text="Unknown placeholders etc.")
    placeholders = serializers.ListField(child=serializers.CharField(), help_text="Placeholders the body uses.")


class EstimateShape(serializers.Serializer[Any]):
    recipients = serializers.IntegerField(
        help_text="Who will be sent to: everyone the send would skip is left out (quiet hours only defer)."
    )
    audience = serializers.IntegerField(help_text="The segment's patients: recipients and those left out.")
    skipped_opted_out = serializers.IntegerField(help_text="Left out: opted out of marketing.")
    skipped_no_consent = serializers.IntegerField(
        help_text="Left out: no marketing consent under the hospital's policy (consent_policy)."
    )
    skipped_invalid = serializers.IntegerField(help_text="Left out: no valid mobile number.")
    skipped_missing = serializers.IntegerField(help_text="Left out: a value the message needs is missing (skip rule).")
    consent_policy = serializers.ChoiceField(
        choices=["opt_in", "existing_patient"], help_text="settings.MARKETING_CONSENT_POLICY"
    )
    sample_text = serializers.CharField(help_text="The message with made-up values, as it will be sent.")
    characters = serializers.IntegerField(help_text="Length of sample_text.")
    segments_per_message = serializers.IntegerField(help_text="The most over a sample of real recipients.")
    encoding = serializers.ChoiceField(choices=["GSM-7", "UCS-2"])
    total_segments = serializers.IntegerField()
    price_per_segment = serializers.DecimalField(max_digits=10, decimal_places=4)
    currency = serializers.CharField()
    cost = serializers.DecimalField(max_digits=14, decimal_places=2)


class CampaignPreviewSampleShape(serializers.Serializer[Any]):
    text = serializers.CharField(allow_null=True, help_text="Null: this recipient would be skipped.")
    language = serializers.CharField()
    missing = serializers.ListField(child=serializers.CharField())
    skipped = serializers.BooleanField()
    made_up = serializers.BooleanField(help_text="True when the values are invented (empty segment).")
    segments = serializers.IntegerField(allow_null=True, help_text="Of the real text, names unmasked.")
    encoding = serializers.CharField(allow_null=True)


class CampaignPreviewShape(serializers.Serializer[Any]):
    samples = CampaignPreviewSampleShape(many=True)


class ProgressShape(serializers.Serializer[Any]):
    type = serializers.CharField()
    campaign_id = serializers.IntegerField()
    status = serializers.ChoiceField(choices=CampaignStatus.choices)
    total = serializers.IntegerField()
    counts = RecipientCountsShape()

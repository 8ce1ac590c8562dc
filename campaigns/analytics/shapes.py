"""What the analytics API answers: documents the dicts built in campaigns/analytics/selectors.py.

Names start with "Analytics" so they cannot collide with the campaign API's components; states and
statuses are plain strings (their values in the help text) so no enum is generated twice.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

_RATE_HELP = "Percent of sent, one decimal; null when nothing was sent."


class AnalyticsQueryInput(serializers.Serializer[Any]):
    bucket = serializers.CharField(
        required=False, help_text="hour or day; left out, hours for a campaign that sent within two days."
    )


# "from" is a Python keyword, so these two are built with type(); the metaclass collects the fields.
AnalyticsPeriodInput: type[serializers.Serializer[Any]] = type(
    "AnalyticsPeriodInput",
    (serializers.Serializer,),
    {
        "from": serializers.DateField(
            required=False, help_text="First hospital date (YYYY-MM-DD), inclusive; default 29 days before `to`."
        ),
        "to": serializers.DateField(required=False, help_text="Last hospital date, inclusive; default today."),
    },
)


class AnalyticsTotalsShape(serializers.Serializer[Any]):
    recipients = serializers.IntegerField()
    pending = serializers.IntegerField()
    deferred = serializers.IntegerField(help_text="Waiting for the end of quiet hours.")
    sent = serializers.IntegerField(help_text="Handed to the SMS provider (failures it reported included).")
    delivered = serializers.IntegerField()
    failed = serializers.IntegerField()
    skipped = serializers.IntegerField(
        help_text="Opted out, no marketing consent, invalid number or missing personalisation."
    )
    cancelled = serializers.IntegerField()
    replied = serializers.IntegerField()
    opted_out = serializers.IntegerField()
    converted = serializers.IntegerField(help_text="Recipients credited with a visit (last touch, within the window).")


class AnalyticsRatesShape(serializers.Serializer[Any]):
    delivery = serializers.FloatField(allow_null=True, help_text=_RATE_HELP)
    failure = serializers.FloatField(allow_null=True, help_text=_RATE_HELP)
    reply = serializers.FloatField(allow_null=True, help_text=_RATE_HELP)
    opt_out = serializers.FloatField(allow_null=True, help_text=_RATE_HELP)
    conversion = serializers.FloatField(allow_null=True, help_text=_RATE_HELP)


class AnalyticsFailureShape(serializers.Serializer[Any]):
    error_code = serializers.CharField(help_text="The provider's code, e.g. Twilio 30003; empty when none came.")
    reason = serializers.CharField()
    count = serializers.IntegerField()


class AnalyticsSkipShape(serializers.Serializer[Any]):
    state = serializers.CharField(help_text="skipped_opted_out, skipped_no_consent, skipped_invalid or skipped_missing")
    label = serializers.CharField()  # type: ignore[assignment]  # a field, moved out of the class by the metaclass
    count = serializers.IntegerField()


class AnalyticsFunnelStepShape(serializers.Serializer[Any]):
    step = serializers.CharField(help_text="recipients, sent, delivered, replied or converted")
    label = serializers.CharField()  # type: ignore[assignment]  # a field, moved out of the class by the metaclass
    count = serializers.IntegerField()
    of_recipients = serializers.FloatField(allow_null=True)
    of_previous = serializers.FloatField(allow_null=True)


class AnalyticsPointShape(serializers.Serializer[Any]):
    start = serializers.DateTimeField(help_text="Start of the bucket, in the hospital's time zone.")
    label = serializers.CharField()  # type: ignore[assignment]  # a field, moved out of the class by the metaclass
    sent = serializers.IntegerField()
    delivered = serializers.IntegerField()
    replied = serializers.IntegerField()


class AnalyticsSeriesShape(serializers.Serializer[Any]):
    bucket = serializers.CharField(help_text="hour or day")
    points = AnalyticsPointShape(many=True)


class AnalyticsCampaignShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    status = serializers.CharField(help_text="draft, scheduled, running, paused, completed or cancelled")
    status_label = serializers.CharField()
    segment_id = serializers.IntegerField()
    segment_name = serializers.CharField()
    launched_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    conversion_window_days = serializers.IntegerField()


class AnalyticsCampaignRowShape(serializers.Serializer[Any]):
    campaign = AnalyticsCampaignShape()
    totals = AnalyticsTotalsShape()
    rates = AnalyticsRatesShape()


class AnalyticsSegmentRefShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class AnalyticsSegmentRowShape(serializers.Serializer[Any]):
    segment = AnalyticsSegmentRefShape()
    campaigns = serializers.IntegerField()
    totals = AnalyticsTotalsShape()
    rates = AnalyticsRatesShape()


class _Breakdown(serializers.Serializer[Any]):
    totals = AnalyticsTotalsShape()
    rates = AnalyticsRatesShape()
    failures = AnalyticsFailureShape(many=True)
    funnel = AnalyticsFunnelStepShape(many=True)
    series = AnalyticsSeriesShape()


class CampaignAnalyticsShape(_Breakdown):
    campaign = AnalyticsCampaignShape()
    skipped = AnalyticsSkipShape(many=True)


class AnalyticsSegmentShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    kind = serializers.CharField(help_text="rules or static")


class SegmentAnalyticsShape(_Breakdown):
    segment = AnalyticsSegmentShape()
    skipped = AnalyticsSkipShape(many=True)
    campaigns = AnalyticsCampaignRowShape(many=True)


AnalyticsPeriodShape: type[serializers.Serializer[Any]] = type(
    "AnalyticsPeriodShape",
    (serializers.Serializer,),
    {"from": serializers.DateField(), "to": serializers.DateField()},
)


class AnalyticsOverviewShape(_Breakdown):
    period = AnalyticsPeriodShape()
    campaigns = AnalyticsCampaignRowShape(many=True)
    segments = AnalyticsSegmentRowShape(many=True)

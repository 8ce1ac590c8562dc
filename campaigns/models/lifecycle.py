from __future__ import annotations

from decimal import Decimal

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Patient


class LifecycleStage(models.TextChoices):
    POTENTIAL = "potential", _("Potential (enquired, never visited)")
    FIRST_TIME = "first_time", _("First-time")
    LONG_TERM = "long_term", _("Long-term")
    LAPSED = "lapsed", _("Lapsed")


class ValueType(models.TextChoices):
    VALUE = "value", _("Value-oriented")
    BENEFIT = "benefit", _("Benefit-oriented")
    OCCASIONAL = "occasional", _("Occasional")


class LifecycleRules(models.Model):
    """The thresholds an admin tunes; one row (pk=1). Changing them recomputes every patient."""

    lapsed_after_months = models.PositiveSmallIntegerField(default=12)
    long_term_min_visits = models.PositiveSmallIntegerField(default=3)
    # Value-oriented: spends at least this much over the look-back window; benefit-oriented: visits at
    # least this often but spends less; everyone else with visits is occasional.
    value_min_spend = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("10000"))
    benefit_min_visits = models.PositiveSmallIntegerField(default=3)
    window_months = models.PositiveSmallIntegerField(default=24)
    updated_at = models.DateTimeField(auto_now=True)
    # The hospital-local date of the last nightly recompute, so the periodic job runs it once a night.
    nightly_recomputed_on = models.DateField(null=True, blank=True)

    def __str__(self) -> str:
        return "Lifecycle rules"


class PatientLifecycle(models.Model):
    """Computed from visit history (campaigns.lifecycle); what segments filter on, with the why."""

    patient = models.OneToOneField(Patient, on_delete=models.CASCADE, related_name="lifecycle")
    stage = models.CharField(max_length=12, choices=LifecycleStage.choices)
    value_type = models.CharField(max_length=12, choices=ValueType.choices, blank=True)
    visit_count = models.PositiveIntegerField(default=0)
    total_spend = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    # Within LifecycleRules.window_months before computed_at: what the value type was decided on.
    window_visit_count = models.PositiveIntegerField(default=0)
    window_spend = models.DecimalField(max_digits=14, decimal_places=2, default=Decimal("0"))
    first_visit_at = models.DateTimeField(null=True, blank=True)
    last_visit_at = models.DateTimeField(null=True, blank=True)
    # Human-readable reason shown in the UI, e.g. "3 visits, last 14 months ago → lapsed".
    explanation = models.CharField(max_length=300, blank=True)
    computed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        indexes = [models.Index(fields=["stage"]), models.Index(fields=["value_type"])]

    def __str__(self) -> str:
        return f"{self.patient_id}: {self.stage}"

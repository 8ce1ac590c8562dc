from __future__ import annotations

from django.db import models
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Team


class FollowUpPlan(models.Model):
    """Which follow-up a discharge gets. The most specific active plan that matches wins (see callbacks.plans)."""

    name = models.CharField(max_length=120)
    name_zh = models.CharField(max_length=120, blank=True)
    # Empty means any department / any diagnosis / any disposition.
    department = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    diagnosis_prefixes = models.JSONField(default=list, blank=True, help_text=_('e.g. ["I21", "I25"]'))
    dispositions = models.JSONField(default=list, blank=True)
    # Higher wins among plans that match equally specifically.
    priority = models.SmallIntegerField(default=0)
    is_active = models.BooleanField(default=True)

    class Meta:
        ordering = ["-priority", "name"]

    def __str__(self) -> str:
        return self.name


class StepKind(models.TextChoices):
    CALL = "call", _("Nurse call")
    SMS_SURVEY = "sms_survey", _("SMS survey")


class PlanStep(models.Model):
    plan = models.ForeignKey(FollowUpPlan, on_delete=models.CASCADE, related_name="steps")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=12, choices=StepKind.choices)
    # Due this many days after discharge; business days skip weekends and holidays.
    offset_days = models.PositiveSmallIntegerField(default=0)
    business_days = models.BooleanField(default=False)
    # The contact deadline: this many (business, if above) days after the due day.
    deadline_days = models.PositiveSmallIntegerField(default=2)
    survey = models.ForeignKey("callbacks.Survey", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    call_script = models.ForeignKey(
        "callbacks.CallScript", null=True, blank=True, on_delete=models.PROTECT, related_name="+"
    )
    max_attempts = models.PositiveSmallIntegerField(default=3)
    retry_interval_hours = models.PositiveSmallIntegerField(default=4)

    class Meta:
        ordering = ["plan", "position"]
        constraints = [models.UniqueConstraint(fields=["plan", "position"], name="plan_step_position")]

    def __str__(self) -> str:
        return f"{self.plan_id}#{self.position} {self.kind}"

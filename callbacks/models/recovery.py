from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Patient, Team


class CaseSource(models.TextChoices):
    SURVEY_SCORE = "survey_score", _("Low survey score")
    SURVEY_COMMENT = "survey_comment", _("Negative survey comment")
    CALL = "call", _("Follow-up call")
    MANUAL = "manual", _("Recorded by staff")


class CaseStatus(models.TextChoices):
    """四落实: received → verified → improved → closed (with reward or discipline decided)."""

    RECEIVED = "received", _("Received")
    VERIFIED = "verified", _("Verified")
    IMPROVED = "improved", _("Improved")
    CLOSED = "closed", _("Closed")


class CaseCategory(models.TextChoices):
    ATTITUDE = "attitude", _("Staff attitude")
    COMMUNICATION = "communication", _("Communication")
    WAITING = "waiting", _("Waiting time")
    ENVIRONMENT = "environment", _("Environment")
    BILLING = "billing", _("Billing")
    CARE_QUALITY = "care_quality", _("Quality of care")
    OTHER = "other", _("Other")
    UNCLASSIFIED = "unclassified", _("Not yet classified")


class Accountability(models.TextChoices):
    NONE = "none", _("None")
    REWARD = "reward", _("Reward")
    DISCIPLINE = "discipline", _("Discipline")
    TRAINING = "training", _("Training")


class ServiceCase(models.Model):
    """服务补救: a dissatisfied patient, owned by patient relations until closed with cause and action."""

    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="service_cases")
    discharge = models.ForeignKey(
        "callbacks.Discharge", null=True, blank=True, on_delete=models.SET_NULL, related_name="service_cases"
    )
    survey_session = models.ForeignKey(
        "callbacks.SurveySession", null=True, blank=True, on_delete=models.SET_NULL, related_name="service_cases"
    )
    task = models.ForeignKey(
        "callbacks.CallbackTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="service_cases"
    )
    source = models.CharField(max_length=20, choices=CaseSource.choices)
    category = models.CharField(max_length=20, choices=CaseCategory.choices, default=CaseCategory.UNCLASSIFIED)
    status = models.CharField(max_length=10, choices=CaseStatus.choices, default=CaseStatus.RECEIVED)
    department = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    summary = models.TextField(blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="service_cases"
    )
    # SLA: first contact with the patient by this time, else escalate.
    first_contact_due_at = models.DateTimeField()
    first_contacted_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    # Filled as the case moves: verified → cause; improved → action; closed → accountability.
    cause = models.TextField(blank=True)
    action_taken = models.TextField(blank=True)
    accountable_department = models.ForeignKey(Team, null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    accountable_staff = models.CharField(max_length=120, blank=True)
    accountability = models.CharField(max_length=12, choices=Accountability.choices, blank=True)
    created_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-created_at"]
        indexes = [
            models.Index(fields=["status", "first_contact_due_at"], name="service_case_sla"),
            models.Index(fields=["department", "-created_at"], name="service_case_dept"),
        ]

    def __str__(self) -> str:
        return f"ServiceCase {self.pk}"


class CaseEvent(models.Model):
    """The case's history: every transition and note, with who did it."""

    case = models.ForeignKey(ServiceCase, on_delete=models.CASCADE, related_name="history")
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    kind = models.CharField(max_length=20)  # opened, status, contacted, note, escalated, assigned
    from_status = models.CharField(max_length=10, blank=True)
    to_status = models.CharField(max_length=10, blank=True)
    note = models.TextField(blank=True)
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["at", "id"]

    def __str__(self) -> str:
        return f"CaseEvent {self.pk}"

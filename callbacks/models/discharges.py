from __future__ import annotations

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Patient, Team, Visit


class IntakeSource(models.TextChoices):
    REST = "rest", _("REST API")
    HL7 = "hl7", _("HL7 v2 / MLLP")
    CSV = "csv", _("CSV import")
    FHIR = "fhir", _("FHIR Encounter")
    DEMO = "demo", _("Demo data")


class Disposition(models.TextChoices):
    """Where the patient went; decides which follow-up steps make sense (no survey to the deceased)."""

    HOME = "home", _("Home")
    HOME_CARE = "home_care", _("Home with home care")
    TRANSFERRED = "transferred", _("Transferred to another facility")
    AGAINST_ADVICE = "against_advice", _("Left against medical advice")
    EXPIRED = "expired", _("Expired")
    OTHER = "other", _("Other")


class DischargeStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    CANCELLED = "cancelled", _("Cancelled")


class Discharge(models.Model):
    """One inpatient discharge as the HIS reported it; the root of every follow-up task for that stay."""

    visit = models.OneToOneField(Visit, on_delete=models.PROTECT, related_name="discharge")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="discharges")
    # Denormalised from the visit so intake stays idempotent on the number the HIS sends.
    visit_number = models.CharField(max_length=60, unique=True)
    department = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="discharges")
    ward = models.CharField(max_length=60, blank=True)
    attending_doctor = models.CharField(max_length=120, blank=True)
    primary_nurse = models.CharField(max_length=120, blank=True)
    disposition = models.CharField(max_length=20, choices=Disposition.choices, default=Disposition.HOME)
    # The HIS's own code (PV1-36, FHIR dischargeDisposition), kept for audit and mapping fixes.
    disposition_code = models.CharField(max_length=40, blank=True)
    discharged_at = models.DateTimeField()
    # [{"code": "I21.4", "text": "...", "system": "I10"}]; clinical detail stays in the database, never in messages.
    diagnoses = models.JSONField(default=list, blank=True)
    source = models.CharField(max_length=10, choices=IntakeSource.choices)
    status = models.CharField(max_length=10, choices=DischargeStatus.choices, default=DischargeStatus.ACTIVE)
    cancelled_at = models.DateTimeField(null=True, blank=True)
    cancel_reason = models.CharField(max_length=200, blank=True)
    # The department as the HIS named it (PV1-10, FHIR serviceType, the REST/CSV department_code). A code
    # nobody has mapped yet files the discharge under the "unmapped" department; mapping it later re-routes
    # the discharge (callbacks.departments), so the code is kept here.
    his_department_code = models.CharField(max_length=40, blank=True)
    his_department_system = models.CharField(max_length=200, blank=True)
    his_department_name = models.CharField(max_length=120, blank=True)
    # The phone as the HIS wrote it, and the country of the patient's address it was read in. A number we
    # cannot read never refuses the discharge: its follow-up is planned as calls and the worklist asks a
    # nurse to check the number (phone_needs_review) until someone corrects it.
    phone_as_sent = models.CharField(max_length=80, blank=True)
    phone_region = models.CharField(max_length=2, blank=True)
    phone_needs_review = models.BooleanField(default=False)
    received_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["-discharged_at"]
        indexes = [
            models.Index(fields=["department", "-discharged_at"]),
            models.Index(fields=["patient", "-discharged_at"]),
        ]

    def __str__(self) -> str:
        return f"Discharge {self.visit_number}"

    @property
    def diagnosis_codes(self) -> list[str]:
        return [str(d.get("code", "")) for d in self.diagnoses if d.get("code")]


class IntakeOutcome(models.TextChoices):
    ACCEPTED = "AA", _("Accepted")
    ERROR = "AE", _("Error")
    REJECTED = "AR", _("Rejected")


class IntakeMessage(models.Model):
    """Every HIS message we answered, with our answer: the trail that proves nothing accepted was lost."""

    source = models.CharField(max_length=10, choices=IntakeSource.choices)
    # HL7 MSH-10 or the caller's idempotency key; a resend with the same id is acknowledged, not re-applied.
    control_id = models.CharField(max_length=100, blank=True)
    message_type = models.CharField(max_length=20, blank=True)
    visit_number = models.CharField(max_length=60, blank=True)
    outcome = models.CharField(max_length=2, choices=IntakeOutcome.choices)
    error = models.TextField(blank=True)
    raw = models.TextField(blank=True)
    discharge = models.ForeignKey(Discharge, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    received_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-received_at"]
        indexes = [models.Index(fields=["source", "control_id"]), models.Index(fields=["-received_at"])]

    def __str__(self) -> str:
        return f"{self.source} {self.message_type} {self.outcome}"

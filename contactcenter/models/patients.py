from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models.staff import Team


class Gender(models.TextChoices):
    FEMALE = "female", _("Female")
    MALE = "male", _("Male")
    OTHER = "other", _("Other")
    UNKNOWN = "unknown", _("Unknown")


class VipTier(models.TextChoices):
    NONE = "none", _("None")
    SILVER = "silver", _("Silver")
    GOLD = "gold", _("Gold")
    PLATINUM = "platinum", _("Platinum")


class Tag(models.Model):
    name = models.CharField(max_length=60, unique=True)

    def __str__(self) -> str:
        return self.name


class Patient(models.Model):
    """A contact: a patient, a family member or a prospect. Found by identities, never by name."""

    name = models.CharField(max_length=200, blank=True)
    given_name = models.CharField(max_length=100, blank=True)
    gender = models.CharField(max_length=10, choices=Gender.choices, default=Gender.UNKNOWN)
    birth_date = models.DateField(null=True, blank=True)
    region = models.CharField(max_length=100, blank=True, help_text=_("District or province"))
    city = models.CharField(max_length=100, blank=True)
    language = models.CharField(max_length=10, default="zh-hans")
    time_zone = models.CharField(max_length=60, default="Asia/Shanghai")
    vip_tier = models.CharField(max_length=10, choices=VipTier.choices, default=VipTier.NONE)
    tags = models.ManyToManyField(Tag, blank=True, related_name="patients")
    custom_attributes = models.JSONField(default=dict, blank=True)
    # A merged patient stays as a tombstone pointing at the survivor, so old links and audits resolve.
    merged_into = models.ForeignKey("self", null=True, blank=True, on_delete=models.PROTECT, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        indexes = [models.Index(fields=["region", "city"]), models.Index(fields=["birth_date"])]

    def __str__(self) -> str:
        return f"Patient {self.pk}"

    def age(self, today: dt.date | None = None) -> int | None:
        if self.birth_date is None:
            return None
        today = today or timezone.localdate()
        born = self.birth_date
        return today.year - born.year - ((today.month, today.day) < (born.month, born.day))

    @property
    def age_band(self) -> str:
        age = self.age()
        if age is None:
            return "unknown"
        if age < 35:
            return "<35"
        if age <= 50:
            return "35-50"
        return ">50"


class IdentityKind(models.TextChoices):
    PHONE = "phone", _("Phone")
    EMAIL = "email", _("Email")
    MRN = "mrn", _("Medical record number")
    VISITOR = "visitor", _("Web visitor")


class PatientIdentity(models.Model):
    """One normalized way of reaching or recognising a patient; unique across all patients."""

    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="identities")
    kind = models.CharField(max_length=10, choices=IdentityKind.choices)
    value = models.CharField(max_length=255)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["kind", "value"], name="identity_unique_kind_value")]
        ordering = ["kind", "id"]

    def __str__(self) -> str:
        return f"{self.kind}:{self.pk}"


class VisitKind(models.TextChoices):
    OUTPATIENT = "outpatient", _("Outpatient")
    INPATIENT = "inpatient", _("Inpatient")
    EMERGENCY = "emergency", _("Emergency")
    HEALTH_CHECK = "health_check", _("Health check")


class Visit(models.Model):
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="visits")
    visit_number = models.CharField(max_length=60, unique=True)
    kind = models.CharField(max_length=20, choices=VisitKind.choices, default=VisitKind.OUTPATIENT)
    department = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="visits")
    doctor = models.CharField(max_length=120, blank=True)
    nurse = models.CharField(max_length=120, blank=True)
    ward = models.CharField(max_length=60, blank=True)
    admitted_at = models.DateTimeField()
    discharged_at = models.DateTimeField(null=True, blank=True)
    package = models.CharField(max_length=120, blank=True, help_text=_("Health-check package"))
    amount = models.DecimalField(max_digits=12, decimal_places=2, default=Decimal("0"))

    class Meta:
        ordering = ["-admitted_at"]
        indexes = [models.Index(fields=["patient", "-admitted_at"])]

    def __str__(self) -> str:
        return self.visit_number

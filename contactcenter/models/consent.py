from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class ConsentPurpose(models.TextChoices):
    """Marketing and service are separate: STOP ends campaigns, not the callback a patient asked for."""

    MARKETING = "marketing", _("Marketing")
    SERVICE = "service", _("Service")


class ConsentStatus(models.TextChoices):
    OPTED_IN = "opted_in", _("Opted in")
    OPTED_OUT = "opted_out", _("Opted out")
    # Never asked, or a consent taken back to "not recorded": what a patient with no row has too.
    UNKNOWN = "unknown", _("Unknown")


class ConsentSource(models.TextChoices):
    KEYWORD = "keyword", _("Keyword reply")
    AGENT = "agent", _("Recorded by staff")
    PROVIDER = "provider", _("Provider reported")
    API = "api", _("Hospital system")
    WIDGET = "widget", _("Web chat form")


class Consent(models.Model):
    """A patient's current consent for one purpose, across all channels. No row: unknown (never asked)."""

    patient = models.ForeignKey("contactcenter.Patient", on_delete=models.CASCADE, related_name="consents")
    purpose = models.CharField(max_length=12, choices=ConsentPurpose.choices)
    status = models.CharField(max_length=12, choices=ConsentStatus.choices)
    changed_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["patient", "purpose"], name="consent_one_per_purpose")]


class ConsentChange(models.Model):
    """The history behind Consent: every change with its source, channel and time. Append-only."""

    patient = models.ForeignKey("contactcenter.Patient", on_delete=models.CASCADE, related_name="consent_changes")
    purpose = models.CharField(max_length=12, choices=ConsentPurpose.choices)
    status = models.CharField(max_length=12, choices=ConsentStatus.choices)
    source = models.CharField(max_length=12, choices=ConsentSource.choices)
    channel = models.CharField(max_length=20, blank=True)
    keyword = models.CharField(max_length=40, blank=True)
    message = models.ForeignKey(
        "contactcenter.Message", null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    actor = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["-at", "-id"]

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Patient


class SegmentKind(models.TextChoices):
    RULES = "rules", _("Rules")
    STATIC = "static", _("Static list")


class Segment(models.Model):
    """A saved audience: rules evaluated at launch (campaigns.segments), or a static list from a CSV."""

    name = models.CharField(max_length=120)
    description = models.CharField(max_length=300, blank=True)
    kind = models.CharField(max_length=10, choices=SegmentKind.choices, default=SegmentKind.RULES)
    # {"op": "and"|"or", "rules": [{"field": "age_band", "operator": "in", "value": [">50"]}, {"op": "or", ...}]}
    rules = models.JSONField(default=dict, blank=True)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL, related_name="+")
    created_at = models.DateTimeField(default=timezone.now)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        ordering = ["name"]

    def __str__(self) -> str:
        return self.name


class StaticListMember(models.Model):
    segment = models.ForeignKey(Segment, on_delete=models.CASCADE, related_name="members")
    patient = models.ForeignKey(Patient, on_delete=models.CASCADE, related_name="+")

    class Meta:
        constraints = [models.UniqueConstraint(fields=["segment", "patient"], name="static_list_member_once")]

    def __str__(self) -> str:
        return f"{self.segment_id}:{self.patient_id}"

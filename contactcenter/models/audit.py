from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _


class AuditAction(models.TextChoices):
    VIEW_PATIENT = "view_patient", _("Viewed patient profile")
    VIEW_CONVERSATION = "view_conversation", _("Viewed conversation")
    LIST_PATIENTS = "list_patients", _("Listed patients")
    MERGE_PATIENTS = "merge_patients", _("Merged patients")
    UPDATE_PATIENT = "update_patient", _("Updated patient")
    IMPORT_DISCHARGES = "import_discharges", _("Imported discharges")
    EXPORT_REPORT = "export_report", _("Exported report")
    LIST_CONVERSATIONS = "list_conversations", _("Listed conversations")
    LIST_FOLLOWUP_TASKS = "list_followup_tasks", _("Listed follow-up tasks")
    VIEW_ATTACHMENT = "view_attachment", _("Viewed attachment")
    REPLAY_EVENTS = "replay_events", _("Replayed conversation events")
    CHANGE_STAFF_ACCESS = "change_staff_access", _("Changed staff role or teams")
    DEACTIVATE_STAFF = "deactivate_staff", _("Deactivated staff account")
    CHANGE_PASSWORD = "change_password", _("Changed staff password")


class AuditLogEntry(models.Model):
    """Who read or changed which patient's data, when and from where. Append-only."""

    at = models.DateTimeField(default=timezone.now, db_index=True)
    actor = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.PROTECT, related_name="+")
    action = models.CharField(max_length=30, choices=AuditAction.choices)
    patient_id = models.BigIntegerField(null=True, db_index=True)
    object_type = models.CharField(max_length=40)
    object_id = models.CharField(max_length=40)
    via = models.CharField(max_length=20, help_text=_("ui, api or socket"))
    ip_address = models.GenericIPAddressField(null=True)
    detail = models.JSONField(default=dict, blank=True)

    class Meta:
        ordering = ["-at", "-id"]
        verbose_name_plural = "audit log entries"

from __future__ import annotations

from django.conf import settings
from django.db import models
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Patient, Team


class TaskKind(models.TextChoices):
    CALL = "call", _("Nurse call")
    SMS_SURVEY = "sms_survey", _("SMS survey")


class TaskStatus(models.TextChoices):
    SCHEDULED = "scheduled", _("Scheduled")  # not due yet; the dispatcher will open it
    OPEN = "open", _("Open")  # on the worklist (calls) or survey started (sms)
    IN_PROGRESS = "in_progress", _("In progress")  # claimed by a nurse
    COMPLETED = "completed", _("Completed")
    UNREACHABLE = "unreachable", _("Unreachable")  # attempts exhausted
    CANCELLED = "cancelled", _("Cancelled")
    EXCLUDED = "excluded", _("Excluded")  # e.g. no survey to the deceased
    # The contact deadline passed before anyone could contact the patient (a late or back-filled discharge,
    # a dispatcher that was down): nothing is sent, and plan_note says why.
    EXPIRED = "expired", _("Expired")


OPEN_STATUSES = (TaskStatus.SCHEDULED, TaskStatus.OPEN, TaskStatus.IN_PROGRESS)


class CallbackTask(models.Model):
    """回访任务: one plan step for one discharge, with its due window. Time lives here, not in Celery."""

    discharge = models.ForeignKey("callbacks.Discharge", on_delete=models.CASCADE, related_name="tasks")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="callback_tasks")
    department = models.ForeignKey(Team, on_delete=models.PROTECT, related_name="callback_tasks")
    step = models.ForeignKey("callbacks.PlanStep", null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    kind = models.CharField(max_length=12, choices=TaskKind.choices)
    status = models.CharField(max_length=12, choices=TaskStatus.choices, default=TaskStatus.SCHEDULED)
    # Why the planner turned an SMS step into a call, or excluded it; shown to the nurse.
    plan_note = models.CharField(max_length=200, blank=True)
    due_at = models.DateTimeField()
    deadline_at = models.DateTimeField()
    # When the dispatcher should next act on this row (open it, retry it, escalate it); null when nothing is pending.
    next_action_at = models.DateTimeField(null=True, blank=True)
    # After a no-answer: the worklist hides the task until this time (next_action_at may be the deadline first).
    retry_at = models.DateTimeField(null=True, blank=True)
    assignee = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="callback_tasks"
    )
    claimed_at = models.DateTimeField(null=True, blank=True)
    attempt_count = models.PositiveSmallIntegerField(default=0)
    max_attempts = models.PositiveSmallIntegerField(default=3)
    retry_interval_hours = models.PositiveSmallIntegerField(default=4)
    opened_at = models.DateTimeField(null=True, blank=True)
    escalated_at = models.DateTimeField(null=True, blank=True)
    completed_at = models.DateTimeField(null=True, blank=True)
    outcome = models.CharField(max_length=20, blank=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["deadline_at", "id"]
        indexes = [
            models.Index(fields=["next_action_at"], name="callback_task_next_action"),
            models.Index(fields=["status", "deadline_at"], name="callback_task_worklist"),
            models.Index(fields=["department", "status", "deadline_at"], name="callback_task_dept_worklist"),
        ]

    def __str__(self) -> str:
        return f"CallbackTask {self.pk}"


class CallOutcome(models.TextChoices):
    REACHED = "reached", _("Reached")
    NO_ANSWER = "no_answer", _("No answer")
    BUSY = "busy", _("Busy")
    WRONG_NUMBER = "wrong_number", _("Wrong number")
    DECLINED = "declined", _("Declined")
    DECEASED = "deceased", _("Deceased")
    READMITTED = "readmitted", _("Readmitted")


# Worth another try later; every other outcome ends the task.
RETRYABLE_OUTCOMES = (CallOutcome.NO_ANSWER, CallOutcome.BUSY)


class CallAttempt(models.Model):
    task = models.ForeignKey(CallbackTask, on_delete=models.CASCADE, related_name="attempts")
    nurse = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.PROTECT, related_name="+")
    outcome = models.CharField(max_length=20, choices=CallOutcome.choices)
    # {question key: answer} for the plan's call script.
    answers = models.JSONField(default=dict, blank=True)
    notes = models.TextField(blank=True)
    attempted_at = models.DateTimeField(default=timezone.now)

    class Meta:
        ordering = ["attempted_at", "id"]

    def __str__(self) -> str:
        return f"CallAttempt {self.pk}"

from __future__ import annotations

from django.db import models
from django.db.models import Q
from django.utils import timezone
from django.utils.translation import gettext_lazy as _

from contactcenter.models import Conversation, Inbox, Message, Patient


class Survey(models.Model):
    """A satisfaction survey sent by SMS one question at a time. Prompts carry no clinical detail."""

    name = models.CharField(max_length=120)
    name_zh = models.CharField(max_length=120, blank=True)
    intro_en = models.CharField(max_length=300, blank=True)
    intro_zh = models.CharField(max_length=300, blank=True)
    thanks_en = models.CharField(max_length=300, blank=True)
    thanks_zh = models.CharField(max_length=300, blank=True)
    reminder_after_hours = models.PositiveIntegerField(default=24)
    close_after_days = models.PositiveIntegerField(default=3)
    # A rating at or below this (1–5 scale; NPS is scaled) opens a service-recovery case.
    low_score_threshold = models.PositiveSmallIntegerField(default=2)
    is_active = models.BooleanField(default=True)

    def __str__(self) -> str:
        return self.name


class QuestionKind(models.TextChoices):
    RATING = "rating", _("Rating 1–5")
    NPS = "nps", _("NPS 0–10")
    YES_NO = "yes_no", _("Yes / no")
    FREE_TEXT = "free_text", _("Free text")


class SurveyQuestion(models.Model):
    survey = models.ForeignKey(Survey, on_delete=models.CASCADE, related_name="questions")
    position = models.PositiveSmallIntegerField()
    kind = models.CharField(max_length=10, choices=QuestionKind.choices)
    # What reports group by: "overall", "doctor", "nurse", "recommend", "comment" …
    key = models.SlugField(max_length=40)
    prompt_en = models.CharField(max_length=300)
    prompt_zh = models.CharField(max_length=300)

    class Meta:
        ordering = ["survey", "position"]
        constraints = [models.UniqueConstraint(fields=["survey", "position"], name="survey_question_position")]

    def __str__(self) -> str:
        return f"{self.survey_id}#{self.position} {self.key}"


class SessionStatus(models.TextChoices):
    ACTIVE = "active", _("Active")
    COMPLETED = "completed", _("Completed")
    NO_RESPONSE = "no_response", _("No response")
    OPTED_OUT = "opted_out", _("Opted out")
    CANCELLED = "cancelled", _("Cancelled")


class SurveySession(models.Model):
    """One patient taking one survey over SMS; at most one active per (patient, inbox)."""

    survey = models.ForeignKey(Survey, on_delete=models.PROTECT, related_name="sessions")
    patient = models.ForeignKey(Patient, on_delete=models.PROTECT, related_name="survey_sessions")
    inbox = models.ForeignKey(Inbox, on_delete=models.PROTECT, related_name="+")
    conversation = models.ForeignKey(Conversation, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    discharge = models.ForeignKey(
        "callbacks.Discharge", null=True, blank=True, on_delete=models.SET_NULL, related_name="survey_sessions"
    )
    task = models.OneToOneField(
        "callbacks.CallbackTask", null=True, blank=True, on_delete=models.SET_NULL, related_name="survey_session"
    )
    language = models.CharField(max_length=10, default="zh-hans")
    status = models.CharField(max_length=12, choices=SessionStatus.choices, default=SessionStatus.ACTIVE)
    current_position = models.PositiveSmallIntegerField(default=0)
    # Set after the one clarification for the current question; cleared when the survey moves on.
    clarification_sent = models.BooleanField(default=False)
    reminder_sent_at = models.DateTimeField(null=True, blank=True)
    last_prompt_at = models.DateTimeField(null=True, blank=True)
    # When the dispatcher should next look at this session (reminder, then closing as no response).
    next_action_at = models.DateTimeField(null=True, blank=True)
    started_at = models.DateTimeField(default=timezone.now)
    closed_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        constraints = [
            models.UniqueConstraint(
                fields=["patient", "inbox"], condition=Q(status="active"), name="survey_one_active_per_patient_inbox"
            )
        ]
        indexes = [models.Index(fields=["status", "next_action_at"])]

    def __str__(self) -> str:
        return f"SurveySession {self.pk}"


class SurveyAnswer(models.Model):
    session = models.ForeignKey(SurveySession, on_delete=models.CASCADE, related_name="answers")
    question = models.ForeignKey(SurveyQuestion, on_delete=models.PROTECT, related_name="answers")
    raw_text = models.TextField(blank=True)
    # rating 1–5, NPS 0–10, yes/no as 1/0; None for free text or an answer we could not read.
    value = models.SmallIntegerField(null=True, blank=True)
    text = models.TextField(blank=True)
    negative = models.BooleanField(default=False, help_text=_("Free text read as a complaint"))
    message = models.ForeignKey(Message, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    answered_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["session", "question"], name="survey_answer_once")]

    def __str__(self) -> str:
        return f"Answer {self.pk}"


class CallScript(models.Model):
    """The questions a follow-up nurse asks on the phone; answers are stored with the attempt."""

    name = models.CharField(max_length=120)
    name_zh = models.CharField(max_length=120, blank=True)
    # [{"key": "pain", "kind": "rating|yes_no|free_text|choice", "prompt_en": "...", "prompt_zh": "...",
    #   "choices": [...], "required": true}]
    questions = models.JSONField(default=list)

    def __str__(self) -> str:
        return self.name

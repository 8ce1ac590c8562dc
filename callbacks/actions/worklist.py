"""The follow-up nurse's worklist: claiming a call task, letting it go, and recording each call attempt.

Every change to a task happens here, under the task's row lock, so two nurses clicking "Claim" at the same
moment (or one nurse double-submitting an attempt) cannot both win.
"""

from __future__ import annotations

import datetime as dt
import logging
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils import timezone
from django.utils.translation import gettext as _

from callbacks import plans
from callbacks.actions.recovery import open_case as open_service_case
from callbacks.models import (
    OPEN_STATUSES,
    RETRYABLE_OUTCOMES,
    CallAttempt,
    CallbackTask,
    CallOutcome,
    CaseSource,
    Discharge,
    SessionStatus,
    SurveySession,
    TaskStatus,
)
from callbacks.phones import read_phone
from callbacks.worklist.selectors import can_work_task, choice_values, script_questions
from contactcenter import access
from contactcenter.actions.audit import record_audit
from contactcenter.api.shapes import staff_name
from contactcenter.boundary import clean_text
from contactcenter.models import AuditAction, IdentityKind, PatientIdentity, Role

logger = logging.getLogger(__name__)

# A rating at or below this on the call script is a dissatisfied patient: patient relations call back.
LOW_RATING = 2
QUESTION_KINDS = ("rating", "yes_no", "free_text", "choice")
MAX_FREE_TEXT = 2000
MAX_NOTES = 4000
# Outcomes after which nothing more should be planned for the stay (or for the patient at all).
_ENDS_DISCHARGE = (CallOutcome.READMITTED,)
_ENDS_PATIENT = (CallOutcome.DECEASED,)


def _locked(task: CallbackTask) -> CallbackTask:
    # of=("self",): the lock must not spread to the joined patient, discharge or user rows.
    return CallbackTask.objects.select_for_update(of=("self",)).get(pk=task.pk)


def _check_may_work(task: CallbackTask, user: User) -> None:
    if not can_work_task(user, task):
        raise ValidationError(_("You cannot work on this follow-up task."))


def _check_holdable(task: CallbackTask, nurse: User) -> None:
    """Only an open task, or one this nurse already holds, may be claimed or worked on."""
    if task.status == TaskStatus.IN_PROGRESS and task.assignee_id not in (None, nurse.pk):
        raise ValidationError(
            {"task": [_("This task is already claimed by %(name)s.") % {"name": staff_name(task.assignee)}]}
        )
    if task.status not in (TaskStatus.OPEN, TaskStatus.IN_PROGRESS):
        if task.status == TaskStatus.SCHEDULED:
            message = _("This task is not due yet.")
        else:
            message = _("This task is already closed (%(status)s).") % {"status": task.get_status_display()}
        raise ValidationError({"task": [message]})


# --- Claim, release, reassign ----------------------------------------------------------------------------


@transaction.atomic
def claim_task(*, task: CallbackTask, nurse: User, now: dt.datetime | None = None) -> CallbackTask:
    """Take an open call task onto this nurse's list. Claiming one's own task again is a no-op."""
    now = now or timezone.now()
    _check_may_work(task, nurse)
    task = _locked(task)
    _check_holdable(task, nurse)
    if task.status == TaskStatus.IN_PROGRESS:
        return task
    task.status = TaskStatus.IN_PROGRESS
    task.assignee = nurse
    task.claimed_at = now
    task.save(update_fields=["status", "assignee", "claimed_at"])
    logger.info("callback task %s claimed by user %s", task.pk, nurse.pk)
    return task


@transaction.atomic
def release_task(*, task: CallbackTask, actor: User) -> CallbackTask:
    """Put a claimed task back on the open worklist: by the nurse holding it, or by a supervisor."""
    _check_may_work(task, actor)
    task = _locked(task)
    if task.status != TaskStatus.IN_PROGRESS:
        raise ValidationError({"task": [_("Only a claimed task can be released.")]})
    if task.assignee_id != actor.pk and not access.sees_everything(actor):
        raise ValidationError(
            {
                "task": [
                    _("This task is claimed by %(name)s; only a supervisor can release it.")
                    % {"name": staff_name(task.assignee)}
                ]
            }
        )
    task.status = TaskStatus.OPEN
    task.assignee = None
    task.claimed_at = None
    task.save(update_fields=["status", "assignee", "claimed_at"])
    logger.info("callback task %s released by user %s", task.pk, actor.pk)
    return task


@transaction.atomic
def reassign_task(*, task: CallbackTask, nurse: User, actor: User, now: dt.datetime | None = None) -> CallbackTask:
    """A supervisor hands an open or claimed task to a nurse who works that department."""
    now = now or timezone.now()
    if not access.sees_everything(actor):
        raise ValidationError(_("Only supervisors and admins can reassign follow-up tasks."))
    if access.role_of(nurse) != Role.NURSE or not can_work_task(nurse, task):
        raise ValidationError({"nurse_id": [_("Choose a follow-up nurse of this task's department.")]})
    task = _locked(task)
    if task.status not in (TaskStatus.OPEN, TaskStatus.IN_PROGRESS):
        raise ValidationError({"task": [_("Only an open or claimed task can be reassigned.")]})
    task.status = TaskStatus.IN_PROGRESS
    task.assignee = nurse
    task.claimed_at = now
    task.save(update_fields=["status", "assignee", "claimed_at"])
    logger.info("callback task %s reassigned to user %s by user %s", task.pk, nurse.pk, actor.pk)
    return task


# --- The call script ---------------------------------------------------------------------------------------


def _clean_answer(question: dict[str, Any], value: Any) -> Any:
    """The stored form of one answer, or ValidationError with a message a nurse can act on."""
    kind = question.get("kind")
    if kind == "rating":
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValidationError(_("Choose a rating from 1 to 5."))
        try:
            rating = int(value)
        except ValueError:
            raise ValidationError(_("Choose a rating from 1 to 5.")) from None
        if not 1 <= rating <= 5:
            raise ValidationError(_("Choose a rating from 1 to 5."))
        return rating
    if kind == "yes_no":
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.strip().lower() in ("yes", "no", "true", "false"):
            return value.strip().lower() in ("yes", "true")
        raise ValidationError(_("Answer yes or no."))
    if kind == "choice":
        options = choice_values(question)
        if not isinstance(value, (str, int)) or isinstance(value, bool) or str(value) not in options:
            raise ValidationError(_("Choose one of the listed answers."))
        return str(value)
    # free_text, and any kind a script editor invents later: kept as text.
    if not isinstance(value, str):
        raise ValidationError(_("Enter text."))
    if "\x00" in value:
        raise ValidationError(_("Null characters are not allowed."))
    if len(value) > MAX_FREE_TEXT:
        raise ValidationError(_("Keep the answer under %(n)s characters.") % {"n": MAX_FREE_TEXT})
    return value.strip()


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def check_answers(task: CallbackTask, outcome: str, answers: dict[str, Any]) -> dict[str, Any]:
    """Validate answers against the step's script; required questions count only when the patient was reached.

    Returns the answers to store. Raises ValidationError keyed "answers.<question key>" for each bad answer.
    """
    questions = {str(q["key"]): q for q in script_questions(task)}
    errors: dict[str, list[str]] = {}
    cleaned: dict[str, Any] = {}
    for key in answers:
        if key not in questions:
            errors[f"answers.{key}"] = [_("This call script has no such question.")]
    for key, question in questions.items():
        value = answers.get(key)
        if _blank(value):
            if outcome == CallOutcome.REACHED and question.get("required"):
                errors[f"answers.{key}"] = [_("This question needs an answer when the patient was reached.")]
            continue
        try:
            cleaned[key] = _clean_answer(question, value)
        except ValidationError as exc:
            errors[f"answers.{key}"] = exc.messages
    if errors:
        raise ValidationError(errors)
    return cleaned


def low_answers(task: CallbackTask, answers: dict[str, Any]) -> list[str]:
    """The rating questions answered at or below LOW_RATING: a dissatisfied patient."""
    return [
        str(q["key"])
        for q in script_questions(task)
        if q.get("kind") == "rating" and isinstance(answers.get(q["key"]), int) and answers[q["key"]] <= LOW_RATING
    ]


# --- Recording a call --------------------------------------------------------------------------------------


def _close(task: CallbackTask, *, status: str, outcome: str, now: dt.datetime) -> None:
    task.status = status
    task.outcome = outcome
    task.completed_at = now
    task.next_action_at = None
    task.retry_at = None


def _cancel_rest_of(discharge: Discharge) -> int:
    # cancel_follow_up cancels every still-open task of the stay; the task just closed is no longer open.
    return plans.cancel_follow_up(discharge)


def _stop_follow_up_for_patient(task: CallbackTask, now: dt.datetime) -> None:
    """The patient has died: nothing else may reach the family, from any stay, by call or by survey."""
    discharge_ids = set(
        CallbackTask.objects.filter(patient_id=task.patient_id, status__in=OPEN_STATUSES)
        .exclude(pk=task.pk)
        .values_list("discharge_id", flat=True)
    )
    discharge_ids.add(task.discharge_id)
    for discharge in Discharge.objects.filter(pk__in=discharge_ids):
        _cancel_rest_of(discharge)
    SurveySession.objects.filter(patient_id=task.patient_id, status=SessionStatus.ACTIVE).update(
        status=SessionStatus.CANCELLED, closed_at=now, next_action_at=None
    )


@transaction.atomic
def record_attempt(
    *,
    task: CallbackTask,
    nurse: User,
    outcome: str,
    answers: dict[str, Any] | None = None,
    notes: str = "",
    open_case: bool = False,
    now: dt.datetime | None = None,
) -> CallAttempt:
    """Store one call with its outcome and script answers, then move the task on.

    Reached, declined and wrong number complete the task; deceased and readmitted complete it and cancel
    what was still planned; no answer and busy come back after the retry interval (within calling hours)
    until the attempts run out, then the task is unreachable. A low rating or open_case opens a
    service-recovery case.
    """
    now = now or timezone.now()
    answers = answers if answers is not None else {}
    errors: dict[str, list[str]] = {}
    if outcome not in CallOutcome.values:
        errors["outcome"] = [_("Choose the outcome of the call.")]
    if not isinstance(answers, dict):
        errors["answers"] = [_("Answers must be an object keyed by question.")]
    if not isinstance(notes, str) or "\x00" in notes:
        errors["notes"] = [_("Notes must be plain text.")]
    elif len(notes) > MAX_NOTES:
        errors["notes"] = [_("Keep notes under %(n)s characters.") % {"n": MAX_NOTES}]
    if errors:
        raise ValidationError(errors)

    _check_may_work(task, nurse)
    task = _locked(task)
    _check_holdable(task, nurse)
    cleaned = check_answers(task, outcome, answers)

    attempt = CallAttempt.objects.create(
        task=task, nurse=nurse, outcome=outcome, answers=cleaned, notes=notes.strip(), attempted_at=now
    )
    task.attempt_count += 1
    task.assignee = nurse
    if outcome in RETRYABLE_OUTCOMES:
        retry_at = plans.schedule_retry(task, now) if task.attempt_count < task.max_attempts else None
        if retry_at is None:
            _close(task, status=TaskStatus.UNREACHABLE, outcome=outcome, now=now)
        else:
            # Back on the shared list, hidden until the retry time (callbacks.worklist.selectors); the
            # dispatcher may need the row earlier, at the deadline, to escalate it.
            task.status = TaskStatus.OPEN
            task.assignee = None
            task.claimed_at = None
            task.retry_at = retry_at
            task.next_action_at = plans.retry_next_action(task, retry_at)
    else:
        _close(task, status=TaskStatus.COMPLETED, outcome=outcome, now=now)
    task.save(
        update_fields=[
            "attempt_count",
            "status",
            "outcome",
            "completed_at",
            "next_action_at",
            "retry_at",
            "assignee",
            "claimed_at",
        ]
    )

    if outcome in _ENDS_PATIENT:
        _stop_follow_up_for_patient(task, now)
    elif outcome in _ENDS_DISCHARGE:
        _cancel_rest_of(task.discharge)

    low = low_answers(task, cleaned)
    if low or open_case:
        reasons = [_("Low rating on %(keys)s") % {"keys": ", ".join(low)}] if low else []
        if open_case:
            reasons.append(_("Opened by the follow-up nurse"))
        summary = "; ".join(reasons) + (f"\n{attempt.notes}" if attempt.notes else "")
        open_service_case(
            patient=task.patient,
            source=CaseSource.CALL,
            summary=summary,
            discharge=task.discharge,
            task=task,
            actor=nurse,
            now=now,
        )
    logger.info(
        "callback task %s attempt %s by user %s: %s → %s", task.pk, task.attempt_count, nurse.pk, outcome, task.status
    )
    return attempt


# --- The phone number the HIS sent -------------------------------------------------------------------------


@transaction.atomic
def correct_phone(
    *, task: CallbackTask, phone: str, actor: User, via: str = "ui", ip_address: str | None = None
) -> Discharge:
    """A nurse checked an unreadable number from the HIS and enters the right one.

    The patient gets the number, the stay's flag clears, and the steps nobody has started yet are planned
    again, so an SMS survey that became a call may go by SMS after all. Audited as a change to the patient.
    Raises ValidationError on "phone".
    """
    _check_may_work(task, actor)
    discharge = Discharge.objects.select_for_update(of=("self",)).get(pk=task.discharge_id)
    text = clean_text(phone if isinstance(phone, str) else "", field="phone", max_length=80, truncate=True).strip()
    e164 = read_phone(text, discharge.phone_region)
    if e164 is None:
        raise ValidationError(
            {
                "phone": [
                    _("“%(value)s” is not a phone number; include the country code, e.g. +1 610 555 0123.")
                    % {"value": text[:40]}
                ]
            }
        )
    owner = PatientIdentity.objects.filter(kind=IdentityKind.PHONE, value=e164).values_list("patient_id", flat=True)
    owner_id = owner.first()
    if owner_id is not None and owner_id != task.patient_id:
        raise ValidationError({"phone": [_("This number is on another patient's record.")]})
    if owner_id is None:
        PatientIdentity.objects.create(patient_id=task.patient_id, kind=IdentityKind.PHONE, value=e164)
    if discharge.phone_needs_review:
        discharge.phone_needs_review = False
        discharge.save(update_fields=["phone_needs_review", "updated_at"])
        plans.reschedule_follow_up(discharge)
    record_audit(
        actor=actor,
        action=AuditAction.UPDATE_PATIENT,
        patient_id=task.patient_id,
        object_type="callback_task",
        object_id=task.pk,
        via=via,
        ip_address=ip_address,
        detail={"field": "phone"},
    )
    logger.info("callback task %s: phone of patient %s corrected by user %s", task.pk, task.patient_id, actor.pk)
    return discharge

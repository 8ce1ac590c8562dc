"""What the worklist API returns. Built as plain dicts here; the *Shape serializers document them for OpenAPI."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.utils.translation import gettext
from rest_framework import serializers

from callbacks.models import CallAttempt, CallbackTask, CallOutcome, ServiceCase
from callbacks.worklist import selectors
from contactcenter.api.shapes import StaffRefSerializer, TeamSerializer, staff_name


def _staff(user: Any) -> dict[str, Any] | None:
    return {"id": user.pk, "name": staff_name(user)} if user is not None else None


def _team(team: Any) -> dict[str, Any]:
    return {"id": team.pk, "code": team.code, "name": team.name, "name_zh": team.name_zh}


def task_row(task: CallbackTask, *, now: dt.datetime) -> dict[str, Any]:
    step = task.step
    return {
        "id": task.pk,
        "kind": task.kind,
        "status": task.status,
        "outcome": task.outcome,
        # Stored in English (the planner runs without a language); shown in the nurse's.
        "plan_note": gettext(task.plan_note) if task.plan_note else "",
        "patient": {
            "id": task.patient_id,
            "name": task.patient.name,
            "phone_masked": selectors.mask_phone(selectors.phone_of(task)),
        },
        # The HIS sent a number nobody could read for this stay: a nurse checks it (task_detail has it).
        "phone_needs_review": task.discharge.phone_needs_review,
        "department": _team(task.department),
        "discharge": {
            "id": task.discharge_id,
            "discharged_at": task.discharge.discharged_at,
            "ward": task.discharge.ward,
        },
        "step": (
            {"position": step.position, "offset_days": step.offset_days, "business_days": step.business_days}
            if step is not None
            else None
        ),
        "due_at": task.due_at,
        "deadline_at": task.deadline_at,
        "next_action_at": task.next_action_at,
        "retry_at": task.retry_at,
        "escalated_at": task.escalated_at,
        "claimed_at": task.claimed_at,
        "completed_at": task.completed_at,
        "attempt_count": task.attempt_count,
        "max_attempts": task.max_attempts,
        "assignee": _staff(task.assignee),
        "overdue": task.status in selectors.ACTIVE and task.deadline_at <= now,
        "waiting_for_retry": selectors.waiting_for_retry(task, now),
        "deadline_business_days": selectors.business_days_until(task.deadline_at, now),
    }


def _question(q: dict[str, Any]) -> dict[str, Any]:
    choices = []
    for item in q.get("choices") or []:
        if isinstance(item, dict):
            value = str(item.get("value", ""))
            label_en = str(item.get("label_en") or value)
            choices.append({"value": value, "label_en": label_en, "label_zh": str(item.get("label_zh") or "")})
        else:
            choices.append({"value": str(item), "label_en": str(item), "label_zh": ""})
    return {
        "key": str(q["key"]),
        "kind": str(q.get("kind", "free_text")),
        "prompt_en": str(q.get("prompt_en", "")),
        "prompt_zh": str(q.get("prompt_zh", "")),
        "required": bool(q.get("required", False)),
        "choices": choices,
    }


def attempt_data(attempt: CallAttempt) -> dict[str, Any]:
    return {
        "id": attempt.pk,
        "nurse": _staff(attempt.nurse),
        "outcome": attempt.outcome,
        "answers": attempt.answers,
        "notes": attempt.notes,
        "attempted_at": attempt.attempted_at,
    }


def task_detail(task: CallbackTask, *, user: Any, now: dt.datetime) -> dict[str, Any]:
    data = task_row(task, now=now)
    patient = task.patient
    phone = selectors.phone_of(task)
    discharge = task.discharge
    show_diagnoses = selectors.sees_diagnoses(user, task)
    script = task.step.call_script if task.step is not None else None
    attempts = task.attempts.select_related("nurse__agent_profile").order_by("attempted_at", "id")
    cases = ServiceCase.objects.filter(task=task).order_by("created_at", "id")
    data.update(
        {
            "patient": {
                "id": patient.pk,
                "name": patient.name,
                "gender": patient.gender,
                "age": patient.age(),
                "language": patient.language,
                "vip_tier": patient.vip_tier,
                "phone": phone,
                "phone_masked": selectors.mask_phone(phone),
            },
            "discharge": {
                "id": discharge.pk,
                "visit_number": discharge.visit_number,
                "department": _team(discharge.department),
                "ward": discharge.ward,
                "attending_doctor": discharge.attending_doctor,
                "primary_nurse": discharge.primary_nurse,
                "discharged_at": discharge.discharged_at,
                "disposition": discharge.disposition,
                "his_department_code": discharge.his_department_code,
                "phone_as_sent": discharge.phone_as_sent,
                "diagnoses_visible": show_diagnoses,
                "diagnoses": (
                    [{"code": str(d.get("code", "")), "text": str(d.get("text", ""))} for d in discharge.diagnoses]
                    if show_diagnoses
                    else None
                ),
            },
            "call_script": (
                {
                    "id": script.pk,
                    "name": script.name,
                    "name_zh": script.name_zh,
                    "questions": [_question(q) for q in selectors.script_questions(task)],
                }
                if script is not None
                else None
            ),
            "attempts": [attempt_data(a) for a in attempts],
            "cases": [{"id": c.pk, "status": c.status, "source": c.source, "created_at": c.created_at} for c in cases],
        }
    )
    return data


# --- Documentation-only shapes ---------------------------------------------------------------------------


class TaskPatientRefShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    phone_masked = serializers.CharField(help_text="e.g. 138****8000")


class TaskDischargeRefShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    discharged_at = serializers.DateTimeField()
    ward = serializers.CharField()


class TaskStepShape(serializers.Serializer[Any]):
    position = serializers.IntegerField()
    offset_days = serializers.IntegerField()
    business_days = serializers.BooleanField()


class TaskRowShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    outcome = serializers.CharField()
    plan_note = serializers.CharField()
    patient = TaskPatientRefShape()
    department = TeamSerializer()
    discharge = TaskDischargeRefShape()
    phone_needs_review = serializers.BooleanField(
        help_text="The hospital system's phone number for this stay could not be read; check and correct it."
    )
    step = TaskStepShape(allow_null=True)
    due_at = serializers.DateTimeField()
    deadline_at = serializers.DateTimeField(help_text="The contact deadline.")
    next_action_at = serializers.DateTimeField(allow_null=True)
    retry_at = serializers.DateTimeField(allow_null=True, help_text="After a no-answer: hidden until then.")
    escalated_at = serializers.DateTimeField(allow_null=True)
    claimed_at = serializers.DateTimeField(allow_null=True)
    completed_at = serializers.DateTimeField(allow_null=True)
    attempt_count = serializers.IntegerField()
    max_attempts = serializers.IntegerField()
    assignee = StaffRefSerializer(allow_null=True)
    overdue = serializers.BooleanField()
    waiting_for_retry = serializers.BooleanField(help_text="No answer last time; hidden until retry_at.")
    deadline_business_days = serializers.IntegerField(
        allow_null=True, help_text="Business days from today to the deadline's day; 0 today, negative when past."
    )


class TaskPatientShape(TaskPatientRefShape):
    gender = serializers.CharField()
    age = serializers.IntegerField(allow_null=True)
    language = serializers.CharField()
    vip_tier = serializers.CharField()
    phone = serializers.CharField(help_text="E.164, for the nurse's tel: link.")


class WorklistDiagnosisShape(serializers.Serializer[Any]):
    code = serializers.CharField()
    text = serializers.CharField()


class TaskDischargeShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    visit_number = serializers.CharField()
    department = TeamSerializer()
    ward = serializers.CharField()
    attending_doctor = serializers.CharField()
    primary_nurse = serializers.CharField()
    discharged_at = serializers.DateTimeField()
    disposition = serializers.CharField()
    his_department_code = serializers.CharField(help_text="The department code as the hospital system sent it.")
    phone_as_sent = serializers.CharField(help_text="The phone number as the hospital system sent it.")
    diagnoses_visible = serializers.BooleanField()
    diagnoses = WorklistDiagnosisShape(many=True, allow_null=True, help_text="Only for nurses of the department.")


class ScriptChoiceShape(serializers.Serializer[Any]):
    value = serializers.CharField()
    label_en = serializers.CharField()
    label_zh = serializers.CharField()


class ScriptQuestionShape(serializers.Serializer[Any]):
    key = serializers.CharField()
    kind = serializers.ChoiceField(choices=["rating", "yes_no", "free_text", "choice"])
    prompt_en = serializers.CharField()
    prompt_zh = serializers.CharField()
    required = serializers.BooleanField()  # type: ignore[assignment]  # the metaclass takes it as a field
    choices = ScriptChoiceShape(many=True)


class CallScriptShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    name_zh = serializers.CharField()
    questions = ScriptQuestionShape(many=True)


class CallAttemptShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    nurse = StaffRefSerializer()
    outcome = serializers.ChoiceField(choices=CallOutcome.choices)
    answers = serializers.DictField()
    notes = serializers.CharField()
    attempted_at = serializers.DateTimeField()


class TaskCaseShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes it as a field
    created_at = serializers.DateTimeField()


class TaskDetailShape(TaskRowShape):
    patient = TaskPatientShape()
    discharge = TaskDischargeShape()  # type: ignore[assignment]
    call_script = CallScriptShape(allow_null=True)
    attempts = CallAttemptShape(many=True)
    cases = TaskCaseShape(many=True)


class CallAttemptResultShape(serializers.Serializer[Any]):
    attempt = CallAttemptShape()
    task = TaskRowShape()


class WorklistCountsShape(serializers.Serializer[Any]):
    due = serializers.IntegerField()
    overdue = serializers.IntegerField()
    mine = serializers.IntegerField()
    upcoming = serializers.IntegerField()
    escalated = serializers.IntegerField()
    done = serializers.IntegerField()

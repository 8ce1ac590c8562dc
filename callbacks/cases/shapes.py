"""What the service-recovery API takes and answers. Inputs parse only; the actions decide and write.

Response shapes document the dicts built in callbacks/cases/selectors.py. State-like fields are plain
strings here (their values are listed in the help text) so the schema's enum names do not collide with
the conversation API's `status`.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from callbacks.models import Accountability, CaseCategory, CaseStatus

_STATUS_HELP = "received, verified, improved or closed"
_CATEGORY_HELP = ", ".join(CaseCategory.values)


# --- Inputs ---------------------------------------------------------------------------------------


class CaseFilterInput(serializers.Serializer[Any]):
    status = serializers.ChoiceField(choices=["open", *CaseStatus.values], required=False)
    category = serializers.ChoiceField(choices=CaseCategory.values, required=False)
    department = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)
    escalated = serializers.BooleanField(required=False, allow_null=True, default=None)
    overdue = serializers.BooleanField(required=False, allow_null=True, default=None)
    assignee = serializers.CharField(required=False, help_text="A staff id, or `me`.")
    patient = serializers.IntegerField(required=False, min_value=1, max_value=2**63 - 1)

    def validate_assignee(self, value: str) -> str:
        if value != "me" and not (value.isascii() and value.isdigit() and 0 < int(value) < 2**31):
            raise serializers.ValidationError("Give a staff id or `me`.")
        return value


class CaseCreateInput(serializers.Serializer[Any]):
    patient_id = serializers.IntegerField(min_value=1, max_value=2**63 - 1)
    summary = serializers.CharField(max_length=2000)
    category = serializers.ChoiceField(choices=CaseCategory.values)
    department_id = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**31 - 1)
    discharge_id = serializers.IntegerField(required=False, allow_null=True, min_value=1, max_value=2**63 - 1)


class CaseVerifyInput(serializers.Serializer[Any]):
    cause = serializers.CharField(max_length=4000)
    # All values, so the schema has one category enum; verify_case refuses "unclassified".
    category = serializers.ChoiceField(choices=CaseCategory.values)
    accountable_department_id = serializers.IntegerField(
        required=False, allow_null=True, min_value=1, max_value=2**31 - 1
    )
    accountable_staff = serializers.CharField(max_length=120, required=False, allow_blank=True, default="")


class CaseImproveInput(serializers.Serializer[Any]):
    action_taken = serializers.CharField(max_length=4000)


class CaseCloseInput(serializers.Serializer[Any]):
    accountability = serializers.ChoiceField(choices=Accountability.values)
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")


class CaseContactInput(serializers.Serializer[Any]):
    note = serializers.CharField(max_length=4000, required=False, allow_blank=True, default="")


class CaseNoteInput(serializers.Serializer[Any]):
    note = serializers.CharField(max_length=4000)


class CaseAssignInput(serializers.Serializer[Any]):
    assignee_id = serializers.IntegerField(allow_null=True, min_value=1, max_value=2**31 - 1)


# --- Responses ------------------------------------------------------------------------------------


class CaseTeamShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    code = serializers.CharField()
    name = serializers.CharField()
    name_zh = serializers.CharField()


class CaseStaffShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CasePatientShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()


class CaseSummaryShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    status = serializers.CharField(help_text=_STATUS_HELP)
    category = serializers.CharField(help_text=_CATEGORY_HELP)
    source = serializers.CharField(help_text="survey_score, survey_comment, call or manual")  # type: ignore[assignment]
    summary = serializers.CharField()
    patient = CasePatientShape()
    department = CaseTeamShape(allow_null=True)
    assignee = CaseStaffShape(allow_null=True)
    created_at = serializers.DateTimeField()
    first_contact_due_at = serializers.DateTimeField()
    first_contacted_at = serializers.DateTimeField(allow_null=True)
    escalated_at = serializers.DateTimeField(allow_null=True)
    overdue = serializers.BooleanField(help_text="Open, not yet contacted, and past the first-contact deadline.")
    closed_at = serializers.DateTimeField(allow_null=True)


class CaseDischargeShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    visit_number = serializers.CharField()
    department = CaseTeamShape()
    ward = serializers.CharField()
    attending_doctor = serializers.CharField()
    primary_nurse = serializers.CharField()
    disposition = serializers.CharField()
    discharged_at = serializers.DateTimeField()


class CaseTaskShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField()
    status = serializers.CharField()
    outcome = serializers.CharField()


class CaseTriggerAnswerShape(serializers.Serializer[Any]):
    question_key = serializers.CharField()
    question_kind = serializers.CharField(help_text="rating, nps, yes_no or free_text")
    prompt_en = serializers.CharField()
    prompt_zh = serializers.CharField()
    value = serializers.IntegerField(allow_null=True)
    raw_text = serializers.CharField()
    text = serializers.CharField()
    negative = serializers.BooleanField()
    flagged = serializers.BooleanField(help_text="The answer reads as dissatisfaction.")
    answered_at = serializers.DateTimeField()


class CaseTriggerShape(serializers.Serializer[Any]):
    survey = serializers.CharField()
    survey_zh = serializers.CharField()
    session_id = serializers.IntegerField()
    answers = CaseTriggerAnswerShape(many=True)


class CaseEventShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    kind = serializers.CharField(help_text="opened, status, contacted, note, escalated or assigned")
    actor = CaseStaffShape(allow_null=True)
    from_status = serializers.CharField()
    to_status = serializers.CharField()
    note = serializers.CharField()
    at = serializers.DateTimeField()


class CaseAllowedShape(serializers.Serializer[Any]):
    verify = serializers.BooleanField()
    improve = serializers.BooleanField()
    close = serializers.BooleanField()
    reopen = serializers.BooleanField()
    contact = serializers.BooleanField()
    assign = serializers.BooleanField()
    note = serializers.BooleanField()


class CaseDetailShape(CaseSummaryShape):
    cause = serializers.CharField()
    action_taken = serializers.CharField()
    accountable_department = CaseTeamShape(allow_null=True)
    accountable_staff = serializers.CharField()
    accountability = serializers.CharField(help_text="reward, discipline, training, none; empty until closed")
    discharge = CaseDischargeShape(allow_null=True)
    task = CaseTaskShape(allow_null=True)
    trigger = CaseTriggerShape(allow_null=True, help_text="The survey answers that opened the case.")
    history = CaseEventShape(many=True)
    allowed = CaseAllowedShape(help_text="The steps the requesting user may take now.")


class CaseCountsShape(serializers.Serializer[Any]):
    open = serializers.IntegerField()
    received = serializers.IntegerField()
    verified = serializers.IntegerField()
    improved = serializers.IntegerField()
    closed = serializers.IntegerField()
    escalated = serializers.IntegerField()
    overdue = serializers.IntegerField()
    all = serializers.IntegerField()

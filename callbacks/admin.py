"""Django admin for follow-up configuration: plans and their steps, surveys, call scripts, the holiday calendar.

Callback tasks and HIS intake messages are shown read-only, for hospital IT to trace what the planner and
the HIS interfaces did. They carry patient data, so their lists show identifiers and states only, and
opening one is audited like any other staff read of patient data.
"""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.db import models, transaction
from django.db.models import QuerySet
from django.forms import ModelForm
from django.http import HttpRequest, HttpResponse
from django.utils.translation import gettext_lazy as _

from callbacks.actions.departments import map_department_code
from callbacks.business_calendar import clear_calendar_cache
from callbacks.intake.selectors import mappable_departments
from callbacks.models import (
    CalendarDay,
    CallbackTask,
    CallScript,
    DepartmentCodeMapping,
    FollowUpPlan,
    IntakeMessage,
    PlanStep,
    Survey,
    SurveyQuestion,
)
from contactcenter.actions.audit import record_audit
from contactcenter.models import AuditAction


class PlanStepInline(admin.TabularInline):
    model = PlanStep
    extra = 0
    fields = [
        "position",
        "kind",
        "offset_days",
        "business_days",
        "deadline_days",
        "survey",
        "call_script",
        "max_attempts",
        "retry_interval_hours",
    ]


@admin.register(FollowUpPlan)
class FollowUpPlanAdmin(admin.ModelAdmin):
    list_display = ["name", "name_zh", "department", "diagnosis_prefixes", "dispositions", "priority", "is_active"]
    list_filter = ["is_active", "department"]
    search_fields = ["name", "name_zh"]
    inlines = [PlanStepInline]


class SurveyQuestionInline(admin.TabularInline):
    model = SurveyQuestion
    extra = 0
    fields = ["position", "kind", "key", "prompt_en", "prompt_zh"]


@admin.register(Survey)
class SurveyAdmin(admin.ModelAdmin):
    list_display = ["name", "name_zh", "low_score_threshold", "reminder_after_hours", "close_after_days", "is_active"]
    list_filter = ["is_active"]
    inlines = [SurveyQuestionInline]


@admin.register(CallScript)
class CallScriptAdmin(admin.ModelAdmin):
    list_display = ["name", "name_zh"]
    search_fields = ["name", "name_zh"]


@admin.register(CalendarDay)
class CalendarDayAdmin(admin.ModelAdmin):
    list_display = ["date", "is_workday", "name"]
    list_filter = ["is_workday"]
    search_fields = ["name"]
    date_hierarchy = "date"
    ordering = ["date"]

    def delete_queryset(self, request: HttpRequest, queryset: QuerySet[CalendarDay]) -> None:
        # A bulk delete sends no post_delete signal, so this process's calendar cache is cleared by hand.
        super().delete_queryset(request, queryset)
        clear_calendar_cache()


@admin.register(DepartmentCodeMapping)
class DepartmentCodeMappingAdmin(admin.ModelAdmin):
    """HIS department codes → departments. Saving goes through map_department_code, so the discharges
    that were waiting for the code are re-routed; the discharges page lists the codes still unmapped."""

    list_display = ["code", "system", "department", "created_at", "created_by"]
    list_filter = ["department"]
    search_fields = ["code", "system"]
    fields = ["system", "code", "department"]

    def formfield_for_foreignkey(self, db_field: Any, request: HttpRequest, **kwargs: Any) -> Any:
        if db_field.name == "department":
            kwargs["queryset"] = mappable_departments()
        return super().formfield_for_foreignkey(db_field, request, **kwargs)

    def save_model(self, request: HttpRequest, obj: models.Model, form: ModelForm, change: bool) -> None:
        assert isinstance(obj, DepartmentCodeMapping)
        with transaction.atomic():
            if change and {"system", "code"} & set(form.changed_data):
                # A corrected code is a new mapping: the old code no longer means this department.
                DepartmentCodeMapping.objects.filter(pk=obj.pk).delete()
            result = map_department_code(
                system=obj.system, code=obj.code, department=obj.department, actor=request.user
            )
        obj.pk = result.mapping.pk


class ReadOnlyAdmin(admin.ModelAdmin):
    """Look, don't touch: these rows are written by actions only."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def _audit(self, request: HttpRequest, obj: Any, patient_id: int | None) -> None:
        record_audit(
            actor=request.user,
            action=AuditAction.VIEW_PATIENT,
            object_type=self.model._meta.model_name or "",
            object_id=obj.pk,
            via="ui",
            patient_id=patient_id,
            ip_address=request.META.get("REMOTE_ADDR"),
            detail={"page": "admin"},
        )


@admin.register(CallbackTask)
class CallbackTaskAdmin(ReadOnlyAdmin):
    list_display = [
        "id",
        "discharge_id",
        "kind",
        "status",
        "department",
        "due_at",
        "deadline_at",
        "next_action_at",
        "escalated_at",
        "attempt_count",
    ]
    list_filter = ["status", "kind", "department"]
    date_hierarchy = "due_at"
    list_select_related = ["department"]
    # Raw id widgets: a select of every patient or discharge would both be slow and show names.
    raw_id_fields = ["discharge", "patient", "step", "assignee"]
    search_fields = ["=id", "=discharge__visit_number"]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        task = self.get_object(request, object_id)
        if task is not None:
            self._audit(request, task, task.patient_id)
        return super().change_view(request, object_id, form_url, extra_context)


@admin.register(IntakeMessage)
class IntakeMessageAdmin(ReadOnlyAdmin):
    list_display = ["received_at", "source", "message_type", "control_id", "visit_number", "outcome", "short_error"]
    list_filter = ["source", "outcome", "message_type"]
    date_hierarchy = "received_at"
    search_fields = ["=control_id", "=visit_number"]
    raw_id_fields = ["discharge"]

    @admin.display(description=_("error"))
    def short_error(self, message: IntakeMessage) -> str:
        return message.error[:80]

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        message = self.get_object(request, object_id)
        if message is not None:
            # The raw HL7/JSON holds names and diagnoses: reading it is reading patient data.
            patient_id = message.discharge.patient_id if message.discharge_id and message.discharge else None
            self._audit(request, message, patient_id)
        return super().change_view(request, object_id, form_url, extra_context)

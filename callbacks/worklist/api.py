"""JSON API for the nurse worklist under /api/v1/followup/. Views parse, ask the selectors, call the actions."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from django.utils import timezone
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import NotFound
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from callbacks.actions import worklist as actions
from callbacks.models import CallbackTask, CallOutcome
from callbacks.worklist import selectors, shapes
from contactcenter import access
from contactcenter.actions.audit import audit_list_read, audit_read
from contactcenter.api.common import client_ip, staff_of, valid_input, via_of
from contactcenter.api.shapes import TeamSerializer
from contactcenter.models import AuditAction, Team

User = get_user_model()


class WorklistStaff(permissions.BasePermission):
    message = "Only follow-up nurses, supervisors and admins work the follow-up worklist."

    def has_permission(self, request: Request, view: Any) -> bool:
        return selectors.can_use_worklist(request.user)


class WorklistFilterInput(serializers.Serializer[Any]):
    view = serializers.ChoiceField(choices=list(selectors.VIEWS), required=False, default="due")
    department = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)


class DepartmentFilterInput(serializers.Serializer[Any]):
    department = serializers.IntegerField(required=False, min_value=1, max_value=2**31 - 1)


class CallAttemptInput(serializers.Serializer[Any]):
    outcome = serializers.ChoiceField(choices=CallOutcome.choices)
    answers = serializers.DictField(required=False, default=dict)
    notes = serializers.CharField(required=False, allow_blank=True, default="", max_length=actions.MAX_NOTES)
    open_case = serializers.BooleanField(required=False, default=False)


class TaskAssignInput(serializers.Serializer[Any]):
    nurse_id = serializers.IntegerField(min_value=1, max_value=2**31 - 1)


def _task(request: Request, task_id: int) -> CallbackTask:
    task = selectors.task_for(user=request.user, task_id=task_id)
    if task is None:
        raise NotFound("No such follow-up task.")
    return task


def _row(request: Request, task_id: int) -> dict[str, Any]:
    return shapes.task_row(_task(request, task_id), now=timezone.now())


class TaskListView(generics.GenericAPIView[CallbackTask]):
    permission_classes = [WorklistStaff]
    serializer_class = shapes.TaskRowShape

    @extend_schema(parameters=[WorklistFilterInput], responses=shapes.TaskRowShape(many=True))
    def get(self, request: Request) -> Response:
        """Call tasks of one worklist tab, nearest contact deadline first (Done: latest first)."""
        f = valid_input(WorklistFilterInput, request.query_params)
        now = timezone.now()
        qs = selectors.worklist(user=request.user, view=f["view"], department_id=f.get("department"), now=now)
        page = self.paginate_queryset(qs) or []
        # Rows name the patients and their departments: one audit entry for the page, naming what it showed.
        audit_list_read(
            request,
            action=AuditAction.LIST_FOLLOWUP_TASKS,
            object_type="callback_task",
            rows=[(t.pk, t.patient_id) for t in page],
            detail={"view": f["view"]},
        )
        return self.get_paginated_response([shapes.task_row(t, now=now) for t in page])


class TaskCountsView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(parameters=[DepartmentFilterInput], responses=shapes.WorklistCountsShape)
    def get(self, request: Request) -> Response:
        f = valid_input(DepartmentFilterInput, request.query_params)
        return Response(selectors.worklist_counts(user=request.user, department_id=f.get("department")))


class DepartmentListView(generics.ListAPIView[Team]):
    """The departments whose tasks the caller sees, for the worklist's filter."""

    permission_classes = [WorklistStaff]
    serializer_class = TeamSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[Team]:
        if access.sees_everything(self.request.user):
            return Team.objects.order_by("name")
        return Team.objects.filter(id__in=access.team_ids_of(self.request.user)).order_by("name")


class TaskDetailView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(responses=shapes.TaskDetailShape, operation_id="followup_task_detail")
    def get(self, request: Request, task_id: int) -> Response:
        """The task with its discharge, call script, attempts and patient summary. Audited as a patient read."""
        task = _task(request, task_id)
        data = shapes.task_detail(task, user=request.user, now=timezone.now())
        audit_read(
            request,
            action=AuditAction.VIEW_PATIENT,
            patient_id=task.patient_id,
            object_type="callback_task",
            object_id=task.pk,
            detail={"diagnoses": data["discharge"]["diagnoses_visible"]},
        )
        return Response(data)


class TaskClaimView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(request=None, responses=shapes.TaskRowShape)
    def post(self, request: Request, task_id: int) -> Response:
        task = _task(request, task_id)
        actions.claim_task(task=task, nurse=staff_of(request))
        return Response(_row(request, task_id))


class TaskReleaseView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(request=None, responses=shapes.TaskRowShape)
    def post(self, request: Request, task_id: int) -> Response:
        task = _task(request, task_id)
        actions.release_task(task=task, actor=staff_of(request))
        return Response(_row(request, task_id))


class TaskAssignView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(request=TaskAssignInput, responses=shapes.TaskRowShape)
    def post(self, request: Request, task_id: int) -> Response:
        """Supervisors hand a task to a nurse of its department."""
        task = _task(request, task_id)
        data = valid_input(TaskAssignInput, request.data)
        nurse = User.objects.filter(pk=data["nurse_id"], is_active=True).first()
        if nurse is None:
            raise serializers.ValidationError({"nurse_id": ["No such active staff member."]})
        actions.reassign_task(task=task, nurse=nurse, actor=staff_of(request))
        return Response(_row(request, task_id))


class TaskAttemptView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(request=CallAttemptInput, responses={201: shapes.CallAttemptResultShape})
    def post(self, request: Request, task_id: int) -> Response:
        """Record one call: outcome, script answers, notes; open_case asks patient relations to follow up."""
        task = _task(request, task_id)
        data = valid_input(CallAttemptInput, request.data)
        attempt = actions.record_attempt(
            task=task,
            nurse=staff_of(request),
            outcome=data["outcome"],
            answers=data["answers"],
            notes=data["notes"],
            open_case=data["open_case"],
        )
        return Response(
            {"attempt": shapes.attempt_data(attempt), "task": _row(request, task_id)}, status=status.HTTP_201_CREATED
        )


class TaskPhoneInput(serializers.Serializer[Any]):
    phone = serializers.CharField(max_length=80, help_text="The number to call, with its country code if abroad.")


class TaskPhoneView(APIView):
    permission_classes = [WorklistStaff]

    @extend_schema(request=TaskPhoneInput, responses=shapes.TaskRowShape, operation_id="followup_task_phone")
    def post(self, request: Request, task_id: int) -> Response:
        """Correct the patient's phone when the hospital system's number could not be read (audited)."""
        task = _task(request, task_id)
        data = valid_input(TaskPhoneInput, request.data)
        actions.correct_phone(
            task=task, phone=data["phone"], actor=staff_of(request), via=via_of(request), ip_address=client_ip(request)
        )
        return Response(shapes.task_row(selectors.task_after_change(task_id), now=timezone.now()))

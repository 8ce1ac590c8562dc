"""REST API for service-recovery cases under /api/v1/followup/cases/. Views parse, check, call an action.

Access (see callbacks/actions/recovery.py): a case outside what the user may see is a 404; a step the
user's role may not take is a 403; a step the case's state does not allow is a 400 with the reason.
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from drf_spectacular.utils import extend_schema
from rest_framework import generics, permissions, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from callbacks.actions import recovery
from callbacks.cases import selectors, shapes
from callbacks.models import Discharge, ServiceCase
from contactcenter import access
from contactcenter.actions.audit import record_audit
from contactcenter.api.common import client_ip, staff_of, valid_input, via_of
from contactcenter.models import AgentProfile, AuditAction, Role, Team

User = get_user_model()


class CaseStaff(permissions.BasePermission):
    message = "Your role does not give access to service-recovery cases."

    def has_permission(self, request: Request, view: Any) -> bool:
        return selectors.can_use_cases(request.user)


def _case(request: Request, case_id: int) -> ServiceCase:
    case = selectors.case_for(user=request.user, case_id=case_id)
    if case is None:
        raise NotFound("No such case.")
    return case


def _require(request: Request, step: str) -> None:
    if not selectors.may(request.user, step):
        raise PermissionDenied("Only patient relations (supervisors and admins) may do this.")


def _audit_case_read(request: Request, case: ServiceCase) -> None:
    record_audit(
        actor=request.user,
        action=AuditAction.VIEW_PATIENT,
        patient_id=case.patient_id,
        object_type="service_case",
        object_id=case.pk,
        via=via_of(request),
        ip_address=client_ip(request),
    )


def _detail_response(request: Request, case_id: int, code: int = status.HTTP_200_OK) -> Response:
    case = _case(request, case_id)
    _audit_case_read(request, case)
    return Response(selectors.case_detail(case, user=request.user), status=code)


def _team_or_error(team_id: int | None, field: str) -> Team | None:
    if team_id is None:
        return None
    team = Team.objects.filter(pk=team_id).first()
    if team is None:
        raise serializers.ValidationError({field: ["No such department."]})
    return team


class CaseListView(generics.GenericAPIView[ServiceCase]):
    permission_classes = [CaseStaff]
    serializer_class = shapes.CaseSummaryShape

    @extend_schema(parameters=[shapes.CaseFilterInput], responses=shapes.CaseSummaryShape(many=True))
    def get(self, request: Request) -> Response:
        f = valid_input(shapes.CaseFilterInput, request.query_params)
        assignee = f.get("assignee")
        qs = selectors.case_list(
            user=request.user,
            status=f.get("status", ""),
            category=f.get("category", ""),
            department_id=f.get("department"),
            escalated=f.get("escalated"),
            overdue=f.get("overdue"),
            assignee_id=request.user.pk if assignee == "me" else (int(assignee) if assignee else None),
            patient_id=f.get("patient"),
        )
        page = self.paginate_queryset(qs) or []
        # A list shows patient names and complaint summaries: audited like a patient search.
        record_audit(
            actor=request.user,
            action=AuditAction.LIST_PATIENTS,
            object_type="service_case",
            object_id="*",
            via=via_of(request),
            ip_address=client_ip(request),
            detail={"ids": [c.pk for c in page]},
        )
        return self.get_paginated_response([selectors.case_summary(c) for c in page])

    @extend_schema(request=shapes.CaseCreateInput, responses={201: shapes.CaseDetailShape})
    def post(self, request: Request) -> Response:
        user = staff_of(request)
        data = valid_input(shapes.CaseCreateInput, request.data)
        patient = access.patients_visible_to(user).filter(pk=data["patient_id"]).first()
        if patient is None:
            raise serializers.ValidationError({"patient_id": ["No such patient."]})
        department = None
        if data.get("department_id") is not None:
            department = selectors.departments_for_new_case(user).filter(pk=data["department_id"]).first()
            if department is None:
                raise serializers.ValidationError({"department_id": ["No such department among yours."]})
        elif not selectors.manages_cases(user):
            # A nurse's case must land in one of her departments, or she could not see it afterwards.
            raise serializers.ValidationError({"department_id": ["Choose the department this case belongs to."]})
        discharge = None
        if data.get("discharge_id") is not None:
            discharge = Discharge.objects.filter(pk=data["discharge_id"], patient=patient).first()
            if discharge is None:
                raise serializers.ValidationError({"discharge_id": ["No such discharge for this patient."]})
        case = recovery.open_manual_case(
            patient=patient,
            summary=data["summary"],
            category=data["category"],
            department=department,
            discharge=discharge,
            actor=user,
        )
        return _detail_response(request, case.pk, status.HTTP_201_CREATED)


class CaseCountsView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(responses=shapes.CaseCountsShape)
    def get(self, request: Request) -> Response:
        return Response(selectors.case_counts(user=request.user))


class CaseDetailView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(responses=shapes.CaseDetailShape, operation_id="service_case_detail")
    def get(self, request: Request, case_id: int) -> Response:
        return _detail_response(request, case_id)


class CaseVerifyView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseVerifyInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "verify")
        data = valid_input(shapes.CaseVerifyInput, request.data)
        recovery.verify_case(
            case=case,
            actor=staff_of(request),
            cause=data["cause"],
            category=data["category"],
            accountable_department=_team_or_error(data.get("accountable_department_id"), "accountable_department_id"),
            accountable_staff=data.get("accountable_staff", ""),
        )
        return _detail_response(request, case_id)


class CaseImproveView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseImproveInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "improve")
        data = valid_input(shapes.CaseImproveInput, request.data)
        recovery.record_improvement(case=case, actor=staff_of(request), action_taken=data["action_taken"])
        return _detail_response(request, case_id)


class CaseCloseView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseCloseInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "close")
        data = valid_input(shapes.CaseCloseInput, request.data)
        recovery.close_case(
            case=case, actor=staff_of(request), accountability=data["accountability"], note=data.get("note", "")
        )
        return _detail_response(request, case_id)


class CaseReopenView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseNoteInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "reopen")
        data = valid_input(shapes.CaseNoteInput, request.data)
        recovery.reopen_case(case=case, actor=staff_of(request), note=data["note"])
        return _detail_response(request, case_id)


class CaseContactView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseContactInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "contact")
        data = valid_input(shapes.CaseContactInput, request.data)
        recovery.record_first_contact(case=case, actor=staff_of(request), note=data.get("note", ""))
        return _detail_response(request, case_id)


class CaseAssignView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseAssignInput, responses=shapes.CaseDetailShape)
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "assign")
        data = valid_input(shapes.CaseAssignInput, request.data)
        assignee = None
        if data["assignee_id"] is not None:
            assignee = assignable_staff().filter(pk=data["assignee_id"]).first()
            if assignee is None:
                raise serializers.ValidationError(
                    {"assignee_id": ["Assign to an active supervisor or admin (patient relations)."]}
                )
        recovery.assign_case(case=case, assignee=assignee, actor=staff_of(request))
        return _detail_response(request, case_id)


class CaseNoteView(APIView):
    permission_classes = [CaseStaff]

    @extend_schema(request=shapes.CaseNoteInput, responses={201: shapes.CaseDetailShape})
    def post(self, request: Request, case_id: int) -> Response:
        case = _case(request, case_id)
        _require(request, "note")
        data = valid_input(shapes.CaseNoteInput, request.data)
        recovery.add_case_note(case=case, actor=staff_of(request), note=data["note"])
        return _detail_response(request, case_id, status.HTTP_201_CREATED)


def assignable_staff() -> Any:
    """Patient relations: the people a case can be handed to."""
    ids = AgentProfile.objects.filter(role__in=[Role.ADMIN, Role.SUPERVISOR]).values_list("user_id", flat=True)
    return User.objects.filter(is_active=True, pk__in=ids).select_related("agent_profile")

"""REST API for hospital IT, tests and the inbox UI. Views parse, ask access/selectors, call actions."""

from __future__ import annotations

from django.contrib.auth import get_user_model
from django.db.models import QuerySet
from drf_spectacular.utils import extend_schema, inline_serializer
from rest_framework import generics, serializers, status
from rest_framework.exceptions import NotFound, PermissionDenied
from rest_framework.request import Request
from rest_framework.response import Response
from rest_framework.views import APIView

from contactcenter import access, selectors
from contactcenter.actions import conversations as conversation_actions
from contactcenter.actions.audit import audit_list_read, audit_read
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import (
    add_identity,
    create_patient,
    merge_patients,
    set_patient_tags,
    update_patient,
)
from contactcenter.api import inputs
from contactcenter.api.common import (
    AdminsOnly,
    InboxStaff,
    SupervisorsOnly,
    staff_of,
    text_param,
    valid_input,
    via_of,
)
from contactcenter.api.pagination import whole_number
from contactcenter.api.shapes import (
    AssignableStaffShape,
    ConversationSerializer,
    IdentitySerializer,
    InboxRefSerializer,
    LabelSerializer,
    MessageSerializer,
    NoteSerializer,
    Patient360Shape,
    PatientRefSerializer,
    TeamSerializer,
    staff_name,
)
from contactcenter.models import (
    AgentProfile,
    AuditAction,
    AuditLogEntry,
    CannedResponse,
    Conversation,
    Label,
    Message,
    Note,
    Patient,
)

User = get_user_model()


# --- Me -------------------------------------------------------------------------------------------


class MeView(APIView):
    @extend_schema(responses=inline_serializer("Me", {"id": serializers.IntegerField()}))
    def get(self, request: Request) -> Response:
        profile = access.profile_of(request.user)
        if profile is None:
            raise PermissionDenied("This account has no staff profile.")
        return Response(
            {
                "id": request.user.pk,
                "username": request.user.get_username(),
                "name": staff_name(request.user),
                "role": profile.role,
                "availability": profile.availability,
                "capacity": profile.capacity,
                "teams": TeamSerializer(profile.teams.all(), many=True).data,
                "inboxes": InboxRefSerializer(access.inboxes_visible_to(request.user), many=True).data,
                # Register-then-listen: the socket resyncs from here, so nothing between is missed.
                "last_event_id": selectors.last_event_id(),
            }
        )


# --- Patients -------------------------------------------------------------------------------------


class PatientListView(generics.GenericAPIView[Patient]):
    permission_classes = [InboxStaff]
    serializer_class = PatientRefSerializer

    def get_queryset(self) -> QuerySet[Patient]:
        return selectors.patient_search(user=self.request.user, query=text_param(self.request, "q"))

    def get(self, request: Request) -> Response:
        page = self.paginate_queryset(self.get_queryset())
        audit_list_read(
            request,
            action=AuditAction.LIST_PATIENTS,
            object_type="patient",
            rows=[(p.pk, p.pk) for p in page or []],
            detail={"query": text_param(request, "q")[:100]},
        )
        return self.get_paginated_response(PatientRefSerializer(page, many=True).data)

    @extend_schema(request=inputs.PatientCreateInput, responses={201: Patient360Shape})
    def post(self, request: Request) -> Response:
        if not access.sees_everything(request.user):
            raise PermissionDenied("Only supervisors, admins and integrations create patients directly.")
        data = valid_input(inputs.PatientCreateInput, request.data)
        identities = [(i["kind"], i["value"]) for i in data.pop("identities", [])]
        tags = data.pop("tags", None)
        patient = create_patient(fields=data, identities=identities, tags=tags)
        return Response(selectors.patient_360(user=request.user, patient=patient), status=status.HTTP_201_CREATED)


class PatientDetailView(APIView):
    permission_classes = [InboxStaff]

    def _patient(self, request: Request, patient_id: int) -> Patient:
        patient = selectors.patient_for(user=request.user, patient_id=patient_id)
        if patient is None:
            raise NotFound("No such patient.")
        return patient

    @extend_schema(responses=Patient360Shape, operation_id="patient_profile")
    def get(self, request: Request, patient_id: int) -> Response:
        patient = self._patient(request, patient_id)
        audit_read(
            request, action=AuditAction.VIEW_PATIENT, patient_id=patient.pk, object_type="patient", object_id=patient.pk
        )
        return Response(selectors.patient_360(user=request.user, patient=patient))

    @extend_schema(request=inputs.PatientUpdateInput, responses=Patient360Shape)
    def patch(self, request: Request, patient_id: int) -> Response:
        patient = self._patient(request, patient_id)
        data = valid_input(inputs.PatientUpdateInput, request.data)
        tags = data.pop("tags", None)
        update_patient(patient=patient, fields=data, actor=staff_of(request), via=via_of(request))
        if tags is not None:
            set_patient_tags(patient=patient, tags=tags)
        return Response(selectors.patient_360(user=request.user, patient=patient))


class PatientIdentityView(APIView):
    permission_classes = [InboxStaff]

    @extend_schema(request=inputs.IdentityInput, responses={201: IdentitySerializer})
    def post(self, request: Request, patient_id: int) -> Response:
        patient = selectors.patient_for(user=request.user, patient_id=patient_id)
        if patient is None:
            raise NotFound("No such patient.")
        data = valid_input(inputs.IdentityInput, request.data)
        identity = add_identity(patient=patient, kind=data["kind"], value=data["value"])
        return Response(IdentitySerializer(identity).data, status=status.HTTP_201_CREATED)


class PatientMergeView(APIView):
    permission_classes = [SupervisorsOnly]

    @extend_schema(request=inputs.MergeInput, responses=Patient360Shape)
    def post(self, request: Request, patient_id: int) -> Response:
        data = valid_input(inputs.MergeInput, request.data)
        keep = selectors.patient_for(user=request.user, patient_id=patient_id)
        drop = selectors.patient_for(user=request.user, patient_id=data["drop_id"])
        if keep is None or drop is None:
            raise NotFound("No such patient.")
        merged = merge_patients(keep=keep, drop=drop, actor=staff_of(request), via=via_of(request))
        return Response(selectors.patient_360(user=request.user, patient=merged))


# --- Conversations --------------------------------------------------------------------------------


class ConversationListView(generics.GenericAPIView[Conversation]):
    permission_classes = [InboxStaff]
    serializer_class = ConversationSerializer

    @extend_schema(parameters=[inputs.ConversationFilterInput])
    def get(self, request: Request) -> Response:
        f = valid_input(inputs.ConversationFilterInput, request.query_params)
        qs = selectors.conversation_list_for(
            user=request.user,
            view=f["view"],
            status=f["status"],
            inbox_id=f.get("inbox"),
            label=f.get("label"),
            patient_id=f.get("patient"),
        )
        page = self.paginate_queryset(qs) or []
        # The rows show patients' names and last messages: one entry for the page, naming what it showed.
        audit_list_read(
            request,
            action=AuditAction.LIST_CONVERSATIONS,
            object_type="conversation",
            rows=[(c.pk, c.patient_id) for c in page],
            detail={"view": f["view"], "status": f["status"]},
        )
        return self.get_paginated_response(ConversationSerializer(page, many=True).data)


def _conversation(request: Request, conversation_id: int) -> Conversation:
    conversation = selectors.conversation_for(user=request.user, conversation_id=conversation_id)
    if conversation is None:
        raise NotFound("No such conversation.")
    return conversation


def _audit_thread_read(request: Request, conversation: Conversation, part: str | None = None) -> None:
    """The conversation, or a part of it: messages and notes are the conversation itself, so reading them
    alone is a read to audit too."""
    audit_read(
        request,
        action=AuditAction.VIEW_CONVERSATION,
        patient_id=conversation.patient_id,
        object_type="conversation",
        object_id=conversation.pk,
        detail={"part": part} if part else None,
    )


class ConversationDetailView(APIView):
    permission_classes = [InboxStaff]

    @extend_schema(responses=ConversationSerializer, operation_id="conversation_detail")
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(request, conversation_id)
        _audit_thread_read(request, conversation)
        return Response(ConversationSerializer(conversation).data)


class ConversationActionView(APIView):
    """POST /conversations/{id}/{action}: assign, resolve, reopen, pending, snooze, labels, priority, read."""

    permission_classes = [InboxStaff]

    @extend_schema(request=None, responses=ConversationSerializer)
    def post(self, request: Request, conversation_id: int, action: str) -> Response:
        conversation = _conversation(request, conversation_id)
        user = staff_of(request)
        if action == "assign":
            data = valid_input(inputs.AssignInput, request.data)
            assignee = None
            if data["assignee_id"] is not None:
                assignee = User.objects.filter(pk=data["assignee_id"], is_active=True).first()
                if assignee is None:
                    raise serializers.ValidationError({"assignee_id": ["No such active staff member."]})
            conversation = conversation_actions.assign_conversation(
                conversation=conversation, assignee=assignee, actor=user
            )
        elif action == "resolve":
            conversation = conversation_actions.resolve_conversation(conversation=conversation, actor=user)
        elif action == "reopen":
            conversation = conversation_actions.reopen_conversation(conversation=conversation, actor=user)
        elif action == "pending":
            conversation = conversation_actions.set_pending(conversation=conversation, actor=user)
        elif action == "snooze":
            data = valid_input(inputs.SnoozeInput, request.data)
            conversation = conversation_actions.snooze_conversation(
                conversation=conversation, until=data["until"], actor=user
            )
        elif action == "labels":
            data = valid_input(inputs.LabelsInput, request.data)
            conversation = conversation_actions.set_labels(
                conversation=conversation, label_names=data["labels"], actor=user
            )
        elif action == "priority":
            data = valid_input(inputs.PriorityInput, request.data)
            conversation = conversation_actions.set_priority(
                conversation=conversation, priority=data["priority"], actor=user
            )
        elif action == "read":
            conversation = conversation_actions.mark_read(conversation=conversation, actor=user)
        else:
            raise NotFound("Unknown conversation action.")
        fresh = selectors.conversation_for(user=user, conversation_id=conversation.pk)
        return Response(ConversationSerializer(fresh or conversation).data)


class MessageListView(generics.GenericAPIView[Message]):
    permission_classes = [InboxStaff]
    serializer_class = MessageSerializer
    pagination_class = None

    @extend_schema(parameters=[inputs.MessagePageInput])
    def get(self, request: Request, conversation_id: int) -> Response:
        """The latest `limit` messages, oldest first; pass the oldest id shown as `before` to page back."""
        conversation = _conversation(request, conversation_id)
        page = valid_input(inputs.MessagePageInput, request.query_params)
        _audit_thread_read(request, conversation, "messages")
        messages = selectors.message_page_for(
            conversation=conversation, limit=page["limit"], before_id=page.get("before")
        )
        return Response(MessageSerializer(messages, many=True).data)

    @extend_schema(request=inputs.MessageInput, responses={201: MessageSerializer})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(request, conversation_id)
        data = valid_input(inputs.MessageInput, request.data)
        message = send_outbound(
            conversation=conversation, body=data["body"], author=staff_of(request), client_key=data.get("client_key")
        )
        message.refresh_from_db()
        return Response(MessageSerializer(message).data, status=status.HTTP_201_CREATED)


class NoteListView(generics.GenericAPIView[Note]):
    permission_classes = [InboxStaff]
    serializer_class = NoteSerializer
    pagination_class = None

    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(request, conversation_id)
        _audit_thread_read(request, conversation, "notes")
        notes = conversation.notes.select_related("author__agent_profile")
        return Response(NoteSerializer(notes, many=True).data)

    @extend_schema(request=inputs.NoteInput, responses={201: NoteSerializer})
    def post(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(request, conversation_id)
        data = valid_input(inputs.NoteInput, request.data)
        note = conversation_actions.add_note(conversation=conversation, author=staff_of(request), body=data["body"])
        return Response(NoteSerializer(note).data, status=status.HTTP_201_CREATED)


# --- Reference data -------------------------------------------------------------------------------


class CannedResponseSerializer(serializers.ModelSerializer[CannedResponse]):
    class Meta:
        model = CannedResponse
        fields = ["id", "short_code", "content", "team_id"]


class CannedResponseListView(generics.ListAPIView[CannedResponse]):
    permission_classes = [InboxStaff]
    serializer_class = CannedResponseSerializer
    pagination_class = None

    def get_queryset(self) -> QuerySet[CannedResponse]:
        return selectors.canned_responses_for(user=self.request.user, query=text_param(self.request, "q"))


class LabelListView(generics.ListAPIView[Label]):
    permission_classes = [InboxStaff]
    serializer_class = LabelSerializer
    pagination_class = None
    queryset = Label.objects.order_by("name")


class AssignableStaffView(APIView):
    """Who a conversation can be handed to: staff who can see it."""

    permission_classes = [InboxStaff]

    @extend_schema(responses=AssignableStaffShape(many=True))
    def get(self, request: Request, conversation_id: int) -> Response:
        conversation = _conversation(request, conversation_id)
        profiles = AgentProfile.objects.select_related("user").filter(
            role__in=conversation_actions.ASSIGNABLE_ROLES, user__is_active=True
        )
        rows = [
            {"id": p.user_id, "name": staff_name(p.user), "availability": p.availability, "role": p.role}
            for p in profiles
            if access.can_view_conversation(p.user, conversation)
        ]
        return Response(rows)


class AuditEntrySerializer(serializers.ModelSerializer[AuditLogEntry]):
    actor = serializers.SerializerMethodField()

    class Meta:
        model = AuditLogEntry
        fields = [
            "id",
            "at",
            "actor",
            "action",
            "patient_id",
            "object_type",
            "object_id",
            "via",
            "ip_address",
            "detail",
        ]

    def get_actor(self, entry: AuditLogEntry) -> str:
        return entry.actor.get_username() if entry.actor else ""


class AuditLogView(generics.ListAPIView[AuditLogEntry]):
    permission_classes = [AdminsOnly]
    serializer_class = AuditEntrySerializer

    def get_queryset(self) -> QuerySet[AuditLogEntry]:
        qs = AuditLogEntry.objects.select_related("actor")
        patient = self.request.query_params.get("patient")
        if patient:
            qs = qs.filter(patient_id=whole_number(patient, "patient", minimum=1))
        actor = text_param(self.request, "actor")
        if actor:
            qs = qs.filter(actor__username=actor)
        return qs

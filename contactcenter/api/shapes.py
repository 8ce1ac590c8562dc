"""Read shapes shared by the REST API and real-time events, so a row looks the same both ways."""

from __future__ import annotations

from typing import Any

from django.contrib.auth import get_user_model
from rest_framework import serializers

from contactcenter.models import Conversation, Inbox, Label, Message, Note, Patient, PatientIdentity, Team, Visit

User = get_user_model()


def staff_name(user: Any) -> str:
    if user is None:
        return ""
    profile = getattr(user, "agent_profile", None)
    return (profile.display_name if profile else "") or user.get_username()


class StaffRefSerializer(serializers.Serializer[Any]):
    id = serializers.IntegerField(source="pk")
    name = serializers.SerializerMethodField()

    def get_name(self, user: Any) -> str:
        return staff_name(user)


class TeamSerializer(serializers.ModelSerializer[Team]):
    class Meta:
        model = Team
        fields = ["id", "code", "name", "name_zh"]


class InboxRefSerializer(serializers.ModelSerializer[Inbox]):
    class Meta:
        model = Inbox
        fields = ["id", "name", "channel_type", "team_id"]


class LabelSerializer(serializers.ModelSerializer[Label]):
    class Meta:
        model = Label
        fields = ["id", "name", "color"]


class PatientRefSerializer(serializers.ModelSerializer[Patient]):
    class Meta:
        model = Patient
        fields = ["id", "name", "vip_tier", "language"]


class ConversationSerializer(serializers.ModelSerializer[Conversation]):
    patient = PatientRefSerializer(read_only=True)
    inbox = InboxRefSerializer(read_only=True)
    assignee = StaffRefSerializer(read_only=True, allow_null=True)
    labels = LabelSerializer(many=True, read_only=True)

    class Meta:
        model = Conversation
        fields = [
            "id",
            "patient",
            "inbox",
            "team_id",
            "status",
            "assignee",
            "labels",
            "priority",
            "unread_count",
            "subject",
            "snoozed_until",
            "last_message_at",
            "last_message_preview",
            "created_at",
            "resolved_at",
        ]
        read_only_fields = fields


class MessageSerializer(serializers.ModelSerializer[Message]):
    author = StaffRefSerializer(read_only=True, allow_null=True)

    class Meta:
        model = Message
        fields = [
            "id",
            "conversation_id",
            "direction",
            "sender_kind",
            "author",
            "body",
            "attachments",
            "status",
            "flags",
            "provider_message_id",
            "error_code",
            "error_message",
            "created_at",
            "sent_at",
            "delivered_at",
            "read_at",
        ]
        read_only_fields = fields


class NoteSerializer(serializers.ModelSerializer[Note]):
    author = StaffRefSerializer(read_only=True)

    class Meta:
        model = Note
        fields = ["id", "conversation_id", "author", "body", "created_at"]
        read_only_fields = fields


class IdentitySerializer(serializers.ModelSerializer[PatientIdentity]):
    class Meta:
        model = PatientIdentity
        fields = ["id", "kind", "value", "created_at"]
        read_only_fields = ["id", "created_at"]


class VisitSerializer(serializers.ModelSerializer[Visit]):
    department = TeamSerializer(read_only=True)

    class Meta:
        model = Visit
        fields = [
            "id",
            "visit_number",
            "kind",
            "department",
            "doctor",
            "nurse",
            "ward",
            "admitted_at",
            "discharged_at",
            "package",
            "amount",
        ]
        read_only_fields = fields


def conversation_data(conversation: Conversation) -> dict[str, Any]:
    return dict(ConversationSerializer(conversation).data)


def message_data(message: Message) -> dict[str, Any]:
    return dict(MessageSerializer(message).data)


def conversations_data(conversations: list[Conversation]) -> list[dict[str, Any]]:
    """conversation_data for a batch: DRF builds a ModelSerializer's fields per serializer instance (about
    a millisecond), so a batch shares one instead of paying that per row."""
    return [dict(row) for row in ConversationSerializer(conversations, many=True).data]


def messages_data(messages: list[Message]) -> list[dict[str, Any]]:
    return [dict(row) for row in MessageSerializer(messages, many=True).data]


def note_data(note: Note) -> dict[str, Any]:
    return dict(NoteSerializer(note).data)


# --- Documentation-only shapes: what selectors.patient_360 returns, for the OpenAPI schema ---------------


class ConsentChangeShape(serializers.Serializer[Any]):
    purpose = serializers.CharField()
    status = serializers.CharField()
    source = serializers.CharField()  # type: ignore[assignment]  # the metaclass takes it as a field
    channel = serializers.CharField()
    keyword = serializers.CharField()
    by = serializers.CharField(help_text="Username of the staff member who recorded it, if any.")
    at = serializers.DateTimeField()


class ConsentShape(serializers.Serializer[Any]):
    marketing = serializers.CharField()
    service = serializers.CharField()
    history = ConsentChangeShape(many=True)


class Patient360Shape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    given_name = serializers.CharField()
    gender = serializers.CharField()
    birth_date = serializers.DateField(allow_null=True)
    age = serializers.IntegerField(allow_null=True)
    age_band = serializers.CharField()
    region = serializers.CharField()
    city = serializers.CharField()
    language = serializers.CharField()
    time_zone = serializers.CharField()
    vip_tier = serializers.CharField()
    tags = serializers.ListField(child=serializers.CharField())
    custom_attributes = serializers.DictField()
    identities = IdentitySerializer(many=True)
    visits = VisitSerializer(many=True)
    conversations = ConversationSerializer(many=True, help_text="The latest 50 the caller may see.")
    consent = ConsentShape()


class AssignableStaffShape(serializers.Serializer[Any]):
    id = serializers.IntegerField()
    name = serializers.CharField()
    availability = serializers.CharField()
    role = serializers.CharField()

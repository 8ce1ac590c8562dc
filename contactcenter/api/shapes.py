"""Read shapes shared by the REST API and real-time events, so a row looks the same both ways."""

from __future__ import annotations

import functools
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


# One serializer instance per shape and process, reused for every event payload: DRF builds a serializer's fields
# (deep copies of the declared ones, ModelSerializer's field mapping) per instance, which was a quarter of an
# inbound message's processing. to_representation() only reads them.
@functools.cache
def _serializer(cls: type[serializers.Serializer[Any]]) -> serializers.Serializer[Any]:
    serializer = cls()
    serializer.fields  # noqa: B018  (built once, here, rather than racing on first use in two threads)
    return serializer


def conversation_data(conversation: Conversation) -> dict[str, Any]:
    return dict(_serializer(ConversationSerializer).to_representation(conversation))


def message_data(message: Message) -> dict[str, Any]:
    return dict(_serializer(MessageSerializer).to_representation(message))


def conversations_data(conversations: list[Conversation]) -> list[dict[str, Any]]:
    """conversation_data for a batch (a campaign chunk's hundreds of threads), from bare Conversation rows.

    The same dicts as ConversationSerializer, field by field through its own fields, but the related rows
    are read once for the batch: patients in one query, labels in one, assignees and inboxes once each.
    Serializing hundreds of rows with select_related and prefetched labels built four model instances
    and a nested serializer run per row: a fifth of a campaign worker's time.
    """
    if not conversations:
        return []
    fields = ConversationSerializer().fields
    patient_fields = PatientRefSerializer().fields
    ids = [c.pk for c in conversations]
    patients = {
        row["id"]: {name: _shown(field, row[name]) for name, field in patient_fields.items()}
        for row in Patient.objects.filter(pk__in={c.patient_id for c in conversations}).values(*patient_fields)
    }
    inboxes = {
        inbox.pk: dict(InboxRefSerializer(inbox).data)
        for inbox in Inbox.objects.filter(pk__in={c.inbox_id for c in conversations})
    }
    assignee_ids = {c.assignee_id for c in conversations if c.assignee_id is not None}
    assignees = {
        user.pk: dict(StaffRefSerializer(user).data)
        for user in User.objects.filter(pk__in=assignee_ids).select_related("agent_profile")
    }
    labels: dict[int, list[dict[str, Any]]] = {}
    links = Conversation.labels.through.objects.filter(conversation_id__in=ids).select_related("label")
    for link in links.order_by("label_id"):
        labels.setdefault(link.conversation_id, []).append(dict(LabelSerializer(link.label).data))
    related: dict[str, Any] = {"patient": patients, "inbox": inboxes, "assignee": assignees}
    shapes = []
    for conversation in conversations:
        shape: dict[str, Any] = {}
        for name, field in fields.items():
            if name in related:
                key = getattr(conversation, f"{name}_id")
                shape[name] = None if key is None else related[name][key]
            elif name == "labels":
                shape[name] = labels.get(conversation.pk, [])
            else:
                shape[name] = _shown(field, getattr(conversation, field.source or name))
        shapes.append(shape)
    return shapes


def _shown(field: serializers.Field[Any, Any, Any, Any], value: Any) -> Any:
    # As Serializer.to_representation does: a None attribute is shown as None without asking the field.
    return None if value is None else field.to_representation(value)


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

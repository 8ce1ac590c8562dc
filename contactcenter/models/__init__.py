from contactcenter.models.audit import AuditAction, AuditLogEntry
from contactcenter.models.consent import Consent, ConsentChange, ConsentPurpose, ConsentSource, ConsentStatus
from contactcenter.models.conversations import (
    CannedResponse,
    ChannelType,
    Conversation,
    ConversationStatus,
    Inbox,
    Label,
    Message,
    MessageDirection,
    MessageStatus,
    Note,
    Priority,
    SenderKind,
)
from contactcenter.models.events import Event
from contactcenter.models.inbound import InboundWebhook
from contactcenter.models.operations import DueWorkStep
from contactcenter.models.patients import (
    Gender,
    IdentityKind,
    Patient,
    PatientIdentity,
    Tag,
    VipTier,
    Visit,
    VisitKind,
)
from contactcenter.models.staff import AgentProfile, Availability, Role, Team

__all__ = [
    "AgentProfile",
    "AuditAction",
    "AuditLogEntry",
    "Availability",
    "CannedResponse",
    "ChannelType",
    "Consent",
    "ConsentChange",
    "ConsentPurpose",
    "ConsentSource",
    "ConsentStatus",
    "Conversation",
    "ConversationStatus",
    "DueWorkStep",
    "Event",
    "Gender",
    "IdentityKind",
    "InboundWebhook",
    "Inbox",
    "Label",
    "Message",
    "MessageDirection",
    "MessageStatus",
    "Note",
    "Patient",
    "PatientIdentity",
    "Priority",
    "Role",
    "SenderKind",
    "Tag",
    "Team",
    "VipTier",
    "Visit",
    "VisitKind",
]

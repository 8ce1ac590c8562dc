from campaigns.models.campaigns import (
    Campaign,
    CampaignRecipient,
    CampaignStatus,
    MissingValueRule,
    RecipientState,
)
from campaigns.models.lifecycle import LifecycleRules, LifecycleStage, PatientLifecycle, ValueType
from campaigns.models.segments import Segment, SegmentKind, StaticListMember

__all__ = [
    "Campaign",
    "CampaignRecipient",
    "CampaignStatus",
    "LifecycleRules",
    "LifecycleStage",
    "MissingValueRule",
    "PatientLifecycle",
    "RecipientState",
    "Segment",
    "SegmentKind",
    "StaticListMember",
    "ValueType",
]

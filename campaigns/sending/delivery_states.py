"""A recipient follows its message: delivered or failed (with the provider's error code) when the message's
status moves there. Registered as a contactcenter status hook (campaigns/apps.py); runs inside the
transaction that moves the message, so the two never disagree."""

from __future__ import annotations

from django.db import transaction
from django.utils import timezone

from campaigns.models import CampaignRecipient, RecipientState
from campaigns.sending import progress
from contactcenter.models import Message, MessageStatus

_RECIPIENT_STATE: dict[str, str] = {
    MessageStatus.DELIVERED: RecipientState.DELIVERED,
    # Read implies delivered; a message can jump there when callbacks arrive out of order.
    MessageStatus.READ: RecipientState.DELIVERED,
    MessageStatus.FAILED: RecipientState.FAILED,
    MessageStatus.UNDELIVERED: RecipientState.FAILED,
}
FOLLOWED_STATUSES = frozenset(_RECIPIENT_STATE)


def follow_message_status(*, message: Message, old: str, new: str) -> None:
    state = _RECIPIENT_STATE.get(new)
    if state is None:
        return
    # Only from SENT: message statuses never go back, and delivered/failed are final for a recipient.
    recipient = (
        CampaignRecipient.objects.select_for_update(of=("self",))
        .filter(message_id=message.pk, state=RecipientState.SENT)
        .first()
    )
    if recipient is None:
        return
    recipient.state = state
    fields = ["state"]
    if state == RecipientState.DELIVERED:
        recipient.delivered_at = message.delivered_at or timezone.now()
        fields.append("delivered_at")
    else:
        recipient.error_code = (message.error_code or "unknown")[:20]
        fields.append("error_code")
    recipient.save(update_fields=fields)
    campaign_id = recipient.campaign_id
    transaction.on_commit(lambda: progress.changed(campaign_id))

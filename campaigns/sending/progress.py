"""A campaign's progress (recipients per state) and its publication to the campaign's websocket group.

Senders call `changed` after each commit; it publishes at most every MIN_INTERVAL per process, so a
campaign sending 100 messages a second costs its watchers two frames a second, not a hundred. A run's
end (completed, paused, cancelled) publishes regardless. The counts are read from the database: the
websocket only carries them, and the consumer reads them afresh on connect and now and then.
"""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

from channels.layers import get_channel_layer
from django.db.models import Count

from campaigns.models import Campaign, CampaignRecipient, RecipientState
from contactcenter import publishing

logger = logging.getLogger(__name__)

MIN_INTERVAL = 0.5

_lock = threading.Lock()
_last_published: dict[int, float] = {}


def group_name(campaign_id: int) -> str:
    return f"campaign_{campaign_id}"


def snapshot(campaign_id: int) -> dict[str, Any] | None:
    """{"type": "progress", "campaign_id", "status", "total", "counts": {state: n for every state}}."""
    status = Campaign.objects.filter(pk=campaign_id).values_list("status", flat=True).first()
    if status is None:
        return None
    counts = dict.fromkeys(RecipientState.values, 0)
    rows = CampaignRecipient.objects.filter(campaign_id=campaign_id).values("state").annotate(n=Count("id"))
    for row in rows.order_by():
        counts[row["state"]] = row["n"]
    return {
        "type": "progress",
        "campaign_id": campaign_id,
        "status": status,
        "total": sum(counts.values()),
        "counts": counts,
    }


def changed(campaign_id: int, *, force: bool = False) -> bool:
    """Publish the campaign's progress unless this process did so within MIN_INTERVAL. Call after commit."""
    now = time.monotonic()
    with _lock:
        if not force and now - _last_published.get(campaign_id, float("-inf")) < MIN_INTERVAL:
            return False
        _last_published[campaign_id] = now
    if get_channel_layer() is None:
        return False
    data = snapshot(campaign_id)
    if data is None:
        return False
    try:
        [failed] = publishing.group_send_all([group_name(campaign_id)], {"type": "campaign.progress", "progress": data})
    except Exception as exc:
        failed = exc
    if failed is not None:
        # Progress frames are a hint; the socket re-reads the counts on its own, so a lost one is fine.
        logger.error("progress of campaign %s not published: %r", campaign_id, failed)
        return False
    return True

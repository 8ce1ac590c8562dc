from __future__ import annotations

import datetime as dt

from django.conf import settings
from django.utils import timezone

from contactcenter.models import Event


def prune_events(*, now: dt.datetime | None = None) -> int:
    """Drop real-time events older than the retention window. A client away that long reloads its
    state over HTTP instead of resyncing, so nothing it needs is lost."""
    cutoff = (now or timezone.now()) - dt.timedelta(days=settings.EVENT_RETENTION_DAYS)
    # Bounded batches keep each delete short even after a long outage of the dispatcher.
    ids = list(Event.objects.filter(created_at__lt=cutoff).order_by("id").values_list("id", flat=True)[:5000])
    deleted, _ = Event.objects.filter(id__in=ids).delete()
    return deleted

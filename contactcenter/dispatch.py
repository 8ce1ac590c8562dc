"""The one periodic job's registry: each app hangs its due-row pickers here from AppConfig.ready()."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import TypeVar

from django.db import connection, models
from django.db.models import QuerySet

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=models.Model)

# name → job; a job claims what is due (SELECT … FOR UPDATE SKIP LOCKED), acts, and returns a count.
_jobs: dict[str, Callable[[], int]] = {}


def register_due_work(name: str, job: Callable[[], int]) -> None:
    _jobs[name] = job


def run_due_work() -> dict[str, int]:
    done: dict[str, int] = {}
    for name, job in _jobs.items():
        try:
            done[name] = job()
        except Exception:
            # One app's failing picker must not starve the others; the rows stay due for the next run.
            logger.exception("due-work job %s failed", name)
            done[name] = -1
    return done


def skip_locked(queryset: QuerySet[_M]) -> QuerySet[_M]:
    """Due rows for this dispatcher alone: locked, passing over rows another one holds.

    SQLite (the embedded mode) has neither row locks nor SKIP LOCKED; it serialises writers instead, so
    the plain select inside the caller's transaction is already exclusive there.
    """
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset

"""PLACEHOLDER owned by the plans/dispatcher helper."""

from __future__ import annotations

import datetime as dt


def dispatch_due_tasks(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    return 0

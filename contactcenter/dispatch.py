"""The one periodic job's registry: each app hangs its due-row pickers here from AppConfig.ready()."""

from __future__ import annotations

import logging
from collections.abc import Callable

logger = logging.getLogger(__name__)

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

"""The one periodic job's registry: each app hangs its due-row pickers here from AppConfig.ready().

A run calls every step in turn, each isolated: a step that raises is logged, counted and recorded, its
connection is repaired if the error broke it, and the next step runs anyway. One failing picker (a provider
lookup that cannot parse an answer, a database blip) must never stop campaigns, follow-ups and deferred
sends, which all hang off this one job. How each step last went is kept in DueWorkStep rows, which
/readyz and the admins' status page read.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import TypeVar

from django.db import DatabaseError, connection, models, transaction
from django.db.models import F, QuerySet
from django.utils import timezone

logger = logging.getLogger(__name__)

_M = TypeVar("_M", bound=models.Model)

# name → job; a job claims what is due (SELECT … FOR UPDATE SKIP LOCKED), acts, and returns a count.
_jobs: dict[str, Callable[[], int]] = {}


def register_due_work(name: str, job: Callable[[], int]) -> None:
    _jobs[name] = job


def registered_steps() -> list[str]:
    return list(_jobs)


@dataclass(frozen=True)
class StepOutcome:
    name: str
    started_at: object
    result: int | None
    error: str = ""
    seconds: float = 0.0


def run_due_work() -> dict[str, int]:
    """Run every registered step once; returns each step's count (-1 for a step that failed)."""
    started = timezone.now()
    outcomes = [_run_step(name, job) for name, job in list(_jobs.items())]
    _record(started, outcomes)
    return {o.name: (o.result if o.result is not None else -1) for o in outcomes}


def _run_step(name: str, job: Callable[[], int]) -> StepOutcome:
    started_at = timezone.now()
    clock = time.monotonic()
    try:
        with _own_transaction_scope():
            result = int(job())
    except Exception as exc:
        # Ids only in the recorded text: the exception's class and its first line, cut short, since a
        # provider's or the database's message could quote a value.
        error = f"{type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"[:300]
        logger.exception("due-work step %s failed", name)
        _repair_connection()
        return StepOutcome(name, started_at, None, error=error, seconds=time.monotonic() - clock)
    return StepOutcome(name, started_at, result, seconds=time.monotonic() - clock)


@contextlib.contextmanager
def _own_transaction_scope() -> Iterator[None]:
    """Steps run in autocommit and commit their own batches. Called inside a transaction (a test, a
    management command's atomic block), a savepoint keeps one step's failure from aborting the rest."""
    if connection.in_atomic_block:
        with transaction.atomic():
            yield
    else:
        yield


def _repair_connection() -> None:
    """After a step's error the connection may be dead (a database restart) or, outside a transaction,
    left in an aborted one: drop it so the next step starts on a fresh one."""
    if connection.in_atomic_block:
        return
    try:
        connection.close_if_unusable_or_obsolete()
        if connection.connection is not None and connection.needs_rollback:
            connection.rollback()
    except DatabaseError:
        connection.close()


def _record(started: object, outcomes: list[StepOutcome]) -> None:
    """Upsert each step's row, and the run's own. Recording must never fail the run itself."""
    from contactcenter.models import DueWorkStep

    now = timezone.now()
    try:
        with _own_transaction_scope(), transaction.atomic():
            every = [*outcomes, StepOutcome(DueWorkStep.RUN, started, len(outcomes))]
            DueWorkStep.objects.bulk_create(
                [DueWorkStep(name=o.name) for o in every], ignore_conflicts=True, batch_size=100
            )
            for outcome in every:
                update: dict[str, object] = {
                    "last_started_at": outcome.started_at,
                    "last_finished_at": now,
                    "last_result": outcome.result,
                }
                if outcome.error:
                    update |= {
                        "last_failed_at": now,
                        "last_error": outcome.error,
                        "consecutive_failures": F("consecutive_failures") + 1,
                        "failures_total": F("failures_total") + 1,
                    }
                else:
                    update |= {"last_ok_at": now, "consecutive_failures": 0}
                DueWorkStep.objects.filter(name=outcome.name).update(**update)
    except DatabaseError:
        logger.exception("due-work status not recorded")
        _repair_connection()


def skip_locked(queryset: QuerySet[_M]) -> QuerySet[_M]:
    """Due rows for this dispatcher alone: locked, passing over rows another one holds.

    SQLite (the embedded mode) has neither row locks nor SKIP LOCKED; it serialises writers instead, so
    the plain select inside the caller's transaction is already exclusive there.
    """
    if connection.features.has_select_for_update_skip_locked:
        return queryset.select_for_update(skip_locked=True, of=("self",))
    return queryset

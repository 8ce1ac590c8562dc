"""Apps that keep something derived from a patient's visits (campaign lifecycle stages, for one) register here.

record_visit, the one writer of visits, calls run_visit_hooks_on_commit with the patients whose visits
changed; the hooks run after the transaction commits (never for a rolled-back visit) with those patient
ids. A hook should only enqueue work: it runs in the caller, and a discharge import records thousands.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable

from django.db import transaction

logger = logging.getLogger(__name__)

VisitHook = Callable[[list[int]], None]

_hooks: dict[str, VisitHook] = {}


def register_visit_hook(name: str, hook: VisitHook) -> None:
    """Keyed by name so a second AppConfig.ready() (tests, autoreload) replaces rather than doubles it."""
    _hooks[name] = hook


def run_visit_hooks_on_commit(patient_ids: Iterable[int]) -> None:
    ids = set(patient_ids)
    if not ids or not _hooks:
        return
    connection = transaction.get_connection()
    if not connection.in_atomic_block:
        _run(sorted(ids))
        return
    # One hook run per transaction, not one per visit: an import of 5,000 discharges in one transaction
    # is one recompute of 5,000 patients. The pending set lives as long as its on-commit callback; a
    # rolled-back (savepoint) block drops the callback, and the next visit starts a fresh set.
    pending: _Pending | None = getattr(connection, "_visit_hooks_pending", None)
    if pending is None or not any(entry[1] == pending.flush for entry in connection.run_on_commit):
        pending = _Pending(connection)
        connection._visit_hooks_pending = pending
        transaction.on_commit(pending.flush)
    pending.ids |= ids


class _Pending:
    def __init__(self, connection: object) -> None:
        self.connection = connection
        self.ids: set[int] = set()

    def flush(self) -> None:
        if getattr(self.connection, "_visit_hooks_pending", None) is self:
            self.connection._visit_hooks_pending = None
        _run(sorted(self.ids))


def _run(patient_ids: list[int]) -> None:
    for name, hook in list(_hooks.items()):
        try:
            hook(patient_ids)
        except Exception:
            # The visit is committed whatever a hook does; the nightly recompute repairs what it missed.
            logger.exception("visit hook %s failed for patients %s", name, patient_ids)

"""Apps that follow the status of messages they sent (campaign recipients, for one) register here.

delivery._move calls the hooks inside the transaction that moves a message's status forward, after the
row is saved, with the status it had before and the one it has now; statuses never move backwards, so
a hook sees each step at most once. A hook names the sender kinds it follows (campaign, survey …), so
the messages of everyone else cost it nothing, not even a savepoint.
"""

from __future__ import annotations

import logging
from typing import Protocol

from django.db import transaction

from contactcenter.models import Message

logger = logging.getLogger(__name__)


class StatusHook(Protocol):
    def __call__(self, *, message: Message, old: str, new: str) -> None: ...


_hooks: dict[str, tuple[frozenset[str], frozenset[str] | None, StatusHook]] = {}


def register_status_hook(
    name: str, hook: StatusHook, *, sender_kinds: frozenset[str], statuses: frozenset[str] | None = None
) -> None:
    """Keyed by name so a second AppConfig.ready() (tests, autoreload) replaces rather than doubles it.

    `statuses`: the new statuses the hook acts on (None: every move). The moves it ignores then cost no
    savepoint, which matters when a campaign moves thousands of messages to "sending" a second.
    """
    _hooks[name] = (sender_kinds, statuses, hook)


def run_status_hooks(*, message: Message, old: str, new: str) -> None:
    for name, (sender_kinds, statuses, hook) in list(_hooks.items()):
        if message.sender_kind not in sender_kinds or (statuses is not None and new not in statuses):
            continue
        try:
            # A savepoint each: a failing hook loses its own effects, never the message's status.
            with transaction.atomic():
                hook(message=message, old=old, new=new)
        except Exception:
            logger.exception("status hook %s failed on message %s", name, message.pk)

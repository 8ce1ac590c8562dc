"""Apps that follow the status of messages they sent (campaign recipients, for one) register here.

delivery._move calls the hooks inside the transaction that moves a message's status forward, after the
row is saved, with the status it had before and the one it has now; statuses never move backwards, so
a hook sees each step at most once. A hook names the sender kinds it follows (campaign, survey …), and
may name a flag its messages carry, so the messages of everyone else cost it nothing, not even a savepoint.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from django.db import transaction

from contactcenter.models import Message

logger = logging.getLogger(__name__)


class StatusHook(Protocol):
    def __call__(self, *, message: Message, old: str, new: str) -> None: ...


@dataclass(frozen=True)
class _Registered:
    hook: StatusHook
    sender_kinds: frozenset[str]
    statuses: frozenset[str] | None
    flag: str | None

    def wants(self, message: Message, new: str) -> bool:
        return (
            message.sender_kind in self.sender_kinds
            and (self.statuses is None or new in self.statuses)
            and (self.flag is None or self.flag in (message.flags or ()))
        )


_hooks: dict[str, _Registered] = {}


def register_status_hook(
    name: str,
    hook: StatusHook,
    *,
    sender_kinds: frozenset[str],
    statuses: frozenset[str] | None = None,
    flag: str | None = None,
) -> None:
    """Keyed by name so a second AppConfig.ready() (tests, autoreload) replaces rather than doubles it.

    `statuses`: the new statuses the hook acts on (None: every move). `flag`: only messages carrying this
    flag (a web chat reply's SMS copy among all system messages). The moves a hook ignores cost no
    savepoint, which matters when a campaign moves thousands of messages to "sending" a second.
    """
    _hooks[name] = _Registered(hook, sender_kinds, statuses, flag)


def run_status_hooks(*, message: Message, old: str, new: str) -> None:
    for name, registered in list(_hooks.items()):
        if not registered.wants(message, new):
            continue
        hook = registered.hook
        try:
            # A savepoint each: a failing hook loses its own effects, never the message's status.
            with transaction.atomic():
                hook(message=message, old=old, new=new)
        except Exception:
            logger.exception("status hook %s failed on message %s", name, message.pk)


def any_wants(*, message: Message, new: str) -> bool:
    """Whether some hook follows this move (a status callback's fast path is only for moves nobody follows)."""
    return any(registered.wants(message, new) for registered in list(_hooks.values()))

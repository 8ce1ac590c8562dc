"""Apps that want a look at each newly stored inbound message (the SMS survey, for one) register here.

receive_inbound calls the hooks inside its transaction, after the message is stored and consent
keywords are applied, and only for a message it stored just now: a provider's retry runs no hook. The
message stays in the inbox whatever a hook does; a hook only adds its own effects. A hook runs on every
inbound message, so it must cost one cheap indexed query when the message is not for it.
"""

from __future__ import annotations

import logging
from typing import Protocol

from django.db import transaction

from contactcenter.models import Conversation, Message, Patient

logger = logging.getLogger(__name__)


class InboundHook(Protocol):
    def __call__(
        self, *, message: Message, conversation: Conversation, patient: Patient, keyword: str | None
    ) -> None: ...


_hooks: dict[str, InboundHook] = {}


def register_inbound_hook(name: str, hook: InboundHook) -> None:
    """Keyed by name so a second AppConfig.ready() (tests, autoreload) replaces rather than doubles it."""
    _hooks[name] = hook


def run_inbound_hooks(*, message: Message, conversation: Conversation, patient: Patient, keyword: str | None) -> None:
    for name, hook in list(_hooks.items()):
        try:
            # A savepoint each: a failing hook loses its own effects, never the patient's message.
            with transaction.atomic():
                hook(message=message, conversation=conversation, patient=patient, keyword=keyword)
        except Exception:
            logger.exception("inbound hook %s failed on message %s", name, message.pk)

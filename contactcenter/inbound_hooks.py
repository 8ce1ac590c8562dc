"""Apps that want a look at each newly stored inbound message (the SMS survey, for one) register here.

receive_inbound calls the hooks inside its transaction, after the message is stored and consent
keywords are applied, and only for a message it stored just now: a provider's retry runs no hook. The
message stays in the inbox whatever a hook does; a hook only adds its own effects. A hook runs on every
inbound message, so it must cost one cheap indexed query when the message is not for it: its `interested`
check, run outside any savepoint (most messages are for no hook, and a savepoint costs two statements). Only
when it says yes does the hook run, in a savepoint of its own.

Reply claims come first. Before a keyword ("N", "YES", "STOP") changes the patient's consent, the consent
registry asks each registered claim whether its feature is waiting for this very message as an answer (a
survey's yes/no question); a claimed reply is that answer, and its hooks then see no keyword. Claims are
asked only for messages that read as a keyword, so they may cost a query or two.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Protocol

from django.db import transaction

from contactcenter.models import Conversation, Message, Patient

logger = logging.getLogger(__name__)


class InboundHook(Protocol):
    def __call__(
        self, *, message: Message, conversation: Conversation, patient: Patient, keyword: str | None
    ) -> None: ...


class HookInterest(Protocol):
    """Whether the hook has anything to do with this message: one cheap read, no writes."""

    def __call__(
        self, *, message: Message, conversation: Conversation, patient: Patient, keyword: str | None
    ) -> bool: ...


class BatchInterest(Protocol):
    """For a batch of messages to one inbox: the patients for whom `interested` may say yes to a message that is no
    keyword (one query for the batch instead of one per message)."""

    def __call__(self, *, inbox_id: int, patient_ids: set[int]) -> set[int]: ...


_hooks: dict[str, tuple[InboundHook, HookInterest | None]] = {}
_batch_checks: dict[str, BatchInterest] = {}


def register_inbound_hook(
    name: str,
    hook: InboundHook,
    *,
    interested: HookInterest | None = None,
    interested_in_batch: BatchInterest | None = None,
) -> None:
    """Keyed by name so a second AppConfig.ready() (tests, autoreload) replaces rather than doubles it."""
    _hooks[name] = (hook, interested)
    if interested_in_batch is not None:
        _batch_checks[name] = interested_in_batch
    else:
        _batch_checks.pop(name, None)


@dataclass(frozen=True)
class HookAnswers:
    """The batch checks' answers for the patients a batch read: which of them each hook may be interested in."""

    patient_ids: frozenset[int]
    interested: dict[str, set[int]]


def batch_interest(*, inbox_id: int, patient_ids: set[int]) -> HookAnswers:
    """Each batch-checked hook's answer for a batch of messages to one inbox, one query per hook."""
    return HookAnswers(
        patient_ids=frozenset(patient_ids),
        interested={
            name: check(inbox_id=inbox_id, patient_ids=patient_ids) if patient_ids else set()
            for name, check in list(_batch_checks.items())
            if name in _hooks
        },
    )


class ReplyClaim(Protocol):
    """True when this feature asked the patient a question that this message answers."""

    def __call__(self, *, message: Message, conversation: Conversation, patient: Patient) -> bool: ...


_claims: dict[str, ReplyClaim] = {}


def register_reply_claim(name: str, claim: ReplyClaim) -> None:
    """Keyed by name, like the hooks."""
    _claims[name] = claim


def claimed_as_answer(*, message: Message, conversation: Conversation, patient: Patient) -> str | None:
    """The name of the first feature that claims the message as an answer to its own question, else None."""
    for name, claim in list(_claims.items()):
        try:
            # A savepoint each: a failing claim is no claim, and the keyword applies as usual.
            with transaction.atomic():
                if claim(message=message, conversation=conversation, patient=patient):
                    return name
        except Exception:
            logger.exception("reply claim %s failed on message %s", name, message.pk)
    return None


def run_inbound_hooks(
    *,
    message: Message,
    conversation: Conversation,
    patient: Patient,
    keyword: str | None,
    known: HookAnswers | None = None,
) -> int:
    """`known`: a batch's answers (batch_interest). A keyword, or a patient the batch did not read (a new one), is
    still asked one by one. Returns how many hooks ran (their effects may have changed the conversation)."""
    ran = 0
    covered = known is not None and keyword is None and patient.pk in known.patient_ids
    for name, (hook, interested) in list(_hooks.items()):
        if covered and known is not None and name in known.interested:
            if patient.pk not in known.interested[name]:
                continue
        # Not guarded: a read that fails has broken the transaction (on PostgreSQL), so the message fails with
        # it and is tried again (contactcenter.actions.inbound_queue) rather than stored without its effects.
        elif interested is not None and not interested(
            message=message, conversation=conversation, patient=patient, keyword=keyword
        ):
            continue
        ran += 1
        try:
            # A savepoint each: a failing hook loses its own effects, never the patient's message.
            with transaction.atomic():
                hook(message=message, conversation=conversation, patient=patient, keyword=keyword)
        except Exception:
            logger.exception("inbound hook %s failed on message %s", name, message.pk)
    return ran

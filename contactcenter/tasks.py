"""Celery tasks: fetch by id, call an action. No logic lives here."""

from __future__ import annotations

from typing import Any

from celery import shared_task

from contactcenter.actions.delivery import abandon_delivery
from contactcenter.actions.delivery import deliver_message as deliver_message_action
from contactcenter.actions.inbound_queue import drain_inbound
from contactcenter.dispatch import run_due_work


@shared_task(bind=True, max_retries=6, acks_late=True)
def deliver_message(self: Any, *, message_id: int) -> str:
    outcome = deliver_message_action(message_id=message_id)
    if outcome.retry:
        if self.request.retries >= self.max_retries:
            abandon_delivery(message_id=message_id, reason=outcome.error)
            return "failed"
        # Exponential backoff for transient provider errors: 2, 4, 8 … seconds.
        raise self.retry(countdown=2 ** (self.request.retries + 1))
    return outcome.status


@shared_task
def dispatch_due_work() -> dict[str, int]:
    """The one periodic job: every registered step, each isolated (contactcenter.dispatch)."""
    return run_due_work()


@shared_task(acks_late=True)
def process_inbound_webhooks(*, inbox_id: int) -> int:
    """Turn an inbox's stored inbound webhooks into messages (contactcenter.actions.inbound_queue)."""
    return drain_inbound(inbox_id=inbox_id).stored

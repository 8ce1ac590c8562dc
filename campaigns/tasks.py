"""Celery tasks: fetch by id, call the sending engine. No logic lives here."""

from __future__ import annotations

from celery import shared_task

from campaigns.sending import engine


@shared_task(acks_late=True)
def run_campaign(*, campaign_id: int) -> str:
    # Safe to run twice at once or again after a worker died: each recipient is claimed under its row
    # lock and leaves PENDING in the transaction that writes its message (campaigns/sending/engine.py).
    return engine.run_campaign(campaign_id)


@shared_task
def recompute_lifecycles(*, patient_ids: list[int] | None = None) -> int:
    """Lifecycle stages for these patients (a visit changed), or for everyone (rules changed, nightly)."""
    from campaigns.actions.lifecycle import recompute_all, recompute_patients

    if patient_ids is None:
        return recompute_all()
    return recompute_patients(patient_ids=patient_ids)

"""Turning a discharge into callback tasks. PLACEHOLDER: owned by the plans helper, replaced wholesale."""

from __future__ import annotations

from callbacks.models import OPEN_STATUSES, CallbackTask, Discharge, TaskStatus


def schedule_follow_up(discharge: Discharge) -> list[CallbackTask]:
    return []


def reschedule_follow_up(discharge: Discharge) -> list[CallbackTask]:
    return []


def cancel_follow_up(discharge: Discharge) -> int:
    return CallbackTask.objects.filter(discharge=discharge, status__in=OPEN_STATUSES).update(
        status=TaskStatus.CANCELLED, next_action_at=None
    )

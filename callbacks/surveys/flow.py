"""PLACEHOLDER owned by the surveys helper: the SMS survey state machine."""

from __future__ import annotations

import datetime as dt

from callbacks.models import CallbackTask, SurveySession


def start_survey(task: CallbackTask, *, now: dt.datetime | None = None) -> SurveySession | None:
    raise NotImplementedError


def run_due_sessions(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    return 0

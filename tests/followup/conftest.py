"""Shared helpers for the follow-up tests. Each area keeps its own test module; add fixtures here sparingly."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.utils import timezone

from callbacks.actions.discharges import Demographics, DischargeRecord, DischargeResult, record_discharge
from callbacks.models import Disposition, IntakeSource

_numbers = itertools.count(1)


def discharge_record(**overrides: Any) -> DischargeRecord:
    n = next(_numbers)
    demographics = overrides.pop(
        "demographics",
        Demographics(
            mrn=overrides.pop("mrn", f"MRN{n:06d}"),
            name=overrides.pop("name", f"Patient {n}"),
            phone=overrides.pop("phone", f"+86138{n:08d}"),
            birth_date=overrides.pop("birth_date", dt.date(1960, 5, 1)),
            gender=overrides.pop("gender", "female"),
        ),
    )
    values: dict[str, Any] = {
        "visit_number": f"V{n:08d}",
        "demographics": demographics,
        "department_code": "cardiology",
        "department_name": "Cardiology",
        "discharged_at": timezone.now() - dt.timedelta(hours=2),
        "source": IntakeSource.REST,
        "ward": "5A",
        "attending_doctor": "Dr. Wang",
        "primary_nurse": "Nurse Li",
        "disposition": Disposition.HOME,
        "diagnoses": [{"code": "I21.4", "text": "NSTEMI", "system": "I10"}],
    }
    values.update(overrides)
    return DischargeRecord(**values)


@pytest.fixture(autouse=True)
def fresh_business_calendar() -> Iterator[None]:
    # The calendar caches CalendarDay rows for a minute; a test's rolled-back holidays must not leak into the next.
    from callbacks.business_calendar import clear_calendar_cache

    clear_calendar_cache()
    yield
    clear_calendar_cache()


@pytest.fixture
def make_discharge(db: Any) -> Callable[..., DischargeResult]:
    def make(**overrides: Any) -> DischargeResult:
        # As the HIS reports it: when the patient leaves, so its plan is made from that moment (a step whose
        # contact deadline has passed by the time a discharge arrives is planned as expired).
        record = discharge_record(**overrides)
        return record_discharge(record, now=record.discharged_at)

    return make

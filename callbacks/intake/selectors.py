"""Reads for the discharges page: the HIS department codes still waiting for someone to map them."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

from django.db.models import Count, Max, QuerySet

from callbacks.models import UNMAPPED_DEPARTMENT_CODE, Discharge
from contactcenter.models import Team

UNMAPPED_SHOWN = 100


@dataclass(frozen=True)
class UnmappedCode:
    """One HIS department code no department here answers to, and the discharges waiting under it."""

    system: str
    code: str  # "" for discharges that named no department at all (a FHIR Encounter without serviceType)
    name: str  # what the HIS called it, when it said
    discharges: int
    latest: dt.datetime


def unmapped_department_codes(limit: int = UNMAPPED_SHOWN) -> list[UnmappedCode]:
    """Most waiting discharges first. Codes only: no patient is named."""
    rows = (
        Discharge.objects.filter(department__code=UNMAPPED_DEPARTMENT_CODE)
        .values("his_department_system", "his_department_code")
        .annotate(discharges=Count("pk"), latest=Max("received_at"), name=Max("his_department_name"))
        .order_by("-discharges", "his_department_code")[:limit]
    )
    return [
        UnmappedCode(
            system=row["his_department_system"],
            code=row["his_department_code"],
            name=row["name"] or "",
            discharges=row["discharges"],
            latest=row["latest"],
        )
        for row in rows
    ]


def mappable_departments() -> QuerySet[Team]:
    """The departments a code may be mapped to: every one but the unmapped department itself."""
    return Team.objects.exclude(code=UNMAPPED_DEPARTMENT_CODE).order_by("name")

from __future__ import annotations

import datetime as dt
from decimal import Decimal

from django.db import transaction

from contactcenter.models import Patient, Team, Visit
from contactcenter.visit_hooks import run_visit_hooks_on_commit


@transaction.atomic
def record_visit(
    *,
    patient: Patient,
    visit_number: str,
    department: Team,
    kind: str,
    admitted_at: dt.datetime,
    discharged_at: dt.datetime | None = None,
    doctor: str = "",
    nurse: str = "",
    ward: str = "",
    package: str = "",
    amount: Decimal = Decimal("0"),
) -> Visit:
    """Create or update a visit; idempotent on the hospital's visit number."""
    # A corrected record can move a visit to another patient: both patients' derived data changes.
    previous_patient_id = Visit.objects.filter(visit_number=visit_number).values_list("patient_id", flat=True).first()
    visit, _created = Visit.objects.update_or_create(
        visit_number=visit_number,
        defaults={
            "patient": patient,
            "department": department,
            "kind": kind,
            "admitted_at": admitted_at,
            "discharged_at": discharged_at,
            "doctor": doctor,
            "nurse": nurse,
            "ward": ward,
            "package": package,
            "amount": amount,
        },
    )
    run_visit_hooks_on_commit({patient.pk, previous_patient_id or patient.pk})
    return visit

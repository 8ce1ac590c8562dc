"""HIS department codes → our departments: reading a code, and mapping one an admin has just learnt.

The HIS names departments in its own codes (PV1-10 "CAR", a FHIR serviceType "0301"). A code is read as
(in order) an admin's mapping for its code system, a mapping for any system, or a department whose own
code it is. A code that is none of these never becomes a new department: the discharge is filed under the
one "unmapped" department, still gets the follow-up of plans that name no department, and is listed on
the discharges page until someone maps the code; mapping it re-routes those discharges.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from callbacks import plans
from callbacks.models import UNMAPPED_DEPARTMENT_CODE, CallbackTask, DepartmentCodeMapping, Discharge
from contactcenter.boundary import BoundaryError, clean_identifier
from contactcenter.models import Team, Visit
from contactcenter.visit_hooks import run_visit_hooks_on_commit

logger = logging.getLogger(__name__)

CODE_MAX = 40
SYSTEM_MAX = 200


def unmapped_department() -> Team:
    """The department of discharges whose HIS code maps to none of ours (made on first use)."""
    team, _created = Team.objects.get_or_create(
        code=UNMAPPED_DEPARTMENT_CODE,
        defaults={"name": "Unmapped HIS department", "name_zh": "未映射科室"},
    )
    return team


def department_for_code(code: str, system: str = "") -> Team | None:
    """The department an HIS code means here, or None when nobody has said yet."""
    code = code.strip()
    if not code:
        return None
    mapped = {
        m.system: m.department
        for m in DepartmentCodeMapping.objects.filter(code__iexact=code, system__in={system, ""}).select_related(
            "department"
        )
    }
    if system in mapped:
        return mapped[system]
    if "" in mapped:
        return mapped[""]
    return Team.objects.filter(code__iexact=code).exclude(code=UNMAPPED_DEPARTMENT_CODE).order_by("pk").first()


@dataclass(frozen=True)
class MappingResult:
    mapping: DepartmentCodeMapping
    created: bool
    # Discharges that were waiting under the unmapped department and now have this one.
    rerouted: int


def map_department_code(
    *, system: str, code: str, department: Team, actor: User | AnonymousUser | None = None
) -> MappingResult:
    """Say which department an HIS code means, and re-route the discharges that were waiting for it.

    Their tasks move to the department (so its nurses see them) and their follow-up is planned again:
    steps nobody has worked yet follow the department's plan, and a discharge that matched no plan
    without a department gets one now. Raises ValidationError naming the field.
    """
    try:
        code = clean_identifier(code.strip(), field="code", max_length=CODE_MAX, required=True)
        system = clean_identifier(system.strip(), field="system", max_length=SYSTEM_MAX)
    except BoundaryError as exc:
        raise ValidationError({exc.field: [_("This value %(problem)s.") % {"problem": exc.message}]}) from None
    if department.code == UNMAPPED_DEPARTMENT_CODE:
        raise ValidationError({"department": [_("Choose the department this code stands for.")]})
    with transaction.atomic():
        mapping = DepartmentCodeMapping.objects.select_for_update().filter(system=system, code__iexact=code).first()
        created = mapping is None
        if mapping is None:
            mapping = DepartmentCodeMapping.objects.create(
                system=system,
                code=code,
                department=department,
                created_by=actor if isinstance(actor, User) else None,
            )
        elif mapping.department_id != department.pk:
            mapping.department = department
            mapping.save(update_fields=["department"])
        rerouted = _reroute(system=system, code=code)
    logger.info(
        "HIS department code mapping %s → team %s (%s discharge(s) re-routed)", mapping.pk, department.pk, rerouted
    )
    return MappingResult(mapping=mapping, created=created, rerouted=rerouted)


def _reroute(*, system: str, code: str) -> int:
    """Move every discharge still filed as unmapped under this code to the department it now resolves to."""
    waiting = Discharge.objects.select_for_update(of=("self",)).filter(
        department__code=UNMAPPED_DEPARTMENT_CODE, his_department_code__iexact=code
    )
    if system:
        waiting = waiting.filter(his_department_system=system)
    moved = 0
    for discharge in waiting.order_by("pk"):
        # A mapping for any system does not override one made for the discharge's own system.
        department = department_for_code(discharge.his_department_code, discharge.his_department_system)
        if department is None:
            continue
        move_discharge(discharge, department)
        moved += 1
    return moved


def move_discharge(discharge: Discharge, department: Team) -> None:
    """File a discharge (its visit and every task) under another department and plan it again.

    Call inside a transaction holding the discharge's row lock.
    """
    discharge.department = department
    discharge.save(update_fields=["department", "updated_at"])
    Visit.objects.filter(pk=discharge.visit_id).update(department=department)
    run_visit_hooks_on_commit([discharge.patient_id])
    CallbackTask.objects.filter(discharge=discharge).update(department=department)
    plans.reschedule_follow_up(discharge)

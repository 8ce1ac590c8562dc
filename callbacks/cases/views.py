"""The service-recovery page: one page that talks to /api/v1/followup/cases/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from callbacks.cases import selectors
from callbacks.cases.api import assignable_staff
from callbacks.models import Accountability, CaseCategory, CaseSource, CaseStatus
from contactcenter.api.shapes import staff_name
from contactcenter.models import Team


@login_required
def service_cases(request: HttpRequest) -> HttpResponse:
    if not selectors.can_use_cases(request.user):
        raise PermissionDenied("Your role does not give access to service-recovery cases.")
    manager = selectors.manages_cases(request.user)
    return render(
        request,
        "callbacks/cases/cases.html",
        {
            "manager": manager,
            "statuses": CaseStatus.choices,
            "categories": CaseCategory.choices,
            "sources": CaseSource.choices,
            "accountabilities": Accountability.choices,
            "departments": list(Team.objects.order_by("name")),
            "new_case_departments": list(selectors.departments_for_new_case(request.user).order_by("name")),
            "staff": [(u.pk, staff_name(u)) for u in assignable_staff()] if manager else [],
        },
    )

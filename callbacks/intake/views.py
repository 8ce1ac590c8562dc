"""Discharge intake pages for hospital IT and supervisors: CSV upload, HIS department codes waiting for a
mapping, and what the HIS sent lately."""

from __future__ import annotations

import base64
import codecs
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_POST

from callbacks.actions.departments import map_department_code
from callbacks.intake.csv_import import ImportRefused, error_csv, import_discharges
from callbacks.intake.forms import MAX_ROWS, MAX_UPLOAD_BYTES, DepartmentCodeForm, DischargeUploadForm
from callbacks.intake.selectors import mappable_departments, unmapped_department_codes
from callbacks.models import IntakeMessage
from contactcenter import access
from contactcenter.actions.audit import record_audit
from contactcenter.models import AuditAction

# Not (yet) an AuditAction choice: the entry is stored and listed all the same, shown by its value.
AUDIT_IMPORT_DISCHARGES = AuditAction.IMPORT_DISCHARGES
ERRORS_SHOWN = 200
RECENT_MESSAGES = 25


def _check_staff(request: HttpRequest) -> None:
    if not access.sees_everything(request.user):
        raise PermissionDenied("Only supervisors and admins import discharges and map department codes.")


@login_required
def discharge_import(request: HttpRequest) -> HttpResponse:
    _check_staff(request)
    form = DischargeUploadForm(request.POST or None, request.FILES or None)
    context: dict[str, Any] = {"form": form, "report": None, "rejected_shown": [], "errors_href": ""}
    status = 200
    if request.method == "POST":
        if form.is_valid():
            try:
                report = import_discharges(form.cleaned_data["file"].read())
            except ImportRefused as refused:
                form.add_error("file", refused.message)
                status = 400
            else:
                record_audit(
                    actor=request.user,
                    action=AUDIT_IMPORT_DISCHARGES,
                    object_type="discharge_import",
                    object_id="*",
                    via="ui",
                    ip_address=request.META.get("REMOTE_ADDR") or None,
                    # Counts only: the file's patients are not the auditor's business here.
                    detail={
                        "rows": report.rows,
                        "created": report.created,
                        "updated": report.updated,
                        "rejected": len(report.rejected),
                    },
                )
                context.update(report=report, rejected_shown=report.rejected[:ERRORS_SHOWN])
                if report.rejected:
                    # Handed back inline rather than kept on the server: no copy of the rows stays behind.
                    payload = codecs.BOM_UTF8 + error_csv(report).encode("utf-8")
                    context["errors_href"] = "data:text/csv;charset=utf-8;base64," + base64.b64encode(payload).decode(
                        "ascii"
                    )
        else:
            status = 400
    elif request.GET.get("mapped"):
        context["mapped"] = request.GET["mapped"][:40]
        context["rerouted"] = request.GET.get("rerouted", "")[:6]
    return _render(request, context, status)


@login_required
@require_POST
def map_department(request: HttpRequest) -> HttpResponse:
    """Map an unmapped HIS department code to a department; the discharges waiting under it are re-routed."""
    _check_staff(request)
    form = DepartmentCodeForm(request.POST)
    errors: dict[str, list[str]] = {}
    if form.is_valid():
        try:
            result = map_department_code(
                system=form.cleaned_data["system"],
                code=form.cleaned_data["code"],
                department=form.cleaned_data["department"],
                actor=request.user,
            )
        except ValidationError as exc:
            errors = exc.message_dict
        else:
            query = urlencode({"mapped": result.mapping.code, "rerouted": result.rerouted})
            return HttpResponseRedirect(f"{reverse('discharge-import')}?{query}#unmapped")
    else:
        errors = {name: [str(message) for message in messages] for name, messages in form.errors.items()}
    context: dict[str, Any] = {
        "form": DischargeUploadForm(),
        "report": None,
        "rejected_shown": [],
        "errors_href": "",
        "mapping_errors": errors,
        "mapping_code": str(request.POST.get("code", ""))[:40],
    }
    return _render(request, context, 400)


def _render(request: HttpRequest, context: dict[str, Any], status: int) -> HttpResponse:
    recent = IntakeMessage.objects.only("source", "message_type", "outcome", "received_at", "control_id")
    return render(
        request,
        "callbacks/intake/import.html",
        {
            **context,
            "recent": recent.order_by("-received_at", "-id")[:RECENT_MESSAGES],
            "max_mb": MAX_UPLOAD_BYTES // 1024 // 1024,
            "max_rows": MAX_ROWS,
            "unmapped": unmapped_department_codes(),
            "departments": mappable_departments(),
        },
        status=status,
    )

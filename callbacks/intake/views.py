"""Discharge intake pages for hospital IT and supervisors: CSV upload, and what the HIS sent lately."""

from __future__ import annotations

import base64
import codecs

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from callbacks.intake.csv_import import ImportRefused, error_csv, import_discharges
from callbacks.intake.forms import MAX_ROWS, MAX_UPLOAD_BYTES, DischargeUploadForm
from callbacks.models import IntakeMessage
from contactcenter import access
from contactcenter.actions.audit import record_audit
from contactcenter.models import AuditAction

# Not (yet) an AuditAction choice: the entry is stored and listed all the same, shown by its value.
AUDIT_IMPORT_DISCHARGES = AuditAction.IMPORT_DISCHARGES
ERRORS_SHOWN = 200
RECENT_MESSAGES = 25


@login_required
def discharge_import(request: HttpRequest) -> HttpResponse:
    if not access.sees_everything(request.user):
        raise PermissionDenied("Only supervisors and admins import discharges.")
    form = DischargeUploadForm(request.POST or None, request.FILES or None)
    report = None
    errors_href = ""
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
                if report.rejected:
                    # Handed back inline rather than kept on the server: no copy of the rows stays behind.
                    payload = codecs.BOM_UTF8 + error_csv(report).encode("utf-8")
                    errors_href = "data:text/csv;charset=utf-8;base64," + base64.b64encode(payload).decode("ascii")
        else:
            status = 400
    recent = IntakeMessage.objects.only("source", "message_type", "outcome", "received_at", "control_id")
    return render(
        request,
        "callbacks/intake/import.html",
        {
            "form": form,
            "report": report,
            "rejected_shown": report.rejected[:ERRORS_SHOWN] if report else [],
            "errors_href": errors_href,
            "recent": recent.order_by("-received_at", "-id")[:RECENT_MESSAGES],
            "max_mb": MAX_UPLOAD_BYTES // 1024 // 1024,
            "max_rows": MAX_ROWS,
        },
        status=status,
    )

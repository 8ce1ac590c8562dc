"""Follow-up reports for supervisors and admins: one page of aggregates and a CSV export per report."""

from __future__ import annotations

import csv

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from callbacks.models import CaseStatus, QuestionKind
from callbacks.reports import selectors, tables
from callbacks.reports.filters import FilterError, parse_filters
from contactcenter import access
from contactcenter.actions.audit import record_audit
from contactcenter.models import AuditAction, Team
from contactcenter.spreadsheets import safe_row

# Not (yet) an AuditAction choice; the audit log shows the raw value until the lead adds one.
EXPORT_AUDIT_ACTION = AuditAction.EXPORT_REPORT


def _require_manager(request: HttpRequest) -> None:
    if not access.sees_everything(request.user):
        raise PermissionDenied(_("Only supervisors and admins may read follow-up reports."))


@login_required
@require_GET
def reports_page(request: HttpRequest) -> HttpResponse:
    _require_manager(request)
    context: dict[str, object] = {
        "departments": Team.objects.order_by("name"),
        "dimensions": selectors.Dimension.choices,
        "buckets": selectors.Bucket.choices,
        "questions": selectors.question_keys(QuestionKind.RATING),
        "case_statuses": CaseStatus.choices,
        "params": request.GET,
    }
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        context["error"] = str(error)
        return render(request, "callbacks/reports/reports.html", context, status=400)
    report = tables.build_report(filters)
    context.update(
        filters=filters,
        report=report,
        data=tables.page_data(report, filters),
        export_query=request.GET.urlencode(),
    )
    return render(request, "callbacks/reports/reports.html", context)


@login_required
@require_GET
def export_csv(request: HttpRequest) -> HttpResponse:
    _require_manager(request)
    report = request.GET.get("report", "")
    if report not in tables.REPORTS:
        return HttpResponseBadRequest(_("Choose a report to export: completion, satisfaction, nps or cases."))
    try:
        filters = parse_filters(request.GET)
    except FilterError as error:
        return HttpResponseBadRequest(str(error))
    table = tables.csv_table(report, filters)
    period = f"{filters.period.date_from:%Y%m%d}-{filters.period.date_to:%Y%m%d}"
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="followup-{report}-{period}.csv"'
    # The BOM makes Excel (as used across Chinese hospitals) read the file as UTF-8 rather than GBK.
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow(safe_row(table.header))
    for row in table.rows:
        writer.writerow(safe_row(row))
    record_audit(
        actor=request.user,
        action=EXPORT_AUDIT_ACTION,
        object_type="followup_report",
        object_id=report,
        via="ui",
        ip_address=request.META.get("REMOTE_ADDR") or None,
        detail={**filters.as_audit_detail(), "rows": len(table.rows)},
    )
    return response

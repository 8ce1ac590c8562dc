"""Campaign analytics pages (one campaign, one segment, the overview) and their CSV exports.

Pages render the selectors' numbers into tables and hand the same dict to analytics.js (json_script)
for the SVG charts. Exports are aggregates only and are audited like the follow-up report exports.
"""

from __future__ import annotations

import csv
from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseBadRequest
from django.shortcuts import render
from django.utils.translation import gettext as _
from django.views.decorators.http import require_GET

from campaigns.analytics import export, selectors
from campaigns.analytics.filters import FilterError, may_read_analytics, parse_bucket, parse_period
from campaigns.models import Campaign, Segment
from contactcenter.actions.audit import record_audit
from contactcenter.models import AuditAction
from contactcenter.spreadsheets import safe_row

TEMPLATES = "campaigns/analytics"


def _require_analytics_role(request: HttpRequest) -> None:
    if not may_read_analytics(request.user):
        raise PermissionDenied(_("Only marketers, supervisors and admins may read campaign analytics."))


def _campaign(campaign_id: int) -> Campaign:
    campaign = Campaign.objects.select_related("segment").filter(pk=campaign_id).first()
    if campaign is None:
        raise Http404(_("No such campaign."))
    return campaign


def _render(request: HttpRequest, template: str, context: dict[str, Any], status: int = 200) -> HttpResponse:
    return render(request, f"{TEMPLATES}/{template}", {"buckets": selectors.Bucket.choices, **context}, status=status)


@login_required
@require_GET
def campaign_page(request: HttpRequest, campaign_id: int) -> HttpResponse:
    _require_analytics_role(request)
    campaign = _campaign(campaign_id)
    context: dict[str, Any] = {"campaign": campaign, "params": request.GET, "kind": "campaign"}
    try:
        bucket = parse_bucket(request.GET)
    except FilterError as error:
        return _render(request, "detail.html", {**context, "error": str(error)}, status=400)
    data = selectors.campaign_analytics(campaign, bucket=bucket)
    return _render(request, "detail.html", {**context, "data": data})


@login_required
@require_GET
def segment_page(request: HttpRequest, segment_id: int) -> HttpResponse:
    _require_analytics_role(request)
    segment = Segment.objects.filter(pk=segment_id).first()
    if segment is None:
        raise Http404(_("No such segment."))
    context: dict[str, Any] = {"segment": segment, "params": request.GET, "kind": "segment"}
    try:
        bucket = parse_bucket(request.GET)
    except FilterError as error:
        return _render(request, "detail.html", {**context, "error": str(error)}, status=400)
    data = selectors.segment_analytics(segment, bucket=bucket)
    return _render(request, "detail.html", {**context, "data": data})


@login_required
@require_GET
def overview_page(request: HttpRequest) -> HttpResponse:
    _require_analytics_role(request)
    context: dict[str, Any] = {"params": request.GET}
    try:
        period = parse_period(request.GET)
    except FilterError as error:
        return _render(request, "overview.html", {**context, "error": str(error)}, status=400)
    return _render(
        request,
        "overview.html",
        {**context, "period": period, "data": selectors.overview(period), "export_query": request.GET.urlencode()},
    )


def _csv_response(request: HttpRequest, table: export.CsvTable, filename: str) -> HttpResponse:
    response = HttpResponse(content_type="text/csv; charset=utf-8")
    response["Content-Disposition"] = f'attachment; filename="{filename}"'
    # The BOM makes Excel (as used across Chinese hospitals) read the file as UTF-8 rather than GBK.
    response.write("\ufeff")
    writer = csv.writer(response)
    writer.writerow(safe_row(table.header))
    for row in table.rows:
        writer.writerow(safe_row(row))
    return response


def _audit_export(request: HttpRequest, object_id: object, detail: dict[str, Any]) -> None:
    record_audit(
        actor=request.user,
        action=AuditAction.EXPORT_REPORT,
        object_type="campaign_analytics",
        object_id=object_id,
        via="ui",
        ip_address=request.META.get("REMOTE_ADDR") or None,
        detail=detail,
    )


@login_required
@require_GET
def campaign_export(request: HttpRequest, campaign_id: int) -> HttpResponse:
    _require_analytics_role(request)
    campaign = _campaign(campaign_id)
    table = export.campaign_table(selectors.campaign_analytics(campaign, bucket=selectors.Bucket.DAY))
    response = _csv_response(request, table, f"campaign-{campaign.pk}-analytics.csv")
    _audit_export(request, campaign.pk, {"campaign_id": campaign.pk, "rows": len(table.rows)})
    return response


@login_required
@require_GET
def overview_export(request: HttpRequest) -> HttpResponse:
    _require_analytics_role(request)
    try:
        period = parse_period(request.GET)
    except FilterError as error:
        return HttpResponseBadRequest(str(error))
    table = export.overview_table(selectors.overview(period))
    name = f"campaigns-analytics-{period.date_from:%Y%m%d}-{period.date_to:%Y%m%d}.csv"
    response = _csv_response(request, table, name)
    _audit_export(
        request,
        "overview",
        {"date_from": period.date_from.isoformat(), "date_to": period.date_to.isoformat(), "rows": len(table.rows)},
    )
    return response

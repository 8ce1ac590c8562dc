"""Pages. The inbox is one page that talks to the REST API and the agent socket."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.db import connection
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from contactcenter import access
from contactcenter.models import AuditAction, AuditLogEntry


@login_required
def inbox(request: HttpRequest) -> HttpResponse:
    if not access.can_use_inbox(request.user):
        raise PermissionDenied("Your role does not give access to the inbox.")
    return render(request, "contactcenter/inbox.html", {"role": access.role_of(request.user)})


@login_required
def audit_log(request: HttpRequest) -> HttpResponse:
    if not access.is_admin(request.user):
        raise PermissionDenied("Only admins may browse the audit log.")
    entries = AuditLogEntry.objects.select_related("actor").order_by("-at", "-id")
    actor = request.GET.get("actor", "").strip()
    patient = request.GET.get("patient", "").strip()
    action = request.GET.get("action", "").strip()
    if "\x00" in actor:
        # PostgreSQL cannot compare text holding NUL; no username can contain one anyway.
        return HttpResponseBadRequest(_("The actor filter contains a character no username has."))
    if actor:
        entries = entries.filter(actor__username=actor)
    if patient.isdigit():
        entries = entries.filter(patient_id=int(patient))
    if action in AuditAction.values:
        entries = entries.filter(action=action)
    page = Paginator(entries, 50).get_page(request.GET.get("page"))
    return render(
        request,
        "contactcenter/audit_log.html",
        {"page": page, "actor": actor, "patient": patient, "action": action, "actions": AuditAction.choices},
    )


def healthz(request: HttpRequest) -> JsonResponse:
    with connection.cursor() as cursor:
        cursor.execute("SELECT 1")
    return JsonResponse({"ok": True})

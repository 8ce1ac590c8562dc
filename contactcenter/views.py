"""Pages. The inbox is one page that talks to the REST API and the agent socket."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.core.paginator import Paginator
from django.http import HttpRequest, HttpResponse, HttpResponseBadRequest, JsonResponse
from django.shortcuts import render
from django.utils.translation import gettext as _

from contactcenter import access, health
from contactcenter.models import AuditAction, AuditLogEntry, DueWorkStep


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
    if patient.isascii() and patient.isdigit():  # "²" is a digit to isdigit() but not to int()
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
    """Liveness: this process answers HTTP. Deliberately touches nothing else, so a database or Redis outage
    does not get every web process restarted by its supervisor (that cannot fix either); /readyz says why."""
    return JsonResponse({"ok": True})


def readyz(request: HttpRequest) -> JsonResponse:
    """Readiness and the machinery's health, as JSON naming what is wrong (contactcenter.health).

    503 when this process cannot serve (the database or Redis is unreachable): what a load balancer polls.
    With ?strict=1, 503 when anything is wrong, the workers and the dispatcher included: what a monitor polls.
    """
    result = health.report()
    strict = request.GET.get("strict", "") not in ("", "0", "false")
    healthy = result.ok if strict else result.ready
    response = JsonResponse(result.as_json(), status=200 if healthy else 503)
    response["Cache-Control"] = "no-store"
    if not healthy:
        response["Retry-After"] = "5"
    return response


@login_required
def system_status(request: HttpRequest) -> HttpResponse:
    """The same checks for admins, with every dispatcher step's last run and error."""
    if not access.is_admin(request.user):
        raise PermissionDenied("Only admins may see the system status.")
    result = health.report()
    steps = list(DueWorkStep.objects.exclude(name=DueWorkStep.RUN).order_by("name"))
    return render(request, "contactcenter/system_status.html", {"report": result, "steps": steps})

"""Admin settings pages. Each channel's own configuration page lives with its adapter."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from contactcenter import access
from contactcenter.models import Inbox


@login_required
def inbox_list(request: HttpRequest) -> HttpResponse:
    if not access.is_admin(request.user):
        raise PermissionDenied("Only admins configure inboxes.")
    inboxes = Inbox.objects.select_related("team").prefetch_related("twilio_senders").order_by("name")
    return render(request, "contactcenter/inbox_settings.html", {"inboxes": inboxes})

"""The nurse worklist page: one page that talks to /api/v1/followup/."""

from __future__ import annotations

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import render

from callbacks.worklist.selectors import can_use_worklist
from contactcenter import access


@login_required
def worklist(request: HttpRequest) -> HttpResponse:
    if not can_use_worklist(request.user):
        raise PermissionDenied("Your role does not give access to the follow-up worklist.")
    return render(request, "callbacks/worklist/worklist.html", {"role": access.role_of(request.user)})

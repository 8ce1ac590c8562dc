"""The simulator answers requests from this machine only.

Its pages list patients' phone numbers and every SMS the platform "sent", and let anyone type as a patient;
the web chat demo page's `?sign_as=` signs in as any patient record. Fine for a demo on the laptop running
it, never for whoever else can reach the port. REMOTE_ADDR is what Daphne saw (or, with --proxy-headers,
what a proxy said); settings refuse to start with the simulator on behind a proxy or with ALLOWED_HOSTS
beyond loopback, unless SIMULATOR_ALLOW_REMOTE=true, which also lets these pages answer other machines.
"""

from __future__ import annotations

import functools
import ipaddress
from collections.abc import Callable
from typing import Any

from django.conf import settings
from django.http import HttpRequest, HttpResponse, HttpResponseBase
from django.utils.translation import gettext as _


def is_loopback_address(address: str) -> bool:
    """127.0.0.0/8, ::1, or ::ffff:127.x (an IPv4 loopback client on a dual-stack socket)."""
    try:
        ip = ipaddress.ip_address(address.strip())
    except ValueError:
        return False
    if isinstance(ip, ipaddress.IPv6Address) and ip.ipv4_mapped is not None:
        ip = ip.ipv4_mapped
    return ip.is_loopback


def from_this_machine(request: HttpRequest) -> bool:
    if settings.SIMULATOR_ALLOW_REMOTE:
        return True
    return is_loopback_address(str(request.META.get("REMOTE_ADDR") or ""))


def loopback_only(view: Callable[..., HttpResponseBase]) -> Callable[..., HttpResponseBase]:
    @functools.wraps(view)
    def guarded(request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if not from_this_machine(request):
            return HttpResponse(
                _("The patient-phone simulator answers only on the machine that runs it."),
                status=403,
                content_type="text/plain; charset=utf-8",
            )
        return view(request, *args, **kwargs)

    return guarded

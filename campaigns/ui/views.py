"""Marketer pages: each is one template whose ES module talks to /api/v1/campaigns/.

The pages carry no patient data; the API behind them decides what a role may read and write. The only
server-side read here is the list of SMS inboxes a campaign can send from (marketers cannot list inboxes
through the inbox API, which is about conversations).
"""

from __future__ import annotations

from typing import Any

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, render

from campaigns.models import Campaign, Segment
from contactcenter import access
from contactcenter.models import ChannelType, Inbox, Role

CAMPAIGN_ROLES = frozenset({Role.MARKETER, Role.ADMIN, Role.SUPERVISOR})


def _require_campaign_role(request: HttpRequest) -> str:
    role = access.role_of(request.user)
    if role not in CAMPAIGN_ROLES:
        raise PermissionDenied("Your role does not give access to campaigns.")
    return str(role)


def _page(
    request: HttpRequest, template: str, *, page_data: dict[str, Any] | None = None, **context: Any
) -> HttpResponse:
    """Render a page; `page_data` reaches its ES module as JSON (json_script), never as markup."""
    role = _require_campaign_role(request)
    return render(request, f"campaigns/ui/{template}", {"role": role, "page_data": page_data or {}, **context})


def _sending_inboxes() -> list[dict[str, Any]]:
    inboxes = Inbox.objects.filter(is_active=True, channel_type__in=[ChannelType.SMS, ChannelType.SIMULATOR]).order_by(
        "name"
    )
    return [{"id": inbox.pk, "name": inbox.name} for inbox in inboxes]


@login_required
def campaign_list(request: HttpRequest) -> HttpResponse:
    return _page(request, "list.html")


@login_required
def campaign_new(request: HttpRequest) -> HttpResponse:
    segment = request.GET.get("segment", "")
    page_data = {
        "campaign_id": None,
        # ASCII digits within bigint: "²" is a digit to isdigit() but not to int(), and a huge id is no segment.
        "initial_segment": int(segment) if segment.isascii() and segment.isdigit() and len(segment) <= 18 else None,
        "inboxes": _sending_inboxes(),
    }
    return _page(request, "composer.html", page_data=page_data, campaign_id=None)


@login_required
def campaign_edit(request: HttpRequest, pk: int) -> HttpResponse:
    _require_campaign_role(request)
    campaign = get_object_or_404(Campaign, pk=pk)
    page_data = {"campaign_id": campaign.pk, "initial_segment": None, "inboxes": _sending_inboxes()}
    return _page(request, "composer.html", page_data=page_data, campaign_id=campaign.pk)


@login_required
def campaign_detail(request: HttpRequest, pk: int) -> HttpResponse:
    _require_campaign_role(request)
    campaign = get_object_or_404(Campaign, pk=pk)
    return _page(request, "detail.html", page_data={"campaign_id": campaign.pk}, campaign=campaign)


@login_required
def segment_list(request: HttpRequest) -> HttpResponse:
    return _page(request, "segments.html")


@login_required
def segment_new(request: HttpRequest) -> HttpResponse:
    return _page(request, "segment_builder.html", page_data={"segment_id": None}, segment_id=None)


@login_required
def segment_edit(request: HttpRequest, pk: int) -> HttpResponse:
    _require_campaign_role(request)
    segment = get_object_or_404(Segment, pk=pk)
    return _page(request, "segment_builder.html", page_data={"segment_id": segment.pk}, segment_id=segment.pk)

"""The patient's phone for the demo: type as a patient, see what the hospital sent back."""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.views.decorators.http import require_GET, require_POST

from channels_adapters.base import AdapterError
from channels_adapters.simulator.adapter import SimulatorAdapter
from channels_adapters.simulator.models import SimulatedDelivery
from contactcenter.actions.inbound import receive_inbound
from contactcenter.identities import normalize_phone
from contactcenter.models import Inbox, Message, MessageDirection, PatientIdentity


def _inboxes() -> list[Inbox]:
    return list(Inbox.objects.filter(channel_type=SimulatorAdapter.channel_type, is_active=True))


@require_GET
def phone(request: HttpRequest) -> HttpResponse:
    return render(request, "simulator/phone.html", {"inboxes": _inboxes()})


@require_POST
def patient_sends(request: HttpRequest) -> JsonResponse:
    inbox = Inbox.objects.filter(pk=request.POST.get("inbox") or 0, channel_type=SimulatorAdapter.channel_type).first()
    if inbox is None:
        return JsonResponse({"error": "Choose a simulator inbox."}, status=400)
    try:
        record = SimulatorAdapter().parse(inbox, request.POST.dict())
    except AdapterError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    result = receive_inbound(record)
    return JsonResponse({"message_id": result.message.pk, "conversation_id": result.conversation.pk})


@require_GET
def threads(request: HttpRequest) -> JsonResponse:
    """Both sides of one phone's thread with the hospital, oldest first."""
    try:
        number = normalize_phone(request.GET.get("phone", ""))
    except Exception as exc:  # ValidationError: tell the simulator user plainly
        return JsonResponse({"error": str(getattr(exc, "messages", [exc])[0])}, status=400)
    patient_ids = PatientIdentity.objects.filter(kind="phone", value=number).values_list("patient_id", flat=True)
    inbound = Message.objects.filter(
        conversation__patient_id__in=patient_ids,
        direction=MessageDirection.INBOUND,
        inbox__channel_type=SimulatorAdapter.channel_type,
    ).values("body", "created_at")
    outbound = SimulatedDelivery.objects.filter(to=number).values("body", "created_at", "provider_message_id")
    statuses = dict(
        Message.objects.filter(provider_message_id__in=[o["provider_message_id"] for o in outbound]).values_list(
            "provider_message_id", "status"
        )
    )
    rows = [{"from": "patient", "body": m["body"], "at": m["created_at"].isoformat()} for m in inbound] + [
        {
            "from": "hospital",
            "body": o["body"],
            "at": o["created_at"].isoformat(),
            "status": statuses.get(o["provider_message_id"], ""),
        }
        for o in outbound
    ]
    rows.sort(key=lambda r: r["at"])
    return JsonResponse({"phone": number, "messages": rows})

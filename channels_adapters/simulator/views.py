"""The patient's phone for the demo: type as a patient, see what the hospital sent back.

For SMS inboxes (Twilio in simulator mode) a message typed here is posted as a correctly signed
Twilio webhook to the platform's own inbound URL, so the demo runs the production path end to end.
"""

from __future__ import annotations

import secrets
from urllib.error import HTTPError, URLError

from django.conf import settings
from django.core.exceptions import ValidationError
from django.db.models import Max
from django.http import HttpRequest, HttpResponse, JsonResponse
from django.shortcuts import render
from django.urls import reverse
from django.views.decorators.http import require_GET, require_POST

from channels_adapters.base import AdapterError
from channels_adapters.simulator.adapter import SimulatorAdapter
from channels_adapters.simulator.models import SimulatedDelivery
from contactcenter.actions.inbound import receive_inbound
from contactcenter.boundary import storable
from contactcenter.identities import normalize_phone
from contactcenter.models import ChannelType, Inbox, Message, MessageDirection, PatientIdentity

PHONE_CHANNELS = (ChannelType.SIMULATOR, ChannelType.SMS)


def _inboxes() -> list[Inbox]:
    channels = PHONE_CHANNELS if settings.TWILIO_TRANSPORT == "simulator" else (ChannelType.SIMULATOR,)
    return list(Inbox.objects.filter(channel_type__in=channels, is_active=True).order_by("name"))


@require_GET
def phone(request: HttpRequest) -> HttpResponse:
    return render(request, "simulator/phone.html", {"inboxes": _inboxes()})


@require_POST
def patient_sends(request: HttpRequest) -> JsonResponse:
    inbox = next((i for i in _inboxes() if str(i.pk) == request.POST.get("inbox")), None)
    if inbox is None:
        return JsonResponse({"error": "Choose an inbox."}, status=400)
    if inbox.channel_type == ChannelType.SMS:
        return _post_as_twilio(request, inbox)
    try:
        record = SimulatorAdapter().parse(inbox, request.POST.dict())
    except AdapterError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    result = receive_inbound(record)
    return JsonResponse({"message_id": result.message.pk, "conversation_id": result.conversation.pk})


def _post_as_twilio(request: HttpRequest, inbox: Inbox) -> JsonResponse:
    from channels_adapters.sms.models import SenderKind
    from channels_adapters.twilio.signing import auth_token_for, public_url
    from channels_adapters.twilio.transport import sign_and_post

    try:
        sender = normalize_phone(request.POST.get("from", ""))
    except ValidationError as exc:
        return JsonResponse({"error": exc.messages[0]}, status=400)
    body = request.POST.get("body", "").strip()
    if not body:
        return JsonResponse({"error": "Type a message first."}, status=400)
    owned = {s.kind: s.value for s in inbox.twilio_senders.all()}
    sid = "SM" + secrets.token_hex(16)
    params = {
        "ToCountry": "CN",
        "SmsMessageSid": sid,
        "NumMedia": "0",
        "SmsSid": sid,
        "SmsStatus": "received",
        "Body": body,
        "FromCountry": "CN",
        "NumSegments": "1",
        "MessageSid": sid,
        "AccountSid": str(inbox.config.get("account_sid", "")),
        "From": sender,
        "ApiVersion": "2010-04-01",
        "To": owned.get(SenderKind.NUMBER, ""),
    }
    if SenderKind.MESSAGING_SERVICE in owned:
        params["MessagingServiceSid"] = owned[SenderKind.MESSAGING_SERVICE]
    try:
        status = sign_and_post(public_url(reverse("twilio-sms-inbound")), params, auth_token_for(inbox))
    except AdapterError as exc:
        return JsonResponse({"error": exc.message}, status=400)
    except HTTPError as exc:
        return JsonResponse({"error": f"The platform answered {exc.code}."}, status=502)
    except URLError:
        return JsonResponse({"error": "PUBLIC_BASE_URL does not reach this server."}, status=502)
    return JsonResponse({"message_sid": sid, "webhook_status": status})


@require_GET
def threads(request: HttpRequest) -> JsonResponse:
    """Both sides of one phone's thread with the hospital, oldest first."""
    try:
        number = normalize_phone(request.GET.get("phone", ""))
    except ValidationError as exc:
        return JsonResponse({"error": exc.messages[0]}, status=400)
    patient_ids = PatientIdentity.objects.filter(kind="phone", value=number).values_list("patient_id", flat=True)
    inbound = Message.objects.filter(
        conversation__patient_id__in=list(patient_ids),
        direction=MessageDirection.INBOUND,
        inbox__channel_type__in=PHONE_CHANNELS,
    ).values("body", "created_at", "inbox__name")
    outbound = list(SimulatedDelivery.objects.filter(to=number).values("body", "created_at", "provider_message_id"))
    statuses = dict(
        Message.objects.filter(provider_message_id__in=[o["provider_message_id"] for o in outbound]).values_list(
            "provider_message_id", "status"
        )
    )
    rows = [
        {"from": "patient", "body": m["body"], "at": m["created_at"].isoformat(), "inbox": m["inbox__name"]}
        for m in inbound
    ]
    rows += [
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


@require_GET
def phones(request: HttpRequest) -> JsonResponse:
    """The simulated phones with any traffic, most recent first: the phone page's thread list."""
    recent = SimulatedDelivery.objects.values("to").annotate(last=Max("created_at")).order_by("-last")[:30]
    return JsonResponse({"phones": [{"phone": r["to"], "last_at": r["last"].isoformat()} for r in recent]})


MAILBOX_SIZE = 50


@require_GET
def mailbox(request: HttpRequest) -> HttpResponse:
    """The patient's mailbox for the demo: the emails the platform 'sent', newest first, as they would
    have reached the SMTP server. ?to= narrows it to one address."""
    from channels_adapters.simulator.models import SimulatedEmail

    # A NUL (%00) would reach PostgreSQL and fail there; as U+FFFD it simply matches no address.
    to = storable(request.GET.get("to", "").strip()[:254])
    emails = SimulatedEmail.objects.order_by("-created_at", "-id")
    if to:
        emails = emails.filter(to__iexact=to)
    return render(request, "simulator/mailbox.html", {"emails": list(emails[:MAILBOX_SIZE]), "to": to})

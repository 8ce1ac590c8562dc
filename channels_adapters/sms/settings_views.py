"""Admin pages for SMS inboxes: configure the Twilio account and numbers, copy the webhook URLs."""

from __future__ import annotations

import os

from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied, ValidationError
from django.http import HttpRequest, HttpResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse

from channels_adapters.sms.forms import SmsInboxForm
from channels_adapters.sms.models import SenderKind, TwilioSender
from channels_adapters.sms.setup import save_sms_inbox
from channels_adapters.twilio.signing import DEFAULT_TOKEN_ENV, webhook_url
from contactcenter import access
from contactcenter.models import ChannelType, Inbox


def _admin_only(request: HttpRequest) -> None:
    if not access.is_admin(request.user):
        raise PermissionDenied("Only admins configure inboxes.")


def webhook_urls() -> dict[str, str]:
    return {
        "inbound": webhook_url(reverse("twilio-sms-inbound")),
        "status": webhook_url(reverse("twilio-sms-status")),
    }


@login_required
def edit_sms_inbox(request: HttpRequest, inbox_id: int | None = None) -> HttpResponse:
    _admin_only(request)
    inbox = get_object_or_404(Inbox, pk=inbox_id, channel_type=ChannelType.SMS) if inbox_id else None
    if request.method == "POST":
        form = SmsInboxForm(request.POST)
        if form.is_valid():
            try:
                inbox = save_sms_inbox(inbox=inbox, settings=form.to_settings())
            except ValidationError as exc:
                for field, errors in exc.message_dict.items():
                    form.add_error(field if field in form.fields else None, errors)
            else:
                return redirect("sms-inbox-edit", inbox_id=inbox.pk)
    elif inbox is not None:
        senders = TwilioSender.objects.filter(inbox=inbox)
        form = SmsInboxForm(
            initial={
                "name": inbox.name,
                "team": inbox.team_id,
                "account_sid": inbox.config.get("account_sid", ""),
                "auth_token_env": inbox.config.get("auth_token_env", DEFAULT_TOKEN_ENV),
                "phone_numbers": "\n".join(s.value for s in senders if s.kind == SenderKind.NUMBER),
                "messaging_service_sid": next((s.value for s in senders if s.kind == SenderKind.MESSAGING_SERVICE), ""),
                "auto_assign": inbox.auto_assign,
            }
        )
    else:
        form = SmsInboxForm()
    token_env = (inbox.config.get("auth_token_env") if inbox else None) or DEFAULT_TOKEN_ENV
    return render(
        request,
        "sms/inbox_form.html",
        {
            "form": form,
            "inbox": inbox,
            "urls": webhook_urls(),
            "token_env": token_env,
            "token_set": bool(os.environ.get(token_env)),
        },
    )

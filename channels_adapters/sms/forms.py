from __future__ import annotations

import re
from typing import Any

from django import forms
from django.core.exceptions import ValidationError
from django.utils.translation import gettext_lazy as _

from channels_adapters.sms.setup import SmsInboxSettings
from contactcenter.identities import normalize_phone
from contactcenter.models import Team

_SID = re.compile(r"^AC[0-9a-fA-F]{32}$")
_SERVICE = re.compile(r"^MG[0-9a-fA-F]{32}$")
_ENV = re.compile(r"^[A-Z][A-Z0-9_]{1,63}$")


class SmsInboxForm(forms.Form):
    name = forms.CharField(label=_("Name"), max_length=120)
    team = forms.ModelChoiceField(label=_("Team"), queryset=Team.objects.all())
    account_sid = forms.CharField(label=_("Twilio account SID"), max_length=34, help_text="AC…")
    auth_token_env = forms.CharField(
        label=_("Auth token environment variable"),
        initial="TWILIO_AUTH_TOKEN",
        help_text=_("The token itself is never stored; set this variable in the servers' environment."),
    )
    phone_numbers = forms.CharField(
        label=_("Phone numbers"),
        required=False,
        widget=forms.Textarea(attrs={"rows": 3}),
        help_text=_("One per line, in any format; stored as E.164."),
    )
    messaging_service_sid = forms.CharField(
        label=_("Messaging Service SID"),
        required=False,
        max_length=34,
        help_text=_("MG…; when set, replies go out through the service's number pool."),
    )
    auto_assign = forms.BooleanField(label=_("Assign new conversations round robin"), required=False, initial=True)

    def clean_account_sid(self) -> str:
        value = self.cleaned_data["account_sid"].strip()
        if not _SID.match(value):
            raise ValidationError(_("An account SID is AC followed by 32 hexadecimal characters."))
        return value

    def clean_auth_token_env(self) -> str:
        value = self.cleaned_data["auth_token_env"].strip()
        if not _ENV.match(value):
            raise ValidationError(_("Use an environment variable name such as TWILIO_AUTH_TOKEN."))
        return value

    def clean_phone_numbers(self) -> list[str]:
        numbers = []
        for line in re.split(r"[\n,;]+", self.cleaned_data["phone_numbers"]):
            if line.strip():
                try:
                    numbers.append(normalize_phone(line))
                except ValidationError as exc:
                    raise ValidationError(exc.messages) from None
        return list(dict.fromkeys(numbers))

    def clean_messaging_service_sid(self) -> str:
        value = self.cleaned_data["messaging_service_sid"].strip()
        if value and not _SERVICE.match(value):
            raise ValidationError(_("A Messaging Service SID is MG followed by 32 hexadecimal characters."))
        return value

    def clean(self) -> dict[str, Any]:
        data = super().clean() or {}
        if not self.errors and not data.get("phone_numbers") and not data.get("messaging_service_sid"):
            raise ValidationError(_("Give at least one phone number or a Messaging Service SID."))
        return data

    def to_settings(self) -> SmsInboxSettings:
        d = self.cleaned_data
        return SmsInboxSettings(
            name=d["name"],
            team=d["team"],
            account_sid=d["account_sid"],
            auth_token_env=d["auth_token_env"],
            phone_numbers=d["phone_numbers"],
            messaging_service_sid=d["messaging_service_sid"],
            auto_assign=d["auto_assign"],
        )

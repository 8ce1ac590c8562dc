"""Normalizing the ways a patient is recognised, so "+86 138 0013 8000", "13800138000" and
"0086-138-0013-8000" are one identity and one patient."""

from __future__ import annotations

import re

import phonenumbers
from django.conf import settings
from django.core.exceptions import ValidationError
from django.core.validators import validate_email
from django.utils.translation import gettext as _

from contactcenter.boundary import has_control_characters
from contactcenter.models import IdentityKind


def normalize_phone(raw: str, *, region: str | None = None) -> str:
    """E.164 or ValidationError with a message a person can act on."""
    text = (raw or "").strip()
    if not text:
        raise ValidationError(_("A phone number is required."), code="phone_empty")
    try:
        number = phonenumbers.parse(text, region or settings.PHONE_DEFAULT_REGION)
    except phonenumbers.NumberParseException:
        raise ValidationError(
            _("“%(value)s” is not a phone number."), code="phone_unparseable", params={"value": text[:40]}
        ) from None
    if not phonenumbers.is_valid_number(number):
        raise ValidationError(
            _("“%(value)s” is not a valid phone number."), code="phone_invalid", params={"value": text[:40]}
        )
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalize_email(raw: str) -> str:
    text = (raw or "").strip()
    # Django's validator lets a lone surrogate through in the domain; PostgreSQL would refuse to store it.
    if has_control_characters(text):
        raise ValidationError(_("Enter a valid email address."), code="invalid")
    validate_email(text)
    local, _sep, domain = text.rpartition("@")
    # Mailbox names are case-sensitive in theory and never in hospitals' practice.
    return f"{local.lower()}@{domain.lower()}"


_MRN_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9\-_.]{0,59}$")


def normalize_mrn(raw: str) -> str:
    text = (raw or "").strip().upper()
    if not _MRN_RE.match(text):
        raise ValidationError(
            _("“%(value)s” is not a medical record number."), code="mrn_invalid", params={"value": text[:40]}
        )
    return text


def normalize_visitor(raw: str) -> str:
    text = (raw or "").strip()
    if not (8 <= len(text) <= 128) or has_control_characters(text):
        raise ValidationError(_("Invalid web visitor id."), code="visitor_invalid")
    return text


def normalize_identity(kind: str, raw: str) -> str:
    if kind == IdentityKind.PHONE:
        return normalize_phone(raw)
    if kind == IdentityKind.EMAIL:
        return normalize_email(raw)
    if kind == IdentityKind.MRN:
        return normalize_mrn(raw)
    if kind == IdentityKind.VISITOR:
        return normalize_visitor(raw)
    raise ValidationError(_("Unknown identity kind “%(kind)s”."), code="identity_kind", params={"kind": kind})

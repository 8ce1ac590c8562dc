"""Signed visitor tokens (kept in the browser's local storage) and the portal's identity HMAC.

A visitor token only says "this browser is visitor V of inbox I"; it is signed with SECRET_KEY so a
page cannot invent one. The identity HMAC is how a hospital portal vouches for its signed-in patient:
the portal computes HMAC-SHA256(inbox secret, user id) on its server and puts both on the script tag.
Without a valid HMAC a visitor never claims an existing patient record.
"""

from __future__ import annotations

import hashlib
import hmac
import os
from dataclasses import dataclass

from django.core import signing
from django.core.exceptions import ValidationError

from contactcenter.boundary import has_lone_surrogate
from contactcenter.identities import normalize_identity
from contactcenter.models import IdentityKind, Inbox

_SALT = "webchat.visitor"


def sign_visitor(*, inbox: Inbox, visitor_id: str) -> str:
    return signing.dumps({"i": inbox.pk, "v": visitor_id}, salt=_SALT, compress=True)


def unsign_visitor(*, inbox: Inbox, token: object) -> str | None:
    """The visitor id behind a token for this inbox, or None when it is forged, garbled or another inbox's."""
    # Tokens we issue are ASCII; anything else (a lone surrogate from a JSON escape) is not one of ours.
    if not isinstance(token, str) or len(token) > 400 or not token.isascii():
        return None
    try:
        data = signing.loads(token, salt=_SALT)
    except signing.BadSignature:
        return None
    if not isinstance(data, dict) or data.get("i") != inbox.pk or not isinstance(data.get("v"), str):
        return None
    return data["v"]


@dataclass(frozen=True)
class PortalIdentity:
    kind: str
    value: str  # normalized


def identity_secret(inbox: Inbox) -> str:
    name = str(inbox.config.get("identity_secret_env") or "")
    return os.environ.get(name, "") if name else ""


def identity_hash(secret: str, user_id: str) -> str:
    """What the portal computes, server-side: hex HMAC-SHA256 of the user id with the inbox secret."""
    return hmac.new(secret.encode(), user_id.encode(), hashlib.sha256).hexdigest()


def verify_portal_identity(*, inbox: Inbox, user_id: object, user_hash: object) -> PortalIdentity:
    """The patient identity the portal vouched for, or ValidationError. No secret configured: refused."""
    secret = identity_secret(inbox)
    if not secret or not isinstance(user_id, str) or not isinstance(user_hash, str) or len(user_id) > 128:
        raise ValidationError("identity not verified", code="identity_refused")
    # A hex HMAC is ASCII (compare_digest refuses other text), and a lone surrogate cannot be UTF-8 encoded.
    if not user_hash.isascii() or has_lone_surrogate(user_id):
        raise ValidationError("identity not verified", code="identity_refused")
    if not hmac.compare_digest(identity_hash(secret, user_id), user_hash.lower()):
        raise ValidationError("identity not verified", code="identity_refused")
    kind = str(inbox.config.get("identity_kind") or IdentityKind.MRN)
    try:
        return PortalIdentity(kind=kind, value=normalize_identity(kind, user_id))
    except ValidationError:
        raise ValidationError("identity not verified", code="identity_refused") from None

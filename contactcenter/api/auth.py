"""How API callers prove who they are: tokens that expire, and who may read the API's own description."""

from __future__ import annotations

import datetime as dt
from typing import Any

from django.conf import settings
from django.utils import timezone
from rest_framework import exceptions, permissions
from rest_framework.authentication import TokenAuthentication
from rest_framework.authtoken.models import Token
from rest_framework.request import Request

from contactcenter import access


def token_expired(token: Token, *, now: dt.datetime | None = None) -> bool:
    return token.created + dt.timedelta(days=settings.API_TOKEN_TTL_DAYS) <= (now or timezone.now())


class ExpiringTokenAuthentication(TokenAuthentication):
    """DRF's `Authorization: Token <key>`, refused once the token is API_TOKEN_TTL_DAYS old.

    The age is the token's own `created`; a leaked token stops working by itself, and an integration renews
    by having an admin make a new one (Django admin → Tokens). Deleting tokens when a password changes or an
    account is deactivated is done where that happens (contactcenter.actions).
    """

    def authenticate_credentials(self, key: str) -> tuple[Any, Token]:
        user, token = super().authenticate_credentials(key)
        if token_expired(token):
            raise exceptions.AuthenticationFailed("This token has expired. Ask an administrator for a new one.")
        return user, token


class IsStaff(permissions.BasePermission):
    """Signed in with a staff profile, whatever the role: the OpenAPI schema and its Swagger UI."""

    message = "Sign in with a staff account to read the API documentation."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.profile_of(request.user) is not None

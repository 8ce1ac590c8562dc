"""What every API view shares: who is asking, through what, and the permission classes by role."""

from __future__ import annotations

from typing import Any

from rest_framework import permissions, serializers
from rest_framework.exceptions import PermissionDenied
from rest_framework.request import Request

from contactcenter import access
from contactcenter.boundary import has_lone_surrogate


def client_ip(request: Request) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def staff_of(request: Request) -> Any:
    """The authenticated staff user; the permission classes have already refused anyone else."""
    if not request.user.is_authenticated:
        raise PermissionDenied("Sign in first.")
    return request.user


def via_of(request: Request) -> str:
    return "api" if request.auth is not None else "ui"


class InboxStaff(permissions.BasePermission):
    """Roles that work conversations and patient profiles; marketers are refused here."""

    message = "Your role does not give access to conversations or patient profiles."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.can_use_inbox(request.user)


class SupervisorsOnly(permissions.BasePermission):
    message = "Only supervisors and admins may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.sees_everything(request.user)


class AdminsOnly(permissions.BasePermission):
    message = "Only admins may do this."

    def has_permission(self, request: Request, view: Any) -> bool:
        return access.is_admin(request.user)


TEXT_PARAM_MAX = 200


def text_param(request: Request, name: str, *, max_length: int = TEXT_PARAM_MAX) -> str:
    """A free-text query parameter (a search, a username). PostgreSQL cannot compare text holding NUL or a lone
    surrogate, and no search needs pages of text: each is a 400 naming the parameter, not a 500 or a slow scan."""
    value = request.query_params.get(name, "")
    if "\x00" in value:
        raise serializers.ValidationError({name: ["Null characters are not allowed."]})
    if has_lone_surrogate(value):
        raise serializers.ValidationError({name: ["Lone UTF-16 surrogates are not allowed."]})
    if len(value) > max_length:
        raise serializers.ValidationError({name: [f"At most {max_length} characters."]})
    return value


def valid_input(serializer_class: type[serializers.Serializer[Any]], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)

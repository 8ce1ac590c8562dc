"""The audit log's one writer. Every staff read of patient data, and every change to who may read it, lands here.

Views call audit_read() / audit_list_read() with the request they served: who, through what (`api` for a
token, `ui` for a session) and from where come from the request, so no view builds an entry by hand.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any, Protocol

from django.contrib.auth.models import AnonymousUser, User

from contactcenter.models import AuditLogEntry


def record_audit(
    *,
    actor: User | AnonymousUser | None,
    action: str,
    object_type: str,
    object_id: object,
    via: str,
    patient_id: int | None = None,
    ip_address: str | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """Append who read or changed which patient's data. Reads are audited as they are served."""
    return AuditLogEntry.objects.create(
        actor=actor if actor is not None and actor.is_authenticated else None,
        action=action,
        patient_id=patient_id,
        object_type=object_type,
        object_id=str(object_id),
        via=via,
        ip_address=ip_address,
        detail=detail or {},
    )


class ServedRequest(Protocol):
    """A Django HttpRequest or a DRF Request: whoever asked, and the WSGI/ASGI environ it came with."""

    user: Any
    META: Any


def via_of(request: ServedRequest) -> str:
    """`api` when a DRF token authenticated the request, `ui` for a browser session (plain Django views too)."""
    return "api" if getattr(request, "auth", None) is not None else "ui"


def ip_of(request: ServedRequest) -> str | None:
    return request.META.get("REMOTE_ADDR") or None


def audit_read(
    request: ServedRequest,
    *,
    action: str,
    object_type: str,
    object_id: object,
    patient_id: int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """One record read (a profile, a thread, a task, a file) by the request's user."""
    return record_audit(
        actor=request.user,
        action=action,
        patient_id=patient_id,
        object_type=object_type,
        object_id=object_id,
        via=via_of(request),
        ip_address=ip_of(request),
        detail=detail,
    )


def audit_list_read(
    request: ServedRequest,
    *,
    action: str,
    object_type: str,
    rows: Iterable[tuple[int, int | None]],
    detail: dict[str, Any] | None = None,
) -> AuditLogEntry:
    """One entry for a whole page of a list, not one per row: `rows` are the (object id, patient id) pairs shown.

    The entry names the page's objects and patients in its detail, so "who saw this patient" is still answered
    for lists, at the cost of one insert per request. An empty page is audited too: the query itself was made.
    """
    shown = list(rows)
    patient_ids = sorted({patient for _, patient in shown if patient is not None})
    return audit_read(
        request,
        action=action,
        object_type=object_type,
        object_id="*",
        detail={
            **(detail or {}),
            "count": len(shown),
            "ids": [object_id for object_id, _ in shown],
            "patient_ids": patient_ids,
        },
    )

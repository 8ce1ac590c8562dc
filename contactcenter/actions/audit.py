from __future__ import annotations

from typing import Any

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

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from django.contrib.auth.models import User
from django.core.exceptions import ValidationError
from django.db import IntegrityError, transaction

from contactcenter import events
from contactcenter.actions.audit import record_audit
from contactcenter.actions.consent import record_consent
from contactcenter.actions.conversations import publish_conversation_update
from contactcenter.identities import normalize_identity
from contactcenter.models import (
    AuditAction,
    Consent,
    ConsentChange,
    ConsentSource,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    Patient,
    PatientIdentity,
    Visit,
)

logger = logging.getLogger(__name__)

PATIENT_FIELDS = (
    "name",
    "given_name",
    "gender",
    "birth_date",
    "region",
    "city",
    "language",
    "time_zone",
    "vip_tier",
    "custom_attributes",
)


def live_patient(patient: Patient) -> Patient:
    """Follow merge tombstones to the surviving record."""
    seen = set()
    while patient.merged_into_id is not None and patient.pk not in seen:
        seen.add(patient.pk)
        patient = Patient.objects.get(pk=patient.merged_into_id)
    return patient


def find_patient_by_identity(*, kind: str, value: str) -> Patient | None:
    """`value` must already be normalized."""
    identity = PatientIdentity.objects.select_related("patient").filter(kind=kind, value=value).first()
    return live_patient(identity.patient) if identity else None


@dataclass(frozen=True)
class ResolvedPatient:
    patient: Patient
    created: bool


def resolve_patient(
    *, kind: str, value: str, name: str = "", also_known_as: tuple[tuple[str, str], ...] = ()
) -> ResolvedPatient:
    """Find the patient behind a normalized identity or create one.

    Only exact identities match: names never join two records, so two patients never merge by
    accident. Concurrent first messages from one new number race on the identity's unique
    constraint; the loser rolls back its savepoint and takes the winner's patient.
    """
    existing = find_patient_by_identity(kind=kind, value=value)
    if existing is not None:
        return ResolvedPatient(existing, created=False)
    try:
        with transaction.atomic():
            patient = Patient.objects.create(name=name[:200])
            PatientIdentity.objects.create(patient=patient, kind=kind, value=value)
    except IntegrityError:
        winner = find_patient_by_identity(kind=kind, value=value)
        if winner is None:
            raise
        return ResolvedPatient(winner, created=False)
    for extra_kind, extra_value in also_known_as:
        _attach_identity_if_free(patient=patient, kind=extra_kind, value=extra_value)
    return ResolvedPatient(patient, created=True)


def _attach_identity_if_free(*, patient: Patient, kind: str, value: str) -> None:
    """Channel-reported extra identities never steal one that belongs to someone else."""
    if PatientIdentity.objects.filter(kind=kind, value=value).exists():
        return
    try:
        with transaction.atomic():
            PatientIdentity.objects.create(patient=patient, kind=kind, value=value)
    except IntegrityError:
        pass


def check_identities(raw: list[dict[str, str]]) -> list[tuple[str, str]]:
    """Validate and normalize [{kind, value}], reporting problems per item."""
    normalized: list[tuple[str, str]] = []
    errors: dict[str, Any] = {}
    for index, item in enumerate(raw):
        try:
            normalized.append((item["kind"], normalize_identity(item["kind"], item["value"])))
        except ValidationError as exc:
            errors[str(index)] = exc.messages
    if errors:
        raise ValidationError(errors)
    return normalized


@transaction.atomic
def create_patient(
    *, fields: dict[str, Any], identities: list[tuple[str, str]], tags: list[str] | None = None
) -> Patient:
    """`identities` must come from check_identities. A taken identity is a validation error, not a merge."""
    for kind, value in identities:
        if PatientIdentity.objects.filter(kind=kind, value=value).exists():
            raise ValidationError({"identities": [f"{kind} {value} already belongs to another patient."]})
    patient = Patient.objects.create(**{k: v for k, v in fields.items() if k in PATIENT_FIELDS})
    try:
        with transaction.atomic():
            PatientIdentity.objects.bulk_create(
                PatientIdentity(patient=patient, kind=k, value=v) for k, v in identities
            )
    except IntegrityError:
        raise ValidationError(
            {"identities": ["An identity is duplicated or already belongs to another patient."]}
        ) from None
    if tags:
        set_patient_tags(patient=patient, tags=tags)
    return patient


@transaction.atomic
def update_patient(*, patient: Patient, fields: dict[str, Any], actor: User | None, via: str) -> Patient:
    changed = [k for k, v in fields.items() if k in PATIENT_FIELDS and getattr(patient, k) != v]
    for key in changed:
        setattr(patient, key, fields[key])
    if changed:
        patient.save(update_fields=[*changed, "updated_at"])
        record_audit(
            actor=actor,
            action=AuditAction.UPDATE_PATIENT,
            patient_id=patient.pk,
            object_type="patient",
            object_id=patient.pk,
            via=via,
            detail={"fields": changed},
        )
        events.record(events.PatientUpdated(patient_id=patient.pk), events.Audience())
    return patient


@transaction.atomic
def add_identity(*, patient: Patient, kind: str, value: str) -> PatientIdentity:
    """`value` must be normalized. Raises ValidationError when another patient owns it."""
    owner = PatientIdentity.objects.filter(kind=kind, value=value).first()
    if owner is not None:
        if owner.patient_id == patient.pk:
            return owner
        raise ValidationError({"value": [f"This {kind} already belongs to another patient; merge the two instead."]})
    return PatientIdentity.objects.create(patient=patient, kind=kind, value=value)


def set_patient_tags(*, patient: Patient, tags: list[str]) -> None:
    from contactcenter.models import Tag

    objs = [Tag.objects.get_or_create(name=name.strip()[:60])[0] for name in tags if name.strip()]
    patient.tags.set(objs)


@transaction.atomic
def _merge_consent(*, keep: Patient, drop: Patient, actor: User | None) -> dict[str, str]:
    """Carry consent over; for each purpose an opt-out on either record wins.

    A merge may be a mistake that is later undone by hand, and a STOP the patient sent must never be
    lost to it: the stricter status is the one kept. The patient can always opt back in.
    """
    dropped = {c.purpose: c.status for c in Consent.objects.filter(patient=drop)}
    kept = {c.purpose: c.status for c in Consent.objects.filter(patient=keep)}
    ConsentChange.objects.filter(patient=drop).update(patient=keep)
    outcome: dict[str, str] = {}
    for purpose, status in dropped.items():
        if kept.get(purpose) in (None, status) or status == ConsentStatus.OPTED_OUT:
            record_consent(patient=keep, purpose=purpose, status=status, source=ConsentSource.AGENT, actor=actor)
        outcome[purpose] = status if status == ConsentStatus.OPTED_OUT else kept.get(purpose, status)
    Consent.objects.filter(patient=drop).delete()
    return outcome


def merge_patients(*, keep: Patient, drop: Patient, actor: User | None, via: str) -> Patient:
    """Move identities, conversations and visits from `drop` onto `keep`; `drop` becomes a tombstone.

    Two live conversations on the same inbox would break the one-live-thread rule, so the dropped
    patient's live thread there is resolved first and stays in history.
    """
    if keep.pk == drop.pk:
        raise ValidationError("A patient cannot be merged with itself.")
    keep, drop = (Patient.objects.select_for_update().get(pk=p.pk) for p in (keep, drop))
    if keep.merged_into_id or drop.merged_into_id:
        raise ValidationError("One of these patients was already merged.")
    moved_identities = list(drop.identities.values_list("kind", flat=True))
    drop.identities.update(patient=keep)
    live_inboxes = set(
        keep.conversations.exclude(status=ConversationStatus.RESOLVED).values_list("inbox_id", flat=True)
    )
    clashing = drop.conversations.exclude(status=ConversationStatus.RESOLVED).filter(inbox_id__in=live_inboxes)
    clashing_ids = list(clashing.values_list("id", flat=True))
    from django.utils import timezone

    clashing.update(status=ConversationStatus.RESOLVED, resolved_at=timezone.now())
    conversation_ids = list(drop.conversations.values_list("id", flat=True))
    Conversation.objects.filter(pk__in=conversation_ids).update(patient=keep)
    visit_count = Visit.objects.filter(patient=drop).update(patient=keep)
    keep.tags.add(*drop.tags.all())
    consent_outcome = _merge_consent(keep=keep, drop=drop, actor=actor)
    for field_name in PATIENT_FIELDS:
        if not getattr(keep, field_name) and getattr(drop, field_name):
            setattr(keep, field_name, getattr(drop, field_name))
    keep.save()
    for conversation in Conversation.objects.filter(pk__in=conversation_ids).select_related("inbox", "patient"):
        changed = ["patient", "status"] if conversation.pk in clashing_ids else ["patient"]
        publish_conversation_update(conversation, changed)
    drop.merged_into = keep
    drop.save(update_fields=["merged_into", "updated_at"])
    record_audit(
        actor=actor,
        action=AuditAction.MERGE_PATIENTS,
        patient_id=keep.pk,
        object_type="patient",
        object_id=drop.pk,
        via=via,
        detail={
            "kept": keep.pk,
            "dropped": drop.pk,
            "identities": moved_identities,
            "conversations": conversation_ids,
            "resolved_on_merge": clashing_ids,
            "visits": visit_count,
            "consent": consent_outcome,
        },
    )
    events.record(events.PatientUpdated(patient_id=drop.pk, merged_into=keep.pk), events.Audience())
    logger.info("merged patient %s into %s", drop.pk, keep.pk)
    return keep

"""Writes to segments: save (validated rules), delete, and static lists from a CSV of phones or MRNs."""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field
from typing import Any

from django.contrib.auth.base_user import AbstractBaseUser
from django.contrib.auth.models import AnonymousUser, User
from django.core.exceptions import ValidationError
from django.db import transaction
from django.utils.translation import gettext as _

from campaigns.models import Campaign, CampaignStatus, Segment, SegmentKind, StaticListMember
from campaigns.segments.rules import validate_rules
from contactcenter.identities import normalize_mrn, normalize_phone
from contactcenter.models import IdentityKind, Patient, PatientIdentity
from contactcenter.spreadsheets import UnreadableUpload, decode_upload, sniff_delimiter

logger = logging.getLogger(__name__)

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_ROWS = 100_000
HEADER_ALIASES = {
    "phone": IdentityKind.PHONE,
    "mobile": IdentityKind.PHONE,
    "手机": IdentityKind.PHONE,
    "手机号": IdentityKind.PHONE,
    "手机号码": IdentityKind.PHONE,
    "电话": IdentityKind.PHONE,
    "联系电话": IdentityKind.PHONE,
    "mrn": IdentityKind.MRN,
    "病案号": IdentityKind.MRN,
}


@transaction.atomic
def save_segment(
    *,
    segment: Segment | None,
    name: str,
    description: str = "",
    kind: str = SegmentKind.RULES,
    rules: Any = None,
    actor: AbstractBaseUser | AnonymousUser | None,
) -> Segment:
    """Create (segment=None) or update a segment. Rules are validated and stored normalized; a static
    list keeps no rules. RulesInvalid / ValidationError name what to fix."""
    name = (name or "").strip()
    errors: dict[str, list[str]] = {}
    if not name:
        errors["name"] = [_("Give the segment a name.")]
    elif len(name) > 120:
        errors["name"] = [_("At most 120 characters.")]
    else:
        clash = Segment.objects.filter(name__iexact=name)
        if segment is not None:
            clash = clash.exclude(pk=segment.pk)
        if clash.exists():
            errors["name"] = [_("A segment with this name already exists.")]
    if kind not in SegmentKind.values:
        errors["kind"] = [_("Choose rules or static list.")]
    elif segment is not None and kind != segment.kind:
        errors["kind"] = [_("A segment cannot change between rules and a static list; create a new one.")]
    if len(description or "") > 300:
        errors["description"] = [_("At most 300 characters.")]
    if errors:
        raise ValidationError(errors)
    if kind == SegmentKind.RULES:
        normalized = validate_rules(rules if rules is not None else {})
    elif rules:
        raise ValidationError({"rules": [_("A static list has no rules; upload its members as a CSV file.")]})
    else:
        normalized = {}
    if segment is None:
        segment = Segment(created_by=actor if isinstance(actor, User) else None)
    segment.name = name
    segment.description = (description or "").strip()
    segment.kind = kind
    segment.rules = normalized
    segment.save()
    logger.info("segment %s saved (%s)", segment.pk, kind)
    return segment


@transaction.atomic
def delete_segment(*, segment: Segment) -> None:
    """Refuse while a campaign uses the segment: sent campaigns keep it for their history and
    analytics; a draft must be pointed at another segment (or deleted) first."""
    users = list(Campaign.objects.filter(segment=segment).values_list("name", "status"))
    sent = [n for n, status in users if status != CampaignStatus.DRAFT]
    if sent:
        raise ValidationError(
            _("Campaigns use this segment (%(names)s); it stays for their history.") % {"names": ", ".join(sent[:5])}
        )
    if users:
        raise ValidationError(
            _("Draft campaigns use this segment (%(names)s); choose another segment for them first.")
            % {"names": ", ".join(n for n, _s in users[:5])}
        )
    segment_id = segment.pk
    segment.delete()
    logger.info("segment %s deleted", segment_id)


# --- Static lists -----------------------------------------------------------------------------------------


@dataclass
class RejectedRow:
    row: int  # as a spreadsheet numbers it: the header is row 1
    value: str
    reason: str


@dataclass
class StaticListReport:
    rows: int = 0
    added: int = 0
    already_listed: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    encoding: str = "utf-8"

    def as_dict(self) -> dict[str, Any]:
        return {
            "rows": self.rows,
            "added": self.added,
            "already_listed": self.already_listed,
            "rejected": [{"row": r.row, "value": r.value, "reason": r.reason} for r in self.rejected],
            "encoding": self.encoding,
        }


def _refuse(message: str) -> ValidationError:
    return ValidationError({"file": [message]})


def _decode(data: bytes) -> tuple[str, str]:
    try:
        return decode_upload(data)
    except UnreadableUpload as exc:
        raise _refuse(str(exc)) from None


def _rows(text: str) -> list[list[str]]:
    delimiter = sniff_delimiter(text.split("\n", 1)[0])
    try:
        return list(csv.reader(io.StringIO(text, newline=""), delimiter=delimiter))
    except csv.Error as exc:
        raise _refuse(_("The file is not valid CSV (%(error)s).") % {"error": str(exc)[:100]}) from None


def _columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        kind = HEADER_ALIASES.get(cell.strip().strip("\ufeff").lower())
        if kind is not None and kind not in columns:
            columns[kind] = index
    if not columns:
        raise _refuse(
            _("The first row must name the column: phone (手机) or mrn (病案号); found %(header)s.")
            % {"header": ", ".join(cell[:20] for cell in header[:5]) or _("nothing")}
        )
    return columns


def _cell(cells: list[str], index: int | None) -> str:
    if index is None or index >= len(cells):
        return ""
    value = cells[index].strip()
    # Spreadsheet exports write a phone as text with a leading apostrophe.
    return value[1:].strip() if value.startswith("'") else value


def _survivor_ids(patient_ids: set[int]) -> dict[int, int]:
    """Map each patient id to the live record it was merged into (itself when live)."""
    resolved = {}
    parents = dict(Patient.objects.filter(pk__in=patient_ids).values_list("pk", "merged_into_id"))
    for start in patient_ids:
        current, seen = start, set()
        while parents.get(current) is not None and current not in seen:
            seen.add(current)
            nxt = parents[current]
            assert nxt is not None
            if nxt not in parents:
                parents.update(Patient.objects.filter(pk=nxt).values_list("pk", "merged_into_id"))
            current = nxt
        resolved[start] = current
    return resolved


@transaction.atomic
def import_static_list(*, segment: Segment, data: bytes, replace: bool = False) -> StaticListReport:
    """Add the patients a CSV names by phone or MRN to a static list. Every good row is kept; each row
    that names no known patient, or cannot be read, is reported with its row number and the reason.
    A file that is not a usable CSV at all imports nothing (ValidationError on "file")."""
    # One upload at a time per list, so "already listed" and "added" add up.
    segment = Segment.objects.select_for_update().get(pk=segment.pk)
    if segment.kind != SegmentKind.STATIC:
        raise _refuse(_("Only a static-list segment takes uploaded members."))
    if len(data) > MAX_UPLOAD_BYTES:
        raise _refuse(_("The file is larger than %(limit)s MB.") % {"limit": MAX_UPLOAD_BYTES // 1024 // 1024})
    text, encoding = _decode(data)
    rows = _rows(text)
    if not rows or not any(cell.strip() for cell in rows[0]):
        raise _refuse(_("The file is empty."))
    if len(rows) - 1 > MAX_ROWS:
        raise _refuse(_("The file has more than %(limit)s rows; split it.") % {"limit": MAX_ROWS})
    columns = _columns(rows[0])
    report = StaticListReport(encoding=encoding)

    # Pass 1: read and normalize each row.
    wanted: list[tuple[int, str, dict[str, str]]] = []  # (row number, shown value, {kind: normalized})
    for offset, cells in enumerate(rows[1:]):
        row_number = offset + 2
        raw = {kind: _cell(cells, columns.get(kind)) for kind in columns}
        if not any(raw.values()):
            continue
        report.rows += 1
        shown = raw.get(IdentityKind.PHONE) or raw.get(IdentityKind.MRN) or ""
        normalized: dict[str, str] = {}
        problems: list[str] = []
        for kind, value in raw.items():
            if not value:
                continue
            try:
                normalized[kind] = normalize_phone(value) if kind == IdentityKind.PHONE else normalize_mrn(value)
            except ValidationError as exc:
                problems.extend(exc.messages)
        if problems:
            report.rejected.append(RejectedRow(row_number, shown[:60], " ".join(problems)))
            continue
        wanted.append((row_number, shown[:60], normalized))

    # Pass 2: one query per identity kind, then follow merges to the live record.
    owners: dict[tuple[str, str], int] = {}
    for kind in columns:
        values = {n[kind] for _row, _shown, n in wanted if kind in n}
        for start in range(0, len(values), 5000):
            chunk = sorted(values)[start : start + 5000]
            owners.update(
                ((kind, value), patient_id)
                for value, patient_id in PatientIdentity.objects.filter(kind=kind, value__in=chunk).values_list(
                    "value", "patient_id"
                )
            )
    survivors = _survivor_ids(set(owners.values()))

    if replace:
        StaticListMember.objects.filter(segment=segment).delete()
    existing = set(StaticListMember.objects.filter(segment=segment).values_list("patient_id", flat=True))
    first_row_of: dict[int, int] = {}
    new_members: list[StaticListMember] = []
    for row_number, shown, normalized in wanted:
        found = {kind: owners.get((kind, value)) for kind, value in normalized.items()}
        if any(patient_id is None for patient_id in found.values()):
            label = _("phone number") if found.get(IdentityKind.PHONE, 0) is None else _("medical record number")
            report.rejected.append(RejectedRow(row_number, shown, _("No patient has this %(what)s.") % {"what": label}))
            continue
        patients = {survivors[patient_id] for patient_id in found.values() if patient_id is not None}
        if len(patients) > 1:
            report.rejected.append(
                RejectedRow(row_number, shown, _("The phone number and the MRN belong to different patients."))
            )
            continue
        patient_id = patients.pop()
        if patient_id in first_row_of:
            report.rejected.append(
                RejectedRow(
                    row_number,
                    shown,
                    _("Same patient as row %(row)s; listed once.") % {"row": first_row_of[patient_id]},
                )
            )
            continue
        first_row_of[patient_id] = row_number
        if patient_id in existing:
            report.already_listed += 1
            continue
        new_members.append(StaticListMember(segment=segment, patient_id=patient_id))
    created = StaticListMember.objects.bulk_create(new_members, ignore_conflicts=True, batch_size=2000)
    report.added = len(created)
    report.rejected.sort(key=lambda rejected: rejected.row)
    segment.save(update_fields=["updated_at"])
    logger.info(
        "static list %s: %s rows, %s added, %s already listed, %s rejected",
        segment.pk,
        report.rows,
        report.added,
        report.already_listed,
        len(report.rejected),
    )
    return report

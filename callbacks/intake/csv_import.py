"""Discharges from a CSV file exported by the HIS or typed up in Excel: good rows kept, bad rows explained.

Each row goes through record_discharge on its own, so one bad row never costs the others; a visit number
seen twice in one file is imported once and the repeat reported. Files come as UTF-8 (with or without a
BOM) or, from Excel on Chinese Windows, as GB18030.

An empty cell is "not given": uploading a corrected file with fewer columns filled updates what it has and
leaves the rest. Ids and codes with control characters or longer than we store reject their row with the
reason; free text is kept (cut to its column). A phone number that cannot be read never rejects a row.
"""

from __future__ import annotations

import csv
import io
import logging
from dataclasses import dataclass, field

from django.core.exceptions import ValidationError
from django.db import DataError
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from callbacks.actions.discharges import (
    DEPARTMENT_NAME_MAX,
    PERSON_MAX,
    PHONE_AS_SENT_MAX,
    WARD_MAX,
    Demographics,
    DischargeRecord,
    record_discharge,
    record_intake_message,
)
from callbacks.intake.forms import (
    MAX_ROWS,
    MAX_UPLOAD_BYTES,
    disposition_value,
    loose_date,
    loose_datetime,
    sex_value,
    unreadable_time_message,
)
from callbacks.models import IntakeOutcome, IntakeSource
from callbacks.phones import region_for_country
from contactcenter.boundary import BoundaryError, clean_identifier, clean_text
from contactcenter.spreadsheets import FORMULA_STARTS, UnreadableUpload, decode_upload, safe_cell, sniff_delimiter

logger = logging.getLogger(__name__)

COLUMNS = (
    "visit_number",
    "mrn",
    "name",
    "sex",
    "birth_date",
    "phone",
    "country",
    "department_code",
    "department_name",
    "ward",
    "attending_doctor",
    "primary_nurse",
    "disposition",
    "admitted_at",
    "discharged_at",
    "diagnosis_codes",
)
HEADER_ALIASES = {
    **{name: name for name in COLUMNS},
    "visit_no": "visit_number",
    "department": "department_name",
    "gender": "sex",
    "diagnoses": "diagnosis_codes",
    "就诊号": "visit_number",
    "病案号": "mrn",
    "姓名": "name",
    "性别": "sex",
    "出生日期": "birth_date",
    "电话": "phone",
    "联系电话": "phone",
    "手机号": "phone",
    "国家": "country",
    "国家或地区": "country",
    "科室": "department_name",
    "科室代码": "department_code",
    "科室编码": "department_code",
    "病区": "ward",
    "主治医生": "attending_doctor",
    "主治医师": "attending_doctor",
    "责任护士": "primary_nurse",
    "离院方式": "disposition",
    "入院时间": "admitted_at",
    "出院时间": "discharged_at",
    "诊断": "diagnosis_codes",
    "诊断编码": "diagnosis_codes",
}
FIELD_LABELS = {
    "visit_number": gettext_lazy("Visit number"),
    "mrn": gettext_lazy("MRN"),
    "name": gettext_lazy("Name"),
    "sex": gettext_lazy("Sex"),
    "gender": gettext_lazy("Sex"),
    "birth_date": gettext_lazy("Birth date"),
    "phone": gettext_lazy("Phone"),
    "country": gettext_lazy("Country"),
    "department": gettext_lazy("Department"),
    "department_code": gettext_lazy("Department"),
    "ward": gettext_lazy("Ward"),
    "disposition": gettext_lazy("Disposition"),
    "admitted_at": gettext_lazy("Admission time"),
    "discharged_at": gettext_lazy("Discharge time"),
    "diagnosis_codes": gettext_lazy("Diagnoses"),
}


class ImportRefused(Exception):
    """The file as a whole cannot be read; nothing was imported."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


@dataclass
class RejectedRow:
    row: int  # as a spreadsheet numbers it: the header is row 1
    visit_number: str
    reasons: list[str]
    cells: list[str]


@dataclass
class ImportReport:
    header: list[str] = field(default_factory=list)
    rows: int = 0
    created: int = 0
    updated: int = 0
    rejected: list[RejectedRow] = field(default_factory=list)
    encoding: str = "utf-8"


# A NUL byte marks a binary (or UTF-16) file, which is refused whole; a few in a text file are an HIS export's
# padding in one cell, which should cost that cell (or its row), not the file.
_STRAY_NUL_SHARE = 0.01
# Stands in for NUL while the text is decoded: a single byte in both UTF-8 and GB18030 that text never holds.
_NUL_STAND_IN = b"\x1a"


def decode(data: bytes) -> tuple[str, str]:
    """The text and the encoding it was in. Refuses what is not a text file at all."""
    stray_nuls = 0 < data.count(b"\x00") <= len(data) * _STRAY_NUL_SHARE and _NUL_STAND_IN not in data
    try:
        if stray_nuls:
            # Each cell is cleaned as it is read (_clean): a NUL in a name becomes U+FFFD, in an id it
            # rejects the row with the reason.
            text, encoding = decode_upload(data.replace(b"\x00", _NUL_STAND_IN))
            return text.replace(_NUL_STAND_IN.decode(), "\x00"), encoding
        return decode_upload(data)
    except UnreadableUpload as exc:
        raise ImportRefused(str(exc)) from None


def _header_key(cell: str) -> str:
    return "_".join(cell.strip().strip("\ufeff").lower().replace("-", " ").split())


def _columns(header: list[str]) -> dict[str, int]:
    columns: dict[str, int] = {}
    for index, cell in enumerate(header):
        name = HEADER_ALIASES.get(_header_key(cell))
        if name and name not in columns:
            columns[name] = index
    missing = [name for name in ("visit_number", "mrn", "discharged_at") if name not in columns]
    if "department_code" not in columns and "department_name" not in columns:
        missing.append("department_code")
    if missing:
        raise ImportRefused(
            _("The header row lacks the columns %(missing)s. The first row must name the columns, e.g. %(example)s.")
            % {"missing": ", ".join(missing), "example": "visit_number,mrn,name,department_code,discharged_at"}
        )
    return columns


def _cell(cells: list[str], index: int) -> str:
    value = cells[index].strip() if index < len(cells) else ""
    # Our own error file escapes "+86…" as "'+86…"; a corrected copy of it must import as it was.
    if value.startswith("'") and value[1:].startswith(FORMULA_STARTS):
        return value[1:]
    return value


def _sentence(name: str, messages: list[str]) -> str:
    label = FIELD_LABELS.get(name, name.replace("_", " "))
    return f"{label}: {' '.join(str(m) for m in messages)}"


# Ids and codes of a row, with the most we store of each.
_IDENTIFIERS = {"visit_number": 60, "mrn": 60, "department_code": 40, "disposition": 40}
# Free text of a row, cut to its column.
_FREE_TEXT = {
    "name": 200,
    "phone": PHONE_AS_SENT_MAX,
    "country": 80,
    "department_name": DEPARTMENT_NAME_MAX,
    "ward": WARD_MAX,
    "attending_doctor": PERSON_MAX,
    "primary_nurse": PERSON_MAX,
}


def _clean(values: dict[str, str], errors: dict[str, list[str]]) -> dict[str, str]:
    """The row's cells made safe to store: free text cleaned and cut, bad ids and codes reported."""
    cleaned = dict(values)
    for name, limit in _FREE_TEXT.items():
        if name in cleaned:
            cleaned[name] = clean_text(cleaned[name], field=name, max_length=limit, truncate=True)
    for name, limit in _IDENTIFIERS.items():
        if name not in cleaned:
            continue
        try:
            cleaned[name] = clean_identifier(cleaned[name], field=name, max_length=limit)
        except BoundaryError as exc:
            errors[name] = [_("This value %(problem)s.") % {"problem": exc.message}]
            cleaned[name] = ""
    return cleaned


def _given(values: dict[str, str], name: str) -> str | None:
    """A cell's value, or None when the column is missing or the cell empty: not given, left as it was."""
    return values.get(name) or None


def _record(values: dict[str, str], errors: dict[str, list[str]]) -> DischargeRecord | None:
    """The row as a DischargeRecord, or None with errors filled in for what cannot be read."""
    values = _clean(values, errors)
    department_code = values.get("department_code") or values.get("department_name", "")
    if not department_code and "department_code" not in errors:
        errors["department_code"] = [_("The department is required.")]
    elif len(department_code) > 40:
        errors["department_code"] = [_("The department code can be at most 40 characters.")]
    discharged_at = loose_datetime(values.get("discharged_at", ""))
    if discharged_at is None:
        text = values.get("discharged_at", "")
        errors["discharged_at"] = [unreadable_time_message(text) if text else _("The discharge time is required.")]
    admitted_at = None
    if values.get("admitted_at"):
        admitted_at = loose_datetime(values["admitted_at"])
        if admitted_at is None:
            errors["admitted_at"] = [unreadable_time_message(values["admitted_at"])]
    birth_date = None
    if values.get("birth_date"):
        birth_date = loose_date(values["birth_date"])
        if birth_date is None:
            errors["birth_date"] = [
                _("“%(value)s” is not a date; write e.g. 1960-05-01.") % {"value": values["birth_date"][:40]}
            ]
    sex = sex_value(values.get("sex", ""))
    if sex is None:
        errors["sex"] = [
            _("Unknown sex “%(value)s”; use male, female, 男 or 女.") % {"value": values.get("sex", "")[:20]}
        ]
    disposition = disposition_value(values.get("disposition", ""))
    if disposition is None:
        errors["disposition"] = [
            _("Unknown disposition “%(value)s”; use home, home_care, transferred, against_advice, expired or other.")
            % {"value": values.get("disposition", "")[:20]}
        ]
    codes = [c.strip() for c in values.get("diagnosis_codes", "").replace("；", ";").split(";") if c.strip()]
    try:
        codes = [clean_identifier(code, field="diagnosis_codes", max_length=20) for code in codes]
    except BoundaryError:
        errors["diagnosis_codes"] = [_("Separate diagnosis codes with semicolons, e.g. I21.4;E11.9.")]
    if errors:
        return None
    assert discharged_at is not None and sex is not None and disposition is not None
    return DischargeRecord(
        visit_number=values.get("visit_number", ""),
        demographics=Demographics(
            mrn=values.get("mrn", ""),
            name=values.get("name", ""),
            birth_date=birth_date,
            gender=sex,
            phone=values.get("phone", ""),
            phone_region=region_for_country(values.get("country", "")),
        ),
        department_code=department_code,
        department_name=_given(values, "department_name"),
        discharged_at=discharged_at,
        admitted_at=admitted_at,
        source=IntakeSource.CSV,
        ward=_given(values, "ward"),
        attending_doctor=_given(values, "attending_doctor"),
        primary_nurse=_given(values, "primary_nurse"),
        disposition=disposition if values.get("disposition") else None,
        disposition_code=_given(values, "disposition"),
        diagnoses=[{"code": code, "text": "", "system": "I10"} for code in codes] or None,
    )


def import_discharges(data: bytes) -> ImportReport:
    """Import every good row; raises ImportRefused (importing nothing) when the file itself is unusable."""
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImportRefused(
            _("The file is larger than %(limit)s MB. Split it into smaller files.")
            % {"limit": MAX_UPLOAD_BYTES // 1024 // 1024}
        )
    text, encoding = decode(data)
    if not text.strip():
        raise ImportRefused(_("The file is empty."))
    reader = csv.reader(io.StringIO(text, newline=""), delimiter=sniff_delimiter(text.split("\n", 1)[0]))
    try:
        rows = list(reader)
    except csv.Error as exc:
        raise ImportRefused(_("The file is not valid CSV (%(error)s).") % {"error": str(exc)[:100]}) from None
    header, body = rows[0], rows[1:]
    if len(body) > MAX_ROWS:
        raise ImportRefused(
            _("The file has %(count)s rows; the limit is %(limit)s. Split it into smaller files.")
            % {"count": len(body), "limit": MAX_ROWS}
        )
    columns = _columns(header)
    report = ImportReport(header=header, encoding=encoding)
    first_row_of: dict[str, int] = {}
    for offset, cells in enumerate(body):
        row_number = offset + 2
        if not any(cell.strip() for cell in cells):
            continue
        report.rows += 1
        values = {name: _cell(cells, index) for name, index in columns.items()}
        visit_number = values["visit_number"]
        errors: dict[str, list[str]] = {}
        if visit_number and visit_number in first_row_of:
            errors["visit_number"] = [
                _("%(number)s is also on row %(row)s; only that row was imported.")
                % {"number": visit_number[:60], "row": first_row_of[visit_number]}
            ]
        elif visit_number:
            first_row_of[visit_number] = row_number
        record = _record(values, errors)
        if record is not None:
            try:
                result = record_discharge(record)
            except ValidationError as exc:
                errors = exc.message_dict if hasattr(exc, "error_dict") else {"row": exc.messages}
            except DataError:
                logger.warning("csv import row %s could not be stored", row_number, exc_info=True)
                errors = {"row": [_("This row could not be stored; check its values for stray characters.")]}
            else:
                if result.created:
                    report.created += 1
                else:
                    report.updated += 1
                continue
        report.rejected.append(
            RejectedRow(
                row=row_number,
                visit_number=visit_number[:60],
                reasons=[_sentence(name, messages) for name, messages in errors.items()],
                cells=cells,
            )
        )
    record_intake_message(
        source=IntakeSource.CSV,
        message_type="CSV",
        outcome=IntakeOutcome.ERROR if report.rejected else IntakeOutcome.ACCEPTED,
        error=(
            f"rows {report.rows}, created {report.created}, updated {report.updated}, rejected {len(report.rejected)}"
        ),
    )
    logger.info(
        "csv import: %s rows, %s created, %s updated, %s rejected",
        report.rows,
        report.created,
        report.updated,
        len(report.rejected),
    )
    return report


def error_csv(report: ImportReport) -> str:
    """The rejected rows as they came, with row number and reasons first, to fix and upload again."""
    out = io.StringIO()
    writer = csv.writer(out)
    writer.writerow([safe_cell(c) for c in [_("Row"), _("Reasons"), *report.header]])
    for rejected in report.rejected:
        writer.writerow([str(rejected.row), *(safe_cell(c) for c in [" ".join(rejected.reasons), *rejected.cells])])
    return out.getvalue()

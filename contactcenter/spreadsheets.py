"""CSV files staff exchange with Excel: reading what they upload, and writing what they download.

Hospitals in China save CSV from Excel as UTF-8 (with or without a BOM) or in the national GB18030 code
page; either is read. Anything written back is safe to open: a cell a spreadsheet would run as a formula
(OWASP CSV injection) is given a leading apostrophe.
"""

from __future__ import annotations

import codecs
from collections.abc import Sequence

from django.utils.translation import gettext as _

Cell = str | int | float | None

# Tab and CR start some of the formula payloads too.
FORMULA_STARTS = ("=", "+", "-", "@", "\t", "\r")


class UnreadableUpload(ValueError):
    """The file as a whole is not CSV text; the message says what to do instead."""


def decode_upload(data: bytes) -> tuple[str, str]:
    """The text and the encoding it was in."""
    if data.startswith(b"PK\x03\x04"):
        raise UnreadableUpload(_("This is an Excel workbook, not a CSV file. In Excel, use Save As → CSV."))
    if b"\x00" in data:
        raise UnreadableUpload(_("This is not a CSV text file. Upload a .csv file saved as UTF-8 or GB18030."))
    if data.startswith(codecs.BOM_UTF8):
        try:
            return data[len(codecs.BOM_UTF8) :].decode("utf-8"), "utf-8-sig"
        except UnicodeDecodeError:
            raise UnreadableUpload(_("The file starts as UTF-8 but is not; save it again as CSV UTF-8.")) from None
    for encoding in ("utf-8", "gb18030"):
        try:
            return data.decode(encoding), encoding
        except UnicodeDecodeError:
            continue
    raise UnreadableUpload(_("The file is neither UTF-8 nor GB18030 text. Save it again as CSV UTF-8."))


def sniff_delimiter(first_line: str) -> str:
    """Comma, or the tab or semicolon some Excel locales save with."""
    counts = {d: first_line.count(d) for d in (",", "\t", ";")}
    best = max(counts, key=lambda d: counts[d])
    return best if counts[best] else ","


def safe_cell(value: Cell) -> Cell:
    """Numbers stay numbers; text that a spreadsheet would evaluate gets a leading apostrophe."""
    if isinstance(value, str) and value.startswith(FORMULA_STARTS):
        return "'" + value
    return value


def safe_row(row: Sequence[Cell]) -> list[Cell]:
    return [safe_cell(cell) for cell in row]

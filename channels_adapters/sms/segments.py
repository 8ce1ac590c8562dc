"""How many SMS segments a text costs, and in which encoding (GSM 03.38 vs UCS-2).

One character outside the GSM-7 alphabet makes the whole message UCS-2. GSM-7 fits 160 septets in a
single message and 153 per part of a concatenated one (the user-data header takes the rest); the
extension characters (^ { } \\ [ ~ ] | € and form feed) cost two septets and are never split across
parts. UCS-2 fits 70 UTF-16 code units, 67 per part; an emoji outside the BMP is a surrogate pair
(two units) and is never split either.
"""

from __future__ import annotations

from dataclasses import dataclass, field

GSM7_BASIC = frozenset(
    "@£$¥èéùìòÇ\nØø\rÅåΔ_ΦΓΛΩΠΨΣΘΞÆæßÉ !\"#¤%&'()*+,-./0123456789:;<=>?"
    "¡ABCDEFGHIJKLMNOPQRSTUVWXYZÄÖÑÜ§¿abcdefghijklmnopqrstuvwxyzäöñüà"
)
GSM7_EXTENSION = frozenset("^{}\\[~]|€\f")

GSM7_SINGLE, GSM7_PART = 160, 153
UCS2_SINGLE, UCS2_PART = 70, 67


@dataclass(frozen=True)
class SegmentCount:
    encoding: str  # "GSM-7" or "UCS-2"
    segments: int
    units: int  # septets for GSM-7, UTF-16 code units for UCS-2
    characters: int
    per_segment: int
    remaining: int  # units left in the last segment before another one starts
    non_gsm: list[str] = field(default_factory=list)  # the characters that forced UCS-2


def _units(text: str, encoding: str) -> list[int]:
    if encoding == "GSM-7":
        return [2 if ch in GSM7_EXTENSION else 1 for ch in text]
    return [2 if ord(ch) > 0xFFFF else 1 for ch in text]


def _pack(units: list[int], capacity: int) -> tuple[int, int]:
    """Greedy packing that never splits one character's units across parts: (parts, used in last)."""
    parts, used = 1, 0
    for size in units:
        if used + size > capacity:
            parts += 1
            used = 0
        used += size
    return parts, used


def count_segments(text: str) -> SegmentCount:
    non_gsm = sorted({ch for ch in text if ch not in GSM7_BASIC and ch not in GSM7_EXTENSION})
    encoding = "UCS-2" if non_gsm else "GSM-7"
    single, part = (UCS2_SINGLE, UCS2_PART) if non_gsm else (GSM7_SINGLE, GSM7_PART)
    units = _units(text, encoding)
    total = sum(units)
    if total == 0:
        return SegmentCount(encoding, 0, 0, 0, single, single, non_gsm)
    if total <= single:
        return SegmentCount(encoding, 1, total, len(text), single, single - total, non_gsm)
    parts, used = _pack(units, part)
    return SegmentCount(encoding, parts, total, len(text), part, part - used, non_gsm)

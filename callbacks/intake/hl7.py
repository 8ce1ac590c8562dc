"""HL7 v2 ADT messages from the HIS: parse one message, say what it asks of us, and build its ACK.

Pure functions, no database: callbacks/actions/hl7_intake.py applies what comes out of here, and
callbacks/intake/mllp.py carries the bytes. Parsing and ACKs are the `hl7` library's; what is ours is
the mapping of ADT fields to a DischargeRecord and the tolerance real interface engines need.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from dataclasses import dataclass

import hl7
from django.conf import settings
from django.utils import timezone

from callbacks.actions.discharges import PERSON_MAX, PHONE_AS_SENT_MAX, WARD_MAX, Demographics, DischargeRecord
from callbacks.models import Disposition, IntakeSource
from callbacks.phones import region_for_country, xtn_text
from contactcenter.boundary import BoundaryError, clean_identifier, clean_text
from contactcenter.models import Gender

# HL7 table 0357 (message error condition codes), for ERR-3.
REQUIRED_FIELD_MISSING = "101"
DATA_TYPE_ERROR = "102"
SEGMENT_SEQUENCE_ERROR = "100"
UNSUPPORTED_MESSAGE_TYPE = "200"
APPLICATION_INTERNAL_ERROR = "207"

_ERROR_TEXT = {
    SEGMENT_SEQUENCE_ERROR: "Segment sequence error",
    REQUIRED_FIELD_MISSING: "Required field missing",
    DATA_TYPE_ERROR: "Data type error",
    UNSUPPORTED_MESSAGE_TYPE: "Unsupported message type",
    APPLICATION_INTERNAL_ERROR: "Application internal error",
}

# MSA-3 is ST(80) in v2.5: longer reasons are cut rather than break a strict receiver.
_REASON_LIMIT = 80
# Our columns: IntakeMessage.control_id, Discharge.visit_number, the department and diagnosis codes.
CONTROL_ID_MAX = 100
VISIT_NUMBER_MAX = 60
DEPARTMENT_CODE_MAX = 40
DISPOSITION_CODE_MAX = 40
DIAGNOSIS_CODE_MAX = 20
DIAGNOSIS_SYSTEM_MAX = 40
DIAGNOSIS_TEXT_MAX = 200
NAME_MAX = 200

DISCHARGE_EVENTS = frozenset({"A03"})
DEMOGRAPHICS_EVENTS = frozenset({"A08"})
CANCEL_EVENTS = {"A11": "cancel admit", "A13": "cancel discharge"}


class HL7Rejection(Exception):
    """A message we answer AE or AR, with the reason the HIS's interface team will read in MSA-3."""

    def __init__(self, code: str, reason: str, *, location: str = "", error_code: str = DATA_TYPE_ERROR) -> None:
        super().__init__(reason)
        self.code = code  # "AE" or "AR"
        self.reason = reason
        self.location = location  # "PV1-45"
        self.error_code = error_code


def _missing(location: str, what: str) -> HL7Rejection:
    return HL7Rejection("AE", f"{location} {what} is required", location=location, error_code=REQUIRED_FIELD_MISSING)


def _invalid(location: str, what: str, value: str) -> HL7Rejection:
    return HL7Rejection("AE", f"{location} {what} '{value[:26]}' is not valid", location=location)


@dataclass(frozen=True)
class Header:
    """What MSH says about the message; enough to acknowledge it even when the rest is unusable.

    Applications and facilities are HL7 HD values kept whole, component by component ("LAB", "1.2.3",
    "ISO"): the ACK must name the sender exactly as it named itself, or its engine cannot match it.
    """

    control_id: str = ""
    message_code: str = ""
    trigger_event: str = ""
    sending_application: tuple[str, ...] = ()
    sending_facility: tuple[str, ...] = ()
    receiving_application: tuple[str, ...] = ()
    receiving_facility: tuple[str, ...] = ()
    processing_id: str = ""
    version: str = ""
    # MSH-18 as sent (its first repetition): the character set of the message, and of our ACK.
    charset: str = ""

    @property
    def message_type(self) -> str:
        return f"{self.message_code}^{self.trigger_event}" if self.trigger_event else self.message_code


@dataclass(frozen=True)
class DischargeIntake:
    """ADT^A03: the patient went home (or elsewhere); record the discharge."""

    header: Header
    record: DischargeRecord


@dataclass(frozen=True)
class DemographicsIntake:
    """ADT^A08: the HIS corrected who the patient is."""

    header: Header
    demographics: Demographics


@dataclass(frozen=True)
class CancelIntake:
    """ADT^A11 / ADT^A13: the admission or the discharge was entered in error."""

    header: Header
    visit_number: str
    reason: str


Intake = DischargeIntake | DemographicsIntake | CancelIntake


# ---------------------------------------------------------------------------------------------------
# Bytes → hl7.Message
# ---------------------------------------------------------------------------------------------------


# HL7 table 0211 (alternate character sets) → Python codecs, keyed without spaces, dashes or slashes.
# UTF-16/32 are left out on purpose: their bytes collide with MLLP's framing; such a message is read as if
# it declared nothing. GB2312 and GBK are not in the table but Chinese HIS write them; GB18030 reads both.
_CHARSETS = {
    "ASCII": "ascii",
    "USASCII": "ascii",
    **{f"8859{n}": f"iso8859-{n}" for n in (1, 2, 3, 4, 5, 6, 7, 8, 9, 15)},
    "UNICODE": "utf-8",
    "UNICODEUTF8": "utf-8",
    "UTF8": "utf-8",
    "GB180302000": "gb18030",
    "GB18030": "gb18030",
    "GBK": "gb18030",
    "GB2312": "gb18030",
    "BIG5": "big5",
    "KSX1001": "euc_kr",
    "ISOIR87": "iso2022_jp",
}
# ASCII stand-ins for the punctuation our reasons use; any other character an ACK's charset cannot hold
# becomes "?". An ASCII ACK is readable whatever character set the sender really reads.
_ASCII_STAND_INS = str.maketrans(
    {
        "\u201c": '"',
        "\u201d": '"',
        "\u201e": '"',
        "\u2018": "'",
        "\u2019": "'",
        "\u2013": "-",
        "\u2014": "-",
        "\u2026": "...",
        "\u00a0": " ",
        "\u3000": " ",
        "\uff1a": ":",
        "\uff0c": ",",
        "\u3002": ".",
    }
)


def codec_for(charset: str) -> str | None:
    """The Python codec for an MSH-18 value, or None when it is empty or one we do not read."""
    key = "".join(ch for ch in charset.upper() if ch not in " -_/")
    return _CHARSETS.get(key)


def declared_charset(raw: bytes | str) -> str:
    """MSH-18 of a message not yet decoded (its first repetition and component), "" when absent.

    MSH is ASCII in every character set we read, so its bytes can be split before choosing the codec.
    """
    text = raw.decode("latin-1") if isinstance(raw, bytes) else raw
    text = text.removeprefix("\xef\xbb\xbf").lstrip("\ufeff")
    first = re.split("[\r\n]", text, maxsplit=1)[0]
    if not first.startswith("MSH") or len(first) < 8:
        return ""
    separator, component, repetition = first[3], first[4], first[5]
    fields = first.split(separator)
    # fields[1] is MSH-2 (MSH-1 is the separator itself), so MSH-n is fields[n - 1].
    if len(fields) < 18:
        return ""
    return fields[17].split(repetition)[0].split(component)[0].strip()[:40]


def decode(raw: bytes, charset: str = "") -> str:
    """The character set MSH-18 declares, else UTF-8 (what HL7 v2.8 recommends), else GB18030.

    Older Chinese HIS (and their interface engines) still send the national GB18030/GBK code page and
    rarely fill MSH-18 to say so; a GBK name is almost never valid UTF-8, so trying UTF-8 first cannot
    misread a UTF-8 message, and the fallback keeps 张伟 from becoming mojibake. A message that is not
    what it declares (engines that stamp "UNICODE UTF-8" on GBK text exist) gets the same fallback.
    """
    codec = codec_for(charset)
    for candidate in dict.fromkeys(c for c in (codec, "utf-8", "gb18030") if c):
        try:
            return raw.decode(candidate)
        except UnicodeDecodeError:
            continue
    raise HL7Rejection("AE", "message is neither UTF-8 nor GB18030 text")


def encode_ack(text: str, charset: str) -> bytes:
    """The ACK in the character set the sender declared in MSH-18; ASCII when it declared none we read."""
    codec = codec_for(charset) or "ascii"
    try:
        return text.encode(codec)
    except UnicodeEncodeError:
        pass
    fitted = []
    for char in text:
        try:
            char.encode(codec)
        except UnicodeEncodeError:
            char = char.translate(_ASCII_STAND_INS)
            if not char.isascii():
                char = "?"
        fitted.append(char)
    return "".join(fitted).encode(codec)


def normalize_segments(text: str) -> str:
    """One segment per `\\r`, as the standard says, whatever the sender's line endings were.

    Interface engines on Windows send `\\r\\n`, files copied through Unix tools `\\n`; blank lines from
    either are dropped so they do not become empty segments.
    """
    text = text.lstrip("\ufeff").replace("\r\n", "\r").replace("\n", "\r")
    return "\r".join(line for line in text.split("\r") if line.strip())


def parse_message(raw: bytes | str) -> hl7.Message:
    """The message, or HL7Rejection(AE) when it is not one HL7 v2 message."""
    text = normalize_segments(decode(raw, declared_charset(raw)) if isinstance(raw, bytes) else raw)
    if not text.startswith("MSH") or len(text) < 8:
        raise HL7Rejection("AE", "not an HL7 v2 message: MSH segment missing", error_code=SEGMENT_SEQUENCE_ERROR)
    try:
        message = hl7.parse(text)
    except (hl7.ParseException, ValueError, IndexError) as exc:
        raise HL7Rejection("AE", f"malformed message: {exc}"[:_REASON_LIMIT]) from None
    if not isinstance(message, hl7.Message):
        raise HL7Rejection("AE", "batches are not accepted; send one message per MLLP frame")
    return message


def read_header(message: hl7.Message) -> Header:
    msh = message.segment("MSH")
    trigger = _value(msh, 9, 2)
    if not trigger:
        # v2.1-era senders put the trigger event only in EVN-1.
        trigger = _value(_segment(message, "EVN"), 1)
    return Header(
        control_id=_value(msh, 10),
        message_code=_value(msh, 9).upper(),
        trigger_event=trigger.upper(),
        sending_application=_hd(msh, 3),
        sending_facility=_hd(msh, 4),
        receiving_application=_hd(msh, 5),
        receiving_facility=_hd(msh, 6),
        processing_id=_value(msh, 11),
        version=_value(msh, 12),
        charset=_value(msh, 18),
    )


def check_header(header: Header) -> None:
    """Refuse (AE) a message whose MSH-10 cannot be a control id: no resend could ever be matched to it."""
    try:
        clean_identifier(header.control_id, field="MSH-10", max_length=CONTROL_ID_MAX)
    except BoundaryError as exc:
        raise HL7Rejection("AE", f"MSH-10 message control id {exc.message}", location="MSH-10") from None


def salvage_header(raw: bytes | str) -> Header:
    """The header of a message that failed to parse, if its MSH line is readable; else an empty one."""
    try:
        if isinstance(raw, bytes):
            codec = codec_for(declared_charset(raw)) or "utf-8"
            raw = raw.decode(codec, "replace")
        text = normalize_segments(raw)
        first = text.split("\r", 1)[0]
        if not first.startswith("MSH") or len(first) < 8:
            return Header()
        return read_header(hl7.parse(first))
    except Exception:  # best effort: an ACK without MSA-2 beats no ACK at all
        return Header()


# ---------------------------------------------------------------------------------------------------
# hl7.Message → what the HIS asks of us
# ---------------------------------------------------------------------------------------------------


def interpret(message: hl7.Message, header: Header | None = None) -> Intake:
    """Map an ADT message to an intake, or raise HL7Rejection (AR unsupported, AE missing/invalid)."""
    header = header or read_header(message)
    event = header.trigger_event
    if header.message_code != "ADT" or event not in DISCHARGE_EVENTS | DEMOGRAPHICS_EVENTS | set(CANCEL_EVENTS):
        raise HL7Rejection(
            "AR",
            f"unsupported message type {header.message_type or '(none)'}"[:_REASON_LIMIT],
            location="MSH-9",
            error_code=UNSUPPORTED_MESSAGE_TYPE,
        )
    pid = _segment(message, "PID")
    if pid is None:
        raise HL7Rejection("AE", "PID segment is required", location="PID", error_code=SEGMENT_SEQUENCE_ERROR)
    if event in CANCEL_EVENTS:
        pv1 = _require_segment(message, "PV1")
        visit_number = _identifier(pv1, 19, "PV1-19", "visit number", VISIT_NUMBER_MAX)
        if not visit_number:
            raise _missing("PV1-19", "visit number")
        return CancelIntake(
            header, visit_number=visit_number, reason=f"HL7 {header.message_type} {CANCEL_EVENTS[event]}"
        )
    demographics = read_demographics(pid)
    if event in DEMOGRAPHICS_EVENTS:
        return DemographicsIntake(header, demographics=demographics)
    pv1 = _require_segment(message, "PV1")
    return DischargeIntake(header, record=read_discharge(message, pv1, demographics))


def visit_number_of(message: hl7.Message) -> str:
    """PV1-19 as sent, for the trail of a message we could not take (best effort, never raises)."""
    return clean_text(_value(_segment(message, "PV1"), 19), field="PV1-19", max_length=60, truncate=True)


def read_demographics(pid: hl7.Segment) -> Demographics:
    mrn = _checked("PID-3", "patient identifier", _mrn(pid), 60)
    if not mrn:
        raise _missing("PID-3", "patient identifier (MRN)")
    birth = _value(pid, 7)
    birth_date = None
    if birth:
        birth_date = _date(birth[:8])
        if birth_date is None:
            raise _invalid("PID-7", "birth date", birth)
    name = person_name(_value(pid, 5, 1), _value(pid, 5, 2), _value(pid, 5, 3))
    return Demographics(
        mrn=mrn,
        name=clean_text(name, field="PID-5", max_length=NAME_MAX, truncate=True),
        birth_date=birth_date,
        gender=_GENDERS.get(_value(pid, 8).upper()[:1], "") if _value(pid, 8) else "",
        phone=clean_text(_phone(pid), field="PID-13", max_length=PHONE_AS_SENT_MAX, truncate=True),
        phone_region=_address_region(pid),
    )


def read_discharge(message: hl7.Message, pv1: hl7.Segment, demographics: Demographics) -> DischargeRecord:
    """The discharge an A03 describes. Optional fields left empty are None ("not sent": a resend keeps what
    we have); the HL7 null "" is a value that clears them."""
    visit_number = _identifier(pv1, 19, "PV1-19", "visit number", VISIT_NUMBER_MAX)
    if not visit_number:
        raise _missing("PV1-19", "visit number")
    discharged_raw = _value(pv1, 45)
    if not discharged_raw:
        raise _missing("PV1-45", "discharge date/time")
    discharged_at = parse_timestamp(discharged_raw, "PV1-45")
    admitted_raw = _value(pv1, 44)
    department = _identifier(pv1, 10, "PV1-10", "hospital service", DEPARTMENT_CODE_MAX)
    if not department:
        raise _missing("PV1-10", "hospital service")
    code = _optional(pv1, 36)
    if code is not None:
        code = _checked("PV1-36", "discharge disposition", code, DISPOSITION_CODE_MAX)
    ward = _optional(pv1, 3)
    return DischargeRecord(
        visit_number=visit_number,
        demographics=demographics,
        department_code=department,
        discharged_at=discharged_at,
        admitted_at=parse_timestamp(admitted_raw, "PV1-44") if admitted_raw else None,
        source=IntakeSource.HL7,
        ward=None if ward is None else clean_text(ward, field="PV1-3", max_length=WARD_MAX, truncate=True),
        attending_doctor=_doctor(pv1),
        disposition=None if code is None else disposition_for(code),
        disposition_code=code,
        diagnoses=_diagnoses(message),
    )


_GENDERS = {
    "M": Gender.MALE,
    "F": Gender.FEMALE,
    "O": Gender.OTHER,
    "A": Gender.OTHER,  # ambiguous
    "U": Gender.UNKNOWN,
    "N": Gender.UNKNOWN,  # not applicable
}

# HL7 table 0112, discharge disposition.
_DISPOSITIONS = {
    "01": Disposition.HOME,
    "02": Disposition.TRANSFERRED,
    "03": Disposition.TRANSFERRED,
    "04": Disposition.TRANSFERRED,
    "05": Disposition.TRANSFERRED,
    "06": Disposition.HOME_CARE,
    "07": Disposition.AGAINST_ADVICE,
    "20": Disposition.EXPIRED,
    "40": Disposition.EXPIRED,
    "41": Disposition.EXPIRED,
    "42": Disposition.EXPIRED,
}


def disposition_for(code: str) -> str:
    """Table 0112 code → Disposition. No code means home: the HIS leaves PV1-36 empty for routine discharges."""
    if not code:
        return Disposition.HOME
    return _DISPOSITIONS.get(code.zfill(2), Disposition.OTHER)


_CJK = re.compile(r"[\u3400-\u9fff\uf900-\ufaff\U00020000-\U0002ffff]")


def person_name(family: str, given: str, middle: str = "") -> str:
    """XPN/XCN name parts → how the hospital writes the name: 张伟 (family first, no space) or "Wei Zhang"."""
    if _CJK.search(family + given):
        return f"{family}{given}".strip()
    return " ".join(part for part in (given, middle, family) if part)


_TIMESTAMP = re.compile(r"^(\d{4}(?:\d{2}){0,5}(?:\.\d{1,4})?)([+-]\d{4})?$")


def parse_timestamp(value: str, location: str) -> dt.datetime:
    """HL7 TS/DTM (YYYY[MM[DD[HH[MM[SS[.S…]]]]]][±ZZZZ]) → an aware datetime.

    Without an offset the time is the hospital's wall clock (settings.TIME_ZONE), which is what every
    HIS we know sends.
    """
    match = _TIMESTAMP.match(value)
    if not match or len(match.group(1).split(".")[0]) < 8:
        raise _invalid(location, "date/time", value)
    try:
        # The library parses the local part; the offset we apply ourselves because its sign handling
        # is wrong for offsets under an hour west of UTC ("-0030" comes out as +00:30).
        local = hl7.parse_datetime(match.group(1))
    except ValueError:
        raise _invalid(location, "date/time", value) from None
    offset = match.group(2)
    if offset is None:
        return timezone.make_aware(local, zoneinfo.ZoneInfo(settings.TIME_ZONE))
    sign = -1 if offset[0] == "-" else 1
    hours, minutes = int(offset[1:3]), int(offset[3:5])
    if hours > 14 or minutes > 59:
        raise _invalid(location, "time zone offset", value)
    zone = dt.timezone(sign * dt.timedelta(hours=hours, minutes=minutes))
    return local.replace(tzinfo=zone)


def _date(value: str) -> dt.date | None:
    try:
        return dt.datetime.strptime(value, "%Y%m%d").date()
    except ValueError:
        return None


def _mrn(pid: hl7.Segment) -> str:
    """PID-3 is a list of identifiers; the MRN is the one typed MR (or MRN, Epic's spelling), else the first."""
    first = ""
    for repetition in range(1, _repetitions(pid, 3) + 1):
        value = _value(pid, 3, 1, repetition)
        if not value:
            continue
        first = first or value
        if _value(pid, 3, 5, repetition).upper() in ("MR", "MRN"):
            return value
    return first


# XTN-2 use codes and XTN-3 equipment types that are not a number to call or text.
_NOT_A_PHONE_USE = {"NET", "X.400"}
_NOT_A_PHONE_EQUIPMENT = {"INTERNET", "X.400", "FX"}


def _phone(pid: hl7.Segment) -> str:
    """The patient's number from PID-13, as a person would write it; "" if none.

    Each repetition is an XTN: the structured parts (XTN-5 country code, XTN-6 area code, XTN-7 local
    number, XTN-8 extension) when sent, else XTN-12 (unformatted) or the older free-form XTN-1. A mobile
    (XTN-3 "CP") wins over the first number; e-mail addresses and faxes are skipped.
    """
    numbers: list[tuple[bool, str]] = []
    for repetition in range(1, max(_repetitions(pid, 13), 1) + 1):
        use = _value(pid, 13, 2, repetition).upper()
        equipment = _value(pid, 13, 3, repetition).upper()
        if use in _NOT_A_PHONE_USE or equipment in _NOT_A_PHONE_EQUIPMENT:
            continue
        text = xtn_text(
            country=_value(pid, 13, 5, repetition),
            area=_value(pid, 13, 6, repetition),
            local=_value(pid, 13, 7, repetition),
            extension=_value(pid, 13, 8, repetition),
            free_form=_value(pid, 13, 12, repetition) or _value(pid, 13, 1, repetition),
        )
        if text:
            numbers.append((equipment == "CP", text))
    mobile = [text for is_mobile, text in numbers if is_mobile]
    return (mobile or [text for _mobile, text in numbers] or [""])[0]


def _address_region(pid: hl7.Segment) -> str:
    """ISO 3166 alpha-2 of the patient's address country (PID-11 XAD-6; the home address first)."""
    countries = []
    for repetition in range(1, max(_repetitions(pid, 11), 1) + 1):
        country = _value(pid, 11, 6, repetition)
        if country:
            countries.append((_value(pid, 11, 7, repetition).upper() != "H", country))
    for _not_home, country in sorted(countries, key=lambda c: c[0]):
        region = region_for_country(country)
        if region:
            return region
    return ""


def _doctor(pv1: hl7.Segment) -> str | None:
    """PV1-7 XCN (id^family^given^middle…): the name as staff see it; the id when no name is sent.

    None when PV1-7 is empty (not sent); "" for the HL7 null.
    """
    sent = _optional(pv1, 7)
    if not sent:
        return sent
    name = person_name(_value(pv1, 7, 2), _value(pv1, 7, 3), _value(pv1, 7, 4)) or _value(pv1, 7, 1)
    return clean_text(name, field="PV1-7", max_length=PERSON_MAX, truncate=True)


def _diagnoses(message: hl7.Message) -> list[dict[str, str]] | None:
    """DG1 codes, or None when the message carries none (a resend without DG1 keeps the ones we have)."""
    diagnoses = []
    for dg1 in _segments(message, "DG1"):
        code = _checked("DG1-3", "diagnosis code", _value(dg1, 3, 1), DIAGNOSIS_CODE_MAX)
        if not code:
            continue
        # DG1-4 is the pre-v2.5 place for the description.
        text = clean_text(
            _value(dg1, 3, 2) or _value(dg1, 4), field="DG1-4", max_length=DIAGNOSIS_TEXT_MAX, truncate=True
        )
        system = _checked("DG1-3", "coding system", _value(dg1, 3, 3), DIAGNOSIS_SYSTEM_MAX)
        diagnoses.append({"code": code, "text": text, "system": system})
    return diagnoses or None


# ---------------------------------------------------------------------------------------------------
# Field access that tolerates whatever is absent
# ---------------------------------------------------------------------------------------------------


def _segments(message: hl7.Message, name: str) -> list[hl7.Segment]:
    return [segment for segment in message if str(segment[0]) == name]


def _segment(message: hl7.Message, name: str) -> hl7.Segment | None:
    found = _segments(message, name)
    return found[0] if found else None


def _require_segment(message: hl7.Message, name: str) -> hl7.Segment:
    segment = _segment(message, name)
    if segment is None:
        raise HL7Rejection("AE", f"{name} segment is required", location=name, error_code=SEGMENT_SEQUENCE_ERROR)
    return segment


def _repetitions(segment: hl7.Segment, field: int) -> int:
    if field >= len(segment):
        return 0
    value = segment(field)
    return len(value) if isinstance(value, hl7.Field) and value and isinstance(value[0], hl7.Repetition) else 1


def _value(segment: hl7.Segment | None, field: int, component: int = 1, repetition: int = 1) -> str:
    """One component as text ('' when absent); the HL7 null `""` is absent too."""
    if segment is None:
        return ""
    try:
        value = str(segment.extract_field(1, field, repetition, component, 1)).strip()
    except (IndexError, TypeError):
        return ""
    return "" if value == '""' else value


def _optional(segment: hl7.Segment | None, field: int, component: int = 1) -> str | None:
    """A component that may be left out: None when empty (not sent), "" for the HL7 null `""` (clear it)."""
    if segment is None:
        return None
    try:
        value = str(segment.extract_field(1, field, 1, component, 1)).strip()
    except (IndexError, TypeError):
        return None
    if value == '""':
        return ""
    return value or None


def _hd(segment: hl7.Segment, field: int) -> tuple[str, ...]:
    """An HD field's components (namespace id, universal id, its type), trailing empty ones dropped."""
    parts = [_value(segment, field, component) for component in (1, 2, 3)]
    while parts and not parts[-1]:
        parts.pop()
    return tuple(parts)


def _checked(location: str, what: str, value: str, max_length: int) -> str:
    """An id or code from the message, or AE naming the field: PostgreSQL stores neither control
    characters nor a value longer than its column, and no HIS id legitimately holds them."""
    try:
        return clean_identifier(value, field=location, max_length=max_length)
    except BoundaryError as exc:
        raise HL7Rejection("AE", f"{location} {what} {exc.message}", location=location) from None


def _identifier(segment: hl7.Segment, field: int, location: str, what: str, max_length: int) -> str:
    return _checked(location, what, _value(segment, field), max_length)


# ---------------------------------------------------------------------------------------------------
# ACK
# ---------------------------------------------------------------------------------------------------

_ESCAPES = {"\\": "\\E\\", "|": "\\F\\", "~": "\\R\\", "^": "\\S\\", "&": "\\T\\"}


_CONTROL_CHARACTERS = re.compile("[\x00-\x1f\x7f]")


def _escaped(text: str) -> str:
    """HL7 escape sequences (2.10.4) for the delimiters in free text; line breaks and other control
    characters become spaces.

    Not the library's escape(): it also rewrites every non-ASCII character as a \\X..\\ code point,
    which receivers decode as bytes; the ACK is encoded in the sender's own character set (encode_ack).
    """
    text = _CONTROL_CHARACTERS.sub(" ", text)
    return "".join(_ESCAPES.get(char, char) for char in text)


def _escaped_hd(parts: tuple[str, ...]) -> str:
    return "^".join(_escaped(part) for part in parts)


def build_ack(header: Header, code: str, reason: str = "", *, location: str = "", error_code: str = "") -> str:
    """The original-mode ACK for `header`'s message: MSH with sender and receiver swapped, MSA, and an ERR
    segment naming the field when we refuse. Encode it with encode_ack(ack, header.charset)."""
    # The library's create_ack reads MSH-9's components, so it gets a clean header-only message to work
    # from; that also lets a message that failed to parse (or had no MSH-9 components) still be answered.
    source = hl7.parse(
        "MSH|^~\\&|{}|{}|{}|{}|||{}^{}|{}|{}|{}".format(
            _escaped_hd(header.sending_application),
            _escaped_hd(header.sending_facility),
            _escaped_hd(header.receiving_application),
            _escaped_hd(header.receiving_facility),
            *(
                _escaped(part)
                for part in (
                    header.message_code or "ADT",
                    header.trigger_event,
                    header.control_id,
                    header.processing_id or "P",
                    header.version or "2.5",
                )
            ),
        )
    )
    ack = source.create_ack(code)
    # create_ack stamps MSH-7 in UTC without an offset; receivers read an offset-less TS as their local time.
    ack.assign_field(timezone.localtime().strftime("%Y%m%d%H%M%S%z"), "MSH", 1, 7)
    if codec_for(header.charset):
        # The ACK is in the sender's character set (encode_ack) and says so; with none declared it is ASCII,
        # HL7's default, which needs no MSH-18.
        ack.assign_field(_escaped(header.charset), "MSH", 1, 18)
    if reason:
        ack.assign_field(_escaped(reason[:_REASON_LIMIT]), "MSA", 1, 3)
    if code != "AA":
        err = ack.create_segment([ack.create_field(["ERR"])])
        if location:
            segment, _sep, field = location.partition("-")
            err.assign_field(segment, 2, 1, 1)
            if field:
                err.assign_field("1", 2, 1, 2)
                err.assign_field(field, 2, 1, 3)
        error_code = error_code or APPLICATION_INTERNAL_ERROR
        err.assign_field(error_code, 3, 1, 1)
        err.assign_field(_ERROR_TEXT.get(error_code, ""), 3, 1, 2)
        err.assign_field("HL70357", 3, 1, 3)
        err.assign_field("E", 4)
        ack.append(err)
    return str(ack)

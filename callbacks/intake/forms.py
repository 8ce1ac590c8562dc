"""What hospital staff and HIS exports write, turned into our values: sex, disposition, times, and the upload form.

The REST API and the CSV import share these so "男", "M" and "male" mean the same on every path.
"""

from __future__ import annotations

import datetime as dt
import re
import zoneinfo
from typing import Any

from django import forms
from django.conf import settings
from django.utils.dateparse import parse_datetime
from django.utils.translation import gettext as _
from django.utils.translation import gettext_lazy

from callbacks.intake.selectors import mappable_departments
from callbacks.models import Disposition
from contactcenter.models import Gender, Team

MAX_UPLOAD_BYTES = 5 * 1024 * 1024
MAX_ROWS = 20_000

_SEX_WORDS = {
    Gender.MALE: ("male", "m", "man", "1", "男", "男性"),
    Gender.FEMALE: ("female", "f", "woman", "2", "女", "女性"),
    Gender.OTHER: ("other", "o", "其他"),
    # GB/T 2261.1: 0 = not known, 9 = not stated.
    Gender.UNKNOWN: ("unknown", "u", "0", "9", "未知", "未说明"),
}
SEX_ALIASES: dict[str, str] = {word: value for value, words in _SEX_WORDS.items() for word in words}

# Besides our own values: the labels people type, and the 离院方式 codes of the Chinese inpatient
# front sheet (病案首页: 1 医嘱离院, 2 医嘱转院, 3 医嘱转社区, 4 非医嘱离院, 5 死亡, 9 其他).
_DISPOSITION_WORDS = {
    Disposition.HOME: ("home", "discharged home", "1", "回家", "医嘱离院", "出院"),
    Disposition.HOME_CARE: ("home care", "home with home care", "居家护理"),
    Disposition.TRANSFERRED: ("transfer", "transferred", "2", "3", "转院", "医嘱转院", "医嘱转社区", "转社区"),
    Disposition.AGAINST_ADVICE: ("against advice", "ama", "4", "非医嘱离院", "自动出院"),
    Disposition.EXPIRED: ("expired", "died", "deceased", "5", "死亡"),
    Disposition.OTHER: ("other", "9", "其他"),
}
DISPOSITION_ALIASES: dict[str, str] = {word: value for value, words in _DISPOSITION_WORDS.items() for word in words}
DISPOSITION_ALIASES.update({value: value for value in Disposition.values})

# HL7 v2 PV1-36 / UB-04 discharge disposition codes, for HIS systems that send only their code.
_HL7_DISPOSITION = {
    "01": Disposition.HOME,
    "06": Disposition.HOME_CARE,
    "07": Disposition.AGAINST_ADVICE,
    "20": Disposition.EXPIRED,
    "40": Disposition.EXPIRED,
    "41": Disposition.EXPIRED,
    "42": Disposition.EXPIRED,
}
_HL7_TRANSFERRED = {"02", "03", "04", "05", "43", "50", "51", "61", "62", "63", "64", "65", "66", "70"}


def sex_value(text: str) -> str | None:
    """A Gender value, "" for nothing given, None when the text means nothing we know."""
    word = text.strip().lower()
    if not word:
        return ""
    return SEX_ALIASES.get(word)


def disposition_value(text: str) -> str | None:
    word = " ".join(text.strip().lower().replace("_", " ").split())
    if not word:
        return Disposition.HOME
    return DISPOSITION_ALIASES.get(word) or DISPOSITION_ALIASES.get(word.replace(" ", "_"))


def disposition_from_code(code: str) -> str:
    """Our disposition for an HIS code when the HIS did not say it in our words; OTHER if unknown."""
    code = code.strip()
    if code.isdigit():
        code = code.zfill(2)
    if code in _HL7_DISPOSITION:
        return _HL7_DISPOSITION[code]
    if code in _HL7_TRANSFERRED:
        return Disposition.TRANSFERRED
    return disposition_value(code) or Disposition.OTHER


def hospital_zone() -> zoneinfo.ZoneInfo:
    return zoneinfo.ZoneInfo(settings.TIME_ZONE)


_DATETIME_FORMATS = (
    "%Y-%m-%d %H:%M:%S",
    "%Y-%m-%d %H:%M",
    "%Y/%m/%d %H:%M:%S",
    "%Y/%m/%d %H:%M",
    "%Y%m%d%H%M%S",
    "%Y%m%d%H%M",
    "%Y.%m.%d %H:%M",
)
_DATE_ONLY = re.compile(r"^\d{8}$|^\d{4}[-/.]\d{1,2}[-/.]\d{1,2}$")
_DATE_FORMATS = ("%Y-%m-%d", "%Y/%m/%d", "%Y%m%d", "%Y.%m.%d")


def loose_datetime(text: str) -> dt.datetime | None:
    """A time as exports write it; a time without an offset is on the hospital's clock. None if unreadable."""
    text = " ".join(text.strip().split())
    if not text or _DATE_ONLY.match(text):
        # A day without a time is not a discharge time; midnight would schedule calls from the wrong hour.
        return None
    value: dt.datetime | None = None
    try:
        value = parse_datetime(text)
    except ValueError:
        value = None
    if value is None:
        for fmt in _DATETIME_FORMATS:
            try:
                value = dt.datetime.strptime(text, fmt)
                break
            except ValueError:
                continue
    if value is None:
        return None
    if value.tzinfo is None:
        value = value.replace(tzinfo=hospital_zone())
    return value


def loose_date(text: str) -> dt.date | None:
    text = text.strip()
    for fmt in _DATE_FORMATS:
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    return None


def unreadable_time_message(text: str) -> str:
    return _("“%(value)s” is not a date and time; write e.g. 2026-11-20 14:30.") % {"value": text[:40]}


class DischargeUploadForm(forms.Form):
    file = forms.FileField(
        label=gettext_lazy("CSV file"),
        help_text=gettext_lazy("UTF-8 or GB18030 (Excel), one discharge per row, a header row first."),
    )

    def clean_file(self) -> object:
        upload = self.cleaned_data["file"]
        if upload.size > MAX_UPLOAD_BYTES:
            raise forms.ValidationError(
                _("The file is %(size)s MB; the limit is %(limit)s MB. Split it into smaller files.")
                % {"size": f"{upload.size / 1024 / 1024:.1f}", "limit": MAX_UPLOAD_BYTES // 1024 // 1024}
            )
        return upload


class DepartmentCodeForm(forms.Form):
    """Map one HIS department code (listed as unmapped on the discharges page) to a department."""

    system = forms.CharField(max_length=200, required=False, widget=forms.HiddenInput)
    code = forms.CharField(max_length=40, widget=forms.HiddenInput)
    department = forms.ModelChoiceField(
        queryset=Team.objects.none(), label=gettext_lazy("Department"), empty_label=gettext_lazy("Choose…")
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        field = self.fields["department"]
        assert isinstance(field, forms.ModelChoiceField)
        field.queryset = mappable_departments()

"""Reading the phone numbers the HIS sends: in the country of the patient's address, never a reason to refuse.

An HIS writes numbers the way its clerks typed them: "13912345678", "(610) 553-2781", an HL7 XTN with the
area code and local number in separate components and no country code. Such a number means something only
in a country, and the patient's address says which; the hospital's own region (PHONE_DEFAULT_REGION) is
the fallback. A number that still cannot be read is kept as written, for a nurse to check.
"""

from __future__ import annotations

import pycountry
from django.conf import settings
from django.core.exceptions import ValidationError

from contactcenter.identities import normalize_phone

# What Chinese HIS addresses write for the country, besides ISO codes and English names.
_COUNTRY_WORDS = {
    "中国": "CN",
    "中华人民共和国": "CN",
    "中國": "CN",
    "香港": "HK",
    "中国香港": "HK",
    "澳门": "MO",
    "中国澳门": "MO",
    "台湾": "TW",
    "中国台湾": "TW",
    "美国": "US",
    "美利坚合众国": "US",
    "英国": "GB",
    "加拿大": "CA",
    "澳大利亚": "AU",
    "日本": "JP",
    "韩国": "KR",
    "新加坡": "SG",
    "马来西亚": "MY",
    "德国": "DE",
    "法国": "FR",
    # Not ISO 3166 but common in address data.
    "UK": "GB",
}


def region_for_country(text: str) -> str:
    """ISO 3166-1 alpha-2 for a country as addresses write it ("USA", "US", "840", "China", "中国"); "" if unknown."""
    value = " ".join(text.split())
    if not value or len(value) > 80:
        return ""
    if value in _COUNTRY_WORDS or value.upper() in _COUNTRY_WORDS:
        return _COUNTRY_WORDS.get(value) or _COUNTRY_WORDS[value.upper()]
    try:
        country = pycountry.countries.lookup(value)
    except LookupError:
        return ""
    return str(country.alpha_2)


def xtn_text(*, country: str = "", area: str = "", local: str = "", extension: str = "", free_form: str = "") -> str:
    """One phone number from the parts of an HL7 XTN (or any structured telecom), as a person would write it.

    The structured parts win over the older free-form XTN-1 when there is a local number.
    """
    local = local.strip()
    if not local:
        text = free_form.strip()
    else:
        country = country.strip().lstrip("+")
        text = " ".join(part for part in (f"+{country}" if country else "", area.strip(), local) if part)
    if text and extension.strip():
        text = f"{text} ext. {extension.strip()}"
    return text


def read_phone(text: str, region: str = "") -> str | None:
    """E.164 for a number as the HIS wrote it, read in `region` then the hospital's; None if it is neither.

    An extension is dropped from the E.164 (it has no place in one); the number as written keeps it.
    """
    text = text.strip()
    if not text:
        return None
    for candidate in dict.fromkeys(r for r in (region.upper(), settings.PHONE_DEFAULT_REGION) if r):
        try:
            return normalize_phone(text, region=candidate)
        except ValidationError:
            continue
    return None

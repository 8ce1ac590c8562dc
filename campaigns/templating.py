"""Campaign message templates: a tiny strict placeholder language, not Django templates.

A body holds text and `{{ name }}` placeholders from a fixed list (PLACEHOLDERS); nothing else is
syntax. Values are inserted once, as plain text: a patient whose name is "{{ hospital }}" or
"{% debug %}" gets exactly that text back, never an expansion, and there is no attribute lookup, filter
or tag that could reach anything but the facts we hand in. A body with an unknown placeholder or a stray
"{{" / "}}" is refused when the campaign is saved (`template_problems`), so a typo never goes out as
"Dear {{ frist_name }}".

Rendering is per recipient: a placeholder whose value is missing either skips the recipient or uses the
campaign's fallback text (MissingValueRule). `finalize` adds the 【签名】 prefix and the marketing
opt-out tail. `facts_for` loads the values for many patients in a few queries (the sender and the
launch snapshot call it per batch).
"""

from __future__ import annotations

import datetime as dt
import functools
import re
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from django.conf import settings
from django.db.models import OuterRef, Subquery
from django.utils.translation import gettext as _

from campaigns.models import Campaign, MissingValueRule
from campaigns.quiet_hours import zone
from contactcenter.models import Patient, VipTier, Visit

PLACEHOLDERS: tuple[str, ...] = ("first_name", "name", "department", "last_visit_date", "vip_tier", "hospital")
# Values a recipient can lack; the hospital's name always exists.
MAY_BE_MISSING = frozenset(PLACEHOLDERS) - {"hospital"}

MAX_BODY_CHARS = 1000
MAX_FALLBACK_CHARS = 60

OPT_OUT_TAIL_DEFAULTS = {"en": "Reply STOP to opt out", "zh": "拒收请回复R"}
_SENTENCE_END = ("。", "！", "？", ".", "!", "?", "…")

_PLACEHOLDER = re.compile(r"\{\{[ \t]*([A-Za-z_][A-Za-z0-9_]*)[ \t]*\}\}")
# Control characters (and the line/paragraph separators) are dropped from values: a value is one line of text.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\u2028\u2029]")

VIP_LABELS = {
    "en": {VipTier.SILVER: "Silver", VipTier.GOLD: "Gold", VipTier.PLATINUM: "Platinum"},
    "zh": {VipTier.SILVER: "银卡", VipTier.GOLD: "金卡", VipTier.PLATINUM: "白金卡"},
}

Facts = Mapping[str, str]


class TemplateError(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("; ".join(problems))
        self.problems = problems


@dataclass(frozen=True)
class Placeholder:
    name: str


@dataclass(frozen=True)
class Template:
    parts: tuple[str | Placeholder, ...]

    @property
    def placeholders(self) -> frozenset[str]:
        return frozenset(p.name for p in self.parts if isinstance(p, Placeholder))


@dataclass(frozen=True)
class Rendered:
    """`text` is None when the recipient is to be skipped (a missing value under the skip rule)."""

    text: str | None
    missing: list[str] = field(default_factory=list)


def language_key(language: str) -> str:
    """ "zh", "zh-hans", "zh-CN" → "zh"; everything else is English."""
    return "zh" if (language or "").lower().startswith("zh") else "en"


def _scan(body: str) -> tuple[tuple[str | Placeholder, ...], list[str]]:
    parts: list[str | Placeholder] = []
    problems: list[str] = []
    pos = 0
    for match in _PLACEHOLDER.finditer(body):
        parts.append(body[pos : match.start()])
        name = match.group(1)
        if name in PLACEHOLDERS:
            parts.append(Placeholder(name))
        else:
            problems.append(
                _("Unknown placeholder “{{ %(name)s }}”; use one of: %(known)s.")
                % {"name": name, "known": ", ".join(PLACEHOLDERS)}
            )
            parts.append(match.group(0))
        pos = match.end()
    parts.append(body[pos:])
    text_only = "".join(p for p in parts if isinstance(p, str))
    if "{{" in text_only or "}}" in text_only:
        problems.append(
            _("“{{” or “}}” outside a placeholder; placeholders look like {{ first_name }} and cannot be nested.")
        )
    merged: list[str | Placeholder] = []
    for part in parts:
        if isinstance(part, str) and merged and isinstance(merged[-1], str):
            merged[-1] += part
        elif part != "":
            merged.append(part)
    return tuple(merged), problems


def template_problems(body: str) -> list[str]:
    """What makes a body unusable (unknown placeholders, stray braces); empty when it is fine."""
    return _scan(body)[1]


@functools.lru_cache(maxsize=256)
def parse(body: str) -> Template:
    """The parsed template. Never raises: anything that is not a known placeholder is literal text,
    so even an unvalidated body renders safely; saving refuses such bodies (template_problems)."""
    return Template(_scan(body)[0])


def clean_value(value: object) -> str:
    return " ".join(_CONTROL.sub(" ", str(value)).split())


def render(body: str, patient_facts: Facts, *, fallbacks: Mapping[str, str], rule: str) -> Rendered:
    """Fill the placeholders for one recipient. Values go in as text and are never parsed again."""
    template = parse(body)
    out: list[str] = []
    missing: list[str] = []
    for part in template.parts:
        if isinstance(part, str):
            out.append(part)
            continue
        value = clean_value(patient_facts.get(part.name, ""))
        if not value:
            if part.name not in missing:
                missing.append(part.name)
            value = clean_value(fallbacks.get(part.name, ""))
        out.append(value)
    if missing and (rule == MissingValueRule.SKIP or any(not clean_value(fallbacks.get(n, "")) for n in missing)):
        # Under the fallback rule a missing fallback also skips: an SMS saying "Dear ," is worse than none.
        return Rendered(None, missing)
    return Rendered("".join(out), missing)


def clean_signature(signature: str) -> str:
    return clean_value(signature).strip("【】[] ")


def finalize(text: str, *, signature: str, opt_out_tail: str, language: str) -> str:
    """The text as sent: 【签名】 prefix when a signature is set, then the body, then the opt-out tail.

    Every campaign is marketing, so the tail is always there: the campaign's own, or the default for the
    patient's language.
    """
    text = text.strip()
    lang = language_key(language)
    sig = clean_signature(signature)
    if sig and not text.startswith(f"【{sig}】"):
        text = f"【{sig}】{text}"
    tail = clean_value(opt_out_tail) or OPT_OUT_TAIL_DEFAULTS[lang]
    if not text.endswith(tail):
        # The tail is its own sentence: close the message's last one first. Chinese runs on without a space.
        if lang == "zh":
            text = text if text.endswith(_SENTENCE_END) else f"{text}。"
        else:
            text = (text if text.endswith(_SENTENCE_END) else f"{text}.") + " "
        text = f"{text}{tail}"
    return text


def hospital_name(language: str) -> str:
    if language_key(language) == "zh":
        return settings.HOSPITAL_NAME_ZH or settings.HOSPITAL_NAME
    return settings.HOSPITAL_NAME


def format_date(day: dt.date, language: str) -> str:
    if language_key(language) == "zh":
        return f"{day.year}年{day.month}月{day.day}日"
    return day.isoformat()


def facts_for(patient_ids: Iterable[int], *, needed: Iterable[str] = PLACEHOLDERS) -> dict[int, dict[str, str]]:
    """The placeholder values of many patients, in their own language; "" where a patient has none.
    Each also carries "language" (the patient's), which `compose` needs and no template can name.

    `needed` limits the work: without department or last_visit_date the visit table is not read.
    """
    ids = list(patient_ids)
    wanted = set(needed)
    if not ids:
        return {}
    want_visit = bool(wanted & {"department", "last_visit_date"})
    patients = Patient.objects.filter(pk__in=ids)
    if want_visit:
        last_visit = Visit.objects.filter(patient_id=OuterRef("pk")).order_by("-admitted_at", "-id").values("pk")[:1]
        patients = patients.annotate(last_visit_id=Subquery(last_visit))
    rows = list(
        patients.values(
            "pk", "name", "given_name", "language", "time_zone", "vip_tier", *(["last_visit_id"] if want_visit else [])
        )
    )
    visits: dict[int, Visit] = {}
    if want_visit:
        visit_ids = [r["last_visit_id"] for r in rows if r["last_visit_id"] is not None]
        visits = {v.pk: v for v in Visit.objects.filter(pk__in=visit_ids).select_related("department")}
    facts: dict[int, dict[str, str]] = {}
    for row in rows:
        lang = language_key(row["language"])
        visit = visits.get(row.get("last_visit_id") or 0)
        department = ""
        last_visit_date = ""
        if visit is not None:
            team = visit.department
            department = (team.name_zh or team.name) if lang == "zh" else team.name
            local_day = visit.admitted_at.astimezone(zone(row["time_zone"])).date()
            last_visit_date = format_date(local_day, lang)
        facts[row["pk"]] = {
            "first_name": row["given_name"],
            "name": row["name"],
            "department": department,
            "last_visit_date": last_visit_date,
            "vip_tier": VIP_LABELS[lang].get(row["vip_tier"], ""),
            "hospital": hospital_name(lang),
            # Not a placeholder: which language the recipient's text is finalized in.
            "language": row["language"],
        }
    return facts


SAMPLE_FACTS = {
    "en": {
        "first_name": "Alex",
        "name": "Alex Chen",
        "department": "Cardiology",
        "last_visit_date": "2024-03-05",
        "vip_tier": "Gold",
    },
    "zh": {
        "first_name": "小明",
        "name": "王小明",
        "department": "心内科",
        "last_visit_date": "2024年3月5日",
        "vip_tier": "金卡",
    },
}


def sample_facts(language: str) -> dict[str, str]:
    """Made-up values for previews and estimates shown to marketers, who must not see patients' names."""
    lang = language_key(language)
    return {**SAMPLE_FACTS[lang], "hospital": hospital_name(lang)}


def compose(
    *,
    body: str,
    facts: Facts,
    fallbacks: Mapping[str, str],
    rule: str,
    signature: str,
    opt_out_tail: str,
    language: str,
) -> Rendered:
    """render + finalize for one recipient: the exact SMS text, or None to skip them."""
    rendered = render(body, facts, fallbacks=fallbacks, rule=rule)
    if rendered.text is None:
        return rendered
    return Rendered(
        finalize(rendered.text, signature=signature, opt_out_tail=opt_out_tail, language=language), rendered.missing
    )


def compose_for(campaign: Campaign, patient_ids: Iterable[int]) -> dict[int, Rendered]:
    """The exact SMS text of a campaign for each of these patients (None where they are to be skipped)."""
    ids = list(patient_ids)
    facts = facts_for(ids, needed=parse(campaign.body).placeholders)
    return {
        pid: compose(
            body=campaign.body,
            facts=f,
            fallbacks=campaign.fallbacks or {},
            rule=campaign.missing_value_rule,
            signature=campaign.signature,
            opt_out_tail=campaign.opt_out_tail,
            language=f["language"],
        )
        for pid, f in facts.items()
    }

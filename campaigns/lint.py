"""The template lint: marketing SMS must carry no clinical detail (diagnoses, medications, results).

A text message is read on a lock screen, by family, on a shared phone: "your HbA1c is back" or
"二甲双胍 refill" discloses health information. The composer shows these problems live, a draft may be
saved with them, and launching or scheduling refuses until they are gone.

The word lists are deliberately plain: common conditions, drugs and result words in English and
Chinese, plus anything shaped like an ICD-10 code. Ordinary hospital marketing ("health check package
20% off", "体检套餐八折", "free blood pressure check") passes; a result *value* ("血压 150/95") does not.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass
from typing import Any

from django.utils.translation import gettext as _
from django.utils.translation import gettext_noop

DIAGNOSIS, CONDITION, MEDICATION, RESULT, CODE = "diagnosis", "condition", "medication", "result", "code"
CATEGORIES = (DIAGNOSIS, CONDITION, MEDICATION, RESULT, CODE)

# fmt: off
# English terms match as whole words, case-insensitively, with an optional plural "s"/"es".
_EN_TERMS: dict[str, tuple[str, ...]] = {
    DIAGNOSIS: ("diagnosis", "diagnoses", "diagnosed", "prognosis"),
    CONDITION: (
        "diabetes", "diabetic", "cancer", "tumor", "tumour", "carcinoma", "leukemia", "lymphoma", "chemo",
        "chemotherapy", "pregnancy", "pregnant", "miscarriage", "abortion", "infertility", "hypertension",
        "hepatitis", "cirrhosis", "tuberculosis", "depression", "schizophrenia", "bipolar", "dementia",
        "alzheimer", "parkinson", "stroke", "heart attack", "heart failure", "myocardial infarction",
        "asthma", "copd", "epilepsy", "syphilis", "gonorrhea", "chlamydia", "herpes", "autism",
    ),
    MEDICATION: (
        "metformin", "insulin", "aspirin", "statin", "atorvastatin", "simvastatin", "rosuvastatin",
        "amlodipine", "lisinopril", "losartan", "warfarin", "clopidogrel", "levothyroxine", "omeprazole",
        "metoprolol", "nifedipine", "amoxicillin", "ibuprofen", "acetaminophen", "paracetamol", "prednisone",
        "sertraline", "fluoxetine", "antidepressant", "antibiotic", "opioid", "morphine", "methadone",
        "glipizide", "sitagliptin", "empagliflozin", "dapagliflozin", "semaglutide", "liraglutide",
    ),
    RESULT: (
        "test result", "lab result", "blood test", "biopsy", "hba1c", "a1c", "positive", "negative",
        "abnormal", "pathology report", "psa level",
    ),
}
# Acronyms match case-sensitively: "HIV" is a condition, "hearing aids" is not.
_EN_ACRONYMS: dict[str, tuple[str, ...]] = {CONDITION: ("HIV", "AIDS", "STD", "STI", "HPV", "COPD")}
# Chinese has no word boundaries: these match as substrings.
_ZH_TERMS: dict[str, tuple[str, ...]] = {
    DIAGNOSIS: ("诊断", "确诊", "患有"),
    CONDITION: (
        "糖尿病", "癌", "肿瘤", "艾滋", "怀孕", "妊娠", "流产", "不孕", "不育", "高血压", "乙肝", "肝炎",
        "肝硬化", "结核", "抑郁", "精神分裂", "双相", "痴呆", "阿尔茨海默", "帕金森", "中风", "脑卒中", "心梗",
        "心肌梗", "心衰", "哮喘", "癫痫", "梅毒", "淋病", "性病", "白血病", "化疗", "放疗",
    ),
    MEDICATION: (
        "二甲双胍", "胰岛素", "阿司匹林", "阿托伐他汀", "瑞舒伐他汀", "他汀", "氨氯地平", "氯沙坦", "华法林",
        "氯吡格雷", "左甲状腺素",
        "奥美拉唑", "美托洛尔", "硝苯地平", "阿莫西林", "头孢", "布洛芬", "对乙酰氨基酚", "泼尼松", "激素治疗",
        "抗生素", "抗抑郁", "吗啡", "格列吡嗪", "格列美脲", "降糖药", "降压药", "司美格鲁肽",
    ),
    RESULT: (
        "化验结果", "检查结果", "检验结果", "体检结果", "化验单", "报告显示", "阳性", "阴性", "异常", "指标偏高",
        "指标偏低", "偏高", "偏低", "糖化血红蛋白",
    ),
}

# fmt: on

_REASONS = {
    DIAGNOSIS: gettext_noop("names a diagnosis"),
    CONDITION: gettext_noop("names a medical condition"),
    MEDICATION: gettext_noop("names a medication or treatment"),
    RESULT: gettext_noop("refers to a test or its result"),
    CODE: gettext_noop("looks like a diagnosis code (ICD-10)"),
}

# ICD-10: a letter (not U, reserved), two digits (or digit + A/B), optional ".x" — E11, I21.4, C50.911, O09.A.
# Vitamin B12 is the one look-alike common in health marketing.
_ICD10 = re.compile(
    r"(?<!维生素)(?<![Vv]itamin )(?<![A-Za-z0-9])[A-TV-Z][0-9][0-9AB](?:\.[0-9A-Z]{1,4})?(?![A-Za-z0-9])"
)
# A measured value next to a measure: 血糖 7.8, blood pressure 150/95, 血压：160/100, 6.5 mmol/L.
_VALUE = re.compile(
    r"(?:血糖|血压|血脂|胆固醇|尿酸|血红蛋白|glucose|blood sugar|blood pressure|cholesterol|\bBP\b)"
    r"[\s:：=为是]{0,3}\d+(?:\.\d+)?(?:\s*/\s*\d+)?"
    r"(?:\s*(?:mmol/L|mg/dL|mmHg|μmol/L|umol/L|g/L|%))?"
    r"|\d+(?:\.\d+)?\s*(?:mmol/L|mg/dL|mmHg|μmol/L|umol/L|g/L|IU/mL)"
    r"|\b\d{2,3}\s*/\s*\d{2,3}\s*(?:mmHg)",
    re.IGNORECASE,
)


def _en_pattern(terms: tuple[str, ...], flags: int) -> re.Pattern[str]:
    words = "|".join(re.escape(t).replace(r"\ ", r"\s+") for t in sorted(terms, key=len, reverse=True))
    return re.compile(rf"(?<![A-Za-z])(?:{words})(?:e?s)?(?![A-Za-z])", flags)


def _zh_pattern(terms: tuple[str, ...]) -> re.Pattern[str]:
    return re.compile("|".join(re.escape(t) for t in sorted(terms, key=len, reverse=True)))


_PATTERNS: list[tuple[str, re.Pattern[str]]] = [
    *((cat, _en_pattern(terms, re.IGNORECASE)) for cat, terms in _EN_TERMS.items()),
    *((cat, _en_pattern(terms, 0)) for cat, terms in _EN_ACRONYMS.items()),
    *((cat, _zh_pattern(terms)) for cat, terms in _ZH_TERMS.items()),
    (CODE, _ICD10),
    (RESULT, _VALUE),
]


@dataclass(frozen=True)
class Problem:
    term: str  # the text as written in the body
    category: str  # diagnosis, condition, medication, result, code
    start: int
    end: int
    message: str

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def lint_template(body: str) -> list[Problem]:
    """Every stretch of clinical detail in `body`, in order; overlapping finds keep the longest.

    Each distinct term is reported once (its first occurrence), so "HIV … HIV" is one problem.
    """
    found: list[tuple[int, int, str]] = []
    for category, pattern in _PATTERNS:
        for match in pattern.finditer(body):
            found.append((match.start(), match.end(), category))
    found.sort(key=lambda f: (f[0], -(f[1] - f[0])))
    problems: list[Problem] = []
    seen: set[str] = set()
    covered_to = -1
    for start, end, category in found:
        if start < covered_to:
            continue
        covered_to = end
        term = body[start:end]
        key = term.casefold()
        if key in seen:
            continue
        seen.add(key)
        problems.append(
            Problem(
                term=term,
                category=category,
                start=start,
                end=end,
                message=_("“%(term)s” %(reason)s; SMS must not carry clinical detail.")
                % {"term": term, "reason": _(_REASONS[category])},
            )
        )
    return problems


def lint_texts(texts: dict[str, str]) -> dict[str, list[Problem]]:
    """Lint several parts of a campaign (body, fallbacks, signature, tail), keyed by field name."""
    return {name: problems for name, text in texts.items() if (problems := lint_template(text))}

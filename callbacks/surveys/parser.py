"""Reading a patient's SMS reply to one survey question. Pure functions: no database, no settings.

Patients answer the way they talk: "5", "5分", "５", "五星", "⭐⭐⭐⭐", "非常满意", "I'd give it a 4",
"4 - the nurses were kind". We read one clear answer or admit we could not: "3 or 4", "三四" (spoken
Chinese for "three or four") and "45" on a 1–5 scale are not guessed at, because a wrong low score
opens a service-recovery case and a wrong high one hides a complaint. The flow asks once more instead.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

RATING, NPS, YES_NO, FREE_TEXT = "rating", "nps", "yes_no", "free_text"
SCALES = {RATING: (1, 5), NPS: (0, 10)}


@dataclass(frozen=True)
class ParsedAnswer:
    # rating 1–5, NPS 0–10, yes 1 / no 0; None for free text or when not understood.
    value: int | None
    # What the patient wrote beyond the answer itself ("the nurses were kind"), or the whole free text.
    text: str
    understood: bool
    # The words read as a complaint (free text, or a comment after a score).
    negative: bool


def parse_answer(kind: str, text: str) -> ParsedAnswer:
    """Read `text` as an answer to a question of `kind` (a QuestionKind value). Never raises on any text."""
    text = text or ""
    if kind in SCALES:
        low, high = SCALES[kind]
        return _parse_scale(text, low, high, rating=kind == RATING)
    if kind == YES_NO:
        return _parse_yes_no(text)
    if kind == FREE_TEXT:
        comment = text.strip()
        return ParsedAnswer(None, comment, bool(comment), is_negative(comment))
    raise ValueError(f"unknown question kind {kind!r}")


def _normalize(text: str) -> str:
    # NFKC folds full-width digits and letters ("５" → "5", "ＯＫ" → "OK") and ideographic spaces.
    # Case is kept for the comment we store; the patterns below ignore it.
    folded = unicodedata.normalize("NFKC", text).replace("’", "'")
    return re.sub(r"\s+", " ", folded).strip()


def _is_separator(ch: str) -> bool:
    return ch.isspace() or unicodedata.category(ch)[0] in "PSZ"


def _strip_separators(text: str) -> str:
    start, end = 0, len(text)
    while start < end and _is_separator(text[start]):
        start += 1
    while end > start and _is_separator(text[end - 1]):
        end -= 1
    return text[start:end]


# --- numbers -----------------------------------------------------------------------------------------

_CN_DIGITS = {
    "零": 0,
    "〇": 0,
    "一": 1,
    "二": 2,
    "两": 2,
    "三": 3,
    "四": 4,
    "五": 5,
    "六": 6,
    "七": 7,
    "八": 8,
    "九": 9,
}
_EN_NUMBERS = {
    "zero": 0,
    "one": 1,
    "two": 2,
    "three": 3,
    "four": 4,
    "five": 5,
    "six": 6,
    "seven": 7,
    "eight": 8,
    "nine": 9,
    "ten": 10,
}
_NUMBER = re.compile(
    r"(?P<digits>\d+(?:\.\d+)?)"
    r"|(?P<cn>[零〇一二两三四五六七八九十]+)"
    r"|(?<![a-z'])(?<!no )(?P<word>" + "|".join(_EN_NUMBERS) + r")(?![a-z])",
    re.IGNORECASE,
)
# A Chinese numeral inside a word ("一直", "第一", "一点", "一个护士") is not an answer; one standing alone
# or as "五分", "五星", "给四分" is.
_CN_BEFORE_OK = set("给打是评选为了:")
_CN_AFTER_OK = re.compile(r"(?:$|分|颗|个?星|吧|啊|呀|哦|呢)")
# Units and the like after a score: "5分", "五星", "4 stars", "8 points".
_UNITS = re.compile(r"^\s*(?:分|颗星|个星|星星|星|points?|pts?|stars?)", re.IGNORECASE)
_FRACTION = re.compile(r"^\s*(?:/|out of|of)\s*$", re.IGNORECASE)
_RANGE = re.compile(r"^\s*(?:-|~|–|—|to|or|and|/|,|、|或者?|到|至|和)\s*$", re.IGNORECASE)
_FULL_MARKS = re.compile(r"(?:满分|out of|总分)\s*$", re.IGNORECASE)


@dataclass(frozen=True)
class _Token:
    start: int
    end: int
    # None when it is a number but not a whole one we can trust (4.5, 三四).
    value: int | None


def _cn_value(run: str) -> int | None:
    if "十" not in run:
        # "三四" is spoken Chinese for "three or four": ambiguous, not 34.
        return _CN_DIGITS[run] if len(run) == 1 else None
    head, _sep, tail = run.partition("十")
    if "十" in tail or len(head) > 1 or len(tail) > 1:
        return None
    if head and _CN_DIGITS[head] == 0:
        return None
    return (_CN_DIGITS[head] if head else 1) * 10 + (_CN_DIGITS[tail] if tail else 0)


def _tokens(s: str) -> list[_Token]:
    found: list[_Token] = []
    for m in _NUMBER.finditer(s):
        if m.group("digits") is not None:
            digits = m.group("digits")
            value = None if "." in digits or len(digits) > 4 else int(digits)
        elif m.group("cn") is not None:
            before = s[m.start() - 1] if m.start() else " "
            if not (_is_separator(before) or before in _CN_BEFORE_OK):
                continue
            if not (_CN_AFTER_OK.match(s, m.end()) or _is_separator(s[m.end()])):
                continue
            value = _cn_value(m.group("cn"))
        else:
            value = _EN_NUMBERS[m.group("word").lower()]
        found.append(_Token(m.start(), m.end(), value))
    return found


def _merge_fractions(s: str, tokens: list[_Token], high: int) -> list[_Token] | None:
    """ "8/10", "8 out of 10" become 8 when the scale is out of 10; "满分10分" is dropped. None: another scale."""
    merged: list[_Token] = []
    i = 0
    while i < len(tokens):
        token = tokens[i]
        if _FULL_MARKS.search(s, 0, token.start):
            if token.value != high:
                return None
            i += 1
            continue
        if i + 1 < len(tokens) and _FRACTION.match(s[token.end : tokens[i + 1].start]):
            if tokens[i + 1].value != high:
                return None
            merged.append(_Token(token.start, tokens[i + 1].end, token.value))
            i += 2
            continue
        merged.append(token)
        i += 1
    return merged


def _after(s: str, end: int) -> str:
    rest = s[end:]
    unit = _UNITS.match(rest)
    if unit:
        rest = rest[unit.end() :]
    return _strip_separators(rest)


def _number_answer(s: str, low: int, high: int) -> tuple[int | None, str, bool, bool]:
    """(value, comment, found any number, the message starts with it).

    value None with found=True: a number we will not guess at.
    """
    tokens = _tokens(s)
    if not tokens:
        return None, "", False, False
    merged = _merge_fractions(s, tokens, high)
    if merged is None:
        return None, "", True, False
    if not merged:
        return None, "", False, False
    first = merged[0]
    leading = not _strip_separators(s[: first.start])
    if leading:
        # A leading score owns the message ("4 - the nurses were kind, 2 of them"), unless what follows
        # is another score offered as an alternative ("3 or 4", "3-4", "3到4").
        if len(merged) > 1 and _RANGE.match(s[first.end : merged[1].start]):
            return None, "", True, True
        chosen, comment = first, _after(s, first.end)
    else:
        values = {t.value for t in merged}
        if len(values) != 1:
            return None, "", True, False
        chosen, comment = merged[-1], _after(s, merged[-1].end)
    if chosen.value is None or not low <= chosen.value <= high:
        return None, "", True, leading
    return chosen.value, comment, True, leading


# --- words -------------------------------------------------------------------------------------------

_RATING_PHRASES: dict[str, int] = {
    "非常不满意": 1,
    "很不满意": 1,
    "特别不满意": 1,
    "极不满意": 1,
    "十分不满意": 1,
    "很差": 1,
    "非常差": 1,
    "太差": 1,
    "极差": 1,
    "特别差": 1,
    "很糟糕": 1,
    "糟糕": 1,
    "不太满意": 2,
    "不是很满意": 2,
    "不满意": 2,
    "不太好": 2,
    "不是很好": 2,
    "不好": 2,
    "较差": 2,
    "比较差": 2,
    "一般般": 3,
    "一般": 3,
    "还行": 3,
    "还可以": 3,
    "凑合": 3,
    "马马虎虎": 3,
    "比较满意": 4,
    "基本满意": 4,
    "满意": 4,
    "还不错": 4,
    "不错": 4,
    "挺好": 4,
    "较好": 4,
    "比较好": 4,
    "非常满意": 5,
    "十分满意": 5,
    "很满意": 5,
    "特别满意": 5,
    "超满意": 5,
    "非常好": 5,
    "很好": 5,
    "特别好": 5,
    "太好了": 5,
    "完美": 5,
    "very dissatisfied": 1,
    "extremely dissatisfied": 1,
    "very unsatisfied": 1,
    "very unhappy": 1,
    "terrible": 1,
    "awful": 1,
    "horrible": 1,
    "very bad": 1,
    "very poor": 1,
    "the worst": 1,
    "worst": 1,
    "not very satisfied": 2,
    "not satisfied": 2,
    "dissatisfied": 2,
    "unsatisfied": 2,
    "not happy": 2,
    "unhappy": 2,
    "not good": 2,
    "poor": 2,
    "bad": 2,
    "not bad": 4,
    "neutral": 3,
    "average": 3,
    "so so": 3,
    "so-so": 3,
    "okay": 3,
    "ok": 3,
    "fine": 3,
    "satisfied": 4,
    "good": 4,
    "happy": 4,
    "very satisfied": 5,
    "extremely satisfied": 5,
    "completely satisfied": 5,
    "very happy": 5,
    "very good": 5,
    "excellent": 5,
    "great": 5,
    "perfect": 5,
    "outstanding": 5,
}
# One character alone is an answer ("好", "差"); inside a sentence it is part of other words (好久, 差不多).
_RATING_WHOLE_ONLY = {"好": 4, "差": 2}


def _phrase_pattern(phrases: dict[str, int]) -> re.Pattern[str]:
    parts = []
    for phrase in sorted(phrases, key=len, reverse=True):
        escaped = re.escape(phrase)
        parts.append(rf"(?<![a-z]){escaped}(?![a-z])" if phrase.isascii() else escaped)
    return re.compile("|".join(parts), re.IGNORECASE)


_RATING_PHRASE_RE = _phrase_pattern(_RATING_PHRASES)
_EN_NEGATED = re.compile(r"(?:\bnot|\bnever|n't|\bno)\s+(?:\w+\s+)?$", re.IGNORECASE)
_ZH_NEGATED = re.compile(r"(?:不|没|没有|并不|从不|毫不|无)(?:是|太|很|算|怎么|那么)?$")


# Idioms that contain a rating word but are no rating: 说不好 / 不好说 is "hard to say".
_NOT_RATINGS = re.compile("说不好|不好说|不好意思|好久|好多|好像")


def _phrase_answer(s: str) -> tuple[int | None, str, bool]:
    original = s
    # Blanked to spaces of the same length, so positions still point into the original for the comment.
    s = _NOT_RATINGS.sub(lambda m: " " * len(m.group()), s)
    bare = _strip_separators(s).lower()
    if bare in _RATING_WHOLE_ONLY:
        return _RATING_WHOLE_ONLY[bare], "", True
    matches = list(_RATING_PHRASE_RE.finditer(s))
    if not matches:
        return None, "", False
    values = {_RATING_PHRASES[m.group().lower()] for m in matches}
    negated = any(_EN_NEGATED.search(s, 0, m.start()) or _ZH_NEGATED.search(s, 0, m.start()) for m in matches)
    if len(values) != 1 or negated:
        return None, "", True
    return values.pop(), _strip_separators(original[matches[-1].end() :]), True


_STARS = re.compile(r"^\s*([⭐★🌟☆✩\s]+)")
_FILLED_STARS = set("⭐★🌟")


def _parse_scale(text: str, low: int, high: int, *, rating: bool) -> ParsedAnswer:
    # "十分满意" is "very satisfied", not ten points.
    s = re.sub(r"十分(?=不?满意|好|差|糟)", "非常", _normalize(text))
    stars = _STARS.match(s)
    if stars and any(ch in _FILLED_STARS for ch in stars.group(1)):
        count = sum(ch in _FILLED_STARS for ch in stars.group(1))
        comment = _strip_separators(s[stars.end() :])
        if low <= count <= high and not _tokens(comment):
            return ParsedAnswer(count, comment, True, is_negative(comment))
        return ParsedAnswer(None, "", False, False)
    number, number_comment, had_number, leading = _number_answer(s, low, high)
    word, word_comment, had_word = _phrase_answer(s) if rating else (None, "", False)
    # A leading score is the answer whatever its comment says ("2 - the food was good, the wait was not");
    # a score and words elsewhere that disagree ("非常满意 2") are not guessed at.
    if had_number and had_word and number != word and not (leading and number is not None):
        return ParsedAnswer(None, "", False, False)
    if number is not None:
        return ParsedAnswer(number, number_comment, True, is_negative(number_comment))
    if had_number:
        return ParsedAnswer(None, "", False, False)
    if word is not None:
        return ParsedAnswer(word, word_comment, True, is_negative(word_comment))
    return ParsedAnswer(None, "", False, False)


# --- yes / no ------------------------------------------------------------------------------------------

_YES = [
    "yes",
    "y",
    "yeah",
    "yep",
    "yup",
    "sure",
    "ok",
    "okay",
    "是",
    "是的",
    "对",
    "对的",
    "有",
    "有的",
    "好",
    "好的",
    "嗯",
    "可以",
    "会",
]
_NO = ["no", "n", "nope", "not really", "否", "不是", "没有", "没", "不", "不会", "不用", "无", "没有的", "不对"]


def _parse_yes_no(text: str) -> ParsedAnswer:
    s = _strip_separators(_normalize(text))
    lowered = s.lower()
    best: tuple[int, int] | None = None
    for group, value in ((_NO, 0), (_YES, 1)):
        for word in group:
            matches = lowered == word or (lowered.startswith(word) and _is_separator(s[len(word)]))
            if matches and (best is None or len(word) > best[1]):
                best = (value, len(word))
    if best is None:
        return ParsedAnswer(None, "", False, False)
    value, length = best
    comment = _strip_separators(s[length:])
    return ParsedAnswer(value, comment, True, is_negative(comment))


# --- complaints ------------------------------------------------------------------------------------------

_NEGATIVE_ZH = [
    "不满意",
    "投诉",
    "举报",
    "态度不好",
    "态度差",
    "态度恶劣",
    "恶劣",
    "太慢",
    "很慢",
    "好慢",
    "特别慢",
    "非常慢",
    "比较慢",
    "慢吞吞",
    "等了很久",
    "等了好久",
    "等了半天",
    "等太久",
    "太久",
    "排队",
    "乱收费",
    "收费不合理",
    "多收费",
    "太贵",
    "脏",
    "不干净",
    "不耐烦",
    "冷漠",
    "凶",
    "骂",
    "不专业",
    "失望",
    "糟糕",
    "没人管",
    "没人理",
    "不理人",
    "不好",
    "推诿",
    "不负责",
    "粗鲁",
    "敷衍",
    "生气",
    "气愤",
    "不礼貌",
    "吵",
    "垃圾",
    "差",
]
# Ordinary words that happen to contain a cue: 心脏 (heart) is not 脏 (dirty), 差不多 is "about right".
_NOT_COMPLAINTS_ZH = re.compile(
    "心脏|肝脏|肾脏|脏器|内脏|差不多|出差|差点|差异|误差|偏差|差别|相差|时差|温差|不好意思|排队挂号"
)
_NEGATIVE_EN = [
    r"terrible",
    r"awful",
    r"horrible",
    r"rude(?:ly|ness)?",
    r"complain\w*",
    r"complaint\w*",
    r"waited",
    r"long wait\w*",
    r"too long",
    r"dirty",
    r"filthy",
    r"unprofessional",
    r"disappoint\w*",
    r"bad(?:ly)?",
    r"poor(?:ly)?",
    r"worst",
    r"slow(?:ly)?",
    r"overcharg\w*",
    r"ignor\w*",
    r"careless\w*",
    r"unfriendly",
    r"impolite",
    r"angry",
    r"unacceptable",
    r"unhappy",
    r"not happy",
    r"dissatisfied",
    r"unsatisfied",
    r"not satisfied",
    r"never again",
    r"disrespect\w*",
    r"nobody came",
    r"no one came",
]
_NEGATIVE_RE = re.compile(
    "|".join(
        [*(re.escape(c) for c in sorted(_NEGATIVE_ZH, key=len, reverse=True)), *(rf"\b{c}\b" for c in _NEGATIVE_EN)]
    )
)
_CLAUSE_BREAK = re.compile(r"[,.;!?。，；！？]|\bbut\b|但是?|可是")
_EN_NEGATORS = {"not", "no", "never", "nothing", "without", "hardly", "nobody"}


def _negated(s: str, start: int, cue: str) -> bool:
    before = s[:start]
    breaks = list(_CLAUSE_BREAK.finditer(before))
    if breaks:
        before = before[breaks[-1].end() :]
    if cue.isascii():
        words = re.findall(r"[a-z']+", before)[-3:]
        return any(w in _EN_NEGATORS or w.endswith("n't") for w in words)
    return bool(_ZH_NEGATED.search(before))


def is_negative(text: str) -> bool:
    """Whether free text reads as a complaint: a cue word not negated in its own clause ("不差", "not rude")."""
    s = _normalize(text).lower()
    if not s:
        return False
    s = _NOT_COMPLAINTS_ZH.sub(lambda m: " " * len(m.group()), s)
    return any(not _negated(s, m.start(), m.group()) for m in _NEGATIVE_RE.finditer(s))

"""Reading SMS survey replies the way patients write them. Pure functions: no database."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from callbacks.surveys.parser import FREE_TEXT, NPS, RATING, YES_NO, is_negative, parse_answer

CN = ["零", "一", "二", "三", "四", "五", "六", "七", "八", "九", "十"]
EN = ["zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine", "ten"]
FULL_WIDTH = str.maketrans("0123456789", "０１２３４５６７８９")


@pytest.mark.parametrize(
    ("text", "value", "comment"),
    [
        ("5", 5, ""),
        ("5分", 5, ""),
        ("５", 5, ""),
        ("五", 5, ""),
        ("五星", 5, ""),
        ("5星", 5, ""),
        ("五颗星", 5, ""),
        ("给四分", 4, ""),
        ("⭐⭐⭐⭐", 4, ""),
        ("★★★☆☆", 3, ""),
        ("⭐⭐ 护士态度不好", 2, "护士态度不好"),
        ("非常满意", 5, ""),
        ("十分满意", 5, ""),
        ("满意", 4, ""),
        ("比较满意", 4, ""),
        ("一般", 3, ""),
        ("不满意", 2, ""),
        ("不太满意", 2, ""),
        ("非常不满意", 1, ""),
        ("很差", 1, ""),
        ("very satisfied", 5, ""),
        ("Very Satisfied!", 5, ""),
        ("satisfied", 4, ""),
        ("neutral", 3, ""),
        ("dissatisfied", 2, ""),
        ("terrible", 1, ""),
        ("4 out of 5", 4, ""),
        ("4/5", 4, ""),
        ("I'd give it a 4", 4, ""),
        ("I’d give it a 4", 4, ""),
        ("four", 4, ""),
        ("Four stars", 4, ""),
        ("4!", 4, ""),
        ("  4 ", 4, ""),
        ("4 - the nurses were kind", 4, "the nurses were kind"),
        ("4，护士很耐心", 4, "护士很耐心"),
        ("5 - waited 2 hours but worth it", 5, "waited 2 hours but worth it"),
        ("5 非常满意", 5, "非常满意"),
        ("满意，伤口好多了", 4, "伤口好多了"),
        ("2 - the food was good", 2, "the food was good"),
        ("护士一直很好", 5, ""),
    ],
)
def test_rating_replies_are_read(text: str, value: int, comment: str) -> None:
    parsed = parse_answer(RATING, text)

    assert (parsed.understood, parsed.value, parsed.text) == (True, value, comment)


@pytest.mark.parametrize(
    "text",
    [
        "3 or 4",
        "3-4",
        "3到4",
        "三四",
        "45",
        "0",
        "6",
        "4.5",
        "10/10",
        "8 out of 10",
        "",
        "   ",
        "?",
        "hello",
        "谢谢",
        "一个护士很凶",
        "说不好",
        "不好说",
        "等了好久",
        "非常满意 2",
        "the food was good but the nurse was bad",
        "not very good",
        "13800138000",
        "👍",
    ],
)
def test_ambiguous_or_out_of_range_ratings_are_not_guessed(text: str) -> None:
    parsed = parse_answer(RATING, text)

    assert not parsed.understood
    assert parsed.value is None


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("10/10", 10),
        ("8 out of 10", 8),
        ("8/10", 8),
        ("十", 10),
        ("十分", 10),
        ("九", 9),
        ("九分", 9),
        ("零", 0),
        ("0", 0),
        ("１０", 10),
        ("给八分", 8),
        ("满分10分，我给9分", 9),
        ("I'd say a 7", 7),
        ("ten", 10),
    ],
)
def test_nps_replies_are_read(text: str, value: int) -> None:
    parsed = parse_answer(NPS, text)

    assert (parsed.understood, parsed.value) == (True, value)


@pytest.mark.parametrize("text", ["11", "8/5", "7 or 8", "非常满意", "十一", "-", "100"])
def test_nps_replies_outside_0_to_10_or_ambiguous_are_not_understood(text: str) -> None:
    assert not parse_answer(NPS, text).understood


@pytest.mark.parametrize(
    ("text", "value"),
    [
        *[(t, 1) for t in ["yes", "Y", "YES!", "yeah", "是", "是的", "对", "对的", "有", "好的", "ok", "OK", "嗯"]],
        *[(t, 0) for t in ["no", "N", "No.", "nope", "否", "不是", "没有", "没", "不", "没有的"]],
    ],
)
def test_yes_no_replies_are_read(text: str, value: int) -> None:
    parsed = parse_answer(YES_NO, text)

    assert (parsed.understood, parsed.value) == (True, value)


def test_yes_with_a_comment_keeps_the_comment() -> None:
    parsed = parse_answer(YES_NO, "Yes, the nurse called on Monday")

    assert (parsed.value, parsed.text) == (1, "the nurse called on Monday")


@pytest.mark.parametrize("text", ["yesterday", "nothing", "maybe", "", "3", "有点"])
def test_yes_no_does_not_read_words_that_merely_start_like_an_answer(text: str) -> None:
    assert not parse_answer(YES_NO, text).understood


@pytest.mark.parametrize(
    "text",
    [
        "very rude nurse",
        "The doctor was RUDE",
        "I want to complain about billing",
        "waited 3 hours at the pharmacy",
        "the room was dirty",
        "terrible",
        "服务差",
        "不满意",
        "我要投诉",
        "护士态度不好",
        "取药太慢",
        "等了很久",
        "乱收费",
        "病房很脏",
        "护士很好，但是医生态度不好",
        "the nurse was kind, but the porter was rude",
    ],
)
def test_complaints_are_read_as_negative(text: str) -> None:
    parsed = parse_answer(FREE_TEXT, text)

    assert parsed.understood and parsed.negative
    assert parsed.text == text.strip()


@pytest.mark.parametrize(
    "text",
    [
        "不差",
        "一点也不差",
        "服务不差",
        "not rude at all",
        "no complaints",
        "nothing to complain about",
        "the nurses were wonderful",
        "护士很好",
        "心脏好多了，谢谢",
        "差不多都挺好的",
        "不好意思回复晚了，都很好",
        "never waited",
        "",
    ],
)
def test_praise_and_negated_cues_are_not_negative(text: str) -> None:
    assert not is_negative(text)
    assert not parse_answer(FREE_TEXT, text).negative


def test_empty_free_text_is_not_an_answer() -> None:
    assert not parse_answer(FREE_TEXT, "  ").understood
    assert parse_answer(FREE_TEXT, " 很好 ").text == "很好"


def test_a_score_with_a_complaint_is_read_as_both() -> None:
    parsed = parse_answer(RATING, "2 - the nurse was rude")

    assert (parsed.value, parsed.text, parsed.negative) == (2, "the nurse was rude", True)


def test_unknown_kind_is_a_programming_error() -> None:
    with pytest.raises(ValueError, match="unknown question kind"):
        parse_answer("choice", "1")


# --- properties ------------------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "low", "high"), [(RATING, 1, 5), (NPS, 0, 10)])
def test_every_score_in_range_reads_back_in_every_spelling(kind: str, low: int, high: int) -> None:
    for n in range(low, high + 1):
        spellings = [
            str(n),
            f"{n}分",
            f" {n} ",
            f"{n}!",
            str(n).translate(FULL_WIDTH),
            CN[n],
            f"{CN[n]}分",
            EN[n],
            f"{n}/{high}",
            f"{n} out of {high}",
            f"I'd give it a {n}",
        ]
        for text in spellings:
            parsed = parse_answer(kind, text)
            assert (parsed.understood, parsed.value) == (True, n), text


@given(n=st.integers(min_value=1, max_value=5), comment=st.sampled_from(["the nurses were kind", "护士很耐心", "ok"]))
def test_a_leading_rating_owns_the_message_and_keeps_the_comment(n: int, comment: str) -> None:
    for sep in [" - ", ", ", "，", " "]:
        parsed = parse_answer(RATING, f"{n}{sep}{comment}")
        assert (parsed.value, parsed.text) == (n, comment)


@given(a=st.integers(min_value=1, max_value=5), b=st.integers(min_value=1, max_value=5))
def test_two_different_scores_offered_as_alternatives_are_never_guessed(a: int, b: int) -> None:
    for connector in [" or ", "-", " to ", "到", "或"]:
        parsed = parse_answer(RATING, f"{a}{connector}{b}")
        if a != b:
            assert not parsed.understood


@given(n=st.integers(min_value=6, max_value=10_000))
def test_numbers_outside_the_rating_scale_are_not_understood(n: int) -> None:
    assert not parse_answer(RATING, str(n)).understood
    assert not parse_answer(RATING, f"{n}分").understood


@given(kind=st.sampled_from([RATING, NPS, YES_NO, FREE_TEXT]), text=st.text(max_size=200))
def test_any_text_is_read_without_raising_and_values_stay_in_range(kind: str, text: str) -> None:
    parsed = parse_answer(kind, text)

    if not parsed.understood or kind == FREE_TEXT:
        assert parsed.value is None
    elif kind == RATING:
        assert parsed.value is not None and 1 <= parsed.value <= 5
    elif kind == NPS:
        assert parsed.value is not None and 0 <= parsed.value <= 10
    else:
        assert parsed.value in (0, 1)
    assert isinstance(parsed.negative, bool)


@given(
    kind=st.sampled_from([RATING, NPS, YES_NO]),
    text=st.text(
        alphabet=st.sampled_from(list("0123456789 /-分星五十一二三四ok yes no 是否⭐☆满意不很差")), max_size=30
    ),
)
def test_answer_like_junk_never_raises(kind: str, text: str) -> None:
    parse_answer(kind, text)

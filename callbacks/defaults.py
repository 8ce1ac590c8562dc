"""The follow-up configuration a new hospital starts with; admins change it in the Django admin afterwards.

install_default_plans() is idempotent and never overwrites what an admin edited: rows are created when
missing, found by date or name otherwise.
"""

from __future__ import annotations

import datetime as dt

from django.db import transaction

from callbacks.business_calendar import clear_calendar_cache
from callbacks.models import CalendarDay, CallScript, FollowUpPlan, PlanStep, QuestionKind, StepKind, Survey
from callbacks.models.surveys import SurveyQuestion
from contactcenter.models import Team

DEFAULT_SURVEY_NAME = "Discharge satisfaction"
DEFAULT_CALL_SCRIPT_NAME = "Post-discharge nurse call"
CARDIOLOGY_PLAN_NAME = "Cardiology follow-up"
CATCH_ALL_PLAN_NAME = "Standard follow-up"

_NEW_YEAR = "New Year / 元旦"
_SPRING = "Spring Festival / 春节"
_QINGMING = "Qingming / 清明节"
_LABOUR = "Labour Day / 劳动节"
_DRAGON_BOAT = "Dragon Boat Festival / 端午节"
_MID_AUTUMN = "Mid-Autumn Festival / 中秋节"
_NATIONAL = "National Day / 国庆节"
_WORKDAY = "调休 workday / 调休上班"


def _days(first: dt.date, last: dt.date) -> list[dt.date]:
    return [first + dt.timedelta(days=i) for i in range((last - first).days + 1)]


def _d(year: int, month: int, day: int) -> dt.date:
    return dt.date(year, month, day)


# (holidays, 调休 working weekend days), each as (dates, name).
# 2026: the State Council General Office's notice of 4 November 2025 (关于2026年部分节假日安排的通知).
HOLIDAYS_2026: list[tuple[list[dt.date], str]] = [
    (_days(_d(2026, 1, 1), _d(2026, 1, 3)), _NEW_YEAR),
    (_days(_d(2026, 2, 15), _d(2026, 2, 23)), _SPRING),
    (_days(_d(2026, 4, 4), _d(2026, 4, 6)), _QINGMING),
    (_days(_d(2026, 5, 1), _d(2026, 5, 5)), _LABOUR),
    (_days(_d(2026, 6, 19), _d(2026, 6, 21)), _DRAGON_BOAT),
    (_days(_d(2026, 9, 25), _d(2026, 9, 27)), _MID_AUTUMN),
    (_days(_d(2026, 10, 1), _d(2026, 10, 7)), _NATIONAL),
]
WORKDAYS_2026: list[dt.date] = [
    _d(2026, 1, 4),
    _d(2026, 2, 14),
    _d(2026, 2, 28),
    _d(2026, 5, 9),
    _d(2026, 9, 20),
    _d(2026, 10, 10),
]

# 2027 is PROVISIONAL: the State Council had not published its 2027 arrangement when this was written.
# These are the statutory days of the 2024 holiday regulation (全国年节及纪念日放假办法) on 2027's dates,
# plus the weekday 补假 the regulation requires when a statutory day falls on a weekend. The real notice
# will add 调休 bridge days and working weekends: enter them in the admin (Calendar days) when it is out.
HOLIDAYS_2027: list[tuple[list[dt.date], str]] = [
    ([_d(2027, 1, 1)], _NEW_YEAR),
    # 除夕 Fri 5 Feb to 初三 Mon 8 Feb; Sat/Sun made good on Tue 9 and Wed 10.
    (_days(_d(2027, 2, 5), _d(2027, 2, 10)), _SPRING),
    ([_d(2027, 4, 5)], _QINGMING),
    # 1–2 May are a weekend: made good on Mon 3 and Tue 4.
    (_days(_d(2027, 5, 1), _d(2027, 5, 4)), _LABOUR),
    ([_d(2027, 6, 9)], _DRAGON_BOAT),
    ([_d(2027, 9, 15)], _MID_AUTUMN),
    # 1–3 Oct, with Sat 2 and Sun 3 made good on Mon 4 and Tue 5.
    (_days(_d(2027, 10, 1), _d(2027, 10, 5)), _NATIONAL),
]
WORKDAYS_2027: list[dt.date] = []


def _install_calendar() -> None:
    existing = set(CalendarDay.objects.values_list("date", flat=True))
    rows = [
        CalendarDay(date=day, is_workday=False, name=name)
        for holidays in (HOLIDAYS_2026, HOLIDAYS_2027)
        for days, name in holidays
        for day in days
        if day not in existing
    ]
    rows += [
        CalendarDay(date=day, is_workday=True, name=_WORKDAY)
        for day in (*WORKDAYS_2026, *WORKDAYS_2027)
        if day not in existing
    ]
    # bulk_create sends no post_save, so the calendar cache is cleared by hand below.
    CalendarDay.objects.bulk_create(rows, ignore_conflicts=True)


# Short enough for one SMS segment each; no clinical words, so nothing is disclosed to whoever reads the phone.
_SURVEY_QUESTIONS = [
    (
        QuestionKind.RATING,
        "overall",
        "Overall, how satisfied were you with your stay? Reply 1 (very unhappy) to 5 (very happy).",
        "您对本次住院总体满意吗？请回复1-5（1非常不满意，5非常满意）",
    ),
    (
        QuestionKind.RATING,
        "doctor",
        "How satisfied were you with your doctors? Reply 1 to 5.",
        "您对医生的服务满意吗？请回复1-5",
    ),
    (
        QuestionKind.RATING,
        "nurse",
        "How satisfied were you with your nurses? Reply 1 to 5.",
        "您对护士的服务满意吗？请回复1-5",
    ),
    (
        QuestionKind.NPS,
        "recommend",
        "How likely are you to recommend us to family and friends? Reply 0 (not at all) to 10 (very likely).",
        "您向亲友推荐我院的可能性有多大？请回复0-10（0完全不会，10非常愿意）",
    ),
    (
        QuestionKind.FREE_TEXT,
        "comment",
        "Anything we could do better? Reply with your comments.",
        "您对我们还有什么意见或建议？请直接回复。",
    ),
]

_CALL_SCRIPT_QUESTIONS = [
    {
        "key": "feeling",
        "kind": "rating",
        "prompt_en": "How are you feeling today? (1 very poorly – 5 very well)",
        "prompt_zh": "您今天感觉怎么样？（1很差 – 5很好）",
        "required": True,
    },
    {
        "key": "medication_understood",
        "kind": "yes_no",
        "prompt_en": "Do you understand how and when to take your medication?",
        "prompt_zh": "您清楚药物的服用方法和时间吗？",
        "required": True,
    },
    {
        "key": "appointment_booked",
        "kind": "yes_no",
        "prompt_en": "Is your follow-up appointment booked?",
        "prompt_zh": "您已经预约复诊了吗？",
        "required": True,
    },
    {
        "key": "concerns",
        "kind": "free_text",
        "prompt_en": "Any concerns or questions?",
        "prompt_zh": "您还有其他担心或疑问吗？",
        "required": False,
    },
]


def _install_survey() -> Survey:
    survey, created = Survey.objects.get_or_create(
        name=DEFAULT_SURVEY_NAME,
        defaults={
            "name_zh": "出院满意度调查",
            "intro_en": "Thank you for staying with us. A few quick questions about your stay; reply STOP to opt out.",
            "intro_zh": "感谢您选择我院。请回答几个关于本次住院的简短问题，回复退订可停止接收。",
            "thanks_en": "Thank you for your feedback. We wish you a good recovery.",
            "thanks_zh": "感谢您的反馈，祝您早日康复！",
        },
    )
    if created:
        SurveyQuestion.objects.bulk_create(
            SurveyQuestion(survey=survey, position=i, kind=kind, key=key, prompt_en=en, prompt_zh=zh)
            for i, (kind, key, en, zh) in enumerate(_SURVEY_QUESTIONS, start=1)
        )
    return survey


def _install_call_script() -> CallScript:
    script, _created = CallScript.objects.get_or_create(
        name=DEFAULT_CALL_SCRIPT_NAME, defaults={"name_zh": "出院随访电话", "questions": _CALL_SCRIPT_QUESTIONS}
    )
    return script


def _install_plan(*, name: str, name_zh: str, department: Team | None, steps: list[dict[str, object]]) -> FollowUpPlan:
    plan, created = FollowUpPlan.objects.get_or_create(
        name=name, defaults={"name_zh": name_zh, "department": department}
    )
    if created:
        PlanStep.objects.bulk_create(PlanStep(plan=plan, position=i, **s) for i, s in enumerate(steps, start=1))
    return plan


@transaction.atomic
def install_default_plans() -> None:
    """Holidays for 2026–2027, the discharge survey, the nurse call script and two plans; safe to run again."""
    _install_calendar()
    survey = _install_survey()
    script = _install_call_script()
    cardiology, _created = Team.objects.get_or_create(
        code="cardiology", defaults={"name": "Cardiology", "name_zh": "心内科"}
    )
    # "Within 2 business days": due the first business day after discharge, deadline the end of the next one.
    first_call = {
        "kind": StepKind.CALL,
        "offset_days": 1,
        "business_days": True,
        "deadline_days": 1,
        "call_script": script,
        "max_attempts": 3,
        "retry_interval_hours": 4,
    }
    day7_survey = {"kind": StepKind.SMS_SURVEY, "offset_days": 7, "deadline_days": 3, "survey": survey}
    day30_call = {
        "kind": StepKind.CALL,
        "offset_days": 30,
        "deadline_days": 3,
        "call_script": script,
        "max_attempts": 3,
        "retry_interval_hours": 4,
    }
    _install_plan(
        name=CARDIOLOGY_PLAN_NAME,
        name_zh="心内科出院随访",
        department=cardiology,
        steps=[first_call, day7_survey, day30_call],
    )
    _install_plan(name=CATCH_ALL_PLAN_NAME, name_zh="标准出院随访", department=None, steps=[first_call, day7_survey])
    transaction.on_commit(clear_calendar_cache)
    clear_calendar_cache()

"""The follow-up worklist, live, in a real browser.

Spec: a discharge arrives → the dispatcher opens the call task → nina sees it on Due with its contact
deadline, claims it, fills the script, records "No answer" (the task leaves Due, 1/3 attempts), then on the
retry records "Reached" and the task is Done. Screenshots in English and Simplified Chinese.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from django.contrib.auth.hashers import PBKDF2PasswordHasher
from django.db import connections
from django.utils import timezone
from playwright.sync_api import Expect, Page

from callbacks.actions.discharges import Demographics, DischargeRecord, record_discharge
from callbacks.dispatcher import dispatch_due_tasks
from callbacks.models import (
    CallAttempt,
    CallbackTask,
    CallScript,
    FollowUpPlan,
    IntakeSource,
    PlanStep,
    StepKind,
    TaskKind,
    TaskStatus,
)
from tests.browser.conftest import login, screenshot
from tests.conftest import PASSWORD, World

expect = Expect()
expect.set_options(timeout=10_000)

T = TypeVar("T")

PATIENT_NAME = "<b>Wang</b> Fang"
QUESTIONS = [
    {
        "key": "pain",
        "kind": "rating",
        "prompt_en": "Pain today, 1–5",
        "prompt_zh": "今天疼痛程度 1–5",
        "required": True,
    },
    {"key": "meds", "kind": "yes_no", "prompt_en": "Taking the medication?", "prompt_zh": "按时服药吗？"},
    {"key": "comment", "kind": "free_text", "prompt_en": "Anything else?", "prompt_zh": "其他情况？"},
]


class QuickPBKDF2(PBKDF2PasswordHasher):
    iterations = 1_000


@pytest.fixture(autouse=True)
def quick_password_hashing(settings: Any) -> None:
    settings.PASSWORD_HASHERS = [f"{__name__}.QuickPBKDF2"]


def off_loop(fn: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run ORM work in its own thread: Playwright's sync API keeps an event loop in the test thread."""

    def run() -> T:
        try:
            return fn(*args, **kwargs)
        finally:
            connections.close_all()

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(run).result()


def discharge_arrives(world: World) -> CallbackTask:
    """The cardiology plan's day-0 call, recorded as the HIS would send it, then opened by the dispatcher."""
    script = CallScript.objects.create(name="Cardiology first call", name_zh="心内科首次回访", questions=QUESTIONS)
    plan = FollowUpPlan.objects.create(name="Cardiology", department=world.team_a)
    PlanStep.objects.create(
        plan=plan,
        position=1,
        kind=StepKind.CALL,
        offset_days=0,
        business_days=True,
        deadline_days=2,
        call_script=script,
        max_attempts=3,
        retry_interval_hours=4,
    )
    result = record_discharge(
        DischargeRecord(
            visit_number="ZY20250610001",
            demographics=Demographics(mrn="MRN778899", name=PATIENT_NAME, phone="+8613800138000", gender="female"),
            department_code="cardiology",
            discharged_at=timezone.now() - dt.timedelta(hours=3),
            source=IntakeSource.REST,
            ward="5A",
            attending_doctor="Dr. Zhang",
            diagnoses=[{"code": "I21.4", "text": "NSTEMI", "system": "I10"}],
        )
    )
    task = CallbackTask.objects.get(discharge=result.discharge, kind=TaskKind.CALL)
    # The dispatcher opens the task when it comes due (the start of calling hours on a business day).
    dispatch_due_tasks(now=max(timezone.now(), task.due_at) + dt.timedelta(minutes=1))
    task.refresh_from_db()
    assert task.status == TaskStatus.OPEN
    return task


def the_retry_comes_due(task_id: int) -> None:
    """Four hours pass: move the attempt and the retry time into the past, then let the dispatcher run."""
    task = CallbackTask.objects.get(pk=task_id)
    assert task.retry_at is not None
    shift = task.retry_at - timezone.now() + dt.timedelta(minutes=1)
    CallAttempt.objects.filter(task=task).update(attempted_at=task.attempts.get().attempted_at - shift)
    CallbackTask.objects.filter(pk=task_id).update(
        retry_at=task.retry_at - shift, next_action_at=timezone.now() - dt.timedelta(seconds=1)
    )
    dispatch_due_tasks()


def open_worklist(page: Page, live_server_url: str, view: str = "due") -> None:
    page.goto(f"{live_server_url}/followup/?view={view}")
    expect(page.get_by_test_id(f"tab-{view}")).to_have_attribute("aria-selected", "true")


@pytest.mark.browser
def test_a_nurse_works_a_discharge_call_from_due_to_done(
    transactional_db: None, world: World, live_server_url: str, browser: Any
) -> None:
    task = off_loop(discharge_arrives, world)
    nina = login(browser, live_server_url, "nina", PASSWORD)
    nina.get_by_role("link", name="Follow-up").click()
    expect(nina.get_by_test_id("tab-due")).to_have_attribute("aria-selected", "true")

    # --- The task is on Due with its contact deadline -------------------------------------------------
    row = nina.get_by_test_id("task-row")
    expect(row).to_have_count(1)
    expect(row).to_have_attribute("data-task-id", str(task.pk))
    expect(row.get_by_test_id("task-patient")).to_have_text(PATIENT_NAME)  # text, never markup
    expect(row.get_by_test_id("task-phone")).to_have_text("138****8000")
    expect(row.get_by_test_id("task-deadline")).to_contain_text("Due in")
    expect(row.get_by_test_id("task-attempts")).to_have_text("Attempts 0/3")
    expect(nina.get_by_test_id("tab-due").get_by_test_id("tab-count")).to_have_text("1")

    # --- Claim, open the patient 360, fill the script, no answer ---------------------------------------
    row.get_by_test_id("claim-button").click()
    expect(nina.get_by_test_id("detail-status")).to_have_text("In progress")
    expect(nina.get_by_test_id("tel-link")).to_have_attribute("href", "tel:+8613800138000")
    expect(nina.get_by_test_id("discharge-facts")).to_contain_text("I21.4 NSTEMI")
    nina.get_by_test_id("open-patient-360").click()
    expect(nina.get_by_test_id("patient-name")).to_have_text(PATIENT_NAME)
    expect(nina.get_by_test_id("tab-mine").get_by_test_id("tab-count")).to_have_text("1")

    nina.get_by_test_id("answer-pain-4").click()
    nina.get_by_test_id("attempt-notes").fill("Rang ten times, no voicemail")
    nina.get_by_test_id("outcome-no_answer").click()
    screenshot(nina, "followup-worklist-en")
    nina.get_by_test_id("save-attempt").click()

    expect(nina.get_by_test_id("worklist-empty")).to_be_visible()
    expect(nina.get_by_test_id("task-row")).to_have_count(0)
    expect(nina.get_by_test_id("detail-attempts")).to_have_text("Attempts 1/3")
    expect(nina.get_by_test_id("task-notice")).to_contain_text("No answer last time")
    expect(nina.get_by_test_id("attempt")).to_have_count(1)
    nina.get_by_test_id("tab-upcoming").click()
    expect(nina.get_by_test_id("task-row")).to_have_count(1)
    expect(nina.get_by_test_id("task-row").get_by_test_id("task-attempts")).to_have_text("Attempts 1/3")
    expect(nina.get_by_test_id("task-row").get_by_test_id("task-deadline")).to_contain_text("Retry from")

    # --- The retry comes due: claim again, reached, done ---------------------------------------------
    off_loop(the_retry_comes_due, task.pk)
    nina.get_by_test_id("tab-due").click()
    row = nina.get_by_test_id("task-row")
    expect(row).to_have_count(1)
    row.get_by_test_id("claim-button").click()
    expect(nina.get_by_test_id("detail-status")).to_have_text("In progress")
    nina.get_by_test_id("outcome-reached").click()
    nina.get_by_test_id("save-attempt").click()
    # The pain rating is required once the patient is reached: a field error, nothing stored.
    expect(nina.get_by_test_id("error-answers.pain")).to_have_text(
        "This question needs an answer when the patient was reached."
    )
    nina.get_by_test_id("answer-pain-4").click()
    nina.get_by_test_id("answer-meds-true").click()
    nina.get_by_test_id("answer-comment").fill("Walking 20 minutes a day")
    nina.get_by_test_id("save-attempt").click()
    expect(nina.get_by_test_id("detail-status")).to_have_text("Completed")
    expect(nina.get_by_test_id("task-row")).to_have_count(0)
    nina.get_by_test_id("tab-done").click()
    expect(nina.get_by_test_id("task-row")).to_have_count(1)
    expect(nina.get_by_test_id("task-row")).to_have_attribute("data-status", "completed")
    expect(nina.get_by_test_id("attempt")).to_have_count(2)

    stored = off_loop(lambda: CallbackTask.objects.get(pk=task.pk))
    assert (stored.status, stored.outcome, stored.attempt_count) == (TaskStatus.COMPLETED, "reached", 2)
    answers = off_loop(lambda: list(CallAttempt.objects.filter(task_id=task.pk).values_list("outcome", "answers")))
    assert answers == [
        ("no_answer", {"pain": 4}),
        ("reached", {"pain": 4, "meds": True, "comment": "Walking 20 minutes a day"}),
    ]
    nina.context.close()

    # --- The same page in Simplified Chinese ---------------------------------------------------------
    nina_zh = login(browser, live_server_url, "nina", PASSWORD, locale="zh-CN")
    open_worklist(nina_zh, live_server_url, "done")
    expect(nina_zh.locator("html")).to_have_attribute("lang", "zh-hans")
    nina_zh.get_by_test_id("task-row").locator(".task-link").click()
    expect(nina_zh.get_by_test_id("attempt")).to_have_count(2)
    screenshot(nina_zh, "followup-worklist-zh")
    nina_zh.context.close()


HOSPITAL_NUMBER = "+862088880002"
SURVEY_PATIENT_PHONE = "+8613912340002"


def a_week_after_discharge(world: World) -> int:
    """The default plans; a cardiology discharge 8 days ago; the dispatcher starts its day-7 SMS survey."""
    from callbacks.business_calendar import next_calling_time
    from callbacks.defaults import install_default_plans
    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
    from contactcenter.models import Inbox

    install_default_plans()
    # The department's Twilio line, not the world's simulator inbox, sends the survey: the reply then
    # comes back through the signed Twilio webhook.
    Inbox.objects.filter(pk=world.inbox_a.pk).update(is_active=False)
    save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology line 心内科短信",
            team=world.team_a,
            account_sid="AC" + "5e" * 16,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[HOSPITAL_NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    result = record_discharge(
        DischargeRecord(
            visit_number="ZY20261115007",
            demographics=Demographics(mrn="MRN551100", name="张伟", phone=SURVEY_PATIENT_PHONE, gender="male"),
            department_code="cardiology",
            discharged_at=timezone.now() - dt.timedelta(days=8),
            source=IntakeSource.HL7,
            ward="5B",
            attending_doctor="Dr. Sun 孙医生",
        )
    )
    survey_task = CallbackTask.objects.get(discharge=result.discharge, kind=TaskKind.SMS_SURVEY)
    # Surveys go out only within calling hours; the dispatcher runs at the next such moment.
    dispatch_due_tasks(now=next_calling_time(max(timezone.now(), survey_task.due_at)) + dt.timedelta(minutes=1))
    survey_task.refresh_from_db()
    assert survey_task.status == TaskStatus.OPEN
    return survey_task.pk


@pytest.mark.browser
def test_a_survey_answered_2_on_the_patient_phone_opens_a_service_recovery_case(
    transactional_db: None, world: World, live_server_url: str, browser: Any
) -> None:
    from callbacks.models import ServiceCase, SurveyAnswer

    task_id = off_loop(a_week_after_discharge, world)
    phone_context = browser.new_context(locale="zh-CN", viewport={"width": 1280, "height": 860})
    phone_context.set_default_timeout(10_000)
    phone = phone_context.new_page()
    phone.goto(f"{live_server_url}/simulator/")
    phone.get_by_test_id("sim-inbox").select_option(label="Cardiology line 心内科短信")
    phone.get_by_test_id("sim-phone").fill(SURVEY_PATIENT_PHONE)
    # The survey's first SMS (intro and the overall question, in Chinese) is on the patient's phone.
    first = phone.get_by_test_id("sim-message").filter(has_text="请回复1-5")
    expect(first).to_have_count(1)
    expect(first).to_have_attribute("data-from", "hospital")

    phone.get_by_test_id("sim-body").fill("2分")
    phone.get_by_test_id("sim-send").click()
    # The next question arrives: the answer was understood and the survey moved on.
    expect(phone.get_by_test_id("sim-message").filter(has_text="您对医生的服务满意吗")).to_have_count(1)
    screenshot(phone, "followup-survey-phone-zh")
    phone_context.close()

    answer = off_loop(lambda: SurveyAnswer.objects.select_related("question").get(session__task_id=task_id))
    assert (answer.question.key, answer.value, answer.raw_text) == ("overall", 2, "2分")
    case = off_loop(lambda: ServiceCase.objects.get(survey_session__task_id=task_id))
    assert case.status == "received"

    sam = login(browser, live_server_url, "sam", PASSWORD)
    sam.get_by_role("link", name="Service recovery").click()
    row = sam.get_by_test_id("case-row")
    expect(row).to_have_count(1)
    expect(row).to_contain_text("张伟")
    row.click()
    expect(sam.get_by_test_id("trigger-answers")).to_contain_text("2分")
    screenshot(sam, "followup-survey-case-en")
    sam.context.close()


def unreadable_phone_arrives(world: World) -> CallbackTask:
    """A discharge whose phone the HIS wrote without an area code: stored, its call opened, the phone flagged."""
    plan = FollowUpPlan.objects.create(name="Cardiology", department=world.team_a)
    PlanStep.objects.create(plan=plan, position=1, kind=StepKind.CALL, offset_days=0, deadline_days=2)
    result = record_discharge(
        DischargeRecord(
            visit_number="ZY20250610009",
            demographics=Demographics(mrn="MRN778800", name="Li Lei", phone="5532781", gender="male"),
            department_code="cardiology",
            discharged_at=timezone.now() - dt.timedelta(hours=3),
            source=IntakeSource.HL7,
        )
    )
    assert result.discharge.phone_needs_review
    task = CallbackTask.objects.get(discharge=result.discharge)
    dispatch_due_tasks(now=max(timezone.now(), task.due_at) + dt.timedelta(minutes=1))
    return task


@pytest.mark.browser
def test_a_nurse_sees_an_unreadable_phone_flagged_and_corrects_it(
    transactional_db: None, world: World, live_server_url: str, browser: Any
) -> None:
    task = off_loop(unreadable_phone_arrives, world)
    nina = login(browser, live_server_url, "nina", PASSWORD)
    nina.goto(f"{live_server_url}/followup/?view=due&task={task.pk}")

    row = nina.get_by_test_id("task-row")
    expect(row.get_by_test_id("phone-review-badge")).to_have_text("Check phone")
    review = nina.get_by_test_id("phone-review")
    expect(review).to_contain_text("5532781")
    expect(nina.get_by_test_id("tel-link")).to_have_count(0)
    screenshot(nina, "followup-phone-review-en")

    nina.get_by_test_id("phone-review-input").fill("12")
    nina.get_by_test_id("phone-review-save").click()
    expect(nina.get_by_test_id("phone-review-error")).to_contain_text("is not a phone number")

    nina.get_by_test_id("phone-review-input").fill("010 6552 7781")
    nina.get_by_test_id("phone-review-save").click()
    expect(nina.get_by_test_id("phone-review")).to_have_count(0)
    expect(nina.get_by_test_id("tel-link")).to_have_attribute("href", "tel:+861065527781")
    expect(nina.get_by_test_id("task-row").get_by_test_id("phone-review-badge")).to_have_count(0)

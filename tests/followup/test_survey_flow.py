"""SMS satisfaction surveys end to end: signed Twilio webhooks in, the real twilio SDK out.

The patient's replies are POSTed to the inbound webhook signed with the SDK's RequestValidator, exactly
as Twilio does; the survey's questions leave through send_outbound → the delivery task (run on commit)
→ the real twilio Client, whose HTTP client is the recording fake (tests/twilio_fake.py). So "what the
patient's phone received" is read from the requests Twilio would have been sent.
"""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.test import Client
from django.utils import timezone
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
from callbacks.actions.discharges import DischargeResult
from callbacks.models import (
    CallbackTask,
    CaseSource,
    QuestionKind,
    ServiceCase,
    SessionStatus,
    Survey,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
    TaskKind,
    TaskStatus,
)
from callbacks.surveys import flow
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.consent import record_consent
from contactcenter.models import (
    ChannelType,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Conversation,
    ConversationStatus,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    Patient,
    PatientIdentity,
    SenderKind,
    Team,
)
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

TOKEN = "survey-test-auth-token-0123456789"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
PATIENT_PHONE = "+8613800138000"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
FORM = "application/x-www-form-urlencoded"

_sids = itertools.count(1)


@pytest.fixture
def cardiology(db: Any) -> Team:
    # record_discharge files "cardiology" discharges under this team (it looks teams up by code).
    return Team.objects.create(code="cardiology", name="Cardiology", name_zh="心内科")


@pytest.fixture
def sms_inbox(cardiology: Team, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Inbox:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology SMS",
            team=cardiology,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch) -> RecordingTwilioHttpClient:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


@pytest.fixture
def survey(db: Any) -> Survey:
    survey = Survey.objects.create(
        name="Inpatient satisfaction",
        intro_en="City Hospital: a 3-question survey about your recent stay.",
        intro_zh="市医院：关于您近期住院的3个问题。",
        thanks_en="Thank you, your answers help us improve.",
        thanks_zh="感谢您的评价，我们会继续改进。",
        reminder_after_hours=24,
        close_after_days=3,
        low_score_threshold=2,
    )
    for position, kind, key, en, zh in [
        (
            1,
            QuestionKind.RATING,
            "overall",
            "How satisfied were you overall? Reply 1-5.",
            "您对本次住院总体满意吗？请回复1-5。",
        ),
        (
            2,
            QuestionKind.NPS,
            "recommend",
            "How likely are you to recommend us? Reply 0-10.",
            "您向亲友推荐本院的可能性？请回复0-10。",
        ),
        (3, QuestionKind.FREE_TEXT, "comment", "Anything we could do better?", "您还有什么意见或建议？"),
    ]:
        SurveyQuestion.objects.create(survey=survey, position=position, kind=kind, key=key, prompt_en=en, prompt_zh=zh)
    return survey


@dataclass
class Phone:
    """The patient's handset: what it received (from Twilio's requests) and what it sends (signed webhooks)."""

    twilio_api: RecordingTwilioHttpClient
    capture: Any
    client: Client

    def received(self) -> list[str]:
        return [r.data["Body"] for r in self.twilio_api.requests if r.data.get("To") == PATIENT_PHONE]

    def send(self, body: str, *, sid: str | None = None) -> Message:
        params = {
            **fixture("inbound_plain_text.json"),
            "Body": body,
            "From": PATIENT_PHONE,
            "To": NUMBER,
        }
        # Not the fake's outbound SID pattern (SM000…n): Twilio's SIDs never collide across directions.
        sid = sid or f"SMfeed{next(_sids):028x}"
        params.update(MessageSid=sid, SmsSid=sid, SmsMessageSid=sid)
        signature = RequestValidator(TOKEN).compute_signature(django_settings.PUBLIC_BASE_URL + INBOUND_PATH, params)
        with self.capture(execute=True):
            response = self.client.post(
                INBOUND_PATH, urlencode(params), content_type=FORM, HTTP_X_TWILIO_SIGNATURE=signature
            )
        assert response.status_code == 200, response.content
        return Message.objects.get(provider_message_id=sid)


@pytest.fixture
def phone(sms_inbox: Inbox, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any) -> Phone:
    return Phone(twilio_api, django_capture_on_commit_callbacks, Client())


@pytest.fixture
def survey_task(
    make_discharge: Callable[..., DischargeResult], cardiology: Team, survey: Survey
) -> Callable[..., CallbackTask]:
    def make(*, language: str = "zh-hans", phone: str = PATIENT_PHONE) -> CallbackTask:
        discharge = make_discharge(phone=phone).discharge
        Patient.objects.filter(pk=discharge.patient_id).update(language=language)
        now = timezone.now()
        return CallbackTask.objects.create(
            discharge=discharge,
            patient=Patient.objects.get(pk=discharge.patient_id),
            department=discharge.department,
            kind=TaskKind.SMS_SURVEY,
            status=TaskStatus.OPEN,
            opened_at=now,
            due_at=now,
            deadline_at=now + dt.timedelta(days=2),
        )

    return make


@pytest.fixture
def started(
    survey_task: Callable[..., CallbackTask], phone: Phone, django_capture_on_commit_callbacks: Any
) -> Callable[..., SurveySession]:
    def start(*, language: str = "zh-hans", now: dt.datetime | None = None) -> SurveySession:
        task = survey_task(language=language)
        with django_capture_on_commit_callbacks(execute=True):
            session = flow.start_survey(task, now=now)
        assert session is not None
        return session

    return start


def fresh(session: SurveySession) -> SurveySession:
    return SurveySession.objects.get(pk=session.pk)


def answers(session: SurveySession) -> list[tuple[str, int | None, str]]:
    return [
        (a.question.key, a.value, a.text)
        for a in SurveyAnswer.objects.filter(session=session).select_related("question").order_by("question__position")
    ]


# --- a whole survey ------------------------------------------------------------------------------------


def test_chinese_patient_answers_every_question_and_is_thanked(
    started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started()

    assert phone.received() == ["市医院：关于您近期住院的3个问题。\n您对本次住院总体满意吗？请回复1-5。"]
    phone.send("5分")
    assert phone.received()[-1] == "您向亲友推荐本院的可能性？请回复0-10。"
    phone.send("十")
    assert phone.received()[-1] == "您还有什么意见或建议？"
    phone.send("护士都很耐心，谢谢")

    assert phone.received()[-1] == "感谢您的评价，我们会继续改进。"
    assert len(phone.received()) == 4
    assert answers(session) == [("overall", 5, ""), ("recommend", 10, ""), ("comment", None, "护士都很耐心，谢谢")]
    session = fresh(session)
    assert session.status == SessionStatus.COMPLETED
    assert session.closed_at is not None and session.next_action_at is None
    task = CallbackTask.objects.get(pk=session.task_id)
    assert (task.status, task.outcome) == (TaskStatus.COMPLETED, "survey_completed")
    assert task.completed_at is not None
    assert not ServiceCase.objects.exists()


def test_every_reply_and_every_question_is_in_the_one_inbox_conversation(
    started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started()
    conversation = Conversation.objects.get(pk=session.conversation_id)
    # Started by us, the thread waits on the patient rather than sitting in the agents' open queue.
    assert conversation.status == ConversationStatus.PENDING

    for reply in ["4", "8", "没有了"]:
        phone.send(reply)

    messages = list(Message.objects.filter(conversation=conversation).order_by("created_at", "id"))
    assert [(m.direction, m.body) for m in messages if m.direction == MessageDirection.INBOUND] == [
        (MessageDirection.INBOUND, "4"),
        (MessageDirection.INBOUND, "8"),
        (MessageDirection.INBOUND, "没有了"),
    ]
    outbound = [m for m in messages if m.direction == MessageDirection.OUTBOUND]
    assert len(outbound) == 4
    assert {m.sender_kind for m in outbound} == {SenderKind.SURVEY}
    assert Conversation.objects.filter(patient_id=session.patient_id).count() == 1
    assert Conversation.objects.get(pk=conversation.pk).status == ConversationStatus.OPEN
    # Each answer points at the message that gave it.
    assert [a.message.body for a in SurveyAnswer.objects.filter(session=session).order_by("question__position")] == [
        "4",
        "8",
        "没有了",
    ]


def test_english_patient_gets_english_prompts_and_words_are_read(
    started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started(language="en")

    assert phone.received() == [
        "City Hospital: a 3-question survey about your recent stay.\nHow satisfied were you overall? Reply 1-5."
    ]
    phone.send("very satisfied")
    phone.send("I'd give it a 9 out of 10")
    phone.send("Nothing, thanks")

    assert phone.received()[1:] == [
        "How likely are you to recommend us? Reply 0-10.",
        "Anything we could do better?",
        "Thank you, your answers help us improve.",
    ]
    assert answers(session) == [("overall", 5, ""), ("recommend", 9, ""), ("comment", None, "Nothing, thanks")]


def test_a_low_score_opens_one_service_case_for_the_session(
    started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started(language="en")

    phone.send("two")

    case = ServiceCase.objects.get()
    assert case.source == CaseSource.SURVEY_SCORE
    assert case.survey_session_id == session.pk
    assert case.patient_id == session.patient_id
    assert case.discharge_id == session.discharge_id
    assert case.summary == "SMS survey: “overall” answered 2/5."
    phone.send("3")  # a detractor too, but the session already has its case
    phone.send("the nurse was rude")
    assert ServiceCase.objects.count() == 1


def test_a_negative_comment_opens_a_case(started: Callable[..., SurveySession], phone: Phone) -> None:
    session = started(language="en")

    phone.send("5")
    phone.send("9")
    assert not ServiceCase.objects.exists()
    phone.send("very rude nurse on the night shift")

    case = ServiceCase.objects.get()
    assert (case.source, case.survey_session_id) == (CaseSource.SURVEY_COMMENT, session.pk)
    # Which question, not what they wrote: the summary stays free of anything clinical.
    assert "rude" not in case.summary
    assert SurveyAnswer.objects.get(question__key="comment").negative


@pytest.mark.parametrize(("reply", "opens"), [("1", True), ("2", True), ("3", False), ("五", False)])
def test_the_rating_threshold_decides_the_case(
    started: Callable[..., SurveySession], phone: Phone, reply: str, opens: bool
) -> None:
    started()

    phone.send(reply)

    assert ServiceCase.objects.filter(source=CaseSource.SURVEY_SCORE).exists() is opens


@pytest.mark.parametrize(("reply", "opens"), [("4", True), ("0", True), ("5", False), ("10/10", False)])
def test_an_nps_detractor_opens_a_case(
    started: Callable[..., SurveySession], phone: Phone, reply: str, opens: bool
) -> None:
    started()
    phone.send("5")

    phone.send(reply)

    assert ServiceCase.objects.exists() is opens


# --- replies we cannot read ------------------------------------------------------------------------------


def test_an_unreadable_reply_gets_one_clarification_then_the_survey_moves_on(
    started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started()

    phone.send("还行吧，三四分")
    assert phone.received()[-1] == "抱歉，未能识别您的回复。请回复1到5的数字。"
    assert fresh(session).clarification_sent
    assert not SurveyAnswer.objects.exists()

    phone.send("说不好")

    assert answers(session) == [("overall", None, "说不好")]
    assert SurveyAnswer.objects.get().raw_text == "说不好"
    assert phone.received()[-1] == "您向亲友推荐本院的可能性？请回复0-10。"
    assert len(phone.received()) == 3
    session = fresh(session)
    assert (session.current_position, session.clarification_sent) == (2, False)
    # The next question gets its own one clarification.
    phone.send("maybe")
    assert phone.received()[-1] == "抱歉，未能识别您的回复。请回复0到10的数字。"


def test_a_complaint_we_cannot_score_still_opens_a_case(started: Callable[..., SurveySession], phone: Phone) -> None:
    session = started()

    phone.send("不知道")
    phone.send("护士态度恶劣，不知道打几分")

    answer = SurveyAnswer.objects.get()
    assert (answer.value, answer.negative) == (None, True)
    assert ServiceCase.objects.get().source == CaseSource.SURVEY_COMMENT
    assert fresh(session).current_position == 2


def test_clarification_is_in_the_patients_language(started: Callable[..., SurveySession], phone: Phone) -> None:
    started(language="en")

    phone.send("hmm")

    assert phone.received()[-1] == "Sorry, we did not understand. Please reply with a number from 1 to 5."


# --- reminder and closing ---------------------------------------------------------------------------------


def test_one_reminder_then_closed_as_no_response(
    started: Callable[..., SurveySession], phone: Phone, django_capture_on_commit_callbacks: Any
) -> None:
    t0 = timezone.now()
    session = started(now=t0)

    def tick(at: dt.datetime) -> int:
        with django_capture_on_commit_callbacks(execute=True):
            return flow.run_due_sessions(now=at)

    assert tick(t0 + dt.timedelta(hours=23)) == 0
    assert len(phone.received()) == 1

    assert tick(t0 + dt.timedelta(hours=24)) == 1
    assert phone.received()[-1] == "温馨提示：您对本次住院总体满意吗？请回复1-5。"
    session = fresh(session)
    assert session.reminder_sent_at == t0 + dt.timedelta(hours=24)
    assert session.next_action_at == t0 + dt.timedelta(days=3)
    assert tick(t0 + dt.timedelta(days=2)) == 0

    assert tick(t0 + dt.timedelta(days=3)) == 1

    assert len(phone.received()) == 2
    session = fresh(session)
    assert (session.status, session.closed_at, session.next_action_at) == (
        SessionStatus.NO_RESPONSE,
        t0 + dt.timedelta(days=3),
        None,
    )
    task = CallbackTask.objects.get(pk=session.task_id)
    assert (task.status, task.outcome) == (TaskStatus.COMPLETED, "no_response")
    assert tick(t0 + dt.timedelta(days=30)) == 0


def test_no_reminder_goes_out_after_the_contact_deadline(
    started: Callable[..., SurveySession], phone: Phone, django_capture_on_commit_callbacks: Any
) -> None:
    # The dispatcher was down for weeks: the reminder it owes is stale, and closes the survey instead.
    t0 = timezone.now()
    session = started(now=t0)
    late = t0 + dt.timedelta(days=20)

    with django_capture_on_commit_callbacks(execute=True):
        assert flow.run_due_sessions(now=late) == 1

    assert len(phone.received()) == 1
    session = fresh(session)
    assert (session.status, session.reminder_sent_at) == (SessionStatus.NO_RESPONSE, None)
    task = CallbackTask.objects.get(pk=session.task_id)
    assert (task.status, task.outcome) == (TaskStatus.COMPLETED, "no_response")


def test_answering_after_the_reminder_still_counts(
    started: Callable[..., SurveySession], phone: Phone, django_capture_on_commit_callbacks: Any
) -> None:
    t0 = timezone.now() - dt.timedelta(days=1, hours=1)
    session = started(now=t0)
    with django_capture_on_commit_callbacks(execute=True):
        flow.run_due_sessions(now=t0 + dt.timedelta(hours=24))

    phone.send("4")

    assert answers(session) == [("overall", 4, "")]
    session = fresh(session)
    assert session.status == SessionStatus.ACTIVE
    # No second reminder: the next look is the closing one.
    assert session.next_action_at is not None and session.next_action_at > timezone.now() + dt.timedelta(days=2)


# --- opting out ------------------------------------------------------------------------------------------


@pytest.mark.parametrize("keyword", ["STOP", "退订", "stop"])
def test_stop_mid_survey_opts_out_and_nothing_more_is_sent(
    started: Callable[..., SurveySession], phone: Phone, django_capture_on_commit_callbacks: Any, keyword: str
) -> None:
    session = started()
    phone.send("5")
    sent = len(phone.received())
    survey_sms = Message.objects.filter(sender_kind=SenderKind.SURVEY).count()

    phone.send(keyword)

    session = fresh(session)
    assert (session.status, session.next_action_at) == (SessionStatus.OPTED_OUT, None)
    task = CallbackTask.objects.get(pk=session.task_id)
    assert (task.status, task.outcome) == (TaskStatus.COMPLETED, "opted_out")
    # Nothing more from the survey; the consent registry confirms the opt-out with one SMS of its own.
    assert Message.objects.filter(sender_kind=SenderKind.SURVEY).count() == survey_sms
    after_stop = len(phone.received())
    assert after_stop <= sent + 1
    assert answers(session) == [("overall", 5, "")]
    # The consent registry recorded it (the inbound path did); a later text is just an inbox message.
    assert session.patient.consents.get(purpose=ConsentPurpose.MARKETING).status == ConsentStatus.OPTED_OUT
    later = phone.send("9")
    assert later.conversation_id == session.conversation_id
    with django_capture_on_commit_callbacks(execute=True):
        assert flow.run_due_sessions(now=timezone.now() + dt.timedelta(days=30)) == 0
    assert len(phone.received()) == after_stop
    assert SurveyAnswer.objects.count() == 1


STOP_CONFIRMATION_ZH = "您已退订本院营销短信，与您就诊相关的服务通知仍会发送。回复START可重新订阅。"
YES_NO_PROMPT_ZH = "您会再次选择本院吗？请回复“是”或“否”。"


@pytest.fixture
def yes_no_first(survey: Survey) -> Survey:
    """The survey opens with a yes/no question, whose "N" and "YES" are also SMS keywords."""
    SurveyQuestion.objects.filter(survey=survey, position=1).update(
        kind=QuestionKind.YES_NO,
        key="return",
        prompt_en="Would you choose us again? Reply YES or NO.",
        prompt_zh=YES_NO_PROMPT_ZH,
    )
    return survey


@pytest.mark.parametrize(("reply", "value"), [("N", 0), ("n", 0), ("NO", 0), ("Ｎ", 0), ("YES", 1), ("Y", 1)])
def test_a_keyword_like_answer_to_a_yes_no_question_is_an_answer_not_a_consent_change(
    yes_no_first: Survey, started: Callable[..., SurveySession], phone: Phone, reply: str, value: int
) -> None:
    session = started()
    assert phone.received()[-1].endswith(YES_NO_PROMPT_ZH)

    message = phone.send(reply)

    # Context wins: the survey claimed the reply before the consent registry saw a keyword in it.
    assert answers(session) == [("return", value, "")]
    assert fresh(session).status == SessionStatus.ACTIVE
    assert not session.patient.consents.exists()
    assert not session.patient.consent_changes.exists()
    assert phone.received()[-1] == "您向亲友推荐本院的可能性？请回复0-10。"
    assert message.flags == []


def test_stop_to_a_yes_no_question_still_opts_out(
    yes_no_first: Survey, started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started()

    phone.send("STOP")

    assert fresh(session).status == SessionStatus.OPTED_OUT
    assert session.patient.consents.get(purpose=ConsentPurpose.MARKETING).status == ConsentStatus.OPTED_OUT
    assert phone.received()[-1] == STOP_CONFIRMATION_ZH
    assert not SurveyAnswer.objects.exists()


def test_n_once_the_survey_is_over_is_an_opt_out_again(
    yes_no_first: Survey, started: Callable[..., SurveySession], phone: Phone
) -> None:
    session = started()
    phone.send("是")
    phone.send("9")
    phone.send("No comments")
    assert fresh(session).status == SessionStatus.COMPLETED

    phone.send("N")

    assert session.patient.consents.get(purpose=ConsentPurpose.MARKETING).status == ConsentStatus.OPTED_OUT
    assert phone.received()[-1] == STOP_CONFIRMATION_ZH


def test_a_worded_opt_out_ends_the_survey_too(started: Callable[..., SurveySession], phone: Phone) -> None:
    session = started()

    phone.send("不要再发短信了")

    assert fresh(session).status == SessionStatus.OPTED_OUT
    assert len(phone.received()) == 1


# --- idempotency and bystanders ----------------------------------------------------------------------------


def test_a_duplicated_webhook_answers_once(started: Callable[..., SurveySession], phone: Phone) -> None:
    session = started()

    phone.send("5", sid="SM" + "d" * 32)
    phone.send("5", sid="SM" + "d" * 32)

    assert answers(session) == [("overall", 5, "")]
    assert len(phone.received()) == 2
    assert Message.objects.filter(direction=MessageDirection.INBOUND).count() == 1
    assert fresh(session).current_position == 2


def test_a_patient_without_a_survey_just_writes_to_the_inbox(phone: Phone, survey: Survey) -> None:
    message = phone.send("请问明天门诊几点开门？")

    assert message.direction == MessageDirection.INBOUND
    assert message.conversation.status == ConversationStatus.OPEN
    assert not SurveySession.objects.exists()
    assert not SurveyAnswer.objects.exists()
    assert phone.received() == []


def test_the_hook_costs_one_query_for_a_patient_without_a_survey(
    phone: Phone, survey: Survey, django_assert_num_queries: Any
) -> None:
    message = phone.send("hello")
    conversation = Conversation.objects.select_related("patient").get(pk=message.conversation_id)

    with django_assert_num_queries(1) as captured:
        flow.handle_reply(message=message, conversation=conversation, patient=conversation.patient, keyword=None)

    assert "callbacks_surveysession" in captured.captured_queries[0]["sql"]


def test_help_mid_survey_is_not_taken_as_an_answer(started: Callable[..., SurveySession], phone: Phone) -> None:
    session = started()

    phone.send("HELP")

    assert not SurveyAnswer.objects.exists()
    assert not fresh(session).clarification_sent
    assert phone.received()[-1] == django_settings.SMS_HELP_TEXT


# --- when a survey does not start ---------------------------------------------------------------------------


def test_same_task_started_twice_is_one_session(
    survey_task: Callable[..., CallbackTask], phone: Phone, django_capture_on_commit_callbacks: Any
) -> None:
    task = survey_task()
    with django_capture_on_commit_callbacks(execute=True):
        first = flow.start_survey(task)
        again = flow.start_survey(task)

    assert first is not None and again == first
    assert len(phone.received()) == 1


def test_a_patient_already_in_a_survey_is_not_sent_a_second_one(
    started: Callable[..., SurveySession], survey_task: Callable[..., CallbackTask], phone: Phone
) -> None:
    started()
    second_stay = survey_task()  # same phone: the same patient, discharged again

    assert flow.start_survey(second_stay) is None
    assert SurveySession.objects.count() == 1
    assert len(phone.received()) == 1


def test_no_survey_without_a_mobile_number(survey_task: Callable[..., CallbackTask], phone: Phone) -> None:
    task = survey_task(phone="+861062345678")  # a Beijing landline

    assert flow.start_survey(task) is None
    PatientIdentity.objects.filter(patient=task.patient, kind=IdentityKind.PHONE).delete()
    assert flow.start_survey(task) is None
    assert not SurveySession.objects.exists()


def test_no_survey_for_a_patient_who_opted_out(survey_task: Callable[..., CallbackTask], phone: Phone) -> None:
    task = survey_task()
    record_consent(
        patient=task.patient,
        purpose=ConsentPurpose.MARKETING,
        status=ConsentStatus.OPTED_OUT,
        source=ConsentSource.AGENT,
    )

    assert flow.start_survey(task) is None


def test_no_survey_without_an_sms_inbox_for_the_department(
    survey_task: Callable[..., CallbackTask], sms_inbox: Inbox, cardiology: Team
) -> None:
    task = survey_task()
    Inbox.objects.filter(pk=sms_inbox.pk).update(is_active=False)

    assert flow.start_survey(task) is None


def test_a_hospital_survey_inbox_serves_departments_without_their_own(
    survey_task: Callable[..., CallbackTask], sms_inbox: Inbox, cardiology: Team
) -> None:
    other = Team.objects.create(code="patient-relations", name="Patient relations")
    Inbox.objects.filter(pk=sms_inbox.pk).update(team=other, config={**sms_inbox.config, "followup_surveys": True})
    Inbox.objects.create(name="Cardiology email", channel_type=ChannelType.EMAIL, team=cardiology)

    session = flow.start_survey(survey_task())

    assert session is not None and session.inbox_id == sms_inbox.pk


def test_the_embedded_demos_simulator_inbox_is_used(
    survey_task: Callable[..., CallbackTask], cardiology: Team, survey: Survey
) -> None:
    simulator = Inbox.objects.create(
        name="Cardiology SMS (simulator)", channel_type=ChannelType.SIMULATOR, team=cardiology
    )

    session = flow.start_survey(survey_task())

    assert session is not None and session.inbox_id == simulator.pk
    assert session.conversation is not None and session.conversation.inbox_id == simulator.pk
    assert Message.objects.get(conversation=session.conversation).sender_kind == SenderKind.SURVEY


def test_the_dispatcher_hook_is_registered() -> None:
    from contactcenter import inbound_hooks

    assert inbound_hooks._hooks["followup_surveys"] == (flow.handle_reply, flow.awaits_reply)

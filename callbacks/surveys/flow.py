"""The SMS survey state machine: one session per (patient, inbox), one question at a time.

- start_survey: the dispatcher calls it for a due SMS-survey task; intro and first question go as one SMS.
- handle_reply: an inbound hook (contactcenter.inbound_hooks), offered every newly stored inbound message.
  The message itself always stays in the inbox conversation; this only adds the survey's effects.
- claims_reply: a reply claim, asked before a keyword-like reply ("N", "YES") changes consent: a reply
  the current question reads as its answer is that answer.
- run_due_sessions: the periodic due-work job; one reminder, then the session closes as no response.

Every SMS goes through send_outbound (written queued, delivered after commit) as a service message.
Prompts come from the Survey / SurveyQuestion rows in the patient's language; they carry no clinical detail.
"""

from __future__ import annotations

import datetime as dt
import logging

import phonenumbers
from django.db import IntegrityError, transaction
from django.utils import timezone

from callbacks.actions.recovery import open_case
from callbacks.models import (
    OPEN_STATUSES,
    CallbackTask,
    CaseSource,
    QuestionKind,
    SessionStatus,
    Survey,
    SurveyAnswer,
    SurveyQuestion,
    SurveySession,
    TaskStatus,
)
from callbacks.surveys.parser import ParsedAnswer, is_negative, parse_answer
from contactcenter.actions.consent import HELP, LIKELY_OPT_OUT_FLAG, OPT_OUT
from contactcenter.actions.conversations import open_outbound_conversation
from contactcenter.actions.outbound import send_outbound
from contactcenter.dispatch import skip_locked
from contactcenter.models import (
    ChannelType,
    Consent,
    ConsentPurpose,
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

logger = logging.getLogger(__name__)

SURVEY_CHANNELS = (ChannelType.SMS, ChannelType.SIMULATOR)
# An inbox outside the department that hospital IT has set aside for follow-up surveys.
SURVEY_INBOX_FLAG = "followup_surveys"
ZH, EN = "zh-hans", "en"
# NPS 0–4 is a clear detractor worth a call from patient relations (5–6 are counted, not chased).
NPS_CASE_AT_OR_BELOW = 4

OUTCOME_COMPLETED = "survey_completed"
OUTCOME_OPTED_OUT = "opted_out"
OUTCOME_NO_RESPONSE = "no_response"

# Patient-facing SMS in the session's language, not the active UI language (a webhook has none), and
# independent of whether the lead has compiled the .po files yet; the survey's own texts win when set.
_CLARIFY = {
    QuestionKind.RATING: {
        EN: "Sorry, we did not understand. Please reply with a number from 1 to 5.",
        ZH: "抱歉，未能识别您的回复。请回复1到5的数字。",
    },
    QuestionKind.NPS: {
        EN: "Sorry, we did not understand. Please reply with a number from 0 to 10.",
        ZH: "抱歉，未能识别您的回复。请回复0到10的数字。",
    },
    QuestionKind.YES_NO: {
        EN: "Sorry, we did not understand. Please reply YES or NO.",
        ZH: "抱歉，未能识别您的回复。请回复“是”或“否”。",
    },
    QuestionKind.FREE_TEXT: {
        EN: "Sorry, we did not receive any words. Please reply in a few words.",
        ZH: "抱歉，未收到文字内容，请用几个字回复。",
    },
}
_THANKS = {EN: "Thank you for your feedback.", ZH: "感谢您的宝贵意见！"}
_REMINDER = {EN: "Reminder: ", ZH: "温馨提示："}


def _lang(session: SurveySession) -> str:
    return ZH if session.language.lower().startswith("zh") else EN


def _prompt(question: SurveyQuestion, language: str) -> str:
    return question.prompt_zh if language == ZH else question.prompt_en


def _first_text(*texts: str) -> str:
    return next((t.strip() for t in texts if t.strip()), "")


# --- who, where, what ---------------------------------------------------------------------------------


def survey_inbox_for(department: Team) -> Inbox | None:
    """The department's own SMS inbox (a simulator one in the embedded demo), else the hospital's survey inbox."""
    inboxes = Inbox.objects.filter(is_active=True, channel_type__in=SURVEY_CHANNELS).order_by("pk")
    return inboxes.filter(team=department).first() or inboxes.filter(**{f"config__{SURVEY_INBOX_FLAG}": True}).first()


def mobile_phone_of(patient: Patient) -> str | None:
    """The E.164 number delivery will text (the newest phone identity), if it can take an SMS."""
    value = (
        PatientIdentity.objects.filter(patient=patient, kind=IdentityKind.PHONE)
        .order_by("-id")
        .values_list("value", flat=True)
        .first()
    )
    if value is None:
        return None
    try:
        number = phonenumbers.parse(value)
    except phonenumbers.NumberParseException:
        return None
    # Regions that cannot tell mobile from fixed line by number (the US) get the benefit of the doubt.
    mobile = (phonenumbers.PhoneNumberType.MOBILE, phonenumbers.PhoneNumberType.FIXED_LINE_OR_MOBILE)
    return value if phonenumbers.number_type(number) in mobile else None


def _opted_out(patient: Patient) -> bool:
    # STOP is recorded against marketing, but a survey is nothing the patient asked for and carriers
    # block every SMS after STOP: any opt-out means no SMS survey (callbacks.plans decides the same).
    return Consent.objects.filter(patient=patient, status=ConsentStatus.OPTED_OUT).exists()


def _survey_for(task: CallbackTask) -> Survey | None:
    if task.step is not None and task.step.survey is not None:
        return task.step.survey if task.step.survey.is_active else None
    # A plan step without a chosen survey uses the hospital's (first) active one.
    return Survey.objects.filter(is_active=True).order_by("pk").first()


def _send(conversation: Conversation, body: str) -> Message:
    return send_outbound(
        conversation=conversation,
        body=body,
        author=None,
        sender_kind=SenderKind.SURVEY,
        purpose=ConsentPurpose.SERVICE,
    )


def _conversation_for(session: SurveySession) -> Conversation:
    """Where the next survey SMS goes: the session's thread while it is live, else the patient's live one."""
    conversation = session.conversation
    if conversation is not None and conversation.status != ConversationStatus.RESOLVED:
        return conversation
    conversation = open_outbound_conversation(inbox=session.inbox, patient=session.patient)
    session.conversation = conversation
    return conversation


# --- starting ------------------------------------------------------------------------------------------


@transaction.atomic
def start_survey(task: CallbackTask, *, now: dt.datetime | None = None) -> SurveySession | None:
    """Start the task's SMS survey: intro and first question as one SMS. None: the caller calls instead.

    None when there is no survey inbox, no mobile number, the patient opted out of SMS, the survey has
    no questions, or the patient is already in the middle of another survey in that inbox (one active
    session per patient and inbox; a second SMS thread of questions would confuse which one a "4" answers,
    so that follow-up is done by phone). Calling it again for the same task returns that task's session.
    """
    now = now or timezone.now()
    existing = SurveySession.objects.filter(task=task).first()
    if existing is not None:
        return existing
    patient = task.patient
    survey = _survey_for(task)
    first = survey.questions.order_by("position").first() if survey is not None else None
    inbox = survey_inbox_for(task.department)
    if survey is None or first is None or inbox is None or mobile_phone_of(patient) is None or _opted_out(patient):
        logger.info(
            "survey for callback task %s not started: patient %s cannot be surveyed by SMS", task.pk, patient.pk
        )
        return None
    if SurveySession.objects.filter(patient=patient, inbox=inbox, status=SessionStatus.ACTIVE).exists():
        logger.info("survey for callback task %s not started: patient %s is in another survey", task.pk, patient.pk)
        return None
    conversation = open_outbound_conversation(inbox=inbox, patient=patient)
    try:
        with transaction.atomic():
            session = SurveySession.objects.create(
                survey=survey,
                patient=patient,
                inbox=inbox,
                conversation=conversation,
                discharge_id=task.discharge_id,
                task=task,
                language=ZH if patient.language.lower().startswith("zh") else EN,
                current_position=first.position,
                last_prompt_at=now,
                next_action_at=now + dt.timedelta(hours=survey.reminder_after_hours),
                started_at=now,
            )
    except IntegrityError:
        # Another survey for this patient and inbox started at the same moment.
        return None
    language = _lang(session)
    intro = survey.intro_zh if language == ZH else survey.intro_en
    _send(conversation, "\n".join(t for t in (intro.strip(), _prompt(first, language)) if t))
    logger.info("survey session %s started for callback task %s", session.pk, task.pk)
    return session


# --- replies ---------------------------------------------------------------------------------------------


def claims_reply(*, message: Message, conversation: Conversation, patient: Patient) -> bool:
    """Whether the patient's live survey in this inbox takes this message as the answer to its question.

    Asked by the consent registry only for a reply that reads as a keyword. A yes/no, rating or NPS question
    claims what its parser understands ("N", "YES", "ｙｅｓ"); "STOP" or "退订" is no answer to any of them
    and stays an opt-out. A free-text question claims nothing: "STOP" to "anything we could do better?"
    is the patient leaving, not a comment.
    """
    session = (
        SurveySession.objects.filter(patient=patient, inbox_id=conversation.inbox_id, status=SessionStatus.ACTIVE)
        .only("survey_id", "current_position")
        .first()
    )
    if session is None:
        return False
    question = SurveyQuestion.objects.filter(survey_id=session.survey_id, position=session.current_position).first()
    if question is None or question.kind == QuestionKind.FREE_TEXT:
        return False
    return parse_answer(question.kind, message.body).understood


def awaits_reply(*, message: Message, conversation: Conversation, patient: Patient, keyword: str | None) -> bool:
    """The hook's interest check: the patient has an active survey in this inbox (one probe of its partial
    unique index)."""
    if message.direction != MessageDirection.INBOUND:
        return False
    return SurveySession.objects.filter(
        patient=patient, inbox_id=conversation.inbox_id, status=SessionStatus.ACTIVE
    ).exists()


def patients_taking_surveys(*, inbox_id: int, patient_ids: set[int]) -> set[int]:
    """awaits_reply for a batch of messages to one inbox: the patients with an active survey there."""
    return set(
        SurveySession.objects.filter(patient_id__in=patient_ids, inbox_id=inbox_id, status=SessionStatus.ACTIVE)
        .order_by()
        .values_list("patient_id", flat=True)
    )


def handle_reply(*, message: Message, conversation: Conversation, patient: Patient, keyword: str | None) -> None:
    """Offer a newly stored inbound message to the patient's active survey in that inbox, if any.

    Runs inside receive_inbound's transaction; the session row is locked so two replies arriving together
    answer two questions in turn, not the same one twice.
    """
    if message.direction != MessageDirection.INBOUND:
        return
    # The partial unique index on (patient, inbox) WHERE status = 'active' answers this: one index probe
    # for the common case of a message from someone not taking a survey.
    # No ORDER BY (there is at most one row): nothing tempts the planner away from that index.
    found = list(
        SurveySession.objects.select_for_update().filter(
            patient=patient, inbox_id=conversation.inbox_id, status=SessionStatus.ACTIVE
        )[:1]
    )
    if not found:
        return
    session = found[0]
    now = message.created_at or timezone.now()
    session.conversation = conversation
    if keyword == OPT_OUT or LIKELY_OPT_OUT_FLAG in message.flags:
        # The consent registry already recorded a keyword opt-out; a worded one ("不要再发了") is left to an
        # agent for marketing, but this survey has clearly asked enough.
        _close(session, status=SessionStatus.OPTED_OUT, outcome=OUTCOME_OPTED_OUT, now=now)
        return
    if keyword == HELP:
        # Answered with the help text by receive_inbound; not an answer to the question.
        return
    question = session.survey.questions.get(position=session.current_position)
    parsed = parse_answer(question.kind, message.body)
    if not parsed.understood and not session.clarification_sent:
        session.clarification_sent = True
        text = _CLARIFY[QuestionKind(question.kind)][_lang(session)]
        _send(conversation, text)
        _prompted(session, now)
        session.save()
        return
    _record_answer(session, question, parsed, message, now)
    _advance(session, question, now)


def _record_answer(
    session: SurveySession, question: SurveyQuestion, parsed: ParsedAnswer, message: Message, now: dt.datetime
) -> None:
    # Not understood even after the clarification: keep what they wrote and move on. A complaint in a
    # reply we could not score still reaches patient relations.
    answer_negative = parsed.negative if parsed.understood else is_negative(message.body)
    SurveyAnswer.objects.create(
        session=session,
        question=question,
        raw_text=message.body,
        value=parsed.value if parsed.understood else None,
        text=parsed.text if parsed.understood else message.body.strip(),
        negative=answer_negative,
        message=message,
        answered_at=now,
    )
    low = (
        question.kind == QuestionKind.RATING
        and parsed.value is not None
        and parsed.value <= session.survey.low_score_threshold
    ) or (question.kind == QuestionKind.NPS and parsed.value is not None and parsed.value <= NPS_CASE_AT_OR_BELOW)
    if low:
        scale = 10 if question.kind == QuestionKind.NPS else 5
        _open_case(
            session, CaseSource.SURVEY_SCORE, f"SMS survey: “{question.key}” answered {parsed.value}/{scale}.", now
        )
    elif answer_negative:
        _open_case(session, CaseSource.SURVEY_COMMENT, f"SMS survey: negative comment on “{question.key}”.", now)


def _open_case(session: SurveySession, source: str, summary: str, now: dt.datetime) -> None:
    # One case per session (open_case returns the existing one): the patient's whole survey is one story.
    open_case(
        patient=session.patient,
        source=source,
        summary=summary,
        discharge=session.discharge,
        survey_session=session,
        task=session.task,
        now=now,
    )


def _advance(session: SurveySession, answered: SurveyQuestion, now: dt.datetime) -> None:
    following = session.survey.questions.filter(position__gt=answered.position).order_by("position").first()
    conversation = _conversation_for(session)
    language = _lang(session)
    if following is None:
        survey = session.survey
        _send(
            conversation,
            _first_text(survey.thanks_zh if language == ZH else survey.thanks_en, _THANKS[language]),
        )
        _close(session, status=SessionStatus.COMPLETED, outcome=OUTCOME_COMPLETED, now=now)
        return
    session.current_position = following.position
    session.clarification_sent = False
    _send(conversation, _prompt(following, language))
    _prompted(session, now)
    session.save()


def _prompted(session: SurveySession, now: dt.datetime) -> None:
    """The patient is engaged: the reminder clock (or, after the reminder, the closing clock) restarts."""
    session.last_prompt_at = now
    if session.reminder_sent_at is None:
        session.next_action_at = now + dt.timedelta(hours=session.survey.reminder_after_hours)
    else:
        session.next_action_at = now + dt.timedelta(days=session.survey.close_after_days)


def _close(session: SurveySession, *, status: str, outcome: str, now: dt.datetime) -> None:
    session.status = status
    session.closed_at = now
    session.next_action_at = None
    session.save()
    if session.task_id is not None:
        # Only a task still open: staff may have cancelled it, or it became a call meanwhile.
        CallbackTask.objects.filter(pk=session.task_id, status__in=OPEN_STATUSES).update(
            status=TaskStatus.COMPLETED, outcome=outcome, completed_at=now, next_action_at=None
        )
    logger.info("survey session %s closed: %s", session.pk, status)


# --- reminders and closing -----------------------------------------------------------------------------


def run_due_sessions(*, now: dt.datetime | None = None, limit: int = 500) -> int:
    """Periodic: remind once, then close as no response. Safe to run from several dispatchers at once.

    On PostgreSQL each dispatcher skips rows another has claimed; SQLite (the embedded demo) has one
    writer at a time, so a plain select inside the transaction is equally safe.
    """
    now = now or timezone.now()
    with transaction.atomic():
        due = SurveySession.objects.filter(status=SessionStatus.ACTIVE, next_action_at__lte=now).order_by(
            "next_action_at", "id"
        )
        due = skip_locked(due)
        sessions = list(due.select_related("survey", "inbox", "patient", "conversation", "task")[:limit])
        for session in sessions:
            # No reminder after the task's contact deadline (a dispatcher that was down for weeks must not
            # text a stale survey question): the session closes unanswered instead.
            late = session.task is not None and session.task.deadline_at <= now
            if session.reminder_sent_at is None and not late:
                _remind(session, now)
            else:
                _close(session, status=SessionStatus.NO_RESPONSE, outcome=OUTCOME_NO_RESPONSE, now=now)
    return len(sessions)


def _remind(session: SurveySession, now: dt.datetime) -> None:
    question = session.survey.questions.filter(position=session.current_position).first()
    if question is None:
        # The survey was edited under a running session; nothing sensible to ask.
        _close(session, status=SessionStatus.NO_RESPONSE, outcome=OUTCOME_NO_RESPONSE, now=now)
        return
    language = _lang(session)
    _send(_conversation_for(session), _REMINDER[language] + _prompt(question, language))
    session.reminder_sent_at = now
    session.next_action_at = (session.last_prompt_at or session.started_at) + dt.timedelta(
        days=session.survey.close_after_days
    )
    session.save()

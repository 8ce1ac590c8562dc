"""The consent registry as patients drive it: keywords texted to a Twilio number, through the signed webhook.

Opt-out keywords (settings.SMS_OPT_OUT_KEYWORDS) are whole-body, case-insensitive and NFKC-folded and end
marketing on every channel and inbox; START/UNSTOP/YES undo them; each change is confirmed by one SMS in
the patient's language; HELP is answered once with settings.SMS_HELP_TEXT. Keywords are an SMS thing: in
web chat an opt-out word is only flagged and HELP is just a question. Longer messages that read like an
opt-out are only flagged for the agent. Marketing consent starts unknown, and marketing goes only where
settings.MARKETING_CONSENT_POLICY allows. Outbound goes through the real twilio SDK with its HTTP client
replaced by tests.twilio_fake.RecordingTwilioHttpClient.
"""

from __future__ import annotations

import datetime as dt
import itertools
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.test import Client
from django.utils import timezone
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from channels_adapters.webchat.actions import PreChat, start_visit, visitor_sends
from contactcenter.actions.consent import (
    LIKELY_OPT_OUT_FLAG,
    check_may_send,
    consent_status,
    marketing_refusals,
    record_consent,
)
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import merge_patients
from contactcenter.actions.visits import record_visit
from contactcenter.models import (
    ChannelType,
    Consent,
    ConsentChange,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Conversation,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    PatientIdentity,
    SenderKind,
    Team,
    VisitKind,
)
from tests.twilio_fake import RecordingTwilioHttpClient, fixture

TOKEN = "consent-test-auth-token-0123456789"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
SERVICE_SID = "MG5b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
PATIENT_PHONE = "+8613800138000"
OTHER_PHONE = "+8613900139000"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
MARKETING_BODY = "Our new cardiology wellness programme starts in March."
SERVICE_BODY = "Your follow-up is on Tuesday at 9:00."

_sids = itertools.count(1)


@dataclass
class Sms:
    team: Team
    number_inbox: Inbox
    service_inbox: Inbox
    simulator_inbox: Inbox


@pytest.fixture
def sms(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Sms:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"
    team = Team.objects.create(code="cardiology", name="Cardiology", name_zh="心内科")

    def inbox(name: str, numbers: list[str], service: str) -> Inbox:
        return save_sms_inbox(
            inbox=None,
            settings=SmsInboxSettings(
                name=name,
                team=team,
                account_sid=ACCOUNT_SID,
                auth_token_env="TWILIO_AUTH_TOKEN",
                phone_numbers=numbers,
                messaging_service_sid=service,
                auto_assign=False,
            ),
        )

    return Sms(
        team=team,
        number_inbox=inbox("Cardiology SMS", [NUMBER], ""),
        service_inbox=inbox("Appointments SMS pool", [], SERVICE_SID),
        simulator_inbox=Inbox.objects.create(
            name="Cardiology web phone", channel_type=ChannelType.SIMULATOR, team=team, auto_assign=False
        ),
    )


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch) -> RecordingTwilioHttpClient:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


def text_in(client: Client, body: str, *, service: bool = False, phone: str = PATIENT_PHONE, sid: str = "") -> Message:
    """The patient texts `body` to the number (or the Messaging Service pool); Twilio posts it signed."""
    name = "inbound_messaging_service.json" if service else "inbound_plain_text.json"
    sid = sid or f"SM{next(_sids):032x}"
    params = {**fixture(name), "Body": body, "From": phone, "MessageSid": sid, "SmsMessageSid": sid, "SmsSid": sid}
    url = django_settings.PUBLIC_BASE_URL + INBOUND_PATH
    signature = RequestValidator(TOKEN).compute_signature(url, params)
    response = client.post(
        INBOUND_PATH,
        urlencode(params),
        content_type="application/x-www-form-urlencoded",
        HTTP_X_TWILIO_SIGNATURE=signature,
    )
    assert response.status_code == 200, response.content
    return Message.objects.get(provider_message_id=sid)


def patient_of(phone: str) -> Patient:
    return PatientIdentity.objects.select_related("patient").get(kind=IdentityKind.PHONE, value=phone).patient


def marketing_status(patient: Patient) -> str | None:
    return (
        Consent.objects.filter(patient=patient, purpose=ConsentPurpose.MARKETING)
        .values_list("status", flat=True)
        .first()
    )


def outbound_messages() -> list[Message]:
    return list(Message.objects.filter(direction=MessageDirection.OUTBOUND).order_by("id"))


def mixed_case(word: str) -> str:
    return "".join(ch.upper() if i % 2 else ch.lower() for i, ch in enumerate(word))


VARIANTS: dict[str, Callable[[str], str]] = {
    "exact": lambda k: k,
    "mixed_case": mixed_case,
    "lower_case_surrounding_spaces": lambda k: f"  {k.lower()} \n",
    "mixed_case_punctuation": lambda k: f"{mixed_case(k)}!",
    "fullwidth_quotes_and_stop": lambda k: f" “{mixed_case(k)}”。",
    # A Chinese IME types the ideographic space U+3000; phones sometimes send a no-break space.
    "ideographic_and_no_break_spaces": lambda k: f"\u3000{k}\u00a0",
    # A Chinese keyboard in full-width mode: ＳＴＯＰ is STOP once NFKC-folded.
    "fullwidth_letters": lambda k: "".join(chr(ord(c) + 0xFEE0) if "!" <= c <= "~" else c for c in k) + "！",
}

STOP_CONFIRMATION_ZH = "您已退订本院营销短信，与您就诊相关的服务通知仍会发送。回复START可重新订阅。"
START_CONFIRMATION_ZH = "您已重新订阅本院资讯短信。回复R或退订可随时取消。"


# --- Opt-out keywords -------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", list(VARIANTS))
@pytest.mark.parametrize("keyword", django_settings.SMS_OPT_OUT_KEYWORDS)
def test_opt_out_keyword_texted_in_opts_the_patient_out_of_marketing(
    client: Client, sms: Sms, keyword: str, variant: str
) -> None:
    body = VARIANTS[variant](keyword)

    message = text_in(client, body)

    patient = message.conversation.patient
    assert marketing_status(patient) == ConsentStatus.OPTED_OUT
    change = ConsentChange.objects.get(patient=patient)
    assert change.purpose == ConsentPurpose.MARKETING
    assert change.status == ConsentStatus.OPTED_OUT
    assert change.source == ConsentSource.KEYWORD
    assert change.channel == "sms"
    assert change.keyword.upper() == keyword
    assert change.message == message
    assert message.body == body
    assert message.flags == []
    # Service consent is never touched by a keyword; the opt-out is confirmed by one service SMS.
    assert not Consent.objects.filter(purpose=ConsentPurpose.SERVICE).exists()
    [confirmation] = outbound_messages()
    assert (confirmation.conversation, confirmation.sender_kind) == (message.conversation, SenderKind.SYSTEM)
    assert confirmation.body == STOP_CONFIRMATION_ZH


def test_opt_out_through_the_messaging_service_pool_is_recorded_the_same_way(client: Client, sms: Sms) -> None:
    message = text_in(client, "STOP", service=True)

    assert message.inbox == sms.service_inbox
    assert marketing_status(message.conversation.patient) == ConsentStatus.OPTED_OUT
    assert ConsentChange.objects.get().channel == "sms"


def test_twilio_retrying_a_stop_records_one_consent_change(client: Client, sms: Sms) -> None:
    first = text_in(client, "STOP", sid="SM" + "5" * 32)
    text_in(client, "STOP", sid="SM" + "5" * 32)

    assert ConsentChange.objects.count() == 1
    assert Message.objects.filter(direction=MessageDirection.INBOUND).count() == 1
    assert marketing_status(first.conversation.patient) == ConsentStatus.OPTED_OUT


def test_second_stop_is_not_a_new_change(client: Client, sms: Sms) -> None:
    text_in(client, "STOP")
    text_in(client, "unsubscribe")

    assert list(ConsentChange.objects.values_list("status", flat=True)) == [ConsentStatus.OPTED_OUT]


def test_stop_and_start_are_each_confirmed_once_through_twilio_in_the_patients_language(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    def texted(body: str) -> list[str]:
        before = len(twilio_api.requests)
        with django_capture_on_commit_callbacks(execute=True):
            text_in(client, body)
        return [r.data["Body"] for r in twilio_api.requests[before:]]

    # A new number is a patient whose language is the hospital's default (Chinese).
    assert texted("STOP") == [STOP_CONFIRMATION_ZH]
    # Already opted out: no second confirmation for a second STOP, whatever the word.
    assert texted("退订") == []
    assert texted("START") == [START_CONFIRMATION_ZH]
    assert texted("START") == []
    Patient.objects.filter(pk=patient_of(PATIENT_PHONE).pk).update(language="en")
    [english] = texted("STOP")
    assert english.startswith("You will get no more marketing messages from us.") and "START" in english
    assert all(r.data["To"] == PATIENT_PHONE and r.data["From"] == NUMBER for r in twilio_api.requests)
    confirmations = Message.objects.filter(direction=MessageDirection.OUTBOUND)
    assert {(m.sender_kind, m.author_id) for m in confirmations} == {(SenderKind.SYSTEM, None)}


# --- Opt-in keywords --------------------------------------------------------------------------------------


@pytest.mark.parametrize("variant", ["exact", "mixed_case", "mixed_case_punctuation"])
@pytest.mark.parametrize("keyword", ["START", "UNSTOP", "YES"])
def test_opt_in_keyword_after_stop_opts_back_into_marketing(
    client: Client, sms: Sms, keyword: str, variant: str
) -> None:
    assert keyword in django_settings.SMS_OPT_IN_KEYWORDS
    text_in(client, "STOP")

    message = text_in(client, VARIANTS[variant](keyword))

    patient = message.conversation.patient
    assert marketing_status(patient) == ConsentStatus.OPTED_IN
    latest, earlier = ConsentChange.objects.filter(patient=patient).order_by("-id")
    assert (earlier.status, latest.status) == (ConsentStatus.OPTED_OUT, ConsentStatus.OPTED_IN)
    assert (latest.source, latest.channel, latest.message) == (ConsentSource.KEYWORD, "sms", message)
    assert latest.keyword.upper() == keyword
    check_may_send(patient=patient, purpose=ConsentPurpose.MARKETING)


def test_marketing_goes_out_again_after_start(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    conversation = text_in(client, "STOP").conversation
    text_in(client, "START")

    with django_capture_on_commit_callbacks(execute=True):
        send_outbound(conversation=conversation, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)

    assert [r.data["Body"] for r in twilio_api.requests] == [MARKETING_BODY]


# --- HELP ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["HELP", "help", "  Help. ", "INFO", "帮助"])
def test_help_is_answered_once_with_the_help_text_through_twilio(
    client: Client,
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    django_capture_on_commit_callbacks: Any,
    body: str,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        inbound = text_in(client, body)

    assert len(twilio_api.requests) == 1
    request = twilio_api.requests[0]
    assert request.data["Body"] == django_settings.SMS_HELP_TEXT
    assert (request.data["To"], request.data["From"]) == (PATIENT_PHONE, NUMBER)
    [reply] = outbound_messages()
    assert reply.conversation == inbound.conversation
    assert reply.body == django_settings.SMS_HELP_TEXT
    assert reply.sender_kind == SenderKind.SYSTEM
    assert reply.author is None
    assert reply.status == MessageStatus.SENDING
    assert reply.provider_message_id
    assert not Consent.objects.exists()
    assert inbound.flags == []


def test_help_is_answered_even_after_the_patient_opted_out_of_marketing(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    text_in(client, "STOP")

    with django_capture_on_commit_callbacks(execute=True):
        text_in(client, "HELP")

    assert [r.data["Body"] for r in twilio_api.requests] == [django_settings.SMS_HELP_TEXT]
    assert marketing_status(patient_of(PATIENT_PHONE)) == ConsentStatus.OPTED_OUT


def test_twilio_retrying_help_does_not_answer_twice(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        text_in(client, "HELP", sid="SM" + "4" * 32)
    with django_capture_on_commit_callbacks(execute=True):
        text_in(client, "HELP", sid="SM" + "4" * 32)

    assert len(twilio_api.requests) == 1
    assert len(outbound_messages()) == 1


def test_help_through_the_messaging_service_is_answered_from_the_service(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        text_in(client, "HELP", service=True)

    [request] = twilio_api.requests
    assert request.data["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in request.data
    assert request.data["Body"] == django_settings.SMS_HELP_TEXT


# --- Natural language: flagged, never a keyword ---------------------------------------------------------


@pytest.mark.parametrize(
    "body",
    [
        "please stop texting me",
        "不要再发了",
        "stop please",
        "Please don't text me again",
        "Remove me from your list",
        "no more messages thanks",
        "请不要再给我发短信",
        "unsubscribe me",
        "Stop by? No - stop texting me",
    ],
)
def test_opt_out_in_a_sentence_is_flagged_for_the_agent_and_changes_no_consent(
    client: Client, sms: Sms, body: str
) -> None:
    message = text_in(client, body)

    message.refresh_from_db()
    assert message.flags == [LIKELY_OPT_OUT_FLAG]
    assert not Consent.objects.exists()
    assert not ConsentChange.objects.exists()
    assert consent_status(patient=message.conversation.patient, purpose=ConsentPurpose.MARKETING) == "unknown"


def test_stop_by_the_pharmacy_is_neither_an_opt_out_nor_flagged(client: Client, sms: Sms) -> None:
    # "stop by" means "visit": treating it as a wish to leave marketing would be a false alarm.
    message = text_in(client, "Stop by the pharmacy later?")

    message.refresh_from_db()
    assert message.flags == []
    assert not ConsentChange.objects.exists()


@pytest.mark.parametrize(
    "body",
    [
        "STOP ALL",
        "please STOP",
        "STOP STOP",
        "stop, thanks",
        "I can't stop coughing at night",
        "Which bus stop is nearest the clinic?",
        "END OF MONTH appointment please",
        "Yes I will come",
        "help me book a scan",
    ],
)
def test_multi_word_messages_containing_a_keyword_are_not_keywords(client: Client, sms: Sms, body: str) -> None:
    text_in(client, "STOP")
    consent_before = list(ConsentChange.objects.values_list("id", flat=True))
    replies_before = outbound_messages()

    text_in(client, body)

    assert list(ConsentChange.objects.values_list("id", flat=True)) == consent_before
    assert marketing_status(patient_of(PATIENT_PHONE)) == ConsentStatus.OPTED_OUT
    assert outbound_messages() == replies_before


@pytest.mark.parametrize("body", ["Stopping by tomorrow", "STOPALL2", "Tuesday", "Nope", "Reply"])
def test_words_that_only_start_like_a_keyword_are_not_keywords(client: Client, sms: Sms, body: str) -> None:
    message = text_in(client, body)

    assert not ConsentChange.objects.exists()
    assert message.flags == []


# --- The registry blocks marketing everywhere -------------------------------------------------------------


def conversation_on(inbox: Inbox, inbound: Callable[..., Any], phone: str = PATIENT_PHONE) -> Conversation:
    return inbound(inbox, phone, "Hello").conversation


@pytest.mark.parametrize("inbox_name", ["number_inbox", "service_inbox", "simulator_inbox"])
def test_sms_opt_out_refuses_marketing_on_every_inbox_and_channel_with_a_clear_reason(
    client: Client,
    sms: Sms,
    inbound: Callable[..., Any],
    twilio_api: RecordingTwilioHttpClient,
    django_capture_on_commit_callbacks: Any,
    inbox_name: str,
) -> None:
    text_in(client, "STOP")
    conversation = conversation_on(getattr(sms, inbox_name), inbound)
    before = Message.objects.count()

    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError) as refused:
        send_outbound(conversation=conversation, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)

    assert refused.value.code == "opted_out"
    [reason] = refused.value.messages
    assert reason.startswith("This patient opted out of marketing messages (Keyword reply, ")
    assert reason.endswith("); marketing cannot be sent.")
    assert Message.objects.count() == before
    assert twilio_api.requests == []


@pytest.mark.parametrize("inbox_name", ["number_inbox", "service_inbox"])
def test_service_messages_still_go_to_a_patient_who_opted_out(
    client: Client,
    sms: Sms,
    inbound: Callable[..., Any],
    twilio_api: RecordingTwilioHttpClient,
    django_capture_on_commit_callbacks: Any,
    inbox_name: str,
) -> None:
    text_in(client, "STOP")
    conversation = conversation_on(getattr(sms, inbox_name), inbound)

    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body=SERVICE_BODY, author=None)

    assert [r.data["Body"] for r in twilio_api.requests] == [SERVICE_BODY]
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING


def test_consent_belongs_to_the_patient_not_the_inbox(client: Client, sms: Sms, inbound: Callable[..., Any]) -> None:
    stop = text_in(client, "STOP")
    pool_message = text_in(client, "Is the pharmacy open on Sunday?", service=True)

    assert pool_message.conversation.patient == stop.conversation.patient
    assert pool_message.conversation != stop.conversation
    assert Consent.objects.get().status == ConsentStatus.OPTED_OUT
    with pytest.raises(ValidationError):
        check_may_send(patient=pool_message.conversation.patient, purpose=ConsentPurpose.MARKETING)

    start = text_in(client, "START", service=True)

    assert start.inbox == sms.service_inbox
    assert Consent.objects.get().status == ConsentStatus.OPTED_IN
    send_outbound(conversation=stop.conversation, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)


def test_one_patients_opt_out_does_not_block_another_patient(
    client: Client, sms: Sms, inbound: Callable[..., Any]
) -> None:
    text_in(client, "STOP")
    other = conversation_on(sms.number_inbox, inbound, phone=OTHER_PHONE)
    opt_in(other.patient)

    message = send_outbound(conversation=other, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)

    assert message.status == MessageStatus.QUEUED
    assert marketing_status(other.patient) == ConsentStatus.OPTED_IN


# --- Marketing consent starts unknown; the policy decides ------------------------------------------------


def opt_in(patient: Patient) -> None:
    record_consent(
        patient=patient, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN, source=ConsentSource.API
    )


def visited(patient: Patient, *, days_ago: int) -> None:
    team = Team.objects.get(code="cardiology")
    record_visit(
        patient=patient,
        visit_number=f"V-{patient.pk}-{days_ago}",
        department=team,
        kind=VisitKind.OUTPATIENT,
        admitted_at=timezone.now() - dt.timedelta(days=days_ago),
    )


def test_a_new_sms_number_is_marketing_unknown_and_gets_no_marketing(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, django_capture_on_commit_callbacks: Any
) -> None:
    conversation = text_in(client, "Is the clinic open on Saturday?").conversation
    patient = conversation.patient

    assert consent_status(patient=patient, purpose=ConsentPurpose.MARKETING) == ConsentStatus.UNKNOWN
    assert not Consent.objects.filter(patient=patient).exists()
    with django_capture_on_commit_callbacks(execute=True), pytest.raises(ValidationError) as refused:
        send_outbound(conversation=conversation, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)
    assert refused.value.code == "no_consent"
    assert refused.value.messages == ["This patient has not agreed to marketing messages; marketing cannot be sent."]
    # Service messages are another purpose: they go.
    with django_capture_on_commit_callbacks(execute=True):
        send_outbound(conversation=conversation, body=SERVICE_BODY, author=None)
    assert [r.data["Body"] for r in twilio_api.requests] == [SERVICE_BODY]


def test_a_web_chat_visitor_who_agreed_to_have_the_enquiry_answered_is_marketing_unknown(sms: Sms) -> None:
    chat = Inbox.objects.create(name="Website chat", channel_type=ChannelType.WEBCHAT, team=sms.team)
    form = PreChat(name="Wang Fang", phone=OTHER_PHONE, email="", consent=True, language="zh-hans")

    visitor = start_visit(inbox=chat, form=form, portal=None)

    assert consent_status(patient=visitor.patient, purpose=ConsentPurpose.SERVICE) == ConsentStatus.OPTED_IN
    assert consent_status(patient=visitor.patient, purpose=ConsentPurpose.MARKETING) == ConsentStatus.UNKNOWN
    with pytest.raises(ValidationError) as refused:
        check_may_send(patient=visitor.patient, purpose=ConsentPurpose.MARKETING)
    assert refused.value.code == "no_consent"


def test_the_existing_patient_policy_allows_unknown_consent_only_with_a_recent_visit(
    sms: Sms, inbound: Callable[..., Any], settings: Any
) -> None:
    settings.MARKETING_CONSENT_POLICY = "existing_patient"
    settings.MARKETING_EXISTING_PATIENT_MONTHS = 24
    recent = conversation_on(sms.number_inbox, inbound).patient
    visited(recent, days_ago=200)
    lapsed = conversation_on(sms.number_inbox, inbound, phone=OTHER_PHONE).patient
    visited(lapsed, days_ago=800)
    never = conversation_on(sms.number_inbox, inbound, phone="+8613700137000").patient
    stopped = conversation_on(sms.number_inbox, inbound, phone="+8613600136000").patient
    visited(stopped, days_ago=10)
    record_consent(
        patient=stopped, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT, source=ConsentSource.AGENT
    )
    asked = conversation_on(sms.number_inbox, inbound, phone="+8613500135000").patient
    opt_in(asked)

    refusals = marketing_refusals([recent.pk, lapsed.pk, never.pk, stopped.pk, asked.pk])

    assert refusals == {lapsed.pk: "no_consent", never.pk: "no_consent", stopped.pk: "opted_out"}
    check_may_send(patient=recent, purpose=ConsentPurpose.MARKETING)
    # The same patients under the default policy: only the explicit opt-in.
    settings.MARKETING_CONSENT_POLICY = "opt_in"
    assert set(marketing_refusals([recent.pk, asked.pk])) == {recent.pk}


def test_the_consent_policy_is_read_from_the_environment_and_checked_at_start_up(tmp_path: Any) -> None:
    def start(**env: str) -> subprocess.CompletedProcess[str]:
        clean = {"PATH": "/usr/bin:/bin", "DATA_DIR": str(tmp_path), "DATABASE_URL": ""}
        code = "from django.conf import settings as s; print(s.MARKETING_CONSENT_POLICY, s.MARKETING_EXISTING_PATIENT_MONTHS)"
        return subprocess.run(
            [sys.executable, "-c", code],
            env={**clean, "DJANGO_SETTINGS_MODULE": "config.settings", **env},
            cwd=str(Path(__file__).resolve().parents[1]),
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    assert start().stdout.split()[-2:] == ["opt_in", "24"]
    chosen = start(MARKETING_CONSENT_POLICY="existing_patient", MARKETING_EXISTING_PATIENT_MONTHS="12")
    assert chosen.stdout.split()[-2:] == ["existing_patient", "12"]
    wrong = start(MARKETING_CONSENT_POLICY="everyone")
    assert wrong.returncode != 0 and "MARKETING_CONSENT_POLICY" in wrong.stderr


# --- Keywords are an SMS thing ----------------------------------------------------------------------------


@pytest.mark.parametrize("body", ["HELP", "帮助", "START", "YES"])
def test_keywords_typed_in_web_chat_are_no_keywords(sms: Sms, body: str) -> None:
    chat = Inbox.objects.create(name="Website chat", channel_type=ChannelType.WEBCHAT, team=sms.team)
    form = PreChat(name="Wang Fang", phone="", email="fang@example.com", consent=True, language="en")
    visitor = start_visit(inbox=chat, form=form, portal=None)

    result = visitor_sends(visitor=visitor, body=body, client_id="c1")

    # No SMS help text, no consent change, nothing sent: the agent answers the question.
    assert outbound_messages() == []
    assert not ConsentChange.objects.filter(purpose=ConsentPurpose.MARKETING).exists()
    assert result.message.flags == []


@pytest.mark.parametrize("body", ["STOP", "ＳＴＯＰ", "unsubscribe", "退订"])
def test_an_opt_out_word_in_web_chat_is_only_flagged_for_staff(sms: Sms, body: str) -> None:
    chat = Inbox.objects.create(name="Website chat", channel_type=ChannelType.WEBCHAT, team=sms.team)
    form = PreChat(name="Wang Fang", phone="", email="fang@example.com", consent=True, language="en")
    visitor = start_visit(inbox=chat, form=form, portal=None)

    result = visitor_sends(visitor=visitor, body=body, client_id="c1")

    result.message.refresh_from_db()
    assert result.message.flags == [LIKELY_OPT_OUT_FLAG]
    assert consent_status(patient=visitor.patient, purpose=ConsentPurpose.MARKETING) == ConsentStatus.UNKNOWN
    assert outbound_messages() == []


def test_recording_the_same_status_again_is_not_a_change(sms: Sms, inbound: Callable[..., Any]) -> None:
    patient = conversation_on(sms.number_inbox, inbound).patient
    kwargs = {
        "patient": patient,
        "purpose": ConsentPurpose.MARKETING,
        "status": ConsentStatus.OPTED_OUT,
        "source": ConsentSource.AGENT,
    }

    first = record_consent(**kwargs)
    second = record_consent(**kwargs)

    assert (first.changed, second.changed) == (True, False)
    assert ConsentChange.objects.count() == 1
    with pytest.raises(ValidationError) as refused:
        check_may_send(patient=patient, purpose=ConsentPurpose.MARKETING)
    assert "Recorded by staff" in refused.value.messages[0]
    check_may_send(patient=patient, purpose=ConsentPurpose.SERVICE)


@pytest.mark.parametrize("stop_on", ["kept", "dropped"])
def test_a_stop_on_either_record_survives_a_merge(client: Client, sms: Sms, stop_on: str) -> None:
    text_in(client, "START", phone=PATIENT_PHONE)
    text_in(client, "STOP", phone=OTHER_PHONE)
    opted_in, opted_out = patient_of(PATIENT_PHONE), patient_of(OTHER_PHONE)
    keep, drop = (opted_out, opted_in) if stop_on == "kept" else (opted_in, opted_out)

    merge_patients(keep=keep, drop=drop, actor=None, via="api")

    assert marketing_status(keep) == ConsentStatus.OPTED_OUT
    assert not Consent.objects.filter(patient=drop).exists()
    history = ConsentChange.objects.filter(patient=keep)
    assert {c.keyword for c in history} >= {"START", "STOP"}
    with pytest.raises(ValidationError):
        check_may_send(patient=keep, purpose=ConsentPurpose.MARKETING)


def test_consent_of_the_dropped_record_is_carried_to_a_patient_without_one(
    client: Client, sms: Sms, inbound: Callable[..., Any]
) -> None:
    text_in(client, "STOP", phone=OTHER_PHONE)
    keep = conversation_on(sms.number_inbox, inbound).patient
    drop = patient_of(OTHER_PHONE)
    assert marketing_status(keep) is None

    merge_patients(keep=keep, drop=drop, actor=None, via="api")

    assert marketing_status(keep) == ConsentStatus.OPTED_OUT
    assert ConsentChange.objects.filter(patient=drop).count() == 0

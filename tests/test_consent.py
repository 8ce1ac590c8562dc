"""The consent registry as patients drive it: keywords texted to a Twilio number, through the signed webhook.

Opt-out keywords (settings.SMS_OPT_OUT_KEYWORDS) are whole-body and case-insensitive and end marketing on
every channel and inbox; START/UNSTOP/YES undo them; HELP is answered once with settings.SMS_HELP_TEXT.
Longer messages that read like an opt-out are only flagged for the agent. Outbound goes through the real
twilio SDK with its HTTP client replaced by tests.twilio_fake.RecordingTwilioHttpClient.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.test import Client
from twilio.request_validator import RequestValidator

import channels_adapters.sms.transport
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.consent import LIKELY_OPT_OUT_FLAG, check_may_send, record_consent
from contactcenter.actions.outbound import send_outbound
from contactcenter.actions.patients import merge_patients
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
    monkeypatch.setattr(channels_adapters.sms.transport, "http_client", lambda: fake)
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
}


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
    # Service consent is never touched by a keyword, and STOP gets no reply from us (Twilio confirms it).
    assert not Consent.objects.filter(purpose=ConsentPurpose.SERVICE).exists()
    assert outbound_messages() == []


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
    check_may_send(patient=message.conversation.patient, purpose=ConsentPurpose.MARKETING)


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

    text_in(client, body)

    assert list(ConsentChange.objects.values_list("id", flat=True)) == consent_before
    assert marketing_status(patient_of(PATIENT_PHONE)) == ConsentStatus.OPTED_OUT
    assert outbound_messages() == []


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

    message = send_outbound(conversation=other, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING)

    assert message.status == MessageStatus.QUEUED
    assert marketing_status(other.patient) is None


def test_marketing_is_allowed_for_a_patient_who_never_opted_out(sms: Sms, inbound: Callable[..., Any]) -> None:
    conversation = conversation_on(sms.number_inbox, inbound)

    message = send_outbound(
        conversation=conversation, body=MARKETING_BODY, author=None, purpose=ConsentPurpose.MARKETING
    )

    assert message.status == MessageStatus.QUEUED


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

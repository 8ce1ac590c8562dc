"""The Twilio SMS channel end to end: signed webhooks in, the real twilio SDK out.

Inbound and status webhooks go through Django's test client with signatures computed by the SDK's
own RequestValidator. Outbound goes through the real twilio Client; only its HTTP client is replaced
(tests.twilio_fake.RecordingTwilioHttpClient), so parameter encoding, auth and error parsing are the
SDK's. PostgreSQL is real; TASK_RUNNER=immediate runs the delivery task when the sender commits.
"""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

import pytest
from django.conf import settings as django_settings
from django.core.exceptions import ValidationError
from django.db import connections
from django.test import Client
from hypothesis import given
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
from channels_adapters.base import InboundMessage, Sender
from channels_adapters.sms.adapter import PERMANENT_ERRORS
from channels_adapters.sms.models import SenderKind as TwilioSenderKind
from channels_adapters.sms.models import TwilioSender
from channels_adapters.sms.segments import GSM7_BASIC, GSM7_EXTENSION, count_segments
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from channels_adapters.sms.views import EMPTY_TWIML
from contactcenter.actions.delivery import deliver_message
from contactcenter.actions.inbound import InboundResult, receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.models import (
    Consent,
    ConsentChange,
    ConsentPurpose,
    ConsentSource,
    ConsentStatus,
    Conversation,
    Event,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    MessageStatus,
    Patient,
    PatientIdentity,
    Team,
)
from contactcenter.tasks import deliver_message as deliver_message_task
from tests.conftest import EventCapture
from tests.twilio_fake import RecordingTwilioHttpClient, fixture, requests

TOKEN = "test-auth-token-0123456789abcdef"
OTHER_TOKEN = "someone-elses-token-fedcba987654"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
SERVICE_SID = "MG5b1c2d3e4f5a6b7c8d9e0f1a2b3c4d5e"
POOL_NUMBER = "+8610123456799"
PATIENT_PHONE = "+8613800138000"
FIXTURE_SID = "SM9a8b7c6d5e4f30211a2b3c4d5e6f7a8b"
INBOUND_PATH = "/webhooks/twilio/sms/inbound/"
STATUS_PATH = "/webhooks/twilio/sms/status/"
MESSAGES_URI = f"https://api.twilio.com/2010-04-01/Accounts/{ACCOUNT_SID}/Messages.json"
FORM = "application/x-www-form-urlencoded"
BODY = "Your follow-up is on Tuesday at 9:00."


@dataclass
class Sms:
    team: Team
    number_inbox: Inbox
    service_inbox: Inbox


def make_sms_inboxes() -> Sms:
    team = Team.objects.create(code="cardiology", name="Cardiology", name_zh="心内科")
    number_inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Cardiology SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )
    service_inbox = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Appointments SMS pool",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[],
            messaging_service_sid=SERVICE_SID,
            auto_assign=False,
        ),
    )
    return Sms(team, number_inbox, service_inbox)


@pytest.fixture
def twilio_env(monkeypatch: pytest.MonkeyPatch, settings: Any) -> None:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = "http://testserver"


@pytest.fixture
def sms(db: Any, twilio_env: None) -> Sms:
    return make_sms_inboxes()


@pytest.fixture
def twilio_api(monkeypatch: pytest.MonkeyPatch) -> RecordingTwilioHttpClient:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    return fake


@pytest.fixture
def capture_events(db: Any) -> Callable[[], EventCapture]:
    """tests/conftest.py is not in scope here; the same capture, read back from the Event table."""
    return EventCapture


@pytest.fixture
def inbound() -> Callable[..., InboundResult]:
    """A patient's earlier message through the one inbound path (not the webhook)."""
    counter = iter(range(1, 10_000))

    def deliver(inbox: Inbox, phone: str, body: str = "Hello") -> InboundResult:
        return receive_inbound(
            InboundMessage(
                inbox_id=inbox.pk,
                sender=Sender(kind=IdentityKind.PHONE, value=phone),
                body=body,
                provider_message_id=f"SMEARLIER{next(counter):023d}",
            )
        )

    return deliver


def sign(url: str, params: dict[str, str], token: str = TOKEN) -> str:
    return RequestValidator(token).compute_signature(url, params)


def post_form(client: Client, path: str, params: dict[str, str], signature: str | None, **extra: Any) -> Any:
    if signature is not None:
        extra["HTTP_X_TWILIO_SIGNATURE"] = signature
    return client.post(path, urlencode(params), content_type=FORM, **extra)


def post_signed(client: Client, path: str, params: dict[str, str], **extra: Any) -> Any:
    """Post as Twilio does: signed over the public URL it was configured with (path incl. query)."""
    return post_form(client, path, params, sign(django_settings.PUBLIC_BASE_URL + path, params), **extra)


def inbound_params(name: str = "inbound_plain_text.json", **changes: str) -> dict[str, str]:
    return {**fixture(name), **changes}


def stored_counts() -> tuple[int, int, int, int]:
    return Message.objects.count(), Patient.objects.count(), Conversation.objects.count(), Event.objects.count()


def patient_of(phone: str) -> Patient:
    return PatientIdentity.objects.select_related("patient").get(kind=IdentityKind.PHONE, value=phone).patient


def conversation_in(inbox: Inbox, inbound: Callable[..., Any], phone: str = PATIENT_PHONE) -> Conversation:
    return inbound(inbox, phone, "Hello").conversation


def status_events(capture: Any) -> list[dict[str, Any]]:
    return [e.payload for e in capture.all() if (e.type, e.op) == ("message", "update_status")]


# --- Inbound webhook ---------------------------------------------------------------------------------


INBOUND_FIXTURES = [
    "inbound_plain_text.json",
    "inbound_chinese_ucs2.json",
    "inbound_emoji.json",
    "inbound_mms.json",
    "inbound_messaging_service.json",
    "inbound_stop.json",
]


@pytest.mark.parametrize("name", INBOUND_FIXTURES)
def test_every_inbound_fixture_is_stored_verbatim_and_answered_with_empty_twiml(
    client: Client, sms: Sms, name: str
) -> None:
    params = fixture(name)

    response = post_signed(client, INBOUND_PATH, params)

    assert response.status_code == 200
    assert response["Content-Type"].startswith("text/xml")
    assert response.content.decode() == EMPTY_TWIML
    # (STOP is also confirmed by one outbound SMS: the inbound message is the one stored verbatim.)
    message = Message.objects.get(direction=MessageDirection.INBOUND)
    assert message.status == MessageStatus.RECEIVED
    assert message.body == params["Body"]
    assert message.provider_message_id == params["MessageSid"]
    assert message.provider_payload == params
    assert message.conversation.patient == patient_of(PATIENT_PHONE)
    expected_inbox = sms.service_inbox if "MessagingServiceSid" in params else sms.number_inbox
    assert message.inbox == expected_inbox
    assert message.conversation.inbox == expected_inbox


def test_mms_attachments_keep_each_media_url_with_its_content_type(client: Client, sms: Sms) -> None:
    params = fixture("inbound_mms.json")

    assert post_signed(client, INBOUND_PATH, params).status_code == 200

    assert Message.objects.get().attachments == [
        {"url": params["MediaUrl0"], "content_type": "image/jpeg"},
        {"url": params["MediaUrl1"], "content_type": "image/png"},
    ]


def test_text_only_message_has_no_attachments(client: Client, sms: Sms) -> None:
    assert post_signed(client, INBOUND_PATH, fixture("inbound_plain_text.json")).status_code == 200

    assert Message.objects.get().attachments == []


@pytest.mark.parametrize("raw", ["+86 138-0013-8000", "13800138000", "+86 (138) 0013 8000"])
def test_sender_number_is_normalized_to_e164_and_finds_the_same_patient(
    client: Client, sms: Sms, raw: str, inbound: Callable[..., Any]
) -> None:
    known = inbound(sms.number_inbox, PATIENT_PHONE, "Earlier message").patient

    response = post_signed(client, INBOUND_PATH, inbound_params(From=raw))

    assert response.status_code == 200
    message = Message.objects.get(provider_message_id=fixture("inbound_plain_text.json")["MessageSid"])
    assert message.conversation.patient == known
    assert list(PatientIdentity.objects.values_list("value", flat=True)) == [PATIENT_PHONE]


def test_unparseable_sender_is_refused_with_400_and_nothing_stored(client: Client, sms: Sms) -> None:
    before = stored_counts()

    response = post_signed(client, INBOUND_PATH, inbound_params(From="not-a-number"))

    assert response.status_code == 400
    assert stored_counts() == before


def test_messaging_service_routes_a_pool_number_to_the_service_inbox(client: Client, sms: Sms) -> None:
    params = fixture("inbound_messaging_service.json")
    assert params["To"] == POOL_NUMBER
    assert not TwilioSender.objects.filter(value=POOL_NUMBER).exists()

    assert post_signed(client, INBOUND_PATH, params).status_code == 200

    assert Message.objects.get().inbox == sms.service_inbox


def test_messaging_service_decides_even_when_to_is_another_inboxes_number(client: Client, sms: Sms) -> None:
    params = inbound_params("inbound_messaging_service.json", To=NUMBER)

    assert post_signed(client, INBOUND_PATH, params).status_code == 200

    assert Message.objects.get().inbox == sms.service_inbox


def test_without_a_messaging_service_the_to_number_decides(client: Client, sms: Sms) -> None:
    other = save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Orthopedics SMS",
            team=sms.team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=["+8610123456781"],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )

    assert post_signed(client, INBOUND_PATH, inbound_params(To="+8610123456781")).status_code == 200
    assert post_signed(client, INBOUND_PATH, fixture("inbound_chinese_ucs2.json")).status_code == 200

    assert Message.objects.get(body=fixture("inbound_plain_text.json")["Body"]).inbox == other
    assert Message.objects.get(body=fixture("inbound_chinese_ucs2.json")["Body"]).inbox == sms.number_inbox


@pytest.mark.parametrize(
    "changes",
    [
        {"To": "+8610999999999"},
        {"To": "+8610999999999", "MessagingServiceSid": "MG00000000000000000000000000000000"},
    ],
    ids=["unknown_number", "unknown_service_and_number"],
)
def test_webhook_for_a_number_no_inbox_owns_is_refused_and_nothing_stored(
    client: Client, sms: Sms, changes: dict[str, str]
) -> None:
    before = stored_counts()

    response = post_signed(client, INBOUND_PATH, inbound_params(**changes))

    assert response.status_code == 403
    assert stored_counts() == before


def test_inbound_webhook_accepts_only_post(client: Client, sms: Sms) -> None:
    assert client.get(INBOUND_PATH).status_code == 405


# --- Signatures ---------------------------------------------------------------------------------------


def test_valid_signature_is_accepted(client: Client, sms: Sms) -> None:
    params = fixture("inbound_plain_text.json")

    response = post_form(client, INBOUND_PATH, params, sign("http://testserver" + INBOUND_PATH, params))

    assert response.status_code == 200
    assert Message.objects.count() == 1


def _invalid(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, "bm90LWEtc2lnbmF0dXJl"


def _missing(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, None


def _empty(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, ""


def _other_endpoint(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, sign("http://testserver" + STATUS_PATH, params)


def _other_host(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, sign("https://attacker.example" + INBOUND_PATH, params)


def _other_token(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    return params, sign("http://testserver" + INBOUND_PATH, params, token=OTHER_TOKEN)


def _tampered_body(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    signature = sign("http://testserver" + INBOUND_PATH, params)
    return {**params, "Body": "Please cancel all my appointments"}, signature


def _tampered_sender(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    signature = sign("http://testserver" + INBOUND_PATH, params)
    return {**params, "From": "+8613900139000"}, signature


def _extra_parameter(params: dict[str, str]) -> tuple[dict[str, str], str | None]:
    signature = sign("http://testserver" + INBOUND_PATH, params)
    return {**params, "NumMedia": "1", "MediaUrl0": "https://attacker.example/x.jpg"}, signature


@pytest.mark.parametrize(
    "forge",
    [
        _invalid,
        _missing,
        _empty,
        _other_endpoint,
        _other_host,
        _other_token,
        _tampered_body,
        _tampered_sender,
        _extra_parameter,
    ],
)
def test_unverifiable_inbound_is_refused_and_stores_no_message_patient_or_event(
    client: Client, sms: Sms, forge: Callable[[dict[str, str]], tuple[dict[str, str], str | None]]
) -> None:
    params, signature = forge(fixture("inbound_plain_text.json"))
    before = stored_counts()

    response = post_form(client, INBOUND_PATH, params, signature)

    assert response.status_code == 403
    assert stored_counts() == before == (0, 0, 0, 0)


def test_behind_a_tls_proxy_the_public_url_is_what_verifies(client: Client, sms: Sms, settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example"
    settings.ALLOWED_HOSTS = ["internal", "testserver"]
    params = fixture("inbound_plain_text.json")

    # Twilio signed https://contact.example/...; Django sees http://internal:8000/... from the proxy.
    response = post_form(
        client, INBOUND_PATH, params, sign("https://contact.example" + INBOUND_PATH, params), HTTP_HOST="internal:8000"
    )

    assert response.status_code == 200
    assert Message.objects.count() == 1


def test_behind_a_proxy_a_signature_with_explicit_443_port_also_verifies(
    client: Client, sms: Sms, settings: Any
) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example"
    settings.ALLOWED_HOSTS = ["internal", "testserver"]
    params = fixture("inbound_plain_text.json")

    response = post_form(
        client,
        INBOUND_PATH,
        params,
        sign("https://contact.example:443" + INBOUND_PATH, params),
        HTTP_HOST="internal:8000",
    )

    assert response.status_code == 200
    assert Message.objects.count() == 1


def test_behind_a_proxy_a_signature_for_another_public_host_is_refused(client: Client, sms: Sms, settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example"
    settings.ALLOWED_HOSTS = ["internal", "testserver"]
    params = fixture("inbound_plain_text.json")

    response = post_form(
        client, INBOUND_PATH, params, sign("https://other.example" + INBOUND_PATH, params), HTTP_HOST="internal:8000"
    )

    assert response.status_code == 403
    assert Message.objects.count() == 0


def test_public_base_url_with_a_non_default_port_verifies_signatures_made_for_that_port(
    client: Client, sms: Sms, settings: Any
) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example:8443"
    settings.ALLOWED_HOSTS = ["internal", "testserver"]
    params = fixture("inbound_plain_text.json")

    response = post_form(
        client,
        INBOUND_PATH,
        params,
        sign("https://contact.example:8443" + INBOUND_PATH, params),
        HTTP_HOST="internal:8000",
    )

    assert response.status_code == 200
    assert Message.objects.count() == 1


def test_public_base_url_with_a_non_default_port_refuses_another_port(client: Client, sms: Sms, settings: Any) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example:8443"
    settings.ALLOWED_HOSTS = ["internal", "testserver"]
    params = fixture("inbound_plain_text.json")

    response = post_form(
        client,
        INBOUND_PATH,
        params,
        sign("https://contact.example:9443" + INBOUND_PATH, params),
        HTTP_HOST="internal:8000",
    )

    assert response.status_code == 403
    assert Message.objects.count() == 0


def test_missing_auth_token_env_var_refuses_inbound_webhooks(
    client: Client, sms: Sms, monkeypatch: pytest.MonkeyPatch
) -> None:
    params = fixture("inbound_plain_text.json")
    signature = sign("http://testserver" + INBOUND_PATH, params)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    before = stored_counts()

    response = post_form(client, INBOUND_PATH, params, signature)

    assert response.status_code == 403
    assert stored_counts() == before


def test_an_inbox_naming_its_own_token_variable_verifies_with_that_token_only(
    client: Client, sms: Sms, monkeypatch: pytest.MonkeyPatch
) -> None:
    sms.number_inbox.config = {**sms.number_inbox.config, "auth_token_env": "CARDIOLOGY_TWILIO_TOKEN"}
    sms.number_inbox.save(update_fields=["config"])
    monkeypatch.setenv("CARDIOLOGY_TWILIO_TOKEN", OTHER_TOKEN)
    params = fixture("inbound_plain_text.json")
    url = "http://testserver" + INBOUND_PATH

    refused = post_form(client, INBOUND_PATH, params, sign(url, params, token=TOKEN))
    accepted = post_form(client, INBOUND_PATH, params, sign(url, params, token=OTHER_TOKEN))

    assert (refused.status_code, accepted.status_code) == (403, 200)
    assert Message.objects.count() == 1


# --- Duplicates ----------------------------------------------------------------------------------------


def test_twilio_retrying_the_same_message_sid_stores_one_message_and_publishes_once(
    client: Client, sms: Sms, capture_events: Callable[[], Any]
) -> None:
    params = fixture("inbound_plain_text.json")
    first = post_signed(client, INBOUND_PATH, params)
    events = capture_events()

    second = post_signed(client, INBOUND_PATH, params)

    assert (first.status_code, second.status_code) == (200, 200)
    assert second.content.decode() == EMPTY_TWIML
    assert Message.objects.count() == 1
    assert Conversation.objects.get().unread_count == 1
    assert events.kinds() == []


def test_the_same_message_posted_concurrently_is_stored_exactly_once(transactional_db: Any, twilio_env: None) -> None:
    make_sms_inboxes()
    params = fixture("inbound_plain_text.json")
    signature = sign("http://testserver" + INBOUND_PATH, params)
    threads_count = 8
    barrier = threading.Barrier(threads_count)
    statuses: list[int] = []
    errors: list[BaseException] = []

    def post() -> None:
        try:
            thread_client = Client()
            barrier.wait(timeout=30)
            statuses.append(post_form(thread_client, INBOUND_PATH, params, signature).status_code)
        except BaseException as exc:  # reported by the assertion below
            errors.append(exc)
        finally:
            connections.close_all()

    threads = [threading.Thread(target=post) for _ in range(threads_count)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)

    assert errors == []
    assert statuses == [200] * threads_count
    assert Message.objects.filter(provider_message_id=params["MessageSid"]).count() == 1
    assert Patient.objects.count() == 1
    assert Conversation.objects.count() == 1
    assert Conversation.objects.get().unread_count == 1


# --- Outbound through the real SDK --------------------------------------------------------------------


def test_number_inbox_sends_exactly_the_twilio_rest_request(
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    inbound: Callable[..., Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example"
    conversation = conversation_in(sms.number_inbox, inbound)
    twilio_api.script = [(201, fixture("api_message_created.json"))]

    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body=BODY, author=None)

    assert len(twilio_api.requests) == 1
    request = twilio_api.requests[0]
    assert request.method == "POST"
    assert request.uri == MESSAGES_URI
    assert request.data == {
        "To": PATIENT_PHONE,
        "From": NUMBER,
        "Body": BODY,
        "StatusCallback": f"https://contact.example/webhooks/twilio/sms/status/?message={message.pk}",
    }
    assert request.auth == (ACCOUNT_SID, TOKEN)
    message.refresh_from_db()
    # Twilio's "queued" means it holds the message but no carrier has it yet: ours is "sending".
    assert message.status == MessageStatus.SENDING
    assert message.provider_message_id == FIXTURE_SID


def test_messaging_service_inbox_sends_the_service_sid_and_no_from(
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    inbound: Callable[..., Any],
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    settings.PUBLIC_BASE_URL = "https://contact.example"
    conversation = conversation_in(sms.service_inbox, inbound)
    twilio_api.script = [(201, fixture("api_message_created_messaging_service.json"))]

    with django_capture_on_commit_callbacks(execute=True):
        message = send_outbound(conversation=conversation, body=BODY, author=None)

    assert len(twilio_api.requests) == 1
    request = twilio_api.requests[0]
    assert (request.method, request.uri, request.auth) == ("POST", MESSAGES_URI, (ACCOUNT_SID, TOKEN))
    assert request.data == {
        "To": PATIENT_PHONE,
        "MessagingServiceSid": SERVICE_SID,
        "Body": BODY,
        "StatusCallback": f"https://contact.example/webhooks/twilio/sms/status/?message={message.pk}",
    }
    message.refresh_from_db()
    assert (message.status, message.provider_message_id) == (MessageStatus.SENDING, FIXTURE_SID)


def test_an_inbox_with_both_a_service_and_a_number_sends_through_the_service(
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    inbound: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    TwilioSender.objects.create(inbox=sms.service_inbox, kind=TwilioSenderKind.NUMBER, value=POOL_NUMBER)
    conversation = conversation_in(sms.service_inbox, inbound)

    with django_capture_on_commit_callbacks(execute=True):
        send_outbound(conversation=conversation, body=BODY, author=None)

    assert twilio_api.requests[0].data["MessagingServiceSid"] == SERVICE_SID
    assert "From" not in twilio_api.requests[0].data


def test_outbound_attachments_are_sent_as_media_url(
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    inbound: Callable[..., Any],
    django_capture_on_commit_callbacks: Any,
) -> None:
    conversation = conversation_in(sms.number_inbox, inbound)
    media = "https://contact.example/media/discharge-summary.png"

    with django_capture_on_commit_callbacks(execute=True):
        send_outbound(
            conversation=conversation,
            body=BODY,
            author=None,
            attachments=[{"url": media, "content_type": "image/png"}],
        )

    assert twilio_api.requests[0].data["MediaUrl"] == [media]


def queued_message(inbox: Inbox, inbound: Callable[..., Any]) -> Message:
    """A queued outbound message whose delivery has not run (the `db` test never commits)."""
    message = send_outbound(conversation=conversation_in(inbox, inbound), body=BODY, author=None)
    assert message.status == MessageStatus.QUEUED
    return message


TRANSIENT = [
    pytest.param((429, fixture("api_error_20429.json")), "Twilio answered 429; will retry", id="429"),
    pytest.param((500, fixture("api_error_500.json")), "Twilio answered 500; will retry", id="500"),
    pytest.param(
        requests.exceptions.ConnectionError("Connection refused"),
        "could not reach Twilio: ConnectionError",
        id="connection_refused",
    ),
    pytest.param(
        requests.exceptions.ConnectTimeout("connect timed out"),
        "could not reach Twilio: ConnectTimeout",
        id="connect_timeout",
    ),
]


@pytest.mark.parametrize(("step", "reason"), TRANSIENT)
def test_transient_error_puts_the_message_back_in_the_queue_for_a_retry(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any], step: Any, reason: str
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [step]

    outcome = deliver_message(message_id=message.pk)

    assert outcome.retry is True
    assert outcome.status == MessageStatus.QUEUED
    message.refresh_from_db()
    assert message.status == MessageStatus.QUEUED
    assert message.provider_message_id is None
    assert message.error_message == reason
    assert len(twilio_api.requests) == 1


@pytest.mark.parametrize(("step", "reason"), TRANSIENT)
def test_celery_task_retries_a_transient_error_and_the_retry_sends_once(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any], step: Any, reason: str
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [step, (201, fixture("api_message_created.json"))]

    result = deliver_message_task.apply(kwargs={"message_id": message.pk})

    assert result.successful()
    assert result.result == MessageStatus.SENDING
    assert len(twilio_api.requests) == 2
    assert twilio_api.requests[0].data == twilio_api.requests[1].data
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    assert message.provider_message_id == FIXTURE_SID


def test_celery_task_gives_up_after_max_retries_and_fails_with_a_readable_reason(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    attempts = deliver_message_task.max_retries + 1
    twilio_api.script = [(500, fixture("api_error_500.json")) for _ in range(attempts + 3)]

    result = deliver_message_task.apply(kwargs={"message_id": message.pk})

    assert result.result == "failed"
    assert len(twilio_api.requests) == attempts
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == "retries_exhausted"
    assert message.error_message == "gave up after repeated transient errors: Twilio answered 500; will retry"
    assert message.provider_message_id is None


@pytest.mark.parametrize("code", [21211, 21614, 21610])
def test_permanent_twilio_error_fails_at_once_with_the_readable_reason_and_code(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any], code: int
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [(400, fixture(f"api_error_{code}.json"))]

    result = deliver_message_task.apply(kwargs={"message_id": message.pk})

    assert result.result == MessageStatus.FAILED
    assert len(twilio_api.requests) == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.FAILED
    assert message.error_code == str(code)
    assert message.error_message == PERMANENT_ERRORS[code]


@pytest.mark.parametrize("code", [21211, 21614])
def test_permanent_errors_other_than_21610_leave_consent_alone(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any], code: int
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [(400, fixture(f"api_error_{code}.json"))]

    deliver_message(message_id=message.pk)

    assert Consent.objects.count() == 0
    assert ConsentChange.objects.count() == 0


def test_twilio_21610_records_a_provider_marketing_opt_out_that_blocks_marketing(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    patient = message.conversation.patient
    twilio_api.script = [(400, fixture("api_error_21610.json"))]

    deliver_message(message_id=message.pk)

    assert Consent.objects.get(patient=patient, purpose=ConsentPurpose.MARKETING).status == ConsentStatus.OPTED_OUT
    change = ConsentChange.objects.get(patient=patient)
    assert change.status == ConsentStatus.OPTED_OUT
    assert change.purpose == ConsentPurpose.MARKETING
    assert change.source == ConsentSource.PROVIDER
    assert change.channel == "sms"
    assert change.keyword == "21610"
    assert change.message_id == message.pk
    with pytest.raises(ValidationError) as refused:
        send_outbound(conversation=message.conversation, body="Flu shots are here!", author=None, purpose="marketing")
    assert refused.value.code == "opted_out"
    assert "Provider reported" in refused.value.messages[0]


def test_unlisted_twilio_client_error_is_permanent_with_twilios_own_message(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [(400, {"code": 21620, "message": "Invalid media URL(s)", "status": 400})]

    deliver_message(message_id=message.pk)

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.FAILED, "21620")
    # The SDK's wording around Twilio's message: "Unable to create record: Invalid media URL(s)".
    assert message.error_message.endswith("Invalid media URL(s)")
    assert len(twilio_api.requests) == 1


def test_read_timeout_leaves_the_message_sending_and_never_resends(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [requests.exceptions.ReadTimeout("read timed out")]

    result = deliver_message_task.apply(kwargs={"message_id": message.pk})
    again = deliver_message(message_id=message.pk)
    deliver_message_task.apply(kwargs={"message_id": message.pk})

    assert result.result == MessageStatus.SENDING
    assert again.retry is False
    assert len(twilio_api.requests) == 1
    message.refresh_from_db()
    assert message.status == MessageStatus.SENDING
    assert message.provider_message_id is None
    assert "did not answer in time" in message.error_message


def test_status_callback_carrying_our_id_settles_a_read_timeout(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [requests.exceptions.ReadTimeout("read timed out")]
    deliver_message(message_id=message.pk)
    callback_path = twilio_api.requests[0].data["StatusCallback"].removeprefix("http://testserver")
    assert callback_path == f"{STATUS_PATH}?message={message.pk}"

    response = post_signed(client, callback_path, fixture("status_delivered.json"))

    assert response.status_code == 204
    message.refresh_from_db()
    assert message.provider_message_id == FIXTURE_SID
    assert message.status == MessageStatus.DELIVERED
    assert message.delivered_at is not None
    assert len(twilio_api.requests) == 1


def test_status_callback_for_our_id_cannot_take_over_a_message_that_already_has_a_sid(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    deliver_message(message_id=message.pk)
    message.refresh_from_db()
    own_sid = message.provider_message_id
    stranger = {**fixture("status_delivered.json"), "MessageSid": "SM" + "f" * 32, "SmsSid": "SM" + "f" * 32}

    response = post_signed(client, f"{STATUS_PATH}?message={message.pk}", stranger)

    assert response.status_code == 204
    message.refresh_from_db()
    assert (message.provider_message_id, message.status) == (own_sid, MessageStatus.SENDING)


def test_a_successful_send_publishes_exactly_one_status_change(
    sms: Sms,
    twilio_api: RecordingTwilioHttpClient,
    inbound: Callable[..., Any],
    capture_events: Callable[[], Any],
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    events = capture_events()

    deliver_message(message_id=message.pk)

    assert [(p["message_id"], p["status"]) for p in status_events(events)] == [(message.pk, MessageStatus.SENDING)]


def test_delivering_the_same_message_twice_sends_one_request(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)

    first = deliver_message(message_id=message.pk)
    second = deliver_message(message_id=message.pk)
    deliver_message_task.apply(kwargs={"message_id": message.pk})

    assert len(twilio_api.requests) == 1
    assert first.status == second.status == MessageStatus.SENDING
    assert second.retry is False


def test_inbox_without_account_sid_fails_the_message_without_calling_twilio(
    sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    sms.number_inbox.config = {**sms.number_inbox.config, "account_sid": ""}
    sms.number_inbox.save(update_fields=["config"])
    message = queued_message(sms.number_inbox, inbound)

    deliver_message(message_id=message.pk)

    message.refresh_from_db()
    assert (message.status, message.error_code) == (MessageStatus.FAILED, "no_account_sid")
    assert twilio_api.requests == []


# --- Status callbacks ---------------------------------------------------------------------------------


@pytest.fixture
def sent_message(sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]) -> Message:
    """An outbound message Twilio accepted with the fixtures' SID; ours is "sending"."""
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [(201, fixture("api_message_created.json"))]
    deliver_message(message_id=message.pk)
    message.refresh_from_db()
    assert (message.status, message.provider_message_id) == (MessageStatus.SENDING, FIXTURE_SID)
    return message


def status_path(message: Message) -> str:
    return f"{STATUS_PATH}?message={message.pk}"


@pytest.mark.parametrize(
    ("name", "expected", "changes"),
    [
        ("status_queued.json", MessageStatus.SENDING, False),
        ("status_sending.json", MessageStatus.SENDING, False),
        ("status_sent.json", MessageStatus.SENT, True),
        ("status_delivered.json", MessageStatus.DELIVERED, True),
        ("status_read.json", MessageStatus.READ, True),
        ("status_undelivered_30003.json", MessageStatus.UNDELIVERED, True),
        ("status_failed_30007.json", MessageStatus.FAILED, True),
    ],
)
def test_each_status_fixture_moves_the_message_forward(
    client: Client,
    sent_message: Message,
    capture_events: Callable[[], Any],
    name: str,
    expected: str,
    changes: bool,
) -> None:
    events = capture_events()

    response = post_signed(client, status_path(sent_message), fixture(name))

    assert response.status_code == 204
    sent_message.refresh_from_db()
    assert sent_message.status == expected
    assert len(status_events(events)) == (1 if changes else 0)
    if changes:
        assert status_events(events)[0]["status"] == expected


def test_status_callbacks_in_order_stamp_sent_delivered_and_read(
    client: Client, sent_message: Message, capture_events: Callable[[], Any]
) -> None:
    events = capture_events()

    for name in ("status_queued.json", "status_sent.json", "status_delivered.json", "status_read.json"):
        assert post_signed(client, status_path(sent_message), fixture(name)).status_code == 204

    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.READ
    assert sent_message.sent_at is not None
    assert sent_message.delivered_at is not None
    assert sent_message.read_at is not None
    assert [p["status"] for p in status_events(events)] == ["sent", "delivered", "read"]


def test_messaging_service_status_callback_moves_the_service_inbox_message(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.service_inbox, inbound)
    twilio_api.script = [(201, fixture("api_message_created_messaging_service.json"))]
    deliver_message(message_id=message.pk)

    response = post_signed(client, status_path(message), fixture("status_sent_messaging_service.json"))

    assert response.status_code == 204
    message.refresh_from_db()
    assert message.status == MessageStatus.SENT


@pytest.mark.parametrize(
    ("first", "late", "expected"),
    [
        ("status_delivered.json", "status_sent.json", MessageStatus.DELIVERED),
        ("status_failed_30007.json", "status_delivered.json", MessageStatus.FAILED),
        ("status_delivered.json", "status_sending.json", MessageStatus.DELIVERED),
        ("status_undelivered_30003.json", "status_failed_30007.json", MessageStatus.UNDELIVERED),
    ],
    ids=["delivered_then_sent", "failed_then_delivered", "delivered_then_sending", "undelivered_then_failed"],
)
def test_late_out_of_order_status_changes_nothing(
    client: Client,
    sent_message: Message,
    capture_events: Callable[[], Any],
    first: str,
    late: str,
    expected: str,
) -> None:
    assert post_signed(client, status_path(sent_message), fixture(first)).status_code == 204
    sent_message.refresh_from_db()
    before = (sent_message.status, sent_message.error_code, sent_message.error_message, sent_message.status_changed_at)
    events = capture_events()

    response = post_signed(client, status_path(sent_message), fixture(late))

    assert response.status_code == 204
    sent_message.refresh_from_db()
    after = (sent_message.status, sent_message.error_code, sent_message.error_message, sent_message.status_changed_at)
    assert after == before
    assert sent_message.status == expected
    assert events.kinds() == []


def test_duplicate_status_callback_changes_nothing(
    client: Client, sent_message: Message, capture_events: Callable[[], Any]
) -> None:
    assert post_signed(client, status_path(sent_message), fixture("status_delivered.json")).status_code == 204
    sent_message.refresh_from_db()
    delivered_at = sent_message.delivered_at
    events = capture_events()

    assert post_signed(client, status_path(sent_message), fixture("status_delivered.json")).status_code == 204

    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.delivered_at) == (MessageStatus.DELIVERED, delivered_at)
    assert events.kinds() == []


@pytest.mark.parametrize(
    ("name", "code", "text", "status"),
    [
        ("status_failed_30007.json", "30007", "Message filtered", MessageStatus.FAILED),
        ("status_undelivered_30003.json", "30003", "Unreachable destination handset", MessageStatus.UNDELIVERED),
    ],
)
def test_error_status_callback_stores_twilios_error_code_and_message(
    client: Client,
    sent_message: Message,
    capture_events: Callable[[], Any],
    name: str,
    code: str,
    text: str,
    status: str,
) -> None:
    events = capture_events()

    assert post_signed(client, status_path(sent_message), fixture(name)).status_code == 204

    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_code, sent_message.error_message) == (status, code, text)
    [event] = status_events(events)
    assert (event["status"], event["error_code"], event["error_message"]) == (status, code, text)


@pytest.mark.parametrize(
    "forge",
    ["wrong_signature", "missing_signature", "other_token", "without_query", "tampered_status"],
)
def test_unverifiable_status_callback_is_refused_and_changes_nothing(
    client: Client, sent_message: Message, capture_events: Callable[[], Any], forge: str
) -> None:
    params = fixture("status_delivered.json")
    path = status_path(sent_message)
    url = "http://testserver" + path
    signature: str | None = {
        "wrong_signature": "bm90LWEtc2lnbmF0dXJl",
        "missing_signature": None,
        "other_token": sign(url, params, token=OTHER_TOKEN),
        "without_query": sign("http://testserver" + STATUS_PATH, params),
        "tampered_status": sign(url, fixture("status_sent.json")),
    }[forge]
    events = capture_events()

    response = post_form(client, path, params, signature)

    assert response.status_code == 403
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING
    assert sent_message.delivered_at is None
    assert events.kinds() == []


def test_status_callback_for_an_unknown_sid_is_acknowledged_and_stores_nothing(
    client: Client, sent_message: Message, capture_events: Callable[[], Any]
) -> None:
    params = {**fixture("status_delivered.json"), "MessageSid": "SM" + "0" * 32, "SmsSid": "SM" + "0" * 32}
    before = stored_counts()
    events = capture_events()

    response = post_signed(client, STATUS_PATH, params)

    assert response.status_code == 204
    assert stored_counts() == before
    assert events.kinds() == []
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING


def test_status_callback_without_a_sid_is_acknowledged_and_stores_nothing(
    client: Client, sent_message: Message
) -> None:
    params = {k: v for k, v in fixture("status_delivered.json").items() if k not in ("MessageSid", "SmsSid")}

    response = post_signed(client, status_path(sent_message), params)

    assert response.status_code == 204
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING


def test_missing_auth_token_env_var_refuses_status_callbacks(
    client: Client, sent_message: Message, monkeypatch: pytest.MonkeyPatch, capture_events: Callable[[], Any]
) -> None:
    params = fixture("status_delivered.json")
    signature = sign("http://testserver" + status_path(sent_message), params)
    monkeypatch.delenv("TWILIO_AUTH_TOKEN")
    events = capture_events()

    response = post_form(client, status_path(sent_message), params, signature)

    assert response.status_code == 403
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING
    assert events.kinds() == []


# --- Values PostgreSQL refuses ------------------------------------------------------------------------


def test_a_body_with_a_nul_byte_is_stored_with_a_replacement_character(client: Client, sms: Sms) -> None:
    params = inbound_params(Body="Chest pain\x00 since last night")

    response = post_signed(client, INBOUND_PATH, params)

    assert response.status_code == 200
    message = Message.objects.get()
    assert message.body == "Chest pain\ufffd since last night"
    assert message.provider_payload["Body"] == message.body
    assert message.conversation.last_message_preview == message.body


@pytest.mark.parametrize("name", ["FromCity", "ToState", "ApiVersion", "An\x00Extra"])
def test_a_nul_byte_in_any_other_parameter_is_cleaned_in_the_stored_payload(
    client: Client, sms: Sms, name: str
) -> None:
    params = inbound_params(**{name: "x\x00y"})

    response = post_signed(client, INBOUND_PATH, params)

    assert response.status_code == 200
    payload = Message.objects.get().provider_payload
    assert payload[name.replace("\x00", "\ufffd")] == "x\ufffdy"
    assert not any("\x00" in key or "\x00" in value for key, value in payload.items())


def test_media_urls_with_a_nul_byte_are_kept_cleaned(client: Client, sms: Sms) -> None:
    params = {**fixture("inbound_mms.json"), "MediaUrl0": "https://api.twilio.com/x\x00y", "NumMedia": "2"}

    assert post_signed(client, INBOUND_PATH, params).status_code == 200

    assert Message.objects.get().attachments[0]["url"] == "https://api.twilio.com/x\ufffdy"


@pytest.mark.parametrize("num_media", ["²", "-3", "1e9", "99999999999999999999", "１", " "])
def test_nonsense_num_media_stores_the_message_without_attachments(client: Client, sms: Sms, num_media: str) -> None:
    params = {**fixture("inbound_mms.json"), "NumMedia": num_media}

    assert post_signed(client, INBOUND_PATH, params).status_code == 200

    assert Message.objects.get().attachments == []


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("MessageSid", "SM" + "a" * 200),
        ("MessageSid", "SM1f0c\x00"),
        ("MessageSid", "SM1f0c\x07beep"),
        ("SmsMessageSid", "SM" + "b" * 121),
        ("AccountSid", "AC" + "c" * 100),
        ("AccountSid", "AC\x00"),
        ("From", "+8613800138000\x00"),
        ("From", "+86" + "1" * 100),
    ],
)
def test_an_id_that_cannot_be_valid_is_a_400_naming_it_and_nothing_is_stored(
    client: Client, sms: Sms, name: str, value: str
) -> None:
    before = stored_counts()

    response = post_signed(client, INBOUND_PATH, inbound_params(**{name: value}))

    assert response.status_code == 400
    assert response.content.decode().startswith(f"{name}:")
    assert stored_counts() == before


@pytest.mark.parametrize(
    "changes",
    [
        {"To": NUMBER + "\x00"},
        {"To": "+" + "8" * 100},
        {"MessagingServiceSid": SERVICE_SID + "\x00", "To": "+8610000000000"},
    ],
    ids=["nul_in_to", "long_to", "nul_in_service"],
)
def test_a_destination_no_sender_can_hold_finds_no_inbox_and_is_refused(
    client: Client, sms: Sms, changes: dict[str, str]
) -> None:
    before = stored_counts()

    response = post_signed(client, INBOUND_PATH, inbound_params(**changes))

    assert response.status_code == 403
    assert stored_counts() == before


def test_a_nul_in_the_service_sid_of_a_known_number_is_a_400_once_verified(client: Client, sms: Sms) -> None:
    before = stored_counts()

    response = post_signed(client, INBOUND_PATH, inbound_params(MessagingServiceSid="MG\x00"))

    assert response.status_code == 400
    assert response.content.decode().startswith("MessagingServiceSid:")
    assert stored_counts() == before


def test_a_status_callback_error_message_with_a_nul_is_stored_cleaned(client: Client, sent_message: Message) -> None:
    params = {**fixture("status_failed_30007.json"), "ErrorMessage": "Message\x00 filtered"}

    assert post_signed(client, status_path(sent_message), params).status_code == 204

    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_message) == (MessageStatus.FAILED, "Message\ufffd filtered")


def test_an_over_long_status_callback_error_message_is_cut_to_its_column(client: Client, sent_message: Message) -> None:
    params = {**fixture("status_failed_30007.json"), "ErrorMessage": "filtered " * 200}

    assert post_signed(client, status_path(sent_message), params).status_code == 204

    sent_message.refresh_from_db()
    assert sent_message.error_message == ("filtered " * 200)[:500]


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("ErrorCode", "300\x0007"),
        ("ErrorCode", "3" * 41),
        ("MessageStatus", "delivered\x00"),
        ("SmsStatus", "x" * 41),
        ("AccountSid", "AC\x00"),
    ],
)
def test_a_status_callback_value_that_cannot_be_valid_is_a_400_and_changes_nothing(
    client: Client, sent_message: Message, capture_events: Callable[[], Any], name: str, value: str
) -> None:
    events = capture_events()

    response = post_signed(client, status_path(sent_message), {**fixture("status_failed_30007.json"), name: value})

    assert response.status_code == 400
    assert response.content.decode().startswith(f"{name}:")
    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_code) == (MessageStatus.SENDING, "")
    assert events.kinds() == []


def test_an_error_code_of_unicode_digits_gets_no_description_and_no_500(client: Client, sent_message: Message) -> None:
    params = {k: v for k, v in fixture("status_failed_30007.json").items() if k != "ErrorMessage"}

    response = post_signed(client, status_path(sent_message), {**params, "ErrorCode": "²"})

    assert response.status_code == 204
    sent_message.refresh_from_db()
    assert (sent_message.status, sent_message.error_code, sent_message.error_message) == (MessageStatus.FAILED, "²", "")


@pytest.mark.parametrize("sid", ["SM\x00", "SM" + "9" * 200])
def test_a_status_callback_sid_no_message_could_hold_is_acknowledged_and_changes_nothing(
    client: Client, sent_message: Message, sid: str
) -> None:
    before = stored_counts()

    response = post_signed(client, STATUS_PATH, {**fixture("status_delivered.json"), "MessageSid": sid})

    assert response.status_code == 204
    assert stored_counts() == before
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING


@pytest.mark.parametrize("our_id", ["²", "٣", "99999999999999999999999", "-1", "1\x00"])
def test_a_message_id_on_the_callback_url_that_is_not_ours_is_acknowledged(
    client: Client, sent_message: Message, our_id: str
) -> None:
    params = {**fixture("status_delivered.json"), "MessageSid": "SM" + "e" * 32, "SmsSid": "SM" + "e" * 32}

    response = post_signed(client, f"{STATUS_PATH}?{urlencode({'message': our_id})}", params)

    assert response.status_code == 204
    sent_message.refresh_from_db()
    assert sent_message.status == MessageStatus.SENDING


def test_an_over_long_sid_settling_a_read_timeout_is_a_400_and_attaches_nothing(
    client: Client, sms: Sms, twilio_api: RecordingTwilioHttpClient, inbound: Callable[..., Any]
) -> None:
    message = queued_message(sms.number_inbox, inbound)
    twilio_api.script = [requests.exceptions.ReadTimeout("read timed out")]
    deliver_message(message_id=message.pk)
    long_sid = "SM" + "7" * 130

    response = post_signed(
        client, status_path(message), {**fixture("status_delivered.json"), "MessageSid": long_sid, "SmsSid": long_sid}
    )

    assert response.status_code == 400
    assert response.content.decode().startswith("MessageSid:")
    message.refresh_from_db()
    assert (message.provider_message_id, message.status) == (None, MessageStatus.SENDING)


# --- Segments -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "segments", "per_segment", "remaining"),
    [
        ("a" * 160, 1, 160, 0),
        ("a" * 161, 2, 153, 145),
        ("a" * 306, 2, 153, 0),
        ("a" * 307, 3, 153, 152),
        ("@£$¥èéùìò" * 10, 1, 160, 70),
    ],
    ids=["160", "161", "306", "307", "gsm_accented"],
)
def test_gsm7_segment_boundaries(text: str, segments: int, per_segment: int, remaining: int) -> None:
    result = count_segments(text)

    assert result.encoding == "GSM-7"
    assert (result.segments, result.per_segment, result.remaining) == (segments, per_segment, remaining)
    assert result.units == len(text)
    assert result.non_gsm == []


def test_gsm7_extension_characters_count_double() -> None:
    assert count_segments("€" * 80).segments == 1
    assert count_segments("€" * 80).units == 160
    assert count_segments("a" * 159 + "€").segments == 2
    assert count_segments("{}[]~^|\\").units == 16
    assert count_segments("{}[]~^|\\").encoding == "GSM-7"


def test_gsm7_extension_character_is_never_split_across_parts() -> None:
    # 306 septets would fit two parts exactly, but the euro sign cannot straddle the boundary.
    result = count_segments("a" * 152 + "€" + "a" * 152)

    assert result.units == 306
    assert result.segments == 3
    assert result.remaining == 152


def test_one_non_gsm_character_turns_the_whole_text_ucs2() -> None:
    result = count_segments("a" * 159 + "’")

    assert result.encoding == "UCS-2"
    assert result.non_gsm == ["’"]
    assert result.units == 160
    assert result.segments == 3
    assert count_segments("a" * 160).segments == 1


@pytest.mark.parametrize(
    ("text", "segments", "per_segment", "remaining"),
    [
        ("中" * 70, 1, 70, 0),
        ("中" * 71, 2, 67, 63),
        ("中" * 134, 2, 67, 0),
        ("中" * 135, 3, 67, 66),
    ],
    ids=["70", "71", "134", "135"],
)
def test_ucs2_segment_boundaries(text: str, segments: int, per_segment: int, remaining: int) -> None:
    result = count_segments(text)

    assert result.encoding == "UCS-2"
    assert (result.segments, result.per_segment, result.remaining) == (segments, per_segment, remaining)
    assert result.non_gsm == ["中"]


def test_emoji_costs_two_ucs2_units() -> None:
    assert count_segments("😀" * 35).units == 70
    assert count_segments("😀" * 35).characters == 35
    assert count_segments("😀" * 35).segments == 1
    assert count_segments("😀" * 36).segments == 2


def test_emoji_is_never_split_across_parts() -> None:
    # 134 units would fit two parts exactly, but the surrogate pair cannot straddle the boundary.
    result = count_segments("中" * 66 + "😀" + "中" * 66)

    assert result.units == 134
    assert result.segments == 3


def test_empty_text_costs_no_segments() -> None:
    result = count_segments("")

    assert (result.encoding, result.segments, result.units, result.characters) == ("GSM-7", 0, 0, 0)
    assert result.non_gsm == []


def test_inbound_fixtures_fit_one_segment_as_twilio_reported() -> None:
    for name in ("inbound_plain_text.json", "inbound_chinese_ucs2.json", "inbound_emoji.json"):
        params = fixture(name)
        assert count_segments(params["Body"]).segments == int(params["NumSegments"]), name


_GSM = sorted(GSM7_BASIC | GSM7_EXTENSION)
_texts = st.text(
    alphabet=st.one_of(
        st.sampled_from(_GSM),
        st.sampled_from(["中", "’", "😀", "🙏", "é", "ü", "ç", "Ж"]),
        st.characters(exclude_categories=["Cs"]),
    ),
    max_size=400,
) | st.text(alphabet=st.sampled_from(_GSM), max_size=400)


@given(_texts)
def test_segment_count_is_consistent_with_its_units(text: str) -> None:
    result = count_segments(text)
    gsm = all(ch in GSM7_BASIC or ch in GSM7_EXTENSION for ch in text)
    units = sum(2 if ch in GSM7_EXTENSION else 1 for ch in text) if gsm else len(text.encode("utf-16-le")) // 2
    single = 160 if gsm else 70

    assert result.encoding == ("GSM-7" if gsm else "UCS-2")
    assert result.units == units
    assert result.characters == len(text)
    if units == 0:
        assert result.segments == 0
        return
    assert result.segments >= math.ceil(units / result.per_segment)
    # A character is at most two units, so a part wastes at most one unit by not splitting it.
    assert result.segments <= math.ceil(units / (result.per_segment - 1))
    assert (result.segments == 1) == (units <= single)
    assert 0 <= result.remaining < result.per_segment or result.segments == 1

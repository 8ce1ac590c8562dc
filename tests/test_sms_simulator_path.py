"""The embedded demo's SMS path is production's: the simulator speaks Twilio over real HTTP.

A patient typing on the simulator page becomes a signed Twilio webhook POSTed over loopback to the
platform's own inbound URL; an agent's reply goes through the twilio SDK to the simulated REST API,
which answers like Twilio and later POSTs signed status callbacks to the StatusCallback URL the SDK
sent. Django's live server (a real socket) stands in for the public URL.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client

from channels_adapters.simulator.models import SimulatedDelivery
from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox
from contactcenter.actions.outbound import send_outbound
from contactcenter.models import Inbox, Message, MessageDirection, MessageStatus, Team

ACCOUNT_SID = "AC" + "5e" * 16
NUMBER = "+862012345678"
PATIENT = "+8613800138000"

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def sms_inbox(live_server: Any, settings: Any, monkeypatch: pytest.MonkeyPatch) -> Inbox:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", "simulator-path-token")
    settings.PUBLIC_BASE_URL = live_server.url
    settings.TWILIO_TRANSPORT = "simulator"
    team = Team.objects.create(code="service-desk", name="Service desk", name_zh="客服中心")
    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name="Hospital SMS",
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[NUMBER],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


def eventually(check: Callable[[], bool], *, within: float = 10.0) -> None:
    deadline = time.monotonic() + within
    while not check():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.05)


def patient_texts(body: str, inbox: Inbox) -> Message:
    response = Client().post("/simulator/send/", {"inbox": inbox.pk, "from": "138 0013 8000", "body": body})
    assert response.status_code == 200, response.content
    sid = response.json()["message_sid"]
    # The webhook was answered before the simulator's POST returned: the message is already stored.
    return Message.objects.get(provider_message_id=sid)


def test_a_patient_typing_in_the_simulator_arrives_through_the_signed_webhook(sms_inbox: Inbox) -> None:
    message = patient_texts("我想改一下复诊时间", sms_inbox)

    assert message.direction == MessageDirection.INBOUND
    assert message.body == "我想改一下复诊时间"
    assert message.inbox_id == sms_inbox.pk
    assert message.conversation.patient.identities.get(kind="phone").value == PATIENT
    # Everything Twilio posts is kept, as with a real webhook.
    assert message.provider_payload["To"] == NUMBER
    assert message.provider_payload["From"] == PATIENT


def test_an_agent_reply_reaches_the_simulated_phone_and_comes_back_delivered(sms_inbox: Inbox) -> None:
    conversation = patient_texts("Hello", sms_inbox).conversation

    reply = send_outbound(conversation=conversation, body="We have moved it to Friday.", author=None)

    delivery = SimulatedDelivery.objects.get(provider_message_id=Message.objects.get(pk=reply.pk).provider_message_id)
    assert (delivery.to, delivery.body) == (PATIENT, "We have moved it to Friday.")
    eventually(lambda: Message.objects.get(pk=reply.pk).status == MessageStatus.DELIVERED)
    reply.refresh_from_db()
    assert reply.sent_at is not None and reply.delivered_at is not None
    assert (reply.error_code, reply.error_message) == ("", "")


def test_fail_marker_plays_an_unreachable_handset_with_twilios_error_code(sms_inbox: Inbox) -> None:
    conversation = patient_texts("Hello", sms_inbox).conversation

    reply = send_outbound(conversation=conversation, body="This one will not arrive #fail", author=None)

    eventually(lambda: Message.objects.get(pk=reply.pk).status == MessageStatus.UNDELIVERED)
    reply.refresh_from_db()
    assert reply.error_code == "30003"
    assert reply.error_message == "The handset is unreachable."


def test_a_bad_phone_on_the_simulator_page_is_a_clear_400(sms_inbox: Inbox) -> None:
    response = Client().post("/simulator/send/", {"inbox": sms_inbox.pk, "from": "12", "body": "Hi"})

    assert response.status_code == 400
    assert response.json()["error"]
    assert not Message.objects.exists()

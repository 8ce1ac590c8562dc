"""Email: the MIME message and the web chat's offline email, against a real aiosmtpd server on 127.0.0.1.

The server runs in its own thread (aiosmtpd's Controller) on a free port; its handler keeps what arrived and
can be told to answer with SMTP errors first. Nothing is mocked between aiosmtplib and the server, and
nothing leaves the machine. The web chat fixtures are the web chat tests' own (same inbox, same socket).
"""

from __future__ import annotations

import email
import email.policy
import email.utils
import socket
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass, field
from email.message import EmailMessage
from pathlib import Path
from typing import Any

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import SMTP, Envelope, Session
from django.test import Client
from django.urls import reverse

from channels_adapters.base import AdapterError
from channels_adapters.email import transport
from channels_adapters.simulator.models import SimulatedDelivery, SimulatedEmail
from channels_adapters.webchat import actions
from channels_adapters.webchat import tests as webchat_tests
from channels_adapters.webchat.models import WebVisitor
from channels_adapters.webchat.tests import (
    Chat,
    Opener,
    agent_replies,
    db,
    offline_copy_of,
    say,
    start,
    widget_messages,
)
from contactcenter.actions.consent import record_consent
from contactcenter.models import ConsentPurpose, ConsentSource, ConsentStatus, Inbox, MessageStatus

pytestmark = pytest.mark.django_db(transaction=True)

# The web chat tests' fixtures, by name: its inbox and agent, its widget socket, a fresh channel layer each test.
chat = webchat_tests.chat
open_widget = webchat_tests.open_widget
fresh_channel_layer = webchat_tests.fresh_channel_layer

FROM = "康华医院 <noreply@kanghua-hospital.example>"
PAGE_URL = "https://www.kanghua-hospital.example/contact/"
PATIENT_EMAIL = "fang@example.com"


@dataclass
class Recorder:
    """aiosmtpd handler: answers queued replies (e.g. "550 …") first, then accepts and keeps the mail."""

    answers: list[str] = field(default_factory=list)
    attempts: int = 0
    envelopes: list[Envelope] = field(default_factory=list)

    async def handle_DATA(self, server: SMTP, session: Session, envelope: Envelope) -> str:
        self.attempts += 1
        if self.answers:
            return self.answers.pop(0)
        self.envelopes.append(envelope)
        return "250 Message accepted for delivery"

    def mails(self) -> list[EmailMessage]:
        parsed = []
        for envelope in self.envelopes:
            content = envelope.original_content or envelope.content
            assert isinstance(content, bytes)
            message = email.message_from_bytes(content, policy=email.policy.default)
            assert isinstance(message, EmailMessage)
            parsed.append(message)
        return parsed


def text_of(mail: EmailMessage) -> str:
    """The decoded body, with the CRLF line ends MIME text has on the wire read as newlines."""
    content = mail.get_content()
    assert isinstance(content, str)
    return content.replace("\r\n", "\n")


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def use_smtp(settings: Any, port: int) -> None:
    settings.EMAIL_TRANSPORT = "smtp"
    settings.EMAIL_SMTP_HOST = "127.0.0.1"
    settings.EMAIL_SMTP_PORT = port
    settings.EMAIL_SMTP_TLS = False
    settings.EMAIL_SMTP_STARTTLS = False
    settings.EMAIL_SMTP_USERNAME = ""
    settings.EMAIL_FROM_ADDRESS = FROM
    settings.EMAIL_TIMEOUT_SECONDS = 5


@pytest.fixture
def smtp(settings: Any) -> Iterator[Recorder]:
    recorder = Recorder()
    port = free_port()
    controller = Controller(recorder, hostname="127.0.0.1", port=port)
    controller.start()
    use_smtp(settings, port)
    yield recorder
    controller.stop()


@pytest.fixture
def email_chat(chat: Chat) -> Chat:
    """The web chat inbox with the widget's page known, so the email can link back to the chat."""
    chat.inbox.config = {**chat.inbox.config, "page_url": PAGE_URL}
    chat.inbox.save(update_fields=["config"])
    return chat


async def visitor_leaves(open_widget: Opener, **form: Any) -> WebVisitor:
    """A visitor fills in the pre-chat form, asks something, and closes the page."""
    widget = await open_widget()
    await start(widget, **form)
    await say(widget, "Can I change my appointment?", "c1")
    await widget.disconnect()
    return await db(lambda: WebVisitor.objects.order_by("-id").first())


# --- the MIME message --------------------------------------------------------------------------------------


def test_mime_message_arrives_with_our_headers_and_chinese_round_trips(smtp: Recorder) -> None:
    message_id = transport.new_message_id(message_id=42)
    body = "王女士您好，您的预约已改到周三上午。\nThank you."
    mail = transport.build_message(to=PATIENT_EMAIL, subject="康华医院：咨询回复", body=body, message_id=message_id)
    transport.send(mail, inbox_id=0)

    [envelope] = smtp.envelopes
    assert envelope.mail_from == "noreply@kanghua-hospital.example"
    assert envelope.rcpt_tos == [PATIENT_EMAIL]
    [received] = smtp.mails()
    assert received["Subject"] == "康华医院：咨询回复"
    assert email.utils.parseaddr(str(received["From"])) == ("康华医院", "noreply@kanghua-hospital.example")
    assert str(received["To"]) == PATIENT_EMAIL
    assert email.utils.parsedate_to_datetime(str(received["Date"])).tzinfo is not None
    assert received["Message-ID"] == message_id
    assert message_id.startswith("<cc.42.") and message_id.endswith("@kanghua-hospital.example>")
    assert not received.is_multipart()
    assert received.get_content_type() == "text/plain"
    assert received.get_content_charset() == "utf-8"
    assert text_of(received) == body + "\n"
    # Every byte on the wire is ASCII: servers without 8BITMIME get the Chinese text intact.
    raw = envelope.original_content or b""
    assert raw.isascii()


def test_a_line_break_in_the_subject_cannot_inject_headers(smtp: Recorder) -> None:
    mail = transport.build_message(
        to=PATIENT_EMAIL, subject="Hello\r\nBcc: someone@evil.example", body="Hi", message_id="<x@y>"
    )
    transport.send(mail, inbox_id=0)
    [received] = smtp.mails()
    assert received["Bcc"] is None
    assert smtp.envelopes[0].rcpt_tos == [PATIENT_EMAIL]


def test_each_message_id_is_new() -> None:
    assert transport.new_message_id(message_id=1) != transport.new_message_id(message_id=1)


# --- the web chat's offline email --------------------------------------------------------------------------


async def test_reply_goes_by_email_when_the_widget_is_closed_and_only_an_email_was_given(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    await visitor_leaves(open_widget, phone="", email="Fang@Example.com")
    reply = await agent_replies(email_chat, "Yes: Wednesday 9:00 works.")

    [mail] = smtp.mails()
    assert smtp.envelopes[0].rcpt_tos == [PATIENT_EMAIL]
    assert mail["Subject"] == "Reply to your web chat with Website chat"
    assert text_of(mail) == f"Yes: Wednesday 9:00 works.\n\n-- \nReply in the chat: {PAGE_URL}\n"
    # The email is a message of the patient's conversation in the email inbox, sent through the outbound path;
    # the chat reply is linked to it and took on its status.
    copy = await db(lambda: offline_copy_of(reply))
    assert (copy.inbox_id, copy.conversation.subject) == (email_chat.email_inbox.pk, mail["Subject"])
    assert copy.provider_message_id == mail["Message-ID"] and copy.status == MessageStatus.SENT
    assert copy.flags == [actions.WEBCHAT_REPLY_FLAG]
    assert reply.status == MessageStatus.SENT and reply.sent_at is not None
    assert reply.flags == ["sent_by_email"]
    assert reply.error_message == ""
    assert await db(lambda: SimulatedDelivery.objects.count()) == 0


async def test_a_chinese_visitor_gets_a_chinese_subject_and_footer(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    config = {**email_chat.inbox.config, "title": {"en": "Kanghua Hospital", "zh-hans": "康华医院"}}
    await db(lambda: Inbox.objects.filter(pk=email_chat.inbox.pk).update(config=config))
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL, language="zh-CN")
    reply = await agent_replies(email_chat, "您好，已为您改到周三上午九点。")

    [mail] = smtp.mails()
    assert mail["Subject"] == "康华医院：咨询回复"
    assert text_of(mail) == f"您好，已为您改到周三上午九点。\n\n-- \n在线回复：{PAGE_URL}\n"
    assert reply.status == MessageStatus.SENT


async def test_without_a_page_url_the_email_is_the_reply_alone(chat: Chat, open_widget: Opener, smtp: Recorder) -> None:
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    await agent_replies(chat, "Yes: Wednesday 9:00 works.")
    [mail] = smtp.mails()
    assert text_of(mail) == "Yes: Wednesday 9:00 works.\n"


async def test_an_open_widget_gets_the_reply_and_no_email(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    widget = await open_widget()
    await start(widget, phone="", email=PATIENT_EMAIL)
    await say(widget, "Hello", "c1")
    reply = await agent_replies(email_chat, "Hello, how can I help?")
    (shown,) = await widget_messages(widget, 1)
    assert shown["id"] == reply.pk and shown["body"] == "Hello, how can I help?"
    assert reply.status == MessageStatus.DELIVERED and reply.flags == []
    assert smtp.attempts == 0


async def test_a_phone_still_goes_by_sms_and_the_inbox_shows_it(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    await visitor_leaves(open_widget, email=PATIENT_EMAIL)  # the form's phone too
    reply = await agent_replies(email_chat, "We will call you.")
    assert reply.flags == ["sent_by_sms"]
    assert await db(lambda: SimulatedDelivery.objects.count()) == 1
    assert smtp.attempts == 0


async def test_an_inbox_preferring_email_emails_a_patient_who_gave_both(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    config = {**email_chat.inbox.config, "offline_prefer": "email"}
    await db(lambda: Inbox.objects.filter(pk=email_chat.inbox.pk).update(config=config))
    await visitor_leaves(open_widget, email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "We will call you.")
    assert len(smtp.mails()) == 1
    assert reply.flags == ["sent_by_email"]
    assert await db(lambda: SimulatedDelivery.objects.count()) == 0


async def test_an_inbox_can_turn_the_email_off(email_chat: Chat, open_widget: Opener, smtp: Recorder) -> None:
    config = {**email_chat.inbox.config, "offline_email": False}
    await db(lambda: Inbox.objects.filter(pk=email_chat.inbox.pk).update(config=config))
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    assert reply.status == MessageStatus.SENT and reply.flags == []
    assert smtp.attempts == 0


async def test_a_patient_who_withdrew_service_consent_gets_no_email(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    visitor = await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    await db(
        lambda: record_consent(
            patient=visitor.patient,
            purpose=ConsentPurpose.SERVICE,
            status=ConsentStatus.OPTED_OUT,
            source=ConsentSource.AGENT,
        )
    )
    reply = await agent_replies(email_chat, "Answer")
    assert reply.status == MessageStatus.SENT and reply.flags == []
    assert smtp.attempts == 0


async def test_no_email_and_no_phone_keeps_the_reply_in_the_chat(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    # The form insists on one of the two; a visitor from before that rule, or a portal patient, may have neither.
    form = actions.PreChat(name="Wang Fang", phone="", email="", consent=True, language="en")
    visitor = await db(lambda: actions.start_visit(inbox=email_chat.inbox, form=form, portal=None))
    await db(lambda: actions.visitor_sends(visitor=visitor, body="Hello", client_id="c1"))
    reply = await agent_replies(email_chat, "Answer")
    assert reply.status == MessageStatus.SENT and reply.flags == []
    assert smtp.attempts == 0
    assert await db(lambda: SimulatedDelivery.objects.count()) == 0


@pytest.mark.parametrize("team_email_inboxes", [1, 2])
async def test_without_a_configured_email_inbox_the_teams_only_one_is_used(
    email_chat: Chat, open_widget: Opener, smtp: Recorder, team_email_inboxes: int
) -> None:
    config = {k: v for k, v in email_chat.inbox.config.items() if k != "offline_email_inbox_id"}
    await db(lambda: Inbox.objects.filter(pk=email_chat.inbox.pk).update(config=config))
    for n in range(1, team_email_inboxes):
        await db(lambda n=n: Inbox.objects.create(name=f"Email {n}", channel_type="email", team=email_chat.team))
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    if team_email_inboxes == 1:
        assert len(smtp.mails()) == 1
        assert (await db(lambda: offline_copy_of(reply))).inbox_id == email_chat.email_inbox.pk
    else:
        # Two to choose from and none named: no guess, the reply waits for the next visit.
        assert smtp.attempts == 0
        assert reply.status == MessageStatus.SENT and reply.flags == []


# --- when the server says no ---------------------------------------------------------------------------------


async def test_a_refusing_server_fails_the_reply_with_its_reason(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    smtp.answers = ["550 5.1.1 Mailbox unavailable"]
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    # The email failed, and the chat reply with it, carrying the server's reason for the agent.
    copy = await db(lambda: offline_copy_of(reply))
    assert copy.status == reply.status == MessageStatus.FAILED
    assert copy.error_code == reply.error_code == "smtp_550"
    assert reply.error_message == "The mail server refused the email: 550 5.1.1 Mailbox unavailable"
    assert smtp.attempts == 1  # permanent: not retried
    assert reply.flags == ["sent_by_email"]


async def test_a_deferring_server_is_retried_and_the_reply_is_sent(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    smtp.answers = ["451 4.3.0 Try again later", "421 4.7.0 Too busy"]
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    assert smtp.attempts == 3
    assert len(smtp.mails()) == 1
    assert reply.status == MessageStatus.SENT and reply.error_message == ""


async def test_a_server_that_keeps_deferring_fails_the_reply_after_the_retries(
    email_chat: Chat, open_widget: Opener, smtp: Recorder
) -> None:
    smtp.answers = ["451 4.3.0 Try again later"] * 20
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    assert smtp.attempts == 7  # the first try and the delivery task's six retries
    assert reply.status == MessageStatus.FAILED and reply.error_code == "retries_exhausted"
    assert "451 4.3.0 Try again later" in reply.error_message


async def test_a_server_that_is_down_is_retried_then_the_reply_fails(
    email_chat: Chat, open_widget: Opener, settings: Any
) -> None:
    use_smtp(settings, free_port())  # nothing listens there
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL)
    reply = await agent_replies(email_chat, "Answer")
    assert reply.status == MessageStatus.FAILED
    assert reply.error_code == "retries_exhausted"
    assert "Could not reach the mail server" in reply.error_message


def test_smtp_errors_map_onto_permanent_and_transient(smtp: Recorder, settings: Any) -> None:
    mail = transport.build_message(to=PATIENT_EMAIL, subject="s", body="b", message_id="<a@b>")
    smtp.answers = ["552 5.3.4 Message too big"]
    with pytest.raises(AdapterError) as refused:
        transport.send(mail, inbox_id=0)
    assert refused.value.permanent and refused.value.code == "smtp_552"
    settings.EMAIL_SMTP_STARTTLS = True  # aiosmtpd here offers no STARTTLS: never fall back to plain text
    with pytest.raises(AdapterError) as no_tls:
        transport.send(mail, inbox_id=0)
    assert no_tls.value.permanent and not smtp.envelopes
    settings.EMAIL_TRANSPORT = "off"
    with pytest.raises(AdapterError) as off:
        transport.send(mail, inbox_id=0)
    assert off.value.permanent and off.value.code == "email_off"


# --- the demo's patient mailbox --------------------------------------------------------------------------------


async def test_the_demo_keeps_the_email_for_the_patient_mailbox(
    email_chat: Chat, open_widget: Opener, settings: Any
) -> None:
    settings.EMAIL_TRANSPORT = "simulator"
    settings.EMAIL_FROM_ADDRESS = FROM
    await visitor_leaves(open_widget, phone="", email=PATIENT_EMAIL, language="zh-hans")
    reply = await agent_replies(email_chat, "您好，<b>周三</b>见。")
    kept = await db(lambda: SimulatedEmail.objects.get())
    copy = await db(lambda: offline_copy_of(reply))
    assert kept.to == PATIENT_EMAIL and kept.message_id == copy.provider_message_id
    assert kept.body.startswith("您好，<b>周三</b>见。")
    parsed = email.message_from_string(kept.raw, policy=email.policy.default)
    assert isinstance(parsed, EmailMessage) and parsed.get_content() == kept.body
    assert reply.status == MessageStatus.SENT and reply.flags == ["sent_by_email"]

    page = await db(lambda: Client().get(reverse("simulator-mailbox"), {"to": PATIENT_EMAIL}))
    assert page.status_code == 200
    html = page.content.decode()
    assert "&lt;b&gt;周三&lt;/b&gt;" in html and "<b>周三</b>" not in html
    other = await db(lambda: Client().get(reverse("simulator-mailbox"), {"to": "<script>x</script>"}))
    assert other.status_code == 200 and 'data-testid="mailbox-empty"' in other.content.decode()


# --- settings ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("env", "complaint"),
    [
        ({"EMAIL_SMTP_HOST": "smtp.example", "EMAIL_SMTP_TLS": "true", "EMAIL_SMTP_STARTTLS": "true"}, "cannot both"),
        ({"EMAIL_TRANSPORT": "smtp"}, "needs EMAIL_SMTP_HOST"),
        ({"EMAIL_SMTP_HOST": "smtp.example", "EMAIL_FROM_ADDRESS": "x@y", "EMAIL_SMTP_USERNAME": "u"}, "PASSWORD"),
        ({"EMAIL_SMTP_HOST": "smtp.example"}, "EMAIL_FROM_ADDRESS"),
        ({"EMAIL_SMTP_HOST": "smtp.example", "EMAIL_FROM_ADDRESS": "x@y", "EMAIL_SMTP_PORT": "smtp"}, "integer"),
    ],
)
def test_bad_email_settings_stop_the_start(env: dict[str, str], complaint: str, tmp_path: Any) -> None:
    settings_dir = str(Path(__file__).resolve().parents[2])
    clean = {
        "PATH": "/usr/bin:/bin",
        "DATA_DIR": str(tmp_path),
        "DATABASE_URL": "",
        "DJANGO_SETTINGS_MODULE": "config.settings",
    }
    result = subprocess.run(
        [sys.executable, "-c", "import django.conf as c; c.settings.INSTALLED_APPS"],
        env={**clean, **env},
        cwd=settings_dir,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode != 0
    assert "ImproperlyConfigured" in result.stderr and complaint in result.stderr

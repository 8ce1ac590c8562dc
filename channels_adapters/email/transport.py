"""Outbound email: one MIME message, handed to the SMTP server with aiosmtplib or, in the embedded demo,
kept for the patient-mailbox page (settings.EMAIL_TRANSPORT).

Errors become AdapterErrors the delivery action understands: a 5xx answer is permanent (the server said
no and will say no again), a 4xx answer or an unreachable server is transient and retried.
"""

from __future__ import annotations

import asyncio
import email.policy
import email.utils
import logging
import os
import secrets
import ssl
from email.message import EmailMessage

import aiosmtplib
from django.conf import settings
from django.utils import timezone

from channels_adapters.base import AdapterError

logger = logging.getLogger(__name__)

# 7bit: every part is quoted-printable or base64, so servers without 8BITMIME take Chinese text unchanged.
POLICY = email.policy.SMTP.clone(cte_type="7bit")
MAX_SERVER_TEXT = 300


def sender_domain() -> str:
    address = email.utils.parseaddr(settings.EMAIL_FROM_ADDRESS)[1]
    return address.rpartition("@")[2] or "localhost"


def new_message_id(*, message_id: int) -> str:
    """A Message-ID of our own that names our message, so a patient's reply (In-Reply-To) can be threaded."""
    return f"<cc.{message_id}.{secrets.token_hex(6)}@{sender_domain()}>"


def build_message(*, to: str, subject: str, body: str, message_id: str, in_reply_to: str = "") -> EmailMessage:
    """A plain-text UTF-8 email. The body is exactly what the caller wrote: nothing is added here."""
    mail = EmailMessage(policy=POLICY)
    mail["From"] = settings.EMAIL_FROM_ADDRESS
    mail["To"] = to
    # Folded to one line: a line break in a header would be refused by the email package (header injection).
    mail["Subject"] = " ".join(subject.split())
    mail["Date"] = email.utils.format_datetime(timezone.now())
    mail["Message-ID"] = message_id
    if in_reply_to:
        mail["In-Reply-To"] = in_reply_to
        mail["References"] = in_reply_to
    mail.set_content(body, subtype="plain", charset="utf-8")
    return mail


def send(mail: EmailMessage, *, inbox_id: int) -> None:
    """Hand the message over. Returns when the server accepted it; raises AdapterError otherwise."""
    transport = settings.EMAIL_TRANSPORT
    if transport == "off":
        raise AdapterError(
            "Email is not configured on this platform (EMAIL_SMTP_HOST).", permanent=True, code="email_off"
        )
    if transport == "simulator":
        _keep_for_demo(mail, inbox_id=inbox_id)
        return
    try:
        asyncio.run(_send_smtp(mail))
    except aiosmtplib.SMTPRecipientsRefused as exc:
        first = exc.recipients[0] if exc.recipients else None
        raise _refused(first.code if first else 550, first.message if first else "") from None
    except aiosmtplib.SMTPAuthenticationError as exc:
        raise AdapterError(
            f"The mail server refused our login ({exc.code}); check EMAIL_SMTP_USERNAME and EMAIL_SMTP_PASSWORD.",
            permanent=True,
            code=f"smtp_{exc.code}",
        ) from None
    except aiosmtplib.SMTPResponseException as exc:
        raise _refused(exc.code, exc.message) from None
    except aiosmtplib.SMTPNotSupported as exc:
        raise AdapterError(
            f"The mail server does not support what we asked: {_clip(exc.message)}",
            permanent=True,
            code="smtp_unsupported",
        ) from None
    except aiosmtplib.SMTPException as exc:
        if "STARTTLS" not in exc.message:
            raise _unreachable(exc) from None
        # We require STARTTLS and this server does not offer it: configuration, not a moment's trouble, and
        # never a reason to send patient mail in plain text instead.
        raise AdapterError(
            "The mail server does not offer STARTTLS (EMAIL_SMTP_STARTTLS is on).", permanent=True, code="smtp_no_tls"
        ) from None
    except ssl.SSLCertVerificationError:
        raise AdapterError(
            "The mail server's TLS certificate is not trusted.", permanent=True, code="smtp_certificate"
        ) from None
    except (OSError, TimeoutError) as exc:
        raise _unreachable(exc) from None


async def _send_smtp(mail: EmailMessage) -> None:
    password = os.environ.get("EMAIL_SMTP_PASSWORD", "") if settings.EMAIL_SMTP_USERNAME else ""
    await aiosmtplib.send(
        mail,
        hostname=settings.EMAIL_SMTP_HOST,
        port=settings.EMAIL_SMTP_PORT,
        username=settings.EMAIL_SMTP_USERNAME or None,
        password=password or None,
        use_tls=settings.EMAIL_SMTP_TLS,
        # Explicit, never "if offered": with STARTTLS on, a server that does not offer it is an error
        # rather than a silent plain-text send of patient mail.
        start_tls=settings.EMAIL_SMTP_STARTTLS,
        timeout=settings.EMAIL_TIMEOUT_SECONDS,
    )


def _unreachable(exc: BaseException) -> AdapterError:
    # Refused, reset, timed out or no such host: nothing was accepted, so trying again is safe. A
    # connection lost after DATA might leave the server holding the mail; a duplicate email is the
    # lesser harm than a reply the patient never gets, and there is no callback to wait for.
    return AdapterError(f"Could not reach the mail server ({type(exc).__name__}); will retry.", code="smtp_unreachable")


def _refused(code: int, text: str) -> AdapterError:
    reply = f"{code} {_clip(text)}".strip()
    if 400 <= code < 500:
        return AdapterError(f"The mail server deferred the email ({reply}); will retry.", code=f"smtp_{code}")
    return AdapterError(f"The mail server refused the email: {reply}", permanent=True, code=f"smtp_{code}")


def _clip(text: str) -> str:
    return " ".join(text.split())[:MAX_SERVER_TEXT]


def _keep_for_demo(mail: EmailMessage, *, inbox_id: int) -> None:
    from channels_adapters.simulator.models import SimulatedEmail

    body = mail.get_content()
    SimulatedEmail.objects.create(
        inbox_id=inbox_id,
        to=str(mail["To"]),
        subject=str(mail["Subject"] or ""),
        body=body,
        message_id=str(mail["Message-ID"]),
        raw=mail.as_string(),
    )
    logger.info("simulated email %s kept for the patient mailbox", mail["Message-ID"])

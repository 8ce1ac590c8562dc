"""Hypothesis over what the outside world sends us: Twilio's SMS webhooks and the web chat widget's frames.

The webhooks go through the real views on the test PostgreSQL, each request signed with a valid
X-Twilio-Signature over exactly what the server will read, so every generated value reaches the parsing and
storing code rather than stopping at the signature. Values hold anything a form body can carry: NUL, control
characters, any Unicode, lone surrogates (sent as the invalid UTF-8 a broken client would send, which the
server reads as U+FFFD, and signed as read), huge values, missing and extra keys, nonsense in NumMedia.
Properties: never a 5xx; a 200 stored the message exactly once, its text cleaned but kept; a 4xx stored
nothing. Status callbacks: never a 5xx, a 4xx changes nothing, statuses only move forward.

Web chat frames go through the real consumer (config.asgi.application, the Redis channel layer): JSON frames
built from the protocol's ops with fuzzed fields (NUL and lone surrogates as JSON escapes, huge values,
wrong types), and a few that are not JSON. Properties: the socket never crashes, every frame is answered,
an acked message is stored once with its text cleaned, a refused one is not stored.

Bounded: each test runs a fixed number of derandomized examples (no example database, no deadline on this
shared machine); together well under two minutes.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Iterator
from typing import Any
from urllib.parse import quote

import pytest
from asgiref.sync import async_to_sync
from channels import DEFAULT_CHANNEL_LAYER
from channels.layers import channel_layers
from channels.testing import WebsocketCommunicator
from django.test import Client
from django.utils.datastructures import MultiValueDict
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from twilio.request_validator import RequestValidator

import channels_adapters.twilio.transport
from channels_adapters.sms.tests import INBOUND_PATH, STATUS_PATH, TOKEN, make_sms_inboxes
from channels_adapters.webchat.models import WebVisitor
from config.asgi import application
from contactcenter.actions.delivery import STATUS_RANK, deliver_message
from contactcenter.actions.inbound import receive_inbound
from contactcenter.actions.outbound import send_outbound
from contactcenter.boundary import lookup_key, storable
from contactcenter.models import (
    ChannelType,
    Event,
    IdentityKind,
    Inbox,
    Message,
    MessageDirection,
    Patient,
    Team,
)
from tests.twilio_fake import RecordingTwilioHttpClient, fixture, requests

# No shrinking either: a failure reports the example that failed, and a broken server costs no more time.
BOUNDED = settings(
    max_examples=60,
    deadline=None,
    derandomize=True,
    database=None,
    phases=[Phase.explicit, Phase.generate],
    suppress_health_check=list(HealthCheck),
)
PUBLIC = "http://testserver"
INBOUND_FIXTURES = [
    "inbound_plain_text.json",
    "inbound_chinese_ucs2.json",
    "inbound_emoji.json",
    "inbound_mms.json",
    "inbound_messaging_service.json",
    "inbound_stop.json",
]

# --- What a form value may hold --------------------------------------------------------------------------------

_nasty_characters = st.sampled_from(
    ["\x00", "\x07", "\x1b", "\x7f", "\ud800", "\udfff", "\ufffd", "\u202e", "😀", "退"]
)
_text = st.lists(st.one_of(_nasty_characters, st.characters()), max_size=40).map("".join)
_huge = st.builds(lambda piece, times: piece * times, st.text(min_size=1, max_size=3), st.integers(500, 60_000))
_value = st.one_of(_text, _text, _huge, st.sampled_from(["", " ", "0", "-1", "²", "1e9", "99999999999999999999"]))
_key = st.one_of(
    st.sampled_from(["Body", "MessageSid", "SmsMessageSid", "From", "To", "NumMedia", "MediaUrl0", "AccountSid"]),
    st.sampled_from(["MediaContentType0", "MessagingServiceSid", "FromCity", "ErrorCode", "ErrorMessage"]),
    _text,
)


def as_sent(value: str) -> bytes:
    """The bytes a client puts on the wire for `value`; a lone surrogate becomes the invalid UTF-8 for it."""
    return value.encode("utf-8", "surrogatepass")


def as_read(value: str) -> str:
    """What Django reads back from those bytes (it decodes a form body with errors="replace")."""
    return as_sent(value).decode("utf-8", "replace")


def signed_post(client: Client, path: str, params: list[tuple[str, str]]) -> Any:
    """POST params (in order, keys may repeat) as Twilio would, signed over what the server will read."""
    body = "&".join(f"{quote(as_sent(k), safe='')}={quote(as_sent(v), safe='')}" for k, v in params)
    read: dict[str, list[str]] = {}
    for key, value in params:
        read.setdefault(as_read(key), []).append(as_read(value))
    signature = RequestValidator(TOKEN).compute_signature(PUBLIC + path, MultiValueDict(read))
    return client.generic(
        "POST", path, body.encode(), content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature
    )


def last_values(params: list[tuple[str, str]]) -> dict[str, str]:
    """The value the view sees for each key (QueryDict.get is the last one)."""
    return {as_read(k): as_read(v) for k, v in params}


@st.composite
def inbound_params(draw: st.DrawFn, serial: Iterator[int]) -> list[tuple[str, str]]:
    params = dict(fixture(draw(st.sampled_from(INBOUND_FIXTURES))))
    # A fresh SID per example, so "stored once" is about this request; the fuzzing may still replace it.
    sid = f"SM{next(serial):032x}"
    params.update(MessageSid=sid, SmsMessageSid=sid, SmsSid=sid)
    for key in draw(st.lists(st.sampled_from(sorted(params)), max_size=4, unique=True)):
        del params[key]
    pairs = list(params.items())
    for key, value in draw(st.lists(st.tuples(_key, _value), max_size=5)):
        pairs.append((key, value))
    return draw(st.permutations(pairs))


@pytest.fixture
def sms(db: Any, monkeypatch: pytest.MonkeyPatch, settings: Any) -> Any:
    monkeypatch.setenv("TWILIO_AUTH_TOKEN", TOKEN)
    settings.PUBLIC_BASE_URL = PUBLIC
    return make_sms_inboxes()


def stored() -> tuple[int, int, int]:
    inbound = Message.objects.filter(direction=MessageDirection.INBOUND).count()
    return inbound, Patient.objects.count(), Event.objects.count()


def test_fuzzed_signed_inbound_sms_is_stored_once_or_refused_and_never_a_server_error(sms: Any) -> None:
    client = Client(raise_request_exception=False)
    serial = itertools.count(1)
    seen_sids: set[str] = set()
    outcomes: list[int] = []

    @BOUNDED
    @given(params=inbound_params(serial))
    def check(params: list[tuple[str, str]]) -> None:
        before = stored()

        response = signed_post(client, INBOUND_PATH, params)

        assert response.status_code < 500, response.content[:300]
        outcomes.append(response.status_code)
        sent = last_values(params)
        if response.status_code != 200:
            assert response.status_code in (400, 403), response.status_code
            assert stored() == before
            return
        sid = sent.get("MessageSid") or sent.get("SmsMessageSid")
        assert sid
        inbox_ids = Inbox.objects.filter(channel_type=ChannelType.SMS).values_list("pk", flat=True)
        [message] = Message.objects.filter(inbox_id__in=inbox_ids, provider_message_id=sid)
        new = sid not in seen_sids
        assert stored()[0] == before[0] + (1 if new else 0)
        seen_sids.add(sid)
        if new:
            assert message.body == storable(sent.get("Body", ""))
            assert message.provider_payload == {storable(k): storable(v) for k, v in sent.items()}

    check()
    # The generated requests reached both the storing and the refusing paths.
    assert {200, 400, 403} <= set(outcomes), sorted(set(outcomes))


@st.composite
def status_params(draw: st.DrawFn) -> tuple[list[tuple[str, str]], str]:
    params = dict(fixture(draw(st.sampled_from(["status_sent.json", "status_delivered.json", "status_read.json"]))))
    params.update(
        draw(
            st.fixed_dictionaries(
                {},
                optional={
                    "MessageStatus": st.one_of(
                        st.sampled_from(["sent", "delivered", "failed", "read", "DELIVERED"]), _value
                    ),
                    "ErrorCode": st.one_of(st.sampled_from(["30007", "21610", "²", "٣", ""]), _value),
                    "ErrorMessage": _value,
                    "AccountSid": _value,
                    "To": _value,
                },
            )
        )
    )
    for key in draw(st.lists(st.sampled_from(sorted(params)), max_size=3, unique=True)):
        del params[key]
    pairs = list(params.items()) + draw(st.lists(st.tuples(_key, _value), max_size=3))
    our_id = draw(st.one_of(st.just("ours"), st.just(""), _value))
    return pairs, our_id


def test_fuzzed_signed_status_callbacks_never_fail_and_only_move_statuses_forward(
    sms: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = RecordingTwilioHttpClient()
    monkeypatch.setattr(channels_adapters.twilio.transport, "http_client", lambda: fake)
    conversation = receive_inbound_conversation(sms.number_inbox)
    client = Client(raise_request_exception=False)
    outcomes: list[int] = []

    @BOUNDED
    @given(generated=status_params(), which=st.sampled_from(["this", "unknown", "fuzzed", "answer_lost"]))
    def check(generated: tuple[list[tuple[str, str]], str], which: str) -> None:
        pairs, our_id = generated
        message = send_outbound(conversation=conversation, body="Your results are ready.", author=None)
        if which == "answer_lost":
            # Twilio's answer timed out: the message has no SID yet, and a callback carrying our id (the URL's
            # ?message=) attaches whatever SID it brings; the fuzzed ones included.
            fake.script = [requests.exceptions.ReadTimeout("read timed out")]
        deliver_message(message_id=message.pk)
        message.refresh_from_db()
        sid = {"this": message.provider_message_id, "unknown": "SM" + "0" * 32}.get(which)
        if sid is not None:
            pairs = [(k, sid if k in ("MessageSid", "SmsSid") else v) for k, v in pairs]
        query = (
            "" if not our_id else "?" + f"message={message.pk if our_id == 'ours' else quote(as_sent(our_id), safe='')}"
        )
        before = (message.status, message.error_code, message.error_message, message.provider_message_id)

        response = signed_post(client, STATUS_PATH + query, pairs)

        assert response.status_code < 500, response.content[:300]
        assert response.status_code in (204, 400, 403), response.status_code
        outcomes.append(response.status_code)
        message.refresh_from_db()
        after = (message.status, message.error_code, message.error_message, message.provider_message_id)
        if response.status_code != 204:
            assert after == before
        assert STATUS_RANK[message.status] >= STATUS_RANK[before[0]]
        assert "\x00" not in message.error_code + message.error_message

    check()
    assert {204, 400} <= set(outcomes), sorted(set(outcomes))


def receive_inbound_conversation(inbox: Inbox) -> Any:
    from channels_adapters.base import InboundMessage, Sender

    return receive_inbound(
        InboundMessage(
            inbox_id=inbox.pk,
            sender=Sender(kind=IdentityKind.PHONE, value="+8613800138000"),
            body="Hello",
            provider_message_id="SMEARLIER" + "0" * 24,
        )
    ).conversation


# --- Web chat frames -------------------------------------------------------------------------------------------

ORIGIN = "https://www.kanghua-hospital.example"
FRAME_TIMEOUT = 5
_json_scalar = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(min_value=-(2**70), max_value=2**70),
    st.floats(allow_nan=False, allow_infinity=False),
    _text,
    _huge,
)
_json = st.recursive(
    _json_scalar,
    lambda inner: st.one_of(st.lists(inner, max_size=3), st.dictionaries(_text, inner, max_size=3)),
    max_leaves=6,
)
_valid_client_id = st.text(alphabet="abcdefghijklmnopqrstuvwxyz0123456789-", min_size=1, max_size=64)
_messages = st.one_of(
    # Mostly what a widget sends, with text holding anything; then anything at all in either field.
    st.fixed_dictionaries({"op": st.just("message"), "body": _text.filter(str.strip), "client_id": _valid_client_id}),
    st.fixed_dictionaries(
        {
            "op": st.just("message"),
            "body": st.one_of(_text, _huge, _json_scalar),
            "client_id": st.one_of(_valid_client_id, _json_scalar),
        }
    ),
)
_other_frames = st.one_of(
    st.fixed_dictionaries(
        {"op": st.just("start")},
        optional={
            "form": st.one_of(
                _json,
                st.fixed_dictionaries(
                    {"consent": st.one_of(st.just(True), _json_scalar)},
                    optional={
                        "name": _json_scalar,
                        "phone": _json_scalar,
                        "email": _json_scalar,
                        "language": _json_scalar,
                    },
                ),
            ),
            "identity": _json,
        },
    ),
    st.fixed_dictionaries(
        {"op": st.just("resume")}, optional={"visitor_token": _json_scalar, "last_event_id": _json_scalar}
    ),
    st.fixed_dictionaries({"op": st.just("typing")}, optional={"state": _json_scalar}),
    st.fixed_dictionaries({"op": st.just("read")}, optional={"message_id": _json_scalar}),
    st.fixed_dictionaries({"op": st.sampled_from(["sync", "ping"])}),
    st.dictionaries(_text, _json, max_size=3),
    _json,
)
_not_json = _text.filter(bool).map(as_read)
# Three frames in four are messages: what the widget mostly sends, and what is stored.
_raw_frames = st.sampled_from(["message", "message", "message", "other"]).flatmap(
    lambda kind: _messages.map(json.dumps) if kind == "message" else st.one_of(_other_frames.map(json.dumps), _not_json)
)


@pytest.fixture
def widget_inbox(transactional_db: Any, settings: Any) -> Inbox:
    settings.WEBCHAT_CONNECTIONS_PER_MINUTE_PER_IP = 100_000
    settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_VISITOR = 100_000
    settings.WEBCHAT_MESSAGES_PER_MINUTE_PER_IP = 100_000
    team = Team.objects.create(code="service", name="Patient Service Center", name_zh="客服中心")
    return Inbox.objects.create(
        name="Website chat",
        channel_type=ChannelType.WEBCHAT,
        team=team,
        auto_assign=False,
        config={"allowed_origins": [ORIGIN], "consent_text": {"en": "I agree."}},
    )


def _is_ping(raw: str) -> bool:
    try:
        frame = json.loads(raw)
    except ValueError:
        return False
    return isinstance(frame, dict) and frame.get("op") == "ping"


async def _answers(widget: WebsocketCommunicator, raw: str) -> list[dict[str, Any]]:
    """Every frame the server sent in answer to `raw`, read up to the pong of a ping sent after it: the
    consumer handles frames in order (event frames may come any time and are among them). A fuzzed ping
    gets its own pong first."""
    await widget.send_json_to({"op": "ping"})
    frames = []
    pongs = 2 if _is_ping(raw) else 1
    while pongs:
        frame = await widget.receive_json_from(timeout=FRAME_TIMEOUT)
        if frame == {"type": "pong"}:
            pongs -= 1
        else:
            frames.append(frame)
    return frames


def test_fuzzed_widget_frames_never_crash_the_socket_and_messages_are_stored_once(widget_inbox: Inbox) -> None:
    ips = (f"10.77.{n // 250}.{n % 250 + 1}" for n in itertools.count())
    used_client_ids: set[str] = set()
    answered: set[str] = set()

    async def session(raw_frames: list[str], start_first: bool) -> list[tuple[str, list[dict[str, Any]]]]:
        channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
        widget = WebsocketCommunicator(
            application, f"/ws/webchat/{widget_inbox.public_token}/", headers=[(b"origin", ORIGIN.encode())]
        )
        widget.scope["client"] = (next(ips), 50000)
        try:
            connected, _code = await widget.connect(timeout=FRAME_TIMEOUT)
            assert connected
            assert (await widget.receive_json_from(timeout=FRAME_TIMEOUT))["type"] == "welcome"
            exchanges = []
            if start_first:
                form = {"name": "Wang Fang", "phone": "13800138001", "consent": True}
                await widget.send_json_to({"op": "start", "form": form})
                exchanges.append(("start", await _answers(widget, "start")))
            for raw in raw_frames:
                await widget.send_to(text_data=raw)
                exchanges.append((raw, await _answers(widget, raw)))
            assert not widget.future.done(), widget.future.exception() if widget.future.done() else None
            await widget.disconnect(timeout=FRAME_TIMEOUT)
            return exchanges
        finally:
            layer = channel_layers.backends.pop(DEFAULT_CHANNEL_LAYER, None)
            if layer is not None:
                await layer.close_pools()

    @BOUNDED
    @given(raw_frames=st.lists(_raw_frames, min_size=1, max_size=6), start_first=st.sampled_from([True, True, False]))
    def check(raw_frames: list[str], start_first: bool) -> None:
        exchanges = async_to_sync(session)(raw_frames, start_first)
        answered.update(frame["type"] for _raw, answers in exchanges for frame in answers)
        visitor = WebVisitor.objects.order_by("-id").first()
        acked_here = {a["client_id"] for _raw, answers in exchanges for a in answers if a["type"] == "ack"}
        for raw, answers in exchanges:
            kinds = [frame["type"] for frame in answers]
            assert set(kinds) <= {"error", "ack", "events", "session", "ready", "typing"}, answers
            try:
                frame = json.loads(raw) if raw != "start" else {}
            except ValueError:
                frame = {}
            if not (isinstance(frame, dict) and frame.get("op") == "message") or visitor is None:
                continue
            client_id = frame.get("client_id")
            acks = [a for a in answers if a["type"] == "ack"]
            if not isinstance(client_id, str):
                assert not acks
                continue
            if acks:
                assert lookup_key(client_id, max_length=64) == client_id
            elif not lookup_key(client_id, max_length=64):
                # Not a client id the widget could use (and not a value a query could carry): refused, surely.
                assert any(a["type"] == "error" for a in answers), answers
                continue
            rows = Message.objects.filter(inbox=widget_inbox, provider_message_id__endswith=f"-{client_id}")
            if acks:
                [ack] = acks
                [message] = rows.filter(pk=ack["message_id"])
                if client_id not in used_client_ids:
                    assert message.body == storable(frame["body"].strip())
                used_client_ids.add(client_id)
            elif client_id not in used_client_ids | acked_here:
                assert any(a["type"] == "error" for a in answers), answers
                assert not rows.filter(provider_message_id=f"wc-{visitor.pk}-{client_id}").exists()

    check()
    # Messages were stored and frames refused, so both paths were fuzzed.
    assert {"ack", "error", "session"} <= answered, answered

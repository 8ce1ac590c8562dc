"""The steady load a fault lands in: signed inbound webhooks, agents' replies through the REST API, and agent
sockets that reconnect and resync as the inbox's socket.js does. Everything goes through the proxy, and every
answer is kept (what was sent, when, and what came back) for the checks afterwards."""

from __future__ import annotations

import abc
import asyncio
import contextlib
import itertools
import json
import secrets
from dataclasses import dataclass, field
from typing import Any

from bench.http import Connection, HttpError
from bench.load import TWILIO_TIMEOUT, Request
from bench.realtime_fanout import Listener, Staff
from bench.sms_inbound import Twilio

REPLY_TIMEOUT = 30.0
# socket.js's reconnect schedule, and the close codes after which it stops (the session or its access ended).
BACKOFF = [0.5, 1.0, 2.0, 4.0, 8.0, 15.0]
ACCESS_ENDED = {4401, 4403, 4409}
OPEN_TIMEOUT = 15.0


@dataclass
class Answer:
    """One request and what came of it. `status` None: no answer (connection cut, or no answer in time)."""

    kind: str  # "inbound" | "reply"
    key: str  # the MessageSid, or the reply's body
    sent: float  # event-loop clock
    answered: float | None = None
    status: int | None = None
    error: str = ""
    message_id: int | None = None  # a reply's id, from its 201 answer

    @property
    def ok(self) -> bool:
        return self.status is not None and 200 <= self.status < 300


@dataclass
class Ledger:
    answers: list[Answer] = field(default_factory=list)

    def of(self, kind: str) -> list[Answer]:
        return [a for a in self.answers if a.kind == kind]


async def _send_once(port: int, request: Request, timeout: float) -> tuple[int | None, bytes, str]:
    """One request on a connection of its own (as Twilio opens one per webhook): a connection kept alive to a
    Daphne that was since killed would fail for reasons of the client's making."""
    method, target, body, headers, _tag = request
    conn = Connection("127.0.0.1", port)
    try:
        async with asyncio.timeout(timeout):
            response = await conn.request(method, target, body, headers)
        return response.status, response.body, ""
    except TimeoutError:
        return None, b"", "timeout"
    except (HttpError, OSError) as exc:
        return None, b"", f"no answer ({str(exc)[:80]})"
    finally:
        conn.close()


class Paced(abc.ABC):
    """Request i is due at t0 + i/rate while running, whatever became of the earlier ones (open loop). Each kind
    of load says what its next request is (make) and what to keep of an answer (on_answer)."""

    def __init__(self, *, rate: float, port: int, ledger: Ledger) -> None:
        self.rate = rate
        self.port = port
        self.ledger = ledger
        self.inflight: set[asyncio.Task[None]] = set()
        self._runner: asyncio.Task[None] | None = None
        self._stop = asyncio.Event()

    @abc.abstractmethod
    def make(self) -> tuple[Request, Answer]: ...

    def on_answer(self, answer: Answer, body: bytes) -> None:
        return None

    timeout = TWILIO_TIMEOUT

    def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        t0 = loop.time()
        for i in itertools.count():
            due = t0 + i / self.rate
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), max(0.0, due - loop.time()))
            if self._stop.is_set():
                return
            request, answer = self.make()
            self.ledger.answers.append(answer)
            task = asyncio.ensure_future(self._one(request, answer))
            self.inflight.add(task)
            task.add_done_callback(self.inflight.discard)

    async def _one(self, request: Request, answer: Answer) -> None:
        loop = asyncio.get_running_loop()
        answer.sent = loop.time()
        status, body, error = await _send_once(self.port, request, self.timeout)
        answer.answered, answer.status, answer.error = loop.time(), status, error
        self.on_answer(answer, body)

    async def stop(self) -> None:
        """Stop sending and wait for every request in flight to be answered or time out."""
        self._stop.set()
        if self._runner is not None:
            await self._runner
        if self.inflight:
            await asyncio.gather(*list(self.inflight))


class InboundLoad(Paced):
    """Signed Twilio inbound webhooks, a unique MessageSid each (bench.sms_inbound.Twilio signs them)."""

    def __init__(self, twilio: Twilio, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.twilio = twilio

    def make(self) -> tuple[Request, Answer]:
        request, sid, _token = self.twilio.inbound()
        return request, Answer("inbound", sid, 0.0)


class ReplyLoad(Paced):
    """An agent's replies: POST /api/v1/conversations/<id>/messages/ with its API token, a unique body each."""

    timeout = REPLY_TIMEOUT

    def __init__(self, *, token: str, conversation_ids: list[int], label: str, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.headers = [("Authorization", f"Token {token}"), ("Content-Type", "application/json")]
        self.conversations = itertools.cycle(conversation_ids)
        self.label = label
        self.count = itertools.count(1)
        self.created = asyncio.Event()  # set at each 201, for a fault that wants to land right after one

    def make(self) -> tuple[Request, Answer]:
        n = next(self.count)
        body = (
            f"Your appointment is confirmed, please arrive 15 minutes early. ({self.label}-{n}-{secrets.token_hex(4)})"
        )
        target = f"/api/v1/conversations/{next(self.conversations)}/messages/"
        request: Request = ("POST", target, json.dumps({"body": body}).encode(), self.headers, body)
        return request, Answer("reply", body, 0.0)

    def on_answer(self, answer: Answer, body: bytes) -> None:
        if answer.status == 201:
            with contextlib.suppress(ValueError, KeyError, TypeError):
                answer.message_id = int(json.loads(body)["id"])
            self.created.set()


@dataclass
class Outage:
    """A failed connection attempt or a close, with the event-loop time it happened."""

    at: float
    what: str


class ChaosSocket(Listener):
    """An agent's /ws/agent/ socket through the proxy that reconnects after any close, with socket.js's
    backoff, and resyncs from the last event id it holds (bench.realtime_fanout.Listener keeps the events)."""

    def __init__(self, staff: Staff, port: int) -> None:
        super().__init__(staff, port)
        self.up = False
        self.stopping = False
        self.failures: list[Outage] = []  # handshakes refused, failed or not answered in time
        self.closes: list[Outage] = []  # live sockets that closed (the code), not by us
        self.readies: list[float] = []
        self.gave_up: str = ""  # closed with a code after which socket.js stops
        self._reconnecting = False
        self._runner: asyncio.Task[None] | None = None

    def start(self) -> None:
        self._runner = asyncio.ensure_future(self._run())

    async def wait_up(self, timeout: float) -> bool:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while not self.up and loop.time() < deadline and not self.gave_up:
            await asyncio.sleep(0.05)
        return self.up

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        attempt = 0
        while not self.stopping:
            last = self.last_event_id if self.start_cursor is not None else None
            try:
                await asyncio.wait_for(self.open(last), OPEN_TIMEOUT)
            except Exception as exc:  # refused, 5xx at the handshake, an error frame, no "ready" in time
                self.failures.append(Outage(loop.time(), _describe(exc)))
                await self._discard()
                await asyncio.sleep(BACKOFF[min(attempt, len(BACKOFF) - 1)])
                attempt += 1
                continue
            attempt = 0
            self.up = True
            self.readies.append(loop.time())
            assert self._task is not None
            await asyncio.gather(self._task, return_exceptions=True)
            self.up = False
            self._ws = self._task = None
            if self.stopping:
                return
            if self._reconnecting:
                # Closed by final_resync(): reconnect at once, like a page that reloads its socket.
                self._reconnecting = False
                continue
            code = self.server_closes[-1] if self.server_closes else None
            self.closes.append(Outage(loop.time(), str(code)))
            if code in ACCESS_ENDED:
                self.gave_up = f"closed with {code}"
                return
            await asyncio.sleep(BACKOFF[0])

    async def _discard(self) -> None:
        ws, self._ws, self._task = self._ws, None, None
        if ws is not None:
            with contextlib.suppress(Exception):
                await ws.close()

    async def final_resync(self, timeout: float) -> str:
        """Close, reconnect and resync from the last event id held, as socket.js does after any close, and wait
        until that catch-up is done (frames are handled in order: the pong to a ping sent after the resync comes
        after every frame of it). Returns "" or what went wrong."""
        loop = asyncio.get_running_loop()
        if not await self.wait_up(timeout):
            return self.gave_up or f"not connected ({self.failures[-1].what if self.failures else 'never was'})"
        readies = len(self.readies)
        self._reconnecting = True
        with contextlib.suppress(Exception):
            await self._ws.close()
        deadline = loop.time() + timeout
        while len(self.readies) == readies and loop.time() < deadline and not self.gave_up:
            await asyncio.sleep(0.05)
        if len(self.readies) == readies:
            return f"no reconnect ({self.failures[-1].what if self.failures else self.gave_up or 'timeout'})"
        try:
            await self.ping(timeout)
        except Exception as exc:
            return f"resync failed: {_describe(exc)}"
        return ""

    async def stop(self) -> None:
        self.stopping = True
        await self.close()
        if self._runner is not None:
            self._runner.cancel()
            await asyncio.gather(self._runner, return_exceptions=True)


def _describe(exc: BaseException) -> str:
    response = getattr(exc, "response", None)
    status = getattr(response, "status_code", None)
    if status is not None:
        return f"handshake {status}"
    if isinstance(exc, TimeoutError):
        return "no ready in time"
    return type(exc).__name__

"""The MLLP listener: HL7 v2 messages from the HIS over TCP, each answered with its ACK.

MLLP frames a message as 0x0B <message> 0x1C 0x0D. The sender waits for each ACK before sending the
next message (original-mode acknowledgement), so one connection is handled strictly in order; several
connections run side by side. The database work (callbacks.actions.hl7_intake.accept_hl7) runs on a
small dedicated thread pool so the event loop only moves bytes.

Started by `manage.py hl7_listener`, and by the embedded `serve` command on a thread of its own.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import threading
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from asgiref.sync import sync_to_async
from django.db import close_old_connections, connection, connections

logger = logging.getLogger(__name__)

START_BLOCK = b"\x0b"
END_BLOCK = b"\x1c\x0d"
MAX_FRAME_BYTES = 1024 * 1024
IDLE_TIMEOUT_SECONDS = 300.0
# Enough of an oversized frame to read its MSH and say which message we refused.
_HEAD_BYTES = 4096

Handler = Callable[[bytes], Awaitable[bytes]]


def frame(payload: bytes) -> bytes:
    return START_BLOCK + payload + END_BLOCK


@dataclass(frozen=True)
class Oversized:
    """A frame longer than the limit, discarded as it streamed in; `head` is its beginning."""

    size: int
    head: bytes


class Framer:
    """Splits a byte stream into MLLP frames, whatever the TCP segmentation.

    Bytes outside a frame (line noise, a health check's probe, a half-sent frame the sender gave up
    on) are skipped. A frame over `max_bytes` is not buffered: it is dropped as it arrives and
    reported as Oversized once its end block is seen, so one bad sender cannot exhaust memory.
    """

    def __init__(self, max_bytes: int = MAX_FRAME_BYTES) -> None:
        self.max_bytes = max_bytes
        self.skipped = 0  # bytes seen outside any frame, for the log
        self._buffer = bytearray()
        self._in_frame = False
        self._discarded = 0  # > 0 while dropping an oversized frame
        self._head = b""

    @property
    def pending(self) -> int:
        """Bytes of an unfinished frame held back, waiting for more."""
        return len(self._buffer) if self._in_frame else 0

    def feed(self, data: bytes) -> list[bytes | Oversized]:
        self._buffer += data
        frames: list[bytes | Oversized] = []
        while self._buffer:
            if not self._in_frame:
                start = self._buffer.find(START_BLOCK)
                if start < 0:
                    self.skipped += len(self._buffer)
                    self._buffer.clear()
                    break
                self.skipped += start
                del self._buffer[: start + 1]
                self._in_frame = True
                continue
            end = self._buffer.find(END_BLOCK)
            restart = self._buffer.find(START_BLOCK, 0, end if end >= 0 else len(self._buffer))
            if restart >= 0:
                # A new start block inside an unterminated frame: the sender abandoned the previous one.
                self.skipped += restart + self._discarded
                del self._buffer[: restart + 1]
                self._discarded = 0
                self._head = b""
                continue
            if end < 0:
                self._spill()
                break
            payload = bytes(self._buffer[:end])
            del self._buffer[: end + len(END_BLOCK)]
            self._in_frame = False
            size = self._discarded + len(payload)
            if size > self.max_bytes:
                frames.append(Oversized(size=size, head=self._head or payload[:_HEAD_BYTES]))
            else:
                frames.append(payload)
            self._discarded = 0
            self._head = b""
        return frames

    def _spill(self) -> None:
        # Keep the last byte: it may be the 0x1C of an end block whose 0x0D has not arrived yet.
        if self._discarded + len(self._buffer) - 1 <= self.max_bytes:
            return
        if not self._discarded:
            self._head = bytes(self._buffer[:_HEAD_BYTES])
        self._discarded += len(self._buffer) - 1
        del self._buffer[:-1]


class MllpServer:
    """An asyncio MLLP server answering every frame with what `handler` returns for it."""

    def __init__(
        self,
        handler: Handler,
        *,
        host: str,
        port: int,
        max_frame_bytes: int = MAX_FRAME_BYTES,
        idle_timeout: float = IDLE_TIMEOUT_SECONDS,
        on_oversized: Callable[[Oversized], bytes] | None = None,
    ) -> None:
        self.handler = handler
        self.host = host
        self.port = port
        self.max_frame_bytes = max_frame_bytes
        self.idle_timeout = idle_timeout
        self.on_oversized = on_oversized
        self._server: asyncio.Server | None = None
        self._connections: set[asyncio.Task[None]] = set()

    @property
    def address(self) -> tuple[str, int]:
        assert self._server is not None, "not started"
        host, port = self._server.sockets[0].getsockname()[:2]
        return str(host), int(port)

    async def start(self) -> None:
        """Bind and listen; raises OSError (e.g. the port is in use) before accepting anything."""
        self._server = await asyncio.start_server(self._connection, self.host, self.port)

    async def serve_forever(self) -> None:
        if self._server is None:
            await self.start()
        assert self._server is not None
        await self._server.serve_forever()

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
        for task in list(self._connections):
            task.cancel()
        await asyncio.gather(*self._connections, return_exceptions=True)

    async def _connection(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        if task is not None:
            self._connections.add(task)
            task.add_done_callback(self._connections.discard)
        peer = writer.get_extra_info("peername")
        framer = Framer(self.max_frame_bytes)
        answered = 0
        logger.info("MLLP connection from %s", peer)
        try:
            while True:
                try:
                    data = await asyncio.wait_for(reader.read(65536), timeout=self.idle_timeout)
                except TimeoutError:
                    logger.info("MLLP connection from %s idle for %.0f s; closing", peer, self.idle_timeout)
                    break
                if not data:
                    break
                for item in framer.feed(data):
                    if isinstance(item, Oversized):
                        logger.warning("MLLP frame of %d bytes from %s over the limit; refused", item.size, peer)
                        if self.on_oversized is None:
                            continue
                        reply = self.on_oversized(item)
                    else:
                        reply = await self.handler(item)
                    writer.write(frame(reply))
                    await writer.drain()
                    answered += 1
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except Exception:
            # accept_hl7 answers every error itself; this is the pool gone at shutdown or a bug here.
            logger.exception("MLLP connection from %s failed", peer)
        finally:
            if framer.skipped or framer.pending:
                logger.info("MLLP connection from %s: %d bytes outside frames", peer, framer.skipped + framer.pending)
            logger.info("MLLP connection from %s closed after %d messages", peer, answered)
            writer.close()
            with contextlib.suppress(Exception):
                await writer.wait_closed()


# ---------------------------------------------------------------------------------------------------
# The intake server: MllpServer + accept_hl7 on a thread pool
# ---------------------------------------------------------------------------------------------------


class IntakeWorkers:
    """The threads that run accept_hl7. Django connections belong to the thread that opened them, so
    the pool closes its own at shutdown (a test database cannot be dropped while they are open)."""

    def __init__(self) -> None:
        # SQLite (the embedded demo) takes one writer at a time: more threads would only queue on its lock.
        self.size = 1 if connection.vendor == "sqlite" else 4
        self.executor = ThreadPoolExecutor(max_workers=self.size, thread_name_prefix="hl7-intake")

    async def accept(self, payload: bytes) -> bytes:
        return await sync_to_async(_accept_in_worker, thread_sensitive=False, executor=self.executor)(payload)

    def shutdown(self) -> None:
        # One task per thread, held at a barrier so each thread gets exactly one and closes its own.
        barrier = threading.Barrier(self.size)

        def close_own() -> None:
            with contextlib.suppress(threading.BrokenBarrierError):
                barrier.wait(timeout=5)
            connections.close_all()

        for future in [self.executor.submit(close_own) for _ in range(self.size)]:
            with contextlib.suppress(Exception):
                future.result(timeout=10)
        self.executor.shutdown(wait=True)


def _accept_in_worker(payload: bytes) -> bytes:
    from callbacks.actions.hl7_intake import accept_hl7

    # As Django does around a request: drop connections that broke or outlived CONN_MAX_AGE.
    close_old_connections()
    try:
        return accept_hl7(payload)
    finally:
        close_old_connections()


def _refuse_oversized(item: Oversized) -> bytes:
    from callbacks.intake.hl7 import build_ack, encode_ack, salvage_header

    reason = f"message of {item.size} bytes exceeds the {MAX_FRAME_BYTES} byte limit"
    header = salvage_header(item.head)
    return encode_ack(build_ack(header, "AE", reason), header.charset)


def intake_server(
    workers: IntakeWorkers, *, host: str, port: int, idle_timeout: float = IDLE_TIMEOUT_SECONDS
) -> MllpServer:
    return MllpServer(workers.accept, host=host, port=port, idle_timeout=idle_timeout, on_oversized=_refuse_oversized)


class ListenerThread:
    """The intake server on a thread with its own event loop: for the embedded `serve` command (whose
    Daphne owns the main thread), tests and benchmarks."""

    def __init__(self, *, host: str, port: int, idle_timeout: float = IDLE_TIMEOUT_SECONDS) -> None:
        self.host = host
        self.port = port
        self.idle_timeout = idle_timeout
        self.address: tuple[str, int] | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: MllpServer | None = None
        self._workers: IntakeWorkers | None = None
        self._thread: threading.Thread | None = None
        self._started = threading.Event()
        self._error: BaseException | None = None

    def start(self) -> tuple[str, int]:
        """Start listening; raises OSError (port in use, bad address) in the caller, like a bind would."""
        self._thread = threading.Thread(target=self._run, name="hl7-mllp", daemon=True)
        self._thread.start()
        self._started.wait()
        if self._error is not None:
            raise self._error
        assert self.address is not None
        return self.address

    def _run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        asyncio.set_event_loop(loop)
        try:
            self._workers = IntakeWorkers()
            self._server = intake_server(self._workers, host=self.host, port=self.port, idle_timeout=self.idle_timeout)
            loop.run_until_complete(self._server.start())
            self.address = self._server.address
        except BaseException as exc:  # handed to the thread that called start()
            self._error = exc
            self._started.set()
            if self._workers is not None:
                self._workers.shutdown()
            loop.close()
            return
        self._started.set()
        try:
            loop.run_forever()
        finally:
            loop.run_until_complete(self._server.close())
            self._workers.shutdown()
            loop.close()

    def stop(self) -> None:
        if self._loop is not None and self._thread is not None and self._thread.is_alive():
            self._loop.call_soon_threadsafe(self._loop.stop)
            self._thread.join(timeout=15)


async def serve(*, host: str, port: int) -> None:
    """Run the intake server until cancelled (the management command's Ctrl-C)."""
    workers = IntakeWorkers()
    server = intake_server(workers, host=host, port=port)
    try:
        await server.start()
        bound_host, bound_port = server.address
        logger.info("HL7 MLLP listener on %s:%d", bound_host, bound_port)
        await server.serve_forever()
    finally:
        await server.close()
        await asyncio.get_running_loop().run_in_executor(None, workers.shutdown)

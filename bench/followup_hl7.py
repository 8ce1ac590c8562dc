"""HL7 ADT^A03 discharges over MLLP: messages/s through accept_hl7, as a ratio to a raw MLLP echo.

    .venv/bin/python -m bench.followup_hl7            # 2,000 messages, under a minute
    .venv/bin/python -m bench.followup_hl7 -n 200     # a quick look

Run on its own it starts its own PostgreSQL on loopback (tests/services.py), migrates, and stops and
removes it at the end. `run_hl7_section(n)` is the piece a larger follow-up benchmark calls with Django
already set up on a migrated database.

Both servers are the product's MllpServer (same framing, same event loop thread, same client): the
baseline's handler returns the frame it got, the intake's runs callbacks.actions.hl7_intake.accept_hl7
on the listener's worker pool (parse, record_discharge, the IntakeMessage trail, one transaction per
message). The client holds `concurrency` MLLP connections, each sending its next message when the
previous ACK arrives, as an interface engine does. The echo runs before and after the intake: their
spread says how steady the machine was. Each message is a realistic Epic-style A03 (PID, PD1, NK1,
PV1, PV2, two DG1) for a new patient and visit. Afterwards every message must have been answered AA
and stored exactly once.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import shutil
import signal
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
TEMPLATE = ROOT / "callbacks" / "intake" / "fixtures" / "adt_a03_full.hl7"
START, END = b"\x0b", b"\x1c\x0d"


def a03_messages(n: int, run: str, *, first_phone: int = 0) -> list[tuple[str, bytes]]:
    """(control id, message) for n distinct discharges of n distinct patients (each with a phone of their own)."""
    template = TEMPLATE.read_bytes()
    messages = []
    for i in range(n):
        control_id = f"B{run}{i:07d}"
        raw = (
            template.replace(b"MSG20250314103512001", control_id.encode())
            .replace(b"MRN7654321", f"B{run}{i:07d}".encode())
            .replace(b"V20250301881", f"BV{run}{i:07d}".encode())
            .replace(b"+8613800138000", f"+86138{(first_phone + i) % 100_000_000:08d}".encode())
        )
        messages.append((control_id, raw))
    return messages


class _LoopThread:
    """An MllpServer on its own event loop thread, like the listener in the embedded server."""

    def __init__(self, handler: Callable[[bytes], Awaitable[bytes]]) -> None:
        from callbacks.intake.mllp import MllpServer

        self.loop = asyncio.new_event_loop()
        self.server = MllpServer(handler, host="127.0.0.1", port=0)
        self.thread = threading.Thread(target=self.loop.run_forever, name="bench-echo", daemon=True)

    def start(self) -> tuple[str, int]:
        self.thread.start()
        asyncio.run_coroutine_threadsafe(self.server.start(), self.loop).result(10)
        return self.server.address

    def stop(self) -> None:
        asyncio.run_coroutine_threadsafe(self.server.close(), self.loop).result(10)
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(10)
        self.loop.close()


async def _echo(payload: bytes) -> bytes:
    return payload


async def _drive(
    address: tuple[str, int], messages: list[tuple[str, bytes]], concurrency: int, *, echo: bool = False
) -> tuple[float, Counter[str]]:
    """Send every message over `concurrency` connections in a closed loop; (seconds, ACK codes)."""
    codes: Counter[str] = Counter()
    queue = list(reversed(messages))

    async def connection() -> None:
        reader, writer = await asyncio.open_connection(*address)
        try:
            while queue:
                control_id, raw = queue.pop()
                writer.write(START + raw + END)
                await writer.drain()
                reply = await reader.readuntil(END)
                if echo:
                    codes["echo" if reply == START + raw + END else "echo mismatch"] += 1
                else:
                    codes[_ack_code(reply, control_id)] += 1
        finally:
            writer.close()
            await writer.wait_closed()

    started = time.perf_counter()
    await asyncio.gather(*(connection() for _ in range(concurrency)))
    return time.perf_counter() - started, codes


def _ack_code(reply: bytes, control_id: str) -> str:
    if reply.startswith(START + b"MSH|"):
        for segment in reply[1:-2].split(b"\r"):
            if segment.startswith(b"MSA|"):
                fields = segment.decode("utf-8", "replace").split("|")
                code = fields[1] if len(fields) > 1 else "?"
                return code if len(fields) > 2 and fields[2] == control_id else f"{code} (wrong MSA-2)"
        return "no MSA"
    return "garbage"


def run_hl7_section(n: int = 2000, *, concurrency: int = 4) -> dict[str, Any]:
    """Figures for HL7 intake over MLLP; Django must be set up on a migrated database."""
    from callbacks.intake.mllp import ListenerThread
    from callbacks.models import Discharge, IntakeMessage, IntakeOutcome

    run = secrets.token_hex(3).upper()
    warmup = a03_messages(max(10, n // 20), run + "W", first_phone=50_000_000)
    messages = a03_messages(n, run)

    def echo_rate() -> float:
        echo = _LoopThread(_echo)
        address = echo.start()
        try:
            asyncio.run(_drive(address, warmup, concurrency, echo=True))
            seconds, codes = asyncio.run(_drive(address, messages, concurrency, echo=True))
        finally:
            echo.stop()
        assert codes == Counter({"echo": n}), codes
        return n / seconds

    echo_before = echo_rate()
    listener = ListenerThread(host="127.0.0.1", port=0)
    address = listener.start()
    try:
        asyncio.run(_drive(address, warmup, concurrency))
        seconds, codes = asyncio.run(_drive(address, messages, concurrency))
    finally:
        listener.stop()
    echo_after = echo_rate()
    intake = n / seconds
    baseline = (echo_before + echo_after) / 2
    stored = Discharge.objects.filter(visit_number__startswith=f"BV{run}0").count()
    trail = IntakeMessage.objects.filter(control_id__startswith=f"B{run}0", outcome=IntakeOutcome.ACCEPTED).count()
    checks = {
        "every message answered AA with its MSA-2": codes == Counter({"AA": n}),
        "every message stored exactly once": stored == n,
        "one accepted IntakeMessage per message": trail == n,
    }
    return {
        "messages": n,
        "concurrency": concurrency,
        "intake_per_s": intake,
        "echo_per_s": baseline,
        "echo_spread": abs(echo_before - echo_after) / baseline,
        "ratio": intake / baseline,
        "ms_per_message": 1000 * seconds / n,
        "acks": dict(codes),
        "stored": stored,
        "trail": trail,
        "checks": checks,
        "ok": all(checks.values()),
    }


def print_section(result: dict[str, Any]) -> None:
    print(
        f"HL7 ADT^A03 over MLLP, {result['messages']:,} messages on {result['concurrency']} connections "
        "(closed loop, one message in flight per connection)"
    )
    print(
        f"  raw MLLP echo     {result['echo_per_s']:9,.0f} msg/s   (mean of before and after, spread "
        f"{100 * result['echo_spread']:.0f} %)"
    )
    print(
        f"  accept_hl7        {result['intake_per_s']:9,.0f} msg/s   ({result['ms_per_message']:.1f} ms per "
        f"message)   ratio {result['ratio']:.3f}"
    )
    print(f"  ACKs {result['acks']}; stored {result['stored']:,}; trail rows {result['trail']:,}")
    for name, passed in result["checks"].items():
        print(f"  check {'ok  ' if passed else 'FAIL'} {name}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("-n", "--messages", type=int, default=2000)
    parser.add_argument("--concurrency", type=int, default=4)
    parser.add_argument("--conn-max-age", type=int, default=60, help="DB_CONN_MAX_AGE, as docs/production.md")
    args = parser.parse_args(argv)
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from bench.procs import fast_stop_postgres
    from tests.services import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-hl7-"))
    pg: PostgresServer | None = None
    try:
        pg = PostgresServer()
        print("starting PostgreSQL on loopback …", flush=True)
        database_url = pg.start()
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url,
                "DB_CONN_MAX_AGE": str(args.conn_max_age),
                "REDIS_URL": "",
                "SECRET_KEY": secrets.token_urlsafe(40),
                "TASK_RUNNER": "immediate",
                "DATA_DIR": str(work),
                "DEBUG": "false",
                "SIMULATOR_ENABLED": "false",
            }
        )
        import django

        django.setup()
        import logging

        # One INFO line per message and per connection would time the logging, not the intake.
        for name in ("callbacks", "contactcenter"):
            logging.getLogger(name).setLevel(logging.WARNING)
        from django.core.management import call_command

        print("migrating …", flush=True)
        call_command("migrate", verbosity=0)
        print(f"sending {args.messages:,} A03 messages …", flush=True)
        result = run_hl7_section(args.messages, concurrency=args.concurrency)
        print()
        print_section(result)
        return 0 if result["ok"] else 1
    except (KeyboardInterrupt, Exception):
        if not stopped_by:
            raise
        print(f"\n{signal.Signals(stopped_by[0]).name}: stopping PostgreSQL …", file=sys.stderr)
        return 128 + stopped_by[0]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        if pg is not None:
            fast_stop_postgres(pg.data)
            pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

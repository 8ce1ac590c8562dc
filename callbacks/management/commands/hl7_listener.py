"""Run the HL7 v2 MLLP listener on its own (production runs it as a separate process beside Daphne)."""

from __future__ import annotations

import asyncio
import signal
from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError


class Command(BaseCommand):
    help = "Listen for HL7 v2 ADT messages (A03 discharge, A08, A11, A13) over MLLP and acknowledge each one."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default=settings.HL7_MLLP_HOST, help="address to bind (HL7_MLLP_HOST)")
        parser.add_argument("--port", type=int, default=settings.HL7_MLLP_PORT, help="TCP port (HL7_MLLP_PORT)")

    def handle(self, *args: Any, **options: Any) -> None:
        from callbacks.intake.mllp import serve

        host, port = options["host"], options["port"]
        self.stdout.write(f"HL7 MLLP listener on {host}:{port} (Ctrl-C to stop)")

        async def run() -> None:
            # systemd and container runtimes stop services with SIGTERM: finish the message in hand,
            # close the database connections, exit 0, as Ctrl-C does.
            task = asyncio.current_task()
            assert task is not None
            asyncio.get_running_loop().add_signal_handler(signal.SIGTERM, task.cancel)
            await serve(host=host, port=port)

        try:
            asyncio.run(run())
        except OSError as exc:
            raise CommandError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
        except (KeyboardInterrupt, asyncio.CancelledError):
            self.stdout.write("HL7 MLLP listener stopped.")

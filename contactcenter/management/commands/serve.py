"""Run the whole platform in one process: migrate, seed the demo hospital, start the dispatcher loop
and serve HTTP + websockets with Daphne. The embedded default; production runs Daphne, Celery workers
and beat as separate processes (see README)."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand

from contactcenter.demo import DEMO_PASSWORD, LOGINS

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Migrate, seed the demo hospital and serve the platform on one port (HTTP + websockets)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-seed", action="store_true", help="Do not create the demo hospital")

    def handle(self, *args: Any, **options: Any) -> None:
        if "PUBLIC_BASE_URL" not in os.environ:
            # Signed webhooks and status callbacks (the simulator's too) must reach the port actually
            # served, not the default one.
            wildcard = options["host"] in ("0.0.0.0", "::")  # noqa: S104 - comparing, not binding
            reachable = "127.0.0.1" if wildcard else options["host"]
            settings.PUBLIC_BASE_URL = f"http://{reachable}:{options['port']}"
        call_command("migrate", interactive=False, verbosity=0)
        if not options["no_seed"]:
            call_command("seed_demo")
        if settings.TASK_RUNNER == "inprocess":
            from contactcenter import taskrunner
            from contactcenter.tasks import dispatch_due_work

            taskrunner.start_dispatcher_loop(dispatch_due_work, settings.DISPATCH_INTERVAL_SECONDS)
        hl7_address = self._start_hl7_listener()
        self._banner(options["host"], options["port"], seeded=not options["no_seed"], hl7_address=hl7_address)
        from daphne.cli import CommandLineInterface

        CommandLineInterface().run(
            ["--bind", options["host"], "--port", str(options["port"]), "--proxy-headers", "config.asgi:application"]
        )

    def _start_hl7_listener(self) -> str:
        if not settings.HL7_MLLP_PORT:
            return ""
        from callbacks.intake.mllp import ListenerThread

        host, port = settings.HL7_MLLP_HOST, settings.HL7_MLLP_PORT
        try:
            bound_host, bound_port = ListenerThread(host=host, port=port).start()
        except OSError as exc:
            # The web platform is still useful without HIS intake; say why discharges will not arrive.
            logger.warning(
                "HL7 MLLP listener not started: cannot listen on %s:%s (%s)", host, port, exc.strerror or exc
            )
            return f"not started: {host}:{port} unavailable"
        return f"mllp://{bound_host}:{bound_port}"

    def _banner(self, host: str, port: int, *, seeded: bool, hl7_address: str = "") -> None:
        base = f"http://{host}:{port}"
        lines = [
            "",
            "Hospital contact center is starting",
            f"  Agent inbox      {base}/inbox/",
            f"  Patient phone    {base}/simulator/   (type as a patient; replies show up here)",
            f"  Patient mailbox  {base}/simulator/mailbox/   (web chat replies sent by email)",
            f"  Hospital website {base}/webchat/demo/   (web chat widget; ?lang=zh-hans, ?sign_as=MRN100000)",
            f"  Follow-up        {base}/followup/   (nurse1: worklist; supervisor: cases, reports)",
            f"  Campaigns        {base}/campaigns/   (marketer)",
            f"  API docs         {base}/api/v1/docs/",
            f"  Audit log        {base}/audit/   (admin)",
            *([f"  HL7 MLLP         {hl7_address}   (ADT^A03/A08/A11/A13 from the HIS)"] if hl7_address else []),
            f"  Mode             {'SQLite' if settings.EMBEDDED else 'PostgreSQL'}, tasks: {settings.TASK_RUNNER}",
        ]
        if seeded:
            lines.append(f"  Demo logins (password '{DEMO_PASSWORD}'):")
            lines.extend(f"    {login.username:<11} {login.role:<10} {login.display_name}" for login in LOGINS)
        self.stdout.write("\n".join(lines) + "\n")

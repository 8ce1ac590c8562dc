"""Run the whole platform in one process: migrate, seed the demo hospital, start the dispatcher loop
and serve HTTP + websockets with Daphne. The embedded default; production runs Daphne, Celery workers
and beat as separate processes (see README)."""

from __future__ import annotations

import logging
import os
from typing import Any

from django.conf import settings
from django.core.management import call_command
from django.core.management.base import BaseCommand, CommandError

from config.env import is_loopback_host
from contactcenter.demo import DEMO_PASSWORD, LOGINS

logger = logging.getLogger(__name__)


class Command(BaseCommand):
    help = "Migrate, seed the demo hospital and serve the platform on one port (HTTP + websockets)."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--host", default="127.0.0.1")
        parser.add_argument("--port", type=int, default=8000)
        parser.add_argument("--no-seed", action="store_true", help="Do not create the demo hospital")

    def handle(self, *args: Any, **options: Any) -> None:
        self.refuse_exposed_simulator(options["host"])
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

        CommandLineInterface().run(self.daphne_arguments(options["host"], options["port"]))

    def daphne_arguments(self, host: str, port: int) -> list[str]:
        # Client addresses from X-Forwarded-For only behind the TLS proxy: Daphne believes the header from anyone,
        # and a forged 127.0.0.1 would open the simulator's loopback-only pages and dodge the per-IP limits.
        proxy = ["--proxy-headers"] if settings.BEHIND_TLS_PROXY else []
        return ["--bind", host, "--port", str(port), *proxy, "config.asgi:application"]

    def refuse_exposed_simulator(self, host: str) -> None:
        """The simulator shows patients' phones and messages: not on a server other machines can reach.

        Settings already refuse ALLOWED_HOSTS beyond loopback (and a TLS proxy) with the simulator on; this
        adds the address the server listens on.
        """
        if settings.SIMULATOR_ENABLED and not settings.SIMULATOR_ALLOW_REMOTE and not is_loopback_host(host):
            raise CommandError(
                f"Refusing to listen on {host} with the patient-phone simulator on: other machines could read "
                "patients' phones and messages. Listen on 127.0.0.1, set SIMULATOR_ENABLED=false, or set "
                "SIMULATOR_ALLOW_REMOTE=true if that is really meant."
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
        # The demo's HIS token is generated per installation (config/settings.py): say where, never print it.
        token_path = settings.DATA_DIR / "his_api_token"
        token_file = (
            token_path if token_path.exists() and token_path.read_text().strip() == settings.HIS_API_TOKEN else None
        )
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
            *([f"  HIS API token    in {token_file}   (Authorization: Bearer …)"] if token_file else []),
        ]
        if seeded:
            lines.append(f"  Demo logins (password '{DEMO_PASSWORD}'):")
            lines.extend(f"    {login.username:<11} {login.role:<10} {login.display_name}" for login in LOGINS)
        self.stdout.write("\n".join(lines) + "\n")

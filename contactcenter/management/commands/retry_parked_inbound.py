"""Put inbound webhooks that were parked after failing back in the queue, once their cause is fixed."""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand, CommandParser

from contactcenter.actions.inbound_queue import retry_parked


class Command(BaseCommand):
    help = "Queue parked inbound webhooks again (all, or one inbox's) and schedule their drains."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--inbox", type=int, default=None, help="only this inbox's parked webhooks")

    def handle(self, *args: Any, inbox: int | None = None, **options: Any) -> None:
        count = retry_parked(inbox_id=inbox)
        self.stdout.write(f"{count} parked inbound webhook(s) queued again")

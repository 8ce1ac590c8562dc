from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from contactcenter.demo import seed_demo


class Command(BaseCommand):
    help = "Seed the demo hospital (departments, staff logins, ~200 patients, conversations). Idempotent."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("--patients", type=int, default=200)

    def handle(self, *args: Any, **options: Any) -> None:
        result = seed_demo(patients=options["patients"])
        if result.get("skipped"):
            self.stdout.write("Demo data already present; nothing to do.")
        else:
            self.stdout.write(self.style.SUCCESS(f"Seeded demo hospital: {result}"))

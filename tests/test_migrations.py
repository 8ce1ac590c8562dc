"""The models and their migrations agree: a model change without its migration fails here, not in production."""

from __future__ import annotations

from io import StringIO

from django.core.management import call_command


def test_every_model_change_has_its_migration(db: object) -> None:
    out = StringIO()
    try:
        call_command("makemigrations", "--check", "--dry-run", stdout=out, stderr=out)
    except SystemExit as exc:
        raise AssertionError(f"models changed without a migration:\n{out.getvalue()}") from exc

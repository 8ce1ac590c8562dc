"""Building a partial index on the message table without holding webhooks and sends back (for 0009, 0010).

On PostgreSQL the index is built CONCURRENTLY, which refuses to run in a transaction (hence non-atomic
migrations); a half-built one left by an interrupted run is invalid, so it is dropped and built again. Other
databases (SQLite, the embedded default) get the ordinary statement. Not a migration itself: Django's loader
passes over modules whose names start with an underscore.
"""

from __future__ import annotations

from typing import Any

from django.db import models


def add_concurrently(schema_editor: Any, model: Any, index: models.Index | models.UniqueConstraint, sql: str) -> None:
    """Create `index` as `sql` does on PostgreSQL (its CREATE … CONCURRENTLY IF NOT EXISTS statement)."""
    if schema_editor.connection.vendor != "postgresql":
        if isinstance(index, models.Index):
            schema_editor.add_index(model, index)
        else:
            schema_editor.add_constraint(model, index)
        return
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [index.name],
        )
        found = cursor.fetchone()
    if found is not None and not found[0]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY {schema_editor.quote_name(index.name)}")
    schema_editor.execute(sql)


def remove_concurrently(schema_editor: Any, model: Any, index: models.Index | models.UniqueConstraint) -> None:
    if schema_editor.connection.vendor != "postgresql":
        if isinstance(index, models.Index):
            schema_editor.remove_index(model, index)
        else:
            schema_editor.remove_constraint(model, index)
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(index.name)}")

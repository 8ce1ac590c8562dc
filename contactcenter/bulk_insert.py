"""Many new rows written with COPY on PostgreSQL: bulk_create for the hot paths (a campaign chunk's
messages and events).

Django's bulk_create on PostgreSQL sends one array per column (INSERT … SELECT FROM UNNEST). With the
client-side binding Django uses, psycopg quotes those arrays in Python, element by element: for the
events' JSON payloads that was a tenth of a campaign worker's time. COPY's rows are formatted by
psycopg's C code instead, and PostgreSQL loads them with less work than an INSERT.

COPY cannot return the ids it wrote, so they are drawn from the table's sequence first and written
explicitly. They are handed out in the objects' order, which record_many relies on.
SQLite (the embedded default) and a handful of rows (one event) use bulk_create.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import Any, TypeVar

from django.db import connection, models

M = TypeVar("M", bound=models.Model)

# Below this, one INSERT … RETURNING (a round trip) beats drawing ids and then copying (two).
COPY_FROM_ROWS = 10


def insert_rows(model: type[M], objs: Sequence[M]) -> list[M]:
    """Insert `objs` (new, unsaved instances of `model`) and set their primary keys. Returns them."""
    objs = list(objs)
    if not objs:
        return objs
    if connection.vendor != "postgresql" or len(objs) < COPY_FROM_ROWS:
        return model._default_manager.bulk_create(objs)
    meta = model._meta
    pk = meta.pk
    if not isinstance(pk, models.AutoField | models.BigAutoField | models.SmallAutoField) or not pk.column:
        raise TypeError(f"insert_rows draws ids from a sequence; {model.__name__}'s primary key has none")
    fields = [field for field in meta.concrete_fields if field is not pk]
    if any(field.generated or field.has_db_default() for field in fields):
        raise TypeError(f"insert_rows writes every column; {model.__name__} has columns the database fills")
    for obj in objs:
        # As bulk_create: a related object assigned unsaved is refused, a saved one's id is taken.
        obj._prepare_related_fields_for_save(operation_name="insert_rows")  # type: ignore[attr-defined]
    quote = connection.ops.quote_name
    table = quote(meta.db_table)
    columns = ", ".join(quote(str(column)) for column in [pk.column, *(field.column for field in fields)])
    copy_sql = f"COPY {table} ({columns}) FROM STDIN"
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT nextval(pg_get_serial_sequence(%s, %s)) FROM generate_series(1, %s)",
            [meta.db_table, pk.column, len(objs)],
        )
        ids = sorted(row[0] for row in cursor.fetchall())
        started = time.monotonic()
        # The wrapped psycopg cursor (Django's wrapper has no COPY), its errors translated as Django's are.
        with connection.wrap_database_errors, cursor.cursor.copy(copy_sql) as copy:
            for key, obj in zip(ids, objs, strict=True):
                row: list[Any] = [key]
                row.extend(field.get_db_prep_save(field.pre_save(obj, True), connection) for field in fields)
                copy.write_row(row)
        if connection.queries_logged:
            # What CaptureQueriesContext and DEBUG's query log would have seen from bulk_create.
            connection.queries_log.append({"sql": copy_sql, "time": f"{time.monotonic() - started:.3f}"})
    for key, obj in zip(ids, objs, strict=True):
        obj.pk = key
        obj._state.adding = False
        obj._state.db = connection.alias
    return objs

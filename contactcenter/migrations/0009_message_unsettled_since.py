# The messages a provider accepted whose status never moved on (lost status callbacks), for the dispatcher's
# poll. A partial index: only messages in flight are in it, so it stays small however large the table grows.
#
# Built CONCURRENTLY on PostgreSQL, as 0006 is, so webhooks and sends go on while it builds; a half-built index
# left by an interrupted run is dropped and built again. SQLite gets the ordinary statement.

from typing import Any

from django.db import migrations, models

INDEX = models.Index(
    condition=models.Q(("provider_message_id__isnull", False), ("status", "sending")),
    fields=["status_changed_at"],
    name="message_unsettled_since",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_index(message, INDEX)
        return
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [INDEX.name],
        )
        found = cursor.fetchone()
    if found is not None and not found[0]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY {quote(INDEX.name)}")
    schema_editor.execute(
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(INDEX.name)} ON {quote(message._meta.db_table)} "
        f"({quote('status_changed_at')}) WHERE {quote('provider_message_id')} IS NOT NULL AND {quote('status')} = 'sending'"
    )


def backwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_index(message, INDEX)
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(INDEX.name)}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contactcenter", "0008_audit_reads_and_unknown_consent")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="message", index=INDEX)],
            database_operations=[migrations.RunPython(forwards, backwards, atomic=False)],
        ),
    ]

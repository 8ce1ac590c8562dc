# The sender's key for one attempt to send, unique per conversation, so a retried send returns the message
# already written (contactcenter.actions.outbound.send_outbound).
#
# The column is nullable with no default: PostgreSQL adds it without rewriting the message table. Its unique
# index is partial (only rows that carry a key) and built CONCURRENTLY, as 0006 and 0009 do, so webhooks and
# sends go on meanwhile; a half-built one left by an interrupted run is dropped and built again.

from typing import Any

from django.db import migrations, models

CONSTRAINT = models.UniqueConstraint(
    condition=models.Q(("client_key__isnull", False)),
    fields=("conversation", "client_key"),
    name="message_client_key_unique",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.add_constraint(message, CONSTRAINT)
        return
    quote = schema_editor.quote_name
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [CONSTRAINT.name],
        )
        found = cursor.fetchone()
    if found is not None and not found[0]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY {quote(CONSTRAINT.name)}")
    schema_editor.execute(
        f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(CONSTRAINT.name)} "
        f"ON {quote(message._meta.db_table)} ({quote('conversation_id')}, {quote('client_key')}) "
        f"WHERE {quote('client_key')} IS NOT NULL"
    )


def backwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    if schema_editor.connection.vendor != "postgresql":
        schema_editor.remove_constraint(message, CONSTRAINT)
        return
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {schema_editor.quote_name(CONSTRAINT.name)}")


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contactcenter", "0009_message_unsettled_since")]

    operations = [
        migrations.AddField(
            model_name="message",
            name="client_key",
            field=models.CharField(blank=True, max_length=64, null=True),
        ),
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddConstraint(model_name="message", constraint=CONSTRAINT)],
            database_operations=[migrations.RunPython(forwards, backwards, atomic=False)],
        ),
    ]

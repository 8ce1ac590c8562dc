# The messages a provider accepted whose status never moved on (lost status callbacks), for the dispatcher's
# poll. A partial index: only messages in flight are in it, so it stays small however large the table grows.
# Built CONCURRENTLY on PostgreSQL (see _concurrent_index), so webhooks and sends go on while it builds.

from typing import Any

from django.db import migrations, models

from contactcenter.migrations._concurrent_index import add_concurrently, remove_concurrently

INDEX = models.Index(
    condition=models.Q(("provider_message_id__isnull", False), ("status", "sending")),
    fields=["status_changed_at"],
    name="message_unsettled_since",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    quote = schema_editor.quote_name
    add_concurrently(
        schema_editor,
        message,
        INDEX,
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(INDEX.name)} ON {quote(message._meta.db_table)} "
        f"({quote('status_changed_at')}) WHERE {quote('provider_message_id')} IS NOT NULL AND {quote('status')} = 'sending'",
    )


def backwards(apps: Any, schema_editor: Any) -> None:
    remove_concurrently(schema_editor, apps.get_model("contactcenter", "Message"), INDEX)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contactcenter", "0008_audit_reads_and_unknown_consent")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="message", index=INDEX)],
            database_operations=[migrations.RunPython(forwards, backwards, atomic=False)],
        ),
    ]

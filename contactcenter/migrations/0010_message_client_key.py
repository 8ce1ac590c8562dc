# The sender's key for one attempt to send, unique per conversation, so a retried send returns the message
# already written (contactcenter.actions.outbound.send_outbound).
#
# The column is nullable with no default: PostgreSQL adds it without rewriting the message table. Its unique
# index is partial (only rows that carry a key) and built CONCURRENTLY (see _concurrent_index), so webhooks and
# sends go on meanwhile.

from typing import Any

from django.db import migrations, models

from contactcenter.migrations._concurrent_index import add_concurrently, remove_concurrently

CONSTRAINT = models.UniqueConstraint(
    condition=models.Q(("client_key__isnull", False)),
    fields=("conversation", "client_key"),
    name="message_client_key_unique",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    message = apps.get_model("contactcenter", "Message")
    quote = schema_editor.quote_name
    add_concurrently(
        schema_editor,
        message,
        CONSTRAINT,
        f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(CONSTRAINT.name)} "
        f"ON {quote(message._meta.db_table)} ({quote('conversation_id')}, {quote('client_key')}) "
        f"WHERE {quote('client_key')} IS NOT NULL",
    )


def backwards(apps: Any, schema_editor: Any) -> None:
    remove_concurrently(schema_editor, apps.get_model("contactcenter", "Message"), CONSTRAINT)


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

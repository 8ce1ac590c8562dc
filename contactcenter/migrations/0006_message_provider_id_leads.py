# The provider's id leads the unique index, so a status callback finds its message by that id alone.
#
# On PostgreSQL the new index is built CONCURRENTLY and the old one dropped the same way: the message
# table is the largest, and a plain CREATE INDEX would hold back every webhook and send while it builds.
# Hence a non-atomic migration (CONCURRENTLY refuses to run in a transaction). Other databases (SQLite, the
# embedded default) get the ordinary statements.

from typing import Any

from django.conf import settings
from django.db import migrations, models

NEW = models.UniqueConstraint(
    condition=models.Q(("provider_message_id__isnull", False)),
    fields=("provider_message_id", "inbox"),
    name="message_provider_id_unique",
)
OLD = models.UniqueConstraint(
    condition=models.Q(("provider_message_id__isnull", False)),
    fields=("inbox", "provider_message_id"),
    name="message_provider_id_unique_per_inbox",
)


def _swap(apps: Any, schema_editor: Any, add: models.UniqueConstraint, drop: models.UniqueConstraint) -> None:
    message = apps.get_model("contactcenter", "Message")
    if schema_editor.connection.vendor != "postgresql":
        # The new one first, so duplicates are refused throughout.
        schema_editor.add_constraint(message, add)
        schema_editor.remove_constraint(message, drop)
        return
    quote = schema_editor.quote_name
    table = quote(message._meta.db_table)
    columns = ", ".join(quote(message._meta.get_field(name).column) for name in add.fields)
    # An interrupted concurrent build leaves an invalid index of that name behind: drop it and build again.
    with schema_editor.connection.cursor() as cursor:
        cursor.execute(
            "SELECT i.indisvalid FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid WHERE c.relname = %s",
            [add.name],
        )
        found = cursor.fetchone()
    if found is not None and not found[0]:
        schema_editor.execute(f"DROP INDEX CONCURRENTLY {quote(add.name)}")
    schema_editor.execute(
        f"CREATE UNIQUE INDEX CONCURRENTLY IF NOT EXISTS {quote(add.name)} ON {table} ({columns}) "
        f"WHERE {quote('provider_message_id')} IS NOT NULL"
    )
    schema_editor.execute(f"DROP INDEX CONCURRENTLY IF EXISTS {quote(drop.name)}")


def forwards(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, NEW, OLD)


def backwards(apps: Any, schema_editor: Any) -> None:
    _swap(apps, schema_editor, OLD, NEW)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [
        ("contactcenter", "0005_message_delivery_sweeps"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[
                migrations.AddConstraint(model_name="message", constraint=NEW),
                migrations.RemoveConstraint(model_name="message", name=OLD.name),
            ],
            database_operations=[migrations.RunPython(forwards, backwards, atomic=False)],
        ),
    ]

# The web chat widget's catch-up reads one conversation's events after its cursor: without this index that was a
# parallel sequential scan of the event table (57 ms at 400k events; 0.11 ms with it). Built CONCURRENTLY (see
# _concurrent_index), so events go on being written meanwhile.

from typing import Any

from django.db import migrations, models

from contactcenter.migrations._concurrent_index import add_concurrently, remove_concurrently

INDEX = models.Index(
    condition=models.Q(("conversation_id__isnull", False)),
    fields=["conversation_id", "id"],
    name="event_conversation_idx",
)


def forwards(apps: Any, schema_editor: Any) -> None:
    event = apps.get_model("contactcenter", "Event")
    quote = schema_editor.quote_name
    add_concurrently(
        schema_editor,
        event,
        INDEX,
        f"CREATE INDEX CONCURRENTLY IF NOT EXISTS {quote(INDEX.name)} "
        f"ON {quote(event._meta.db_table)} ({quote('conversation_id')}, {quote('id')}) "
        f"WHERE {quote('conversation_id')} IS NOT NULL",
    )


def backwards(apps: Any, schema_editor: Any) -> None:
    remove_concurrently(schema_editor, apps.get_model("contactcenter", "Event"), INDEX)


class Migration(migrations.Migration):
    atomic = False

    dependencies = [("contactcenter", "0011_inbound_webhook")]

    operations = [
        migrations.SeparateDatabaseAndState(
            state_operations=[migrations.AddIndex(model_name="event", index=INDEX)],
            database_operations=[migrations.RunPython(forwards, backwards, atomic=False)],
        ),
    ]

"""EXPLAIN (ANALYZE, BUFFERS) of the real-time path's hot queries, captured from the product's own code.

    .venv/bin/python -m bench.hot_queries            # about a minute

Starts its own PostgreSQL on loopback (tests/services.py), migrates, loads a hospital-sized history with
generate_series (200k messages with provider ids, 300k events, 20k waiting inbound webhooks over 20 inboxes,
300 signed-in staff sessions), runs ANALYZE, then calls the code that runs on every webhook, status callback and
hint — and prints the plan of each statement it issued:

- the event hub's read after its cursor, and the placements of the conversations it names (contactcenter.fanout);
- the inbound drain's batch read of one inbox's waiting rows (contactcenter.actions.inbound_queue);
- the status callback's one read, and its one write (update + event in one statement, rolled back here);
- the batch access re-check of 300 sockets' sessions, users and teams (access.staff_and_visibility_for_sessions).

Exit status 1 if any plan scans a table of more than 10,000 rows sequentially.
"""

from __future__ import annotations

import io
import os
import re
import secrets
import shutil
import sys
import tempfile
from pathlib import Path
from typing import Any

SEQ_SCAN = re.compile(r"Seq Scan on (\w+)")
BIG_TABLE_ROWS = 10_000


def main() -> int:
    from tests.services import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-hot-"))
    pg = PostgresServer()
    try:
        print("starting PostgreSQL and migrating …", flush=True)
        database_url = pg.start()
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url,
                "DATA_DIR": str(work),
                "SECRET_KEY": secrets.token_urlsafe(40),
                "DB_POOL_MAX_SIZE": "0",
                "TASK_RUNNER": "immediate",
            }
        )
        import django

        django.setup()
        from django.core.management import call_command

        call_command("migrate", verbosity=0, stdout=io.StringIO())
        print("loading …", flush=True)
        world = load()
        return explain_all(world)
    finally:
        pg.stop()
        shutil.rmtree(work, ignore_errors=True)


def sql(statement: str, params: list[Any] | None = None) -> list[tuple[Any, ...]]:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute(statement, params or [])
        return cursor.fetchall() if cursor.description else []


def load() -> dict[str, Any]:
    from django.contrib.auth import BACKEND_SESSION_KEY, HASH_SESSION_KEY, SESSION_KEY
    from django.contrib.auth.models import User
    from django.contrib.sessions.backends.db import SessionStore

    from contactcenter.models import AgentProfile, Inbox, Role, Team

    teams = [Team.objects.create(name=f"Team {i}", code=f"T{i}") for i in range(10)]
    inboxes = [Inbox.objects.create(name=f"SMS {i}", channel_type="sms", team=teams[i % 10]) for i in range(20)]
    first_inbox = inboxes[0].pk
    from contactcenter.models import Patient

    Patient.objects.bulk_create([Patient(name=f"p{i}") for i in range(20000)], batch_size=2000)
    patient_ids = [row[0] for row in sql("SELECT id FROM contactcenter_patient ORDER BY id")]
    from contactcenter.models import Conversation

    Conversation.objects.bulk_create(
        [
            Conversation(inbox_id=inboxes[i % 20].pk, patient_id=patient_ids[i], team_id=inboxes[i % 20].team_id)
            for i in range(20000)
        ],
        batch_size=2000,
    )
    conv_ids = [row[0] for row in sql("SELECT id FROM contactcenter_conversation ORDER BY id")]
    lo, hi = conv_ids[0], conv_ids[-1]
    sql(
        "INSERT INTO contactcenter_message (conversation_id, inbox_id, direction, sender_kind, body, attachments,"
        " status, provider_message_id, error_code, error_message, flags, provider_payload, created_at,"
        " status_changed_at) "
        "SELECT c.id, c.inbox_id, 'out', 'agent', 'hello', '[]', 'sent', 'SM' || lpad(g::text, 32, '0'), '', '',"
        " '[]', '{}', now(), now() "
        "FROM generate_series(1, 200000) g JOIN contactcenter_conversation c ON c.id = %s + (g %% (%s - %s + 1))",
        [lo, hi, lo],
    )
    sql(
        "INSERT INTO contactcenter_event (type, op, payload, inbox_id, team_id, user_id, conversation_id, created_at)"
        " SELECT 'message', 'add', '{\"message\": {}}', c.inbox_id, c.team_id, NULL, c.id, now() "
        "FROM generate_series(1, 300000) g JOIN contactcenter_conversation c ON c.id = %s + (g %% (%s - %s + 1))",
        [lo, hi, lo],
    )
    sql(
        "INSERT INTO contactcenter_inboundwebhook (inbox_id, provider_message_id, record, received_at, attempts,"
        " last_error) SELECT i.id, 'SMIN' || g || '-' || i.id, '{}', now(), 0, '' "
        "FROM generate_series(1, 1000) g CROSS JOIN contactcenter_inbox i"
    )
    keys = []
    for i in range(300):
        user = User.objects.create_user(username=f"agent{i}", password=None)
        profile = AgentProfile.objects.create(user=user, role=Role.SUPERVISOR if i % 30 == 0 else Role.AGENT)
        profile.teams.set([teams[i % 10], teams[(i + 3) % 10]] if i % 8 == 0 else [teams[i % 10]])
        store = SessionStore()
        store[SESSION_KEY] = str(user.pk)
        store[BACKEND_SESSION_KEY] = "django.contrib.auth.backends.ModelBackend"
        store[HASH_SESSION_KEY] = user.get_session_auth_hash()
        store.create()
        keys.append(store.session_key)
    sql("ANALYZE")
    return {"inbox": first_inbox, "keys": keys, "sid": "SM" + "7".zfill(32)}


def captured(call: Any) -> list[tuple[str, Any]]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    with CaptureQueriesContext(connection) as ctx:
        call()
    return [(q["sql"], None) for q in ctx.captured_queries if q["sql"].lstrip().upper().startswith(("SELECT", "WITH"))]


def explain_all(world: dict[str, Any]) -> int:
    from django.db import connection, transaction

    from channels_adapters.base import StatusUpdate
    from channels_adapters.sms.views import _message_for
    from contactcenter import access, fanout
    from contactcenter.actions import inbound_queue
    from contactcenter.actions.delivery import settle_status

    newest = sql("SELECT max(id) FROM contactcenter_event")[0][0]
    cases: list[tuple[str, list[tuple[str, Any]]]] = [
        (
            "event hub: events after the cursor, and their conversations' placements",
            captured(lambda: fanout._events_after(newest - 200)),
        ),
        ("inbound drain: one inbox's waiting rows", captured(lambda: inbound_queue._waiting(world["inbox"], 50))),
        ("status callback: the one read", captured(lambda: _message_for(world["sid"], None))),
        ("access re-check of 300 sockets", captured(lambda: access.staff_and_visibility_for_sessions(world["keys"]))),
    ]
    message = _message_for(world["sid"], None)
    assert message is not None
    writes: list[str] = []

    def settle() -> None:
        from django.test.utils import CaptureQueriesContext

        with CaptureQueriesContext(connection) as ctx:
            settle_status(message=message, update=StatusUpdate(provider_message_id=world["sid"], status="delivered"))
        writes.extend(q["sql"] for q in ctx.captured_queries)

    settle()
    status_write = [w for w in writes if w.lstrip().startswith("WITH")]
    print(f"status callback: {len(writes)} statement(s) for the write: {[w.split()[0] for w in writes]}")
    failed = False
    indexes = sql("SELECT indexdef FROM pg_indexes WHERE tablename = 'contactcenter_inboundwebhook' ORDER BY 1")
    print("indexes of the inbound queue:\n" + "\n".join("    " + row[0] for row in indexes))
    for title, queries in cases:
        print(f"\n=== {title}: {len(queries)} statement(s)")
        for statement, _ in queries:
            failed |= show(statement)
    print("\n=== status callback: the one write (update + event), EXPLAIN ANALYZE inside a rolled-back transaction")
    # As the webhook found it: sent again, so the guarded update matches as it did.
    sql("UPDATE contactcenter_message SET status = 'sent' WHERE id = %s", [message.pk])
    for statement in status_write:
        with transaction.atomic():
            failed |= show(statement)
            transaction.set_rollback(True)
    return 1 if failed else 0


def show(statement: str) -> bool:
    print(statement[:300] + (" …" if len(statement) > 300 else ""))
    plan = [row[0] for row in sql("EXPLAIN (ANALYZE, BUFFERS) " + statement)]
    print("\n".join("    " + line for line in plan))
    bad = False
    for table in SEQ_SCAN.findall("\n".join(plan)):
        rows = sql("SELECT reltuples FROM pg_class WHERE relname = %s", [table])
        if rows and rows[0][0] > BIG_TABLE_ROWS:
            print(f"    !! sequential scan of {table} ({int(rows[0][0]):,} rows)")
            bad = True
    return bad


if __name__ == "__main__":
    sys.exit(main())

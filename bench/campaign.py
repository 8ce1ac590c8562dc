"""SMS campaigns at hospital scale: snapshot, send pipeline, status callbacks.

    .venv/bin/python -m bench.campaign                              # 100k recipients (the lead's run)
    .venv/bin/python -m bench.campaign --recipients 2000            # a quick look, about a minute
    .venv/bin/python -m bench.campaign --status-sample 10000        # callbacks for 10k of the 100k (~6 min, not ~50)

Starts its own PostgreSQL and Redis on loopback (tests/services.py), migrates, loads N patients with
mobile numbers (untimed), each with an earlier resolved exchange on the hospital's service SMS line (a
hospital in operation has message history; see load_history), a marketing SMS inbox and a rules segment
matching all of them, and stops and removes everything at the end, Ctrl-C included. Everything runs in
this one process, as one worker would:

1. Snapshot: launch_campaign (campaigns.actions.campaigns) writes one CampaignRecipient per audience
   member — segment query, newest phone, consent and mobile checks, bulk inserts — as rows/s and as a
   ratio to a raw bulk insert of the same rows (patient id, phone, time zone read with one join, state
   pending, nothing decided) in the same run, raw before and after (their spread says how steady the
   machine was). Target ratio ≥ 0.3.
2. Send pipeline: the launched campaign is sent by campaigns.sending.engine.run_campaign, as its Celery
   task would: chunks of recipients queued in one transaction each (claim under SKIP LOCKED, status,
   quiet hours, consent, render, conversations, messages and events in bulk), each chunk delivered a
   block at a time through the twilio SDK and the recording HTTP client from tests/twilio_fake.py (claim,
   requests on the delivery threads, SIDs saved), the next chunk written while one is delivered. The
   throttle is set far above what one process reaches (it still reserves slots in Redis). Wall ms per
   message, and CPU ms per message in this process and in PostgreSQL's backends. Target ≤ 2 ms per
   message, i.e. ≥ 500 messages/s per worker.
3. Status callbacks: a signed "delivered" callback for every message through the real webhook view
   (Django's test client in-process: signature check, forward-only status move, the recipient's state),
   as callbacks/s.

Exit status: 0 when every consistency check passed (a target may still be a MISS), 1 when one failed,
128+signal when interrupted.
"""

from __future__ import annotations

import argparse
import datetime as dt
import io
import os
import resource
import secrets
import shutil
import signal
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.services import PostgresServer, RedisServer

RATIO_TARGET = 0.3
PER_MESSAGE_TARGET_MS = 2.0
TOKEN = "bench-auth-token-0123456789abcdef"
ACCOUNT_SID = "AC8f0e3b5e2f2a4c6d9b1a7e5c3d2f1a0b"
NUMBER = "+8610123456780"
SERVICE_NUMBER = "+8610123456781"
STATUS_PATH = "/webhooks/twilio/sms/status/"
BODY = "{{ first_name }}，您好：{{ hospital }}年度体检套餐本月优惠，欢迎预约。"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def cpu_seconds() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def postgres_cpu_seconds(postmaster_pid: int) -> float:
    """CPU used so far by the postmaster's children (the backends doing our work), from /proc."""
    ticks = os.sysconf("SC_CLK_TCK")
    total = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        # After "pid (comm)": state ppid … utime (14th field overall) stime (15th).
        if int(fields[1]) == postmaster_pid:
            total += int(fields[11]) + int(fields[12])
    return total / ticks


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


def sms_inbox(team: Any, name: str, number: str) -> Any:
    """A Twilio SMS inbox of `team` sending from `number`, set up as an admin's form would."""
    from channels_adapters.sms.setup import SmsInboxSettings, save_sms_inbox

    return save_sms_inbox(
        inbox=None,
        settings=SmsInboxSettings(
            name=name,
            team=team,
            account_sid=ACCOUNT_SID,
            auth_token_env="TWILIO_AUTH_TOKEN",
            phone_numbers=[number],
            messaging_service_sid="",
            auto_assign=False,
        ),
    )


def load_world(n: int) -> dict[str, Any]:
    """N patients with a mobile number each, an SMS inbox, and a rules segment matching all of them."""
    from django.db import connection, transaction

    from campaigns.models import Segment
    from contactcenter.models import (
        Consent,
        ConsentPurpose,
        ConsentStatus,
        IdentityKind,
        Patient,
        PatientIdentity,
        Team,
    )

    team = Team.objects.create(code="marketing", name="Marketing", name_zh="市场部")
    inbox = sms_inbox(team, "Marketing SMS", NUMBER)
    for start in range(0, n, 10_000):
        size = min(10_000, n - start)
        with transaction.atomic():
            patients = Patient.objects.bulk_create(
                Patient(
                    given_name=f"患者{start + i}",
                    name=f"患者{start + i}",
                    language="zh-hans",
                    region="天河区",
                    city="广州",
                    time_zone="Asia/Shanghai",
                )
                for i in range(size)
            )
            PatientIdentity.objects.bulk_create(
                PatientIdentity(patient=p, kind=IdentityKind.PHONE, value=f"+86138{start + i:08d}")
                for i, p in enumerate(patients)
            )
            # Opted in to marketing: the default consent policy sends to no one else.
            Consent.objects.bulk_create(
                Consent(patient=p, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_IN) for p in patients
            )
    load_history(team, [p.pk for p in Patient.objects.order_by("pk")])
    segment = Segment.objects.create(
        name="Tianhe", rules={"op": "and", "rules": [{"field": "region", "operator": "in", "value": ["天河区"]}]}
    )
    with connection.cursor() as cursor:
        cursor.execute("VACUUM ANALYZE")
    return {"inbox": inbox, "segment": segment}


def load_history(team: Any, patient_ids: list[int]) -> None:
    """A hospital in operation: each patient's earlier, resolved exchange on the service SMS line.

    Without it the run would start on empty conversation and message tables, and PostgreSQL would plan
    the foreign-key checks it caches for the whole session as scans of a table a few rows long; they
    would then scan the growing table for every row written, a cost no hospital with a history pays.
    """
    from django.db import transaction
    from django.utils import timezone

    from contactcenter.models import (
        Conversation,
        ConversationStatus,
        Message,
        MessageDirection,
        MessageStatus,
        SenderKind,
    )

    service = sms_inbox(team, "Service SMS", SERVICE_NUMBER)
    then = timezone.now() - dt.timedelta(days=90)
    for start in range(0, len(patient_ids), 10_000):
        with transaction.atomic():
            threads = Conversation.objects.bulk_create(
                Conversation(
                    inbox=service,
                    patient_id=pid,
                    team=team,
                    status=ConversationStatus.RESOLVED,
                    last_message_at=then,
                    last_message_preview="好的，谢谢",
                    created_at=then,
                    resolved_at=then,
                )
                for pid in patient_ids[start : start + 10_000]
            )
            Message.objects.bulk_create(
                Message(
                    conversation=thread,
                    inbox=service,
                    direction=direction,
                    sender_kind=kind,
                    body=body,
                    status=status,
                    created_at=then,
                    status_changed_at=then,
                )
                for thread in threads
                for direction, kind, body, status in (
                    (MessageDirection.INBOUND, SenderKind.PATIENT, "请问周六门诊开吗？", MessageStatus.RECEIVED),
                    (MessageDirection.OUTBOUND, SenderKind.AGENT, "周六上午开诊。好的，谢谢", MessageStatus.DELIVERED),
                )
            )


def make_campaign(world: dict[str, Any], name: str) -> Any:
    from django.utils import timezone

    from campaigns.models import Campaign, CampaignStatus

    local_now = timezone.localtime()
    return Campaign.objects.create(
        name=name,
        segment=world["segment"],
        inbox=world["inbox"],
        body=BODY,
        signature="康华医院",
        opt_out_tail="拒收请回复R",
        fallbacks={"first_name": "您"},
        status=CampaignStatus.DRAFT,
        messages_per_second=1000,
        # Quiet hours well away from now: the run must not depend on the hour it is started at.
        quiet_hours_start=(local_now + dt.timedelta(hours=6)).time().replace(second=0, microsecond=0),
        quiet_hours_end=(local_now + dt.timedelta(hours=7)).time().replace(second=0, microsecond=0),
    )


# ---------------------------------------------------------------------------------------------------
# 1. Snapshot
# ---------------------------------------------------------------------------------------------------


def raw_insert(world: dict[str, Any]) -> tuple[int, float]:
    """The baseline: the same rows read with one join and bulk-inserted, nothing decided."""
    from django.db import transaction

    from campaigns.models import CampaignRecipient, RecipientState
    from contactcenter.models import IdentityKind, PatientIdentity

    campaign = make_campaign(world, "raw")
    started = time.perf_counter()
    with transaction.atomic():
        rows = (
            PatientIdentity.objects.filter(kind=IdentityKind.PHONE, patient__region="天河区")
            .order_by("patient_id")
            .values_list("patient_id", "value", "patient__time_zone")
        )
        batch: list[Any] = []
        written = 0
        for pid, phone, tz in rows.iterator(chunk_size=5000):
            batch.append(
                CampaignRecipient(
                    campaign=campaign, patient_id=pid, phone=phone, time_zone=tz, state=RecipientState.PENDING
                )
            )
            if len(batch) >= 5000:
                CampaignRecipient.objects.bulk_create(batch, batch_size=5000)
                written += len(batch)
                batch = []
        if batch:
            CampaignRecipient.objects.bulk_create(batch, batch_size=5000)
            written += len(batch)
    elapsed = time.perf_counter() - started
    CampaignRecipient.objects.filter(campaign=campaign).delete()
    campaign.delete()
    return written, elapsed


def launch(world: dict[str, Any]) -> tuple[Any, int, float]:
    """launch_campaign with the run's enqueue held back, so only the snapshot is timed."""
    import campaigns.actions.campaigns as actions

    campaign = make_campaign(world, "launched")
    held: list[tuple[str, dict[str, Any]]] = []
    real_enqueue = actions.enqueue
    actions.enqueue = lambda name, **kwargs: held.append((name, kwargs))
    try:
        started = time.perf_counter()
        written = actions.launch_campaign(campaign)
        elapsed = time.perf_counter() - started
    finally:
        actions.enqueue = real_enqueue
    assert held == [("campaigns.tasks.run_campaign", {"campaign_id": campaign.pk})], held
    return campaign, written, elapsed


def snapshot_section(world: dict[str, Any], n: int) -> dict[str, Any]:
    raw1_rows, raw1 = raw_insert(world)
    campaign, written, launched = launch(world)
    raw2_rows, raw2 = raw_insert(world)
    raw_rate = (raw1_rows / raw1 + raw2_rows / raw2) / 2
    rate = written / launched
    spread = abs(raw1_rows / raw1 - raw2_rows / raw2) / raw_rate
    return {
        "campaign": campaign,
        "written": written,
        "launch_s": launched,
        "rate": rate,
        "raw_rates": (raw1_rows / raw1, raw2_rows / raw2),
        "raw_rate": raw_rate,
        "spread": spread,
        "ratio": rate / raw_rate,
        "checks": [
            ("every audience member snapshotted once", written == n == raw1_rows == raw2_rows),
        ],
    }


# ---------------------------------------------------------------------------------------------------
# 2. Send pipeline
# ---------------------------------------------------------------------------------------------------


def send_section(campaign: Any, n: int, profile: str = "", postmaster_pid: int = 0) -> dict[str, Any]:
    from django.db import connection
    from django.test.utils import CaptureQueriesContext

    import channels_adapters.twilio.transport
    from campaigns.models import Campaign, CampaignRecipient, CampaignStatus, RecipientState
    from campaigns.sending import engine, throttle
    from contactcenter.models import Message, MessageStatus, SenderKind
    from tests.twilio_fake import RecordingTwilioHttpClient

    # Far above what one process reaches: the limiter is still asked for a slot per message.
    Campaign.objects.filter(pk=campaign.pk).update(messages_per_second=32_000)
    fake = RecordingTwilioHttpClient()
    channels_adapters.twilio.transport.http_client = lambda: fake  # type: ignore[assignment]
    throttle.reset(throttle.sender_key(campaign.inbox))
    sample = min(200, n)
    with CaptureQueriesContext(connection) as queries:
        engine.send_batch(campaign.pk, limit=sample)
    per_message_queries = len(queries.captured_queries) / sample
    statements = Counter(q["sql"].split(" ", 1)[0] for q in queries.captured_queries)

    profiler = None
    if profile:
        import cProfile

        profiler = cProfile.Profile()
        profiler.enable()
    cpu0 = cpu_seconds()
    pg0 = postgres_cpu_seconds(postmaster_pid) if postmaster_pid else 0.0
    started = time.perf_counter()
    status = engine.run_campaign(campaign.pk)
    elapsed = time.perf_counter() - started
    cpu = cpu_seconds() - cpu0
    pg_cpu = (postgres_cpu_seconds(postmaster_pid) - pg0) if postmaster_pid else float("nan")
    if profiler is not None:
        profiler.disable()
        profiler.dump_stats(profile)
    rest = n - sample
    states = Counter(CampaignRecipient.objects.filter(campaign=campaign).values_list("state", flat=True))
    messages = Counter(Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).values_list("status", flat=True))
    to = Counter(r.data["To"] for r in fake.requests)
    return {
        "messages": rest,
        "elapsed": elapsed,
        "ms_per_message": 1000 * elapsed / max(1, rest),
        "rate": rest / elapsed if elapsed else float("nan"),
        "cpu_ms_per_message": 1000 * cpu / max(1, rest),
        "pg_cpu_ms_per_message": 1000 * pg_cpu / max(1, rest),
        "queries_per_message": per_message_queries,
        "statements": statements,
        "checks": [
            ("campaign completed", status == CampaignStatus.COMPLETED),
            ("every recipient sent", states == Counter({RecipientState.SENT: n})),
            ("one message each, all handed to Twilio", messages == Counter({MessageStatus.SENDING: n})),
            ("one Twilio request per number", len(to) == n and max(to.values()) == 1),
        ],
    }


# ---------------------------------------------------------------------------------------------------
# 3. Status callbacks
# ---------------------------------------------------------------------------------------------------


def status_section(campaign: Any, n: int, sample: int = 0) -> dict[str, Any]:
    from urllib.parse import urlencode

    from django.conf import settings
    from django.db import connection
    from django.test import Client
    from twilio.request_validator import RequestValidator

    from campaigns.models import CampaignRecipient, RecipientState
    from contactcenter.models import Message, MessageStatus, SenderKind

    # The run started on a marketing inbox with no messages, and the planner still believes it: the
    # callback's lookup by (provider id, inbox) would walk the inbox's index. In a hospital the statistics
    # already know its campaigns' messages, and autovacuum re-analyzes a table that has grown this much.
    with connection.cursor() as cursor:
        cursor.execute("ANALYZE contactcenter_message, campaigns_campaignrecipient")
    validator = RequestValidator(TOKEN)
    client = Client()
    rows = list(
        Message.objects.filter(sender_kind=SenderKind.CAMPAIGN).order_by("pk").values_list("pk", "provider_message_id")
    )
    if sample:
        # Every n/sample-th message: the figure is per callback; the checks count the ones posted.
        rows = rows[:: max(1, len(rows) // sample)][:sample]
        n = len(rows)
    refused = 0
    started = time.perf_counter()
    for pk, sid in rows:
        params = {
            "SmsSid": sid,
            "SmsStatus": "delivered",
            "MessageStatus": "delivered",
            "To": "+8613800000000",
            "MessageSid": sid,
            "AccountSid": ACCOUNT_SID,
            "ApiVersion": "2010-04-01",
            "From": NUMBER,
        }
        path = f"{STATUS_PATH}?message={pk}"
        signature = validator.compute_signature(settings.PUBLIC_BASE_URL + path, params)
        response = client.post(
            path, urlencode(params), content_type="application/x-www-form-urlencoded", HTTP_X_TWILIO_SIGNATURE=signature
        )
        refused += response.status_code != 204
    elapsed = time.perf_counter() - started
    delivered = CampaignRecipient.objects.filter(campaign=campaign, state=RecipientState.DELIVERED).count()
    moved = Message.objects.filter(sender_kind=SenderKind.CAMPAIGN, status=MessageStatus.DELIVERED).count()
    return {
        "callbacks": len(rows),
        "elapsed": elapsed,
        "rate": len(rows) / elapsed if elapsed else float("nan"),
        "checks": [
            ("every callback answered 204", refused == 0),
            ("every message delivered", moved == n),
            ("every recipient delivered", delivered == n),
        ],
    }


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def print_checks(checks: list[tuple[str, bool]]) -> bool:
    for name, ok in checks:
        print(f"   check: {name}: {'ok' if ok else 'FAILED'}")
    return all(ok for _n, ok in checks)


def print_snapshot(r: dict[str, Any]) -> bool:
    print(f"\n1. Snapshot ({r['written']:,} recipients)")
    print(f"   launch_campaign: {r['rate']:,.0f} rows/s ({r['launch_s']:.2f} s)")
    a, b = r["raw_rates"]
    print(
        f"   raw bulk insert: {a:,.0f} rows/s before, {b:,.0f} after (mean {r['raw_rate']:,.0f}, spread {r['spread']:.0%})"
    )
    print(f"   ratio: {r['ratio']:.2f}  target ≥ {RATIO_TARGET}  {verdict(r['ratio'] >= RATIO_TARGET)}")
    return print_checks(r["checks"])


def print_send(r: dict[str, Any]) -> bool:
    print(f"\n2. Send pipeline ({r['messages']:,} messages timed, after a first batch of 200 counted for queries)")
    print(
        f"   {r['ms_per_message']:.2f} ms/message wall ({r['rate']:,.0f} messages/s), "
        f"{r['cpu_ms_per_message']:.2f} ms/message CPU in this process, "
        f"{r['pg_cpu_ms_per_message']:.2f} ms/message CPU in PostgreSQL"
    )
    print(f"   target ≤ {PER_MESSAGE_TARGET_MS} ms  {verdict(r['ms_per_message'] <= PER_MESSAGE_TARGET_MS)}")
    statements = ", ".join(f"{k} {v / 200:.1f}" for k, v in r["statements"].most_common())
    print(f"   SQL statements per message: {r['queries_per_message']:.1f} ({statements})")
    return print_checks(r["checks"])


def print_status(r: dict[str, Any]) -> bool:
    print(f"\n3. Status callbacks ({r['callbacks']:,}, signed, through the webhook view in-process)")
    print(f"   {r['rate']:,.0f} callbacks/s ({1000 * r['elapsed'] / max(1, r['callbacks']):.2f} ms each)")
    return print_checks(r["checks"])


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.campaign", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--recipients", type=int, default=100_000, help="patients in the segment (100,000)")
    parser.add_argument("--skip-send", action="store_true", help="only the snapshot")
    parser.add_argument("--skip-status", action="store_true", help="no status callbacks")
    parser.add_argument(
        "--status-sample", type=int, default=0, help="post callbacks for this many messages only (default: all)"
    )
    parser.add_argument("--profile", default="", help="write a cProfile of the send pipeline to this file")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stopped_by: list[int] = []

    def on_signal(signum: int, _frame: object) -> None:
        stopped_by.append(signum)
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, on_signal)
    signal.signal(signal.SIGTERM, on_signal)
    from bench.procs import fast_stop_postgres
    from tests.services import PostgresServer, RedisServer

    work = Path(tempfile.mkdtemp(prefix="bench-campaign-"))
    pg: PostgresServer | None = None
    redis: RedisServer | None = None
    started = time.monotonic()
    try:
        print("starting PostgreSQL and Redis on loopback …", flush=True)
        pg = PostgresServer()
        database_url = pg.start()
        redis = RedisServer()
        redis_url = redis.start()
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url,
                "REDIS_URL": redis_url,
                "SECRET_KEY": secrets.token_urlsafe(40),
                "TASK_RUNNER": "immediate",
                "DATA_DIR": str(work),
                "DEBUG": "false",
                "SIMULATOR_ENABLED": "false",
                "TWILIO_TRANSPORT": "twilio",
                "TWILIO_AUTH_TOKEN": TOKEN,
                "PUBLIC_BASE_URL": "http://testserver",
                "ALLOWED_HOSTS": "testserver,127.0.0.1,localhost",
                "HOSPITAL_TIME_ZONE": "Asia/Shanghai",
            }
        )
        import django

        django.setup()
        import logging

        # A log line per message would time the logging, not the work.
        for name in ("callbacks", "contactcenter", "campaigns", "channels_adapters", "celery", "twilio"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from django.core.management import call_command
        from django.db import connection

        print("migrating …", flush=True)
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
            version = row[0] if row else "?"
        print(f"loading {args.recipients:,} patients and their message history …", flush=True)
        world = load_world(args.recipients)
        print(f"Campaigns — PostgreSQL {version} and Redis on loopback, {os.cpu_count()} CPUs, one process")
        snap = snapshot_section(world, args.recipients)
        ok = print_snapshot(snap)
        if not args.skip_send:
            print(f"\nsending {args.recipients:,} messages …", flush=True)
            postmaster = int((pg.data / "postmaster.pid").read_text().split()[0])
            ok = print_send(send_section(snap["campaign"], args.recipients, args.profile, postmaster)) and ok
            if not args.skip_status:
                print(f"\nposting {args.status_sample or args.recipients:,} status callbacks …", flush=True)
                ok = print_status(status_section(snap["campaign"], args.recipients, args.status_sample)) and ok
        print(f"\noverall: {'checks ok' if ok else 'a check FAILED'} (total {time.monotonic() - started:.0f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, Exception):
        if not stopped_by:
            raise
        print(f"\n{signal.Signals(stopped_by[0]).name}: stopping PostgreSQL and Redis …", file=sys.stderr)
        return 128 + stopped_by[0]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        if "django.db" in sys.modules:
            from django.db import connections

            try:
                connections.close_all()
            except Exception as exc:
                print(f"(closing database connections: {exc})", file=sys.stderr)
        if redis is not None:
            redis.stop()
        if pg is not None:
            try:
                fast_stop_postgres(pg.data)
            finally:
                pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

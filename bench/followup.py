"""Post-discharge follow-up at hospital scale: planning, a week of dispatching, and HL7 intake.

    .venv/bin/python -m bench.followup                          # 100k discharges, a week at 1,000/day
    .venv/bin/python -m bench.followup --discharges 2000 --per-day 200 --hl7 200     # a quick look

Starts its own PostgreSQL on loopback (tests/services.py), migrates, installs the default plans and
calendar (callbacks.defaults), and stops and removes everything at the end, Ctrl-C included.

1. Planning: N discharges (patients, phones, visits bulk-loaded first, untimed) become callback tasks
   through callbacks.plans.schedule_follow_up_bulk — plan matching, business-day arithmetic, the
   mobile/opt-out checks, idempotency reads — as rows/s and as a ratio to a raw bulk_create of the same
   number of CallbackTask rows in the same run (raw before and after; their spread says how steady the
   machine was). Target ratio ≥ 0.3.
2. A time-compressed week: discharges at --per-day a day are planned; the tasks due in one week are
   dispatched by callbacks.dispatcher.dispatch_due_tasks on a simulated clock that ticks every --tick
   simulated seconds (the periodic job's interval). Idle time is skipped (a tick with nothing due does
   nothing), busy time is real: a run that takes longer than a tick delays the next one. A simulated nurse
   completes half the calls that open and fails a third of them (retries). Lateness = the simulated moment
   a row's batch committed − the row's next_action_at. Target p99 < 2 s; RSS at start, middle and end
   should stay flat.
3. HL7 ADT^A03 over MLLP (bench.followup_hl7.run_hl7_section), when that module is present.
"""

from __future__ import annotations

import argparse
import datetime as dt
import gc
import io
import math
import os
import random
import secrets
import shutil
import signal
import statistics
import sys
import tempfile
import time
import zoneinfo
from collections import Counter
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from tests.services import PostgresServer

RATIO_TARGET = 0.3
LATENESS_TARGET_S = 2.0
SHANGHAI = zoneinfo.ZoneInfo("Asia/Shanghai")
# A Monday with no holiday in the week after it (2026 calendar).
WEEK_START = dt.datetime(2026, 11, 30, tzinfo=SHANGHAI)

DEPARTMENTS = [
    ("cardiology", "Cardiology", "心内科", 0.30),
    ("orthopedics", "Orthopedics", "骨科", 0.20),
    ("general-surgery", "General surgery", "普外科", 0.20),
    ("obstetrics", "Obstetrics", "产科", 0.15),
    ("respiratory", "Respiratory medicine", "呼吸内科", 0.15),
]
DISPOSITIONS = {
    "home": 0.88,
    "home_care": 0.04,
    "transferred": 0.03,
    "against_advice": 0.02,
    "expired": 0.02,
    "other": 0.01,
}
CODES = ["I21.4", "I25.10", "I50.9", "S72.001A", "K35.80", "O80", "J18.9", "E11.9", "N39.0", "C34.90"]


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def percentile(values: list[float], p: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(p / 100 * len(ordered)) - 1))]


def truncate_tasks() -> None:
    from django.db import connection

    with connection.cursor() as cursor:
        cursor.execute("TRUNCATE callbacks_callbacktask RESTART IDENTITY CASCADE")


# ---------------------------------------------------------------------------------------------------
# Data
# ---------------------------------------------------------------------------------------------------


@dataclass
class Loaded:
    count: int
    expected_tasks: int
    first_id: int
    last_id: int


def load_discharges(
    rng: random.Random,
    n: int,
    *,
    first: dt.datetime,
    days: float,
    tag: str,
    phone_digit: int,
    plan_steps: dict[str, int],
) -> Loaded:
    """n discharges spread over `days` from `first`: patients (most with a mobile, some opted out), visits."""
    from django.db import transaction

    from callbacks.models import Discharge, IntakeSource
    from contactcenter.models import (
        Consent,
        ConsentPurpose,
        ConsentStatus,
        IdentityKind,
        Patient,
        PatientIdentity,
        Team,
        Visit,
        VisitKind,
    )

    teams = {t.code: t for t in Team.objects.all()}
    codes = [code for code, *_ in DEPARTMENTS]
    weights = [w for *_, w in DEPARTMENTS]
    dispositions, disposition_weights = list(DISPOSITIONS), list(DISPOSITIONS.values())
    expected = 0
    ids: list[int] = []
    chunk = 5000
    for start in range(0, n, chunk):
        size = min(chunk, n - start)
        with transaction.atomic():
            patients = Patient.objects.bulk_create([Patient(name=f"Patient {tag}{start + i}") for i in range(size)])
            identities = []
            consents = []
            for i, patient in enumerate(patients):
                k = start + i
                identities.append(PatientIdentity(patient=patient, kind=IdentityKind.MRN, value=f"{tag}M{k:08d}"))
                roll = rng.random()
                if roll < 0.90:
                    identities.append(
                        PatientIdentity(patient=patient, kind=IdentityKind.PHONE, value=f"+86139{phone_digit}{k:07d}")
                    )
                elif roll < 0.95:
                    identities.append(
                        PatientIdentity(patient=patient, kind=IdentityKind.PHONE, value=f"+8610{phone_digit}{k:07d}")
                    )
                if rng.random() < 0.03:
                    consents.append(
                        Consent(patient=patient, purpose=ConsentPurpose.MARKETING, status=ConsentStatus.OPTED_OUT)
                    )
            PatientIdentity.objects.bulk_create(identities, batch_size=2000)
            Consent.objects.bulk_create(consents)
            visits = []
            discharges = []
            for i, patient in enumerate(patients):
                k = start + i
                team = teams[rng.choices(codes, weights)[0]]
                at = first + dt.timedelta(seconds=rng.random() * days * 86400)
                number = f"{tag}V{k:09d}"
                visits.append(
                    Visit(
                        patient=patient,
                        visit_number=number,
                        kind=VisitKind.INPATIENT,
                        department=team,
                        admitted_at=at - dt.timedelta(days=4),
                        discharged_at=at,
                    )
                )
                discharges.append(
                    Discharge(
                        patient=patient,
                        visit_number=number,
                        department=team,
                        ward="5A",
                        disposition=rng.choices(dispositions, disposition_weights)[0],
                        discharged_at=at,
                        diagnoses=[{"code": rng.choice(CODES), "system": "I10"}],
                        source=IntakeSource.DEMO,
                    )
                )
                expected += plan_steps.get(team.code, plan_steps[""])
            Visit.objects.bulk_create(visits, batch_size=2000)
            for discharge, visit in zip(discharges, visits, strict=True):
                discharge.visit = visit
            created = Discharge.objects.bulk_create(discharges, batch_size=2000)
            ids.extend(d.pk for d in created)
    return Loaded(count=n, expected_tasks=expected, first_id=min(ids), last_id=max(ids))


# ---------------------------------------------------------------------------------------------------
# 1. Planning
# ---------------------------------------------------------------------------------------------------


def raw_insert(loaded: Loaded) -> tuple[int, float]:
    """The baseline: the same number of CallbackTask rows, built and bulk_created with nothing decided."""
    from django.db import transaction

    from callbacks.models import CallbackTask, Discharge, PlanStep, TaskKind

    steps: dict[int | None, list[PlanStep]] = {}
    for step in PlanStep.objects.select_related("plan"):
        steps.setdefault(step.plan.department_id, []).append(step)
    due = WEEK_START
    deadline = WEEK_START + dt.timedelta(days=2)
    rows = 0
    started = time.perf_counter()
    batch: list[CallbackTask] = []
    discharges = (
        Discharge.objects.filter(pk__range=(loaded.first_id, loaded.last_id))
        .only("pk", "patient_id", "department_id")
        .iterator(chunk_size=2000)
    )
    for d in discharges:
        for step in steps.get(d.department_id) or steps[None]:
            batch.append(
                CallbackTask(
                    discharge_id=d.pk,
                    patient_id=d.patient_id,
                    department_id=d.department_id,
                    step=step,
                    kind=TaskKind.CALL,
                    due_at=due,
                    deadline_at=deadline,
                    next_action_at=due,
                )
            )
        if len(batch) >= 5000:
            with transaction.atomic():
                CallbackTask.objects.bulk_create(batch, batch_size=1000)
            rows += len(batch)
            batch = []
    if batch:
        with transaction.atomic():
            CallbackTask.objects.bulk_create(batch, batch_size=1000)
        rows += len(batch)
    return rows, time.perf_counter() - started


def planned_insert(loaded: Loaded) -> tuple[int, float]:
    from callbacks.models import Discharge
    from callbacks.plans import schedule_follow_up_bulk

    started = time.perf_counter()
    discharges = Discharge.objects.filter(pk__range=(loaded.first_id, loaded.last_id)).iterator(chunk_size=2000)
    rows = schedule_follow_up_bulk(discharges)
    return rows, time.perf_counter() - started


def planning_section(loaded: Loaded) -> dict[str, Any]:
    from callbacks.models import CallbackTask, Discharge, TaskKind, TaskStatus
    from callbacks.plans import schedule_follow_up_bulk

    truncate_tasks()
    raw_rows_1, raw_s_1 = raw_insert(loaded)
    truncate_tasks()
    rows, seconds = planned_insert(loaded)
    kinds = Counter(CallbackTask.objects.values_list("kind", "status").iterator())
    again = schedule_follow_up_bulk(
        Discharge.objects.filter(pk__range=(loaded.first_id, min(loaded.last_id, loaded.first_id + 999)))
    )
    truncate_tasks()
    raw_rows_2, raw_s_2 = raw_insert(loaded)
    truncate_tasks()
    raw_rate = (raw_rows_1 / raw_s_1 + raw_rows_2 / raw_s_2) / 2
    rate = rows / seconds
    checks = {
        "one task per plan step per discharge": rows == loaded.expected_tasks,
        "raw inserts wrote the same number of rows": raw_rows_1 == raw_rows_2 == rows,
        "planning again creates nothing": again == 0,
        "SMS surveys turned into calls for some (no mobile / opted out)": kinds[(TaskKind.CALL, TaskStatus.SCHEDULED)]
        > 0,
        "exclusions applied (expired, transferred)": kinds[(TaskKind.SMS_SURVEY, TaskStatus.EXCLUDED)] > 0,
    }
    return {
        "discharges": loaded.count,
        "rows": rows,
        "seconds": seconds,
        "rate": rate,
        "raw_rate": raw_rate,
        "raw_spread": abs(raw_rows_1 / raw_s_1 - raw_rows_2 / raw_s_2) / raw_rate,
        "ratio": rate / raw_rate,
        "kinds": kinds,
        "checks": checks,
    }


# ---------------------------------------------------------------------------------------------------
# 2. A week of dispatching
# ---------------------------------------------------------------------------------------------------


class SurveyStub:
    """start_survey's stand-in: the surveys package sends real SMS and has its own tests and benchmark."""

    def __init__(self) -> None:
        self.calls: Counter[int] = Counter()

    def __call__(self, task: Any, *, now: dt.datetime | None = None) -> object:
        self.calls[task.pk] += 1
        return task


def nurse_works(rng: random.Random, now: dt.datetime, nurse_id: int) -> tuple[int, int]:
    """After each run: half of the calls that just opened are completed, a third get a no-answer."""
    from django.db import transaction

    from callbacks import plans
    from callbacks.models import CallAttempt, CallbackTask, CallOutcome, TaskKind, TaskStatus

    opened = list(
        CallbackTask.objects.filter(kind=TaskKind.CALL, status=TaskStatus.OPEN, opened_at=now, attempt_count=0)
    )
    completed, failed = [], []
    for task in opened:
        roll = rng.random()
        if roll < 0.5:
            completed.append(task.pk)
        elif roll < 0.83:
            failed.append(task)
    with transaction.atomic():
        CallbackTask.objects.filter(pk__in=completed).update(
            status=TaskStatus.COMPLETED, completed_at=now, next_action_at=None, outcome=CallOutcome.REACHED
        )
        CallAttempt.objects.bulk_create(
            CallAttempt(task=task, nurse_id=nurse_id, outcome=CallOutcome.NO_ANSWER, attempted_at=now)
            for task in failed
        )
        # As the worklist's record_attempt leaves a no-answer: open, unassigned, hidden until retry_at.
        for task in failed:
            task.attempt_count = 1
            task.retry_at = plans.schedule_retry(task, now)
            task.next_action_at = plans.retry_next_action(task, task.retry_at) if task.retry_at else None
        CallbackTask.objects.bulk_update(failed, ["attempt_count", "retry_at", "next_action_at"])
    return len(completed), len(failed)


def week_section(rng: random.Random, *, per_day: int, tick: float, plan_steps: dict[str, int]) -> dict[str, Any]:
    from django.contrib.auth.models import User
    from django.db.models import Min

    from callbacks import dispatcher
    from callbacks.models import CallbackTask, TaskStatus
    from callbacks.surveys import flow as survey_flow

    truncate_tasks()
    # Discharges from 31 days before the week (their day-30 calls) to its end, planned ahead of time.
    days = 38
    loaded = load_discharges(
        rng,
        per_day * days,
        first=WEEK_START - dt.timedelta(days=31),
        days=days,
        tag="W",
        phone_digit=2,
        plan_steps=plan_steps,
    )
    rows, _seconds = planned_insert(loaded)
    # Earlier tasks would have been handled before the week: start with a clean desk.
    CallbackTask.objects.filter(due_at__lt=WEEK_START).delete()
    week_end = WEEK_START + dt.timedelta(days=7)
    in_week = CallbackTask.objects.filter(due_at__lt=week_end, status=TaskStatus.SCHEDULED).count()
    nurse = User.objects.create(username="bench-nurse")
    stub = SurveyStub()
    real_start_survey = survey_flow.start_survey
    setattr(survey_flow, "start_survey", stub)  # noqa: B010 - swapping a module attribute for the run

    lateness: list[float] = []
    runs = 0
    busiest = (0, 0.0, WEEK_START)
    worst = (0.0, 0.0, 0.0, 0, WEEK_START)
    rss = {"start": rss_mb()}
    nurse_done = [0, 0]
    sim = WEEK_START
    tick_delta = dt.timedelta(seconds=tick)
    batch = dispatcher.BATCH_SIZE
    try:
        while True:
            pending = CallbackTask.objects.aggregate(m=Min("next_action_at"))["m"]
            if pending is None or pending >= week_end:
                break
            if pending > sim:
                # Skip idle ticks: jump to the first tick at or after the next due row.
                sim = WEEK_START + tick_delta * math.ceil((pending - WEEK_START) / tick_delta)
            due_times = [
                due
                for due in CallbackTask.objects.filter(next_action_at__lte=sim)
                .order_by("next_action_at", "id")
                .values_list("next_action_at", flat=True)
                if due is not None
            ]
            started = time.perf_counter()
            done = 0
            while True:
                handled = dispatcher.dispatch_due_tasks(now=sim, limit=batch)
                elapsed = time.perf_counter() - started
                lateness.extend((sim - due).total_seconds() + elapsed for due in due_times[done : done + handled])
                done += handled
                if handled < batch:
                    break
            duration = time.perf_counter() - started
            if due_times:
                waited = (sim - due_times[0]).total_seconds()
                if waited + duration > worst[0]:
                    worst = (waited + duration, waited, duration, done, sim)
            runs += 1
            if done > busiest[0]:
                busiest = (done, duration, sim)
            completed, failed = nurse_works(rng, sim, nurse.pk)
            nurse_done[0] += completed
            nurse_done[1] += failed
            if "middle" not in rss and sim >= WEEK_START + dt.timedelta(days=3, hours=12):
                gc.collect()
                rss["middle"] = rss_mb()
            # The next run starts at the next tick, or later if this one overran it.
            sim = sim + tick_delta * max(1, math.ceil(duration / tick))
        gc.collect()
        rss["end"] = rss_mb()
    finally:
        setattr(survey_flow, "start_survey", real_start_survey)  # noqa: B010
    rss.setdefault("middle", float("nan"))
    statuses = Counter(CallbackTask.objects.values_list("kind", "status").iterator())
    escalated = CallbackTask.objects.filter(escalated_at__isnull=False).count()
    checks = {
        "every survey started exactly once": set(stub.calls.values()) <= {1},
        "nothing due inside the week left behind": not CallbackTask.objects.filter(
            next_action_at__lt=week_end
        ).exists(),
    }
    return {
        "discharges": loaded.count,
        "tasks": rows,
        "in_week": in_week,
        "actions": len(lateness),
        "runs": runs,
        "p50": percentile(lateness, 50),
        "p99": percentile(lateness, 99),
        "max": max(lateness) if lateness else float("nan"),
        "mean": statistics.fmean(lateness) if lateness else float("nan"),
        "busiest": busiest,
        "worst": worst,
        "rss": rss,
        "surveys": sum(stub.calls.values()),
        "nurse": nurse_done,
        "escalated": escalated,
        "statuses": statuses,
        "checks": checks,
    }


# ---------------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def print_planning(result: dict[str, Any]) -> bool:
    print(f"\n1. planning: {result['discharges']:,} discharges → {result['rows']:,} callback tasks")
    print(
        f"  raw bulk_create             {result['raw_rate']:10,.0f} rows/s  (mean of before and after, spread "
        f"{100 * result['raw_spread']:.0f} %)"
    )
    print(
        f"  schedule_follow_up_bulk     {result['rate']:10,.0f} rows/s  ({result['seconds']:.1f} s)   "
        f"ratio {result['ratio']:.2f}   target ≥ {RATIO_TARGET}: {verdict(result['ratio'] >= RATIO_TARGET)}"
    )
    print("  tasks by kind/status: " + ", ".join(f"{k}/{s} {n:,}" for (k, s), n in sorted(result["kinds"].items())))
    for name, passed in result["checks"].items():
        print(f"  check {'ok  ' if passed else 'FAIL'} {name}")
    return all(result["checks"].values())


def print_week(result: dict[str, Any], tick: float) -> bool:
    busiest_rows, busiest_s, busiest_at = result["busiest"]
    rss = result["rss"]
    print(
        f"\n2. a week of dispatching: {result['discharges']:,} discharges planned → {result['tasks']:,} tasks, "
        f"{result['in_week']:,} due in the week; tick {tick:g} simulated s"
    )
    print(
        f"  {result['actions']:,} dispatcher actions in {result['runs']:,} runs; busiest run {busiest_rows:,} rows "
        f"in {busiest_s:.2f} s ({busiest_at.astimezone(SHANGHAI):%a %H:%M})"
    )
    _late, waited, took, rows, when = result["worst"]
    print(
        f"  latest run: {rows:,} rows at {when.astimezone(SHANGHAI):%a %H:%M:%S}, its oldest row waited {waited:.2f} s "
        f"for the tick and the run took {took:.2f} s"
    )
    print(
        f"  lateness p50 {result['p50']:.2f} s   p99 {result['p99']:.2f} s   max {result['max']:.2f} s   "
        f"target p99 < {LATENESS_TARGET_S:g} s: {verdict(result['p99'] < LATENESS_TARGET_S)}"
    )
    print(
        f"  RSS start {rss['start']:.0f} MB   middle {rss['middle']:.0f} MB   end {rss['end']:.0f} MB   "
        f"(growth {rss['end'] - rss['start']:+.0f} MB)"
    )
    completed, failed = result["nurse"]
    print(
        f"  surveys started {result['surveys']:,}; simulated nurse completed {completed:,} calls and failed "
        f"{failed:,} (retries); escalated {result['escalated']:,}"
    )
    print("  tasks by kind/status: " + ", ".join(f"{k}/{s} {n:,}" for (k, s), n in sorted(result["statuses"].items())))
    for name, passed in result["checks"].items():
        print(f"  check {'ok  ' if passed else 'FAIL'} {name}")
    return all(result["checks"].values())


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.followup", description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--discharges", type=int, default=100_000, help="discharges to plan in section 1 (100,000)")
    parser.add_argument("--per-day", type=int, default=1000, help="discharges a day in the simulated week (1,000)")
    parser.add_argument("--tick", type=float, default=1.0, help="simulated seconds between dispatcher runs (1)")
    parser.add_argument("--hl7", type=int, default=2000, help="HL7 messages for section 3 (2,000; 0 skips it)")
    parser.add_argument("--seed", type=int, default=20261123)
    parser.add_argument("--skip-planning", action="store_true")
    parser.add_argument("--skip-week", action="store_true")
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
    from tests.services import PostgresServer

    work = Path(tempfile.mkdtemp(prefix="bench-followup-"))
    pg: PostgresServer | None = None
    started = time.monotonic()
    try:
        pg = PostgresServer()
        print("starting PostgreSQL on loopback …", flush=True)
        database_url = pg.start()
        os.environ.update(
            {
                "DJANGO_SETTINGS_MODULE": "config.settings",
                "DATABASE_URL": database_url,
                "REDIS_URL": "",
                "SECRET_KEY": secrets.token_urlsafe(40),
                "TASK_RUNNER": "immediate",
                "DATA_DIR": str(work),
                "DEBUG": "false",
                "SIMULATOR_ENABLED": "false",
                "HOSPITAL_TIME_ZONE": "Asia/Shanghai",
            }
        )
        import django

        django.setup()
        import logging

        # A log line per row or per task would time the logging, not the work.
        for name in ("callbacks", "contactcenter", "campaigns", "celery"):
            logging.getLogger(name).setLevel(logging.ERROR)
        from django.core.management import call_command
        from django.db import connection

        print("migrating …", flush=True)
        call_command("migrate", verbosity=0, stdout=io.StringIO())
        from callbacks.defaults import install_default_plans
        from callbacks.models import FollowUpPlan
        from contactcenter.models import Team

        for code, name, zh, _weight in DEPARTMENTS:
            Team.objects.get_or_create(code=code, defaults={"name": name, "name_zh": zh})
        install_default_plans()
        plan_steps = {
            (plan.department.code if plan.department else ""): plan.steps.count()
            for plan in FollowUpPlan.objects.select_related("department")
        }
        rng = random.Random(args.seed)
        with connection.cursor() as cursor:
            cursor.execute("SHOW server_version")
            row = cursor.fetchone()
            version = row[0] if row else "?"
        print(f"Follow-up — PostgreSQL {version} on loopback, {os.cpu_count()} CPUs, one Django connection in-process")
        ok = True
        if not args.skip_planning:
            print(f"loading {args.discharges:,} discharges …", flush=True)
            loaded = load_discharges(
                rng,
                args.discharges,
                first=WEEK_START - dt.timedelta(days=30),
                days=30,
                tag="P",
                phone_digit=1,
                plan_steps=plan_steps,
            )
            with connection.cursor() as cursor:
                cursor.execute("VACUUM ANALYZE")
            print("planning …", flush=True)
            ok = print_planning(planning_section(loaded)) and ok
        if not args.skip_week:
            print(f"\nloading and planning {args.per_day:,} discharges a day for the week …", flush=True)
            week = week_section(rng, per_day=args.per_day, tick=args.tick, plan_steps=plan_steps)
            ok = print_week(week, args.tick) and ok
        if args.hl7:
            try:
                from bench import followup_hl7
            except ImportError:
                print("\n3. HL7 over MLLP: bench/followup_hl7.py is not there; skipped")
            else:
                print(f"\n3. HL7 over MLLP ({args.hl7:,} messages) …", flush=True)
                result = followup_hl7.run_hl7_section(args.hl7)
                followup_hl7.print_section(result)
                ok = bool(result.get("ok", True)) and ok
        print(f"\noverall: {'checks ok' if ok else 'a check FAILED'} (total {time.monotonic() - started:.0f} s)")
        return 0 if ok else 1
    except (KeyboardInterrupt, Exception):
        if not stopped_by:
            raise
        print(f"\n{signal.Signals(stopped_by[0]).name}: stopping PostgreSQL and removing {work} …", file=sys.stderr)
        return 128 + stopped_by[0]
    finally:
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        if "django.db" in sys.modules:
            from django.db import connections

            try:
                connections.close_all()
            except Exception as exc:
                print(f"(closing database connections: {exc})", file=sys.stderr)
        if pg is not None:
            try:
                fast_stop_postgres(pg.data)
            finally:
                pg.stop()
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

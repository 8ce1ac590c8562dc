"""python -m bench.chaos: start the layout, run the faults, print the table (and write it as JSON if asked).

Exit status 0 when every invariant held after every fault, 1 when one did not, 130 on Ctrl-C, 143 on SIGTERM.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import signal
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path

from bench.chaos.layout import ROOT, Layout, snapshot
from bench.chaos.run import FAULTS, Profile, run_all

QUICK = Profile(before=3.0, after=3.0, settle=90.0, final=15.0)
_STARTED = time.monotonic()


def progress(text: str) -> None:
    print(f"[{time.monotonic() - _STARTED:6.1f} s] {text}", flush=True)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m bench.chaos", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the test's shorter load (3 s before and after)")
    parser.add_argument(
        "--faults",
        default=",".join(FAULTS),
        help=f"comma-separated, in order (default all: {','.join(FAULTS)})",
    )
    parser.add_argument("--before", type=float, help="seconds of steady load before each fault (10; quick 3)")
    parser.add_argument("--after", type=float, help="seconds of load after the system settled (10; quick 3)")
    parser.add_argument("--settle", type=float, help="longest wait for the system to settle, s (100; quick 90)")
    parser.add_argument("--inbound-rate", type=float, help="signed inbound webhooks per second (5)")
    parser.add_argument("--reply-rate", type=float, help="agent replies per second (1)")
    parser.add_argument("--agents", type=int, default=8, help="agent sockets (8)")
    parser.add_argument("--supervisors", type=int, default=2, help="supervisor sockets (2)")
    parser.add_argument(
        "--db-pool",
        type=int,
        default=10,
        help="DB_POOL_MAX_SIZE of every server process, as docs/production.md sets it (10; 0: no pool)",
    )
    parser.add_argument(
        "--snapshot",
        action="store_true",
        help="run the servers from a copy of the code taken at the start (while others edit the working tree)",
    )
    parser.add_argument("--json", type=Path, help="also write the results here")
    parser.add_argument("--keep-logs", action="store_true", help="keep the work directory with every log")
    args = parser.parse_args(argv)
    args.faults = [f.strip() for f in args.faults.split(",") if f.strip()]
    unknown = [f for f in args.faults if f not in FAULTS]
    if unknown or not args.faults:
        parser.error(f"unknown faults {unknown}; choose from {', '.join(FAULTS)}")
    profile = QUICK if args.quick else Profile()
    given = {
        "before": args.before,
        "after": args.after,
        "settle": args.settle,
        "inbound_rate": args.inbound_rate,
        "reply_rate": args.reply_rate,
    }
    args.profile = replace(profile, **{k: v for k, v in given.items() if v is not None})
    return args


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    from bench.chaos.report import LEGEND, details, summary, table

    work = Path(tempfile.mkdtemp(prefix="bench-chaos-"))
    layout = Layout(work, db_pool=args.db_pool, src=snapshot(work) if args.snapshot else ROOT)
    try:
        progress("starting PostgreSQL and Redis on loopback, migrating …")
        env = layout.start_services()
        # This process's own database work (the world, the checks) on plain connections, not a pool.
        os.environ.update(env | {"DB_POOL_MAX_SIZE": "0"})
        import django

        django.setup()
        logging.getLogger().setLevel(logging.WARNING)
        from django.db import connections

        from bench.chaos.world import create_world

        progress("creating the team, inbox, staff and conversations …")
        world = create_world(
            base=layout.base,
            port=layout.proxy_port,
            token=layout.token,
            agents=args.agents,
            supervisors=args.supervisors,
            senders=30,
        )
        connections.close_all()
        progress(
            f"starting {len(layout.daphne_ports)} Daphnes, the proxy on :{layout.proxy_port}, a Celery worker "
            "and beat …"
        )
        layout.start_processes()
        reports = asyncio.run(run_all(layout, world, args.profile, args.faults, progress))
        print()
        print(table(reports))
        print()
        print(LEGEND)
        print()
        for report in reports:
            print(details(report))
            print()
        result = summary(reports) | {"seconds": round(time.monotonic() - _STARTED, 1), "work": str(work)}
        if args.json is not None:
            args.json.write_text(json.dumps(result, indent=2))
        print(f"(total {result['seconds']:.0f} s; logs {work if args.keep_logs else 'removed'})")
        return 0 if result["ok"] else 1
    except KeyboardInterrupt:
        print("interrupted; stopping everything this run started …", file=sys.stderr, flush=True)
        return 130
    finally:
        if "django.db" in sys.modules:
            from django.db import connections

            connections.close_all()
        layout.stop()
        if not args.keep_logs:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())

from __future__ import annotations

import os
from typing import Any

from celery import Celery, bootsteps

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("hospital")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


class WorkerHeartbeat(bootsteps.StartStopStep):
    """Each worker says it is alive in Redis every few seconds, so /readyz can tell a dead worker pool from
    a quiet one (Celery's own heartbeats need events turned on and a listener to collect them)."""

    requires = {"celery.worker.components:Timer"}

    def __init__(self, worker: Any, **kwargs: Any) -> None:
        super().__init__(worker, **kwargs)
        self.tref: Any = None

    def start(self, worker: Any) -> None:
        from contactcenter.health import HEARTBEAT_SECONDS, write_worker_heartbeat

        write_worker_heartbeat(worker.hostname)
        self.tref = worker.timer.call_repeatedly(HEARTBEAT_SECONDS, write_worker_heartbeat, (worker.hostname,))

    def stop(self, worker: Any) -> None:
        from contactcenter.health import clear_worker_heartbeat

        if self.tref is not None:
            self.tref.cancel()
        clear_worker_heartbeat(worker.hostname)


app.steps["worker"].add(WorkerHeartbeat)

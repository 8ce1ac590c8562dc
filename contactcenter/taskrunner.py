"""Where background work runs, chosen by settings.TASK_RUNNER.

- "celery": real Celery workers on Redis (production, CI integration tests).
- "inprocess": the embedded default. Tasks run on a small thread pool inside the server process.
  They are scheduled through the server's event loop so that code inside them which publishes to the
  in-memory channel layer runs on the loop that layer's queues belong to.
- "immediate": run on commit in the caller (tests, management commands, scripts).

Callers always enqueue after commit (transaction.on_commit) and pass ids, never objects.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from asgiref.sync import sync_to_async
from django.conf import settings
from django.db import close_old_connections

logger = logging.getLogger(__name__)

_server_loop: asyncio.AbstractEventLoop | None = None
_executor = ThreadPoolExecutor(max_workers=4, thread_name_prefix="inprocess-task")


@functools.cache
def _task(name: str) -> Any:
    from config.celery import app

    # Importing the task modules makes Celery's Django fixup run every system check (about 12 ms):
    # once per task name per process, not on every enqueue.
    app.loader.import_default_modules()
    return app.tasks[name]


def enqueue(name: str, **kwargs: Any) -> bool:
    """Hand a task to the runner; False when the broker could not take it.

    Callers enqueue after their transaction committed, so the work itself is saved either way: a broker
    that is down must not turn a saved message into a 500 (and an agent retyping it into a second text).
    Every task here has a sweep that finds rows whose task was lost (redeliver_stalled for messages, run
    leases for campaigns), so a refused publish is logged and left to it.
    """
    runner = settings.TASK_RUNNER
    if runner == "celery":
        try:
            _task(name).apply_async(kwargs=kwargs)
        except Exception as exc:
            logger.error(
                "task %s not enqueued (%s): the dispatcher's sweep will hand it over", name, type(exc).__name__
            )
            return False
        return True
    if runner == "inprocess" and _server_loop is not None and _server_loop.is_running():
        asyncio.run_coroutine_threadsafe(_run_async(name, kwargs), _server_loop)
        return True
    _run_sync(name, kwargs)
    return True


async def _run_async(name: str, kwargs: dict[str, Any]) -> None:
    await sync_to_async(_run_sync, thread_sensitive=False, executor=_executor)(name, kwargs)


def _run_sync(name: str, kwargs: dict[str, Any]) -> None:
    # apply() runs the task locally with Celery's own retry handling, so retries behave as on a worker.
    try:
        _task(name).apply(kwargs=kwargs, throw=False)
    except Exception:
        logger.exception("in-process task %s failed", name)
    finally:
        if settings.TASK_RUNNER == "inprocess":
            close_old_connections()


def attach_server_loop(loop: asyncio.AbstractEventLoop) -> None:
    global _server_loop
    _server_loop = loop


def start_dispatcher_loop(job: Callable[[], Any], interval: float) -> threading.Thread:
    """The embedded stand-in for Celery beat: run the periodic dispatcher every `interval` seconds."""

    def loop() -> None:
        while True:
            started = time.monotonic()
            try:
                if _server_loop is not None and _server_loop.is_running():
                    asyncio.run_coroutine_threadsafe(
                        sync_to_async(job, thread_sensitive=False)(), _server_loop
                    ).result()
                else:
                    job()
            except Exception:
                logger.exception("dispatcher run failed")
            finally:
                close_old_connections()
            time.sleep(max(0.0, interval - (time.monotonic() - started)))

    thread = threading.Thread(target=loop, name="dispatcher", daemon=True)
    thread.start()
    return thread

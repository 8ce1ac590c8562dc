"""The widgets' way from the event loop to the database and the cache: a thread hop, on threads of their own.

Each hop is paid for: a hand-off to a thread and back, Django's check of stale connections before and after, and a
connection from the pool. The widget socket (consumer.py) and the process's poller (poller.py) therefore make one
hop per thing they do, and none for what needs neither database nor cache.

The threads are the widgets' own, not the process's one thread for sync work that channels' database_sync_to_async
uses by default, on which the agents' sockets and their event hub queue: a crowd of visitors typing never delays an
agent's screen, and one visitor's message waits for no other visitor's. Ordering needs no single thread: a socket
handles its frames one at a time, and event ids are handed out in commit order by the database.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, ParamSpec, TypeVar

from asgiref.sync import SyncToAsync, sync_to_async
from django.db import close_old_connections

P = ParamSpec("P")
R = TypeVar("R")

# Threads per server process. Each holds a pooled connection only while it works (DB_POOL_MAX_SIZE is 10 per
# process in production), so the rest of the pool stays for HTTP. Four keep PostgreSQL busy while Python works on
# another message (fewer fell behind at 40 messages a second; more only add contention for the GIL).
THREADS = 4

executor = ThreadPoolExecutor(max_workers=THREADS, thread_name_prefix="webchat")


class _DatabaseHop(SyncToAsync[P, R]):
    """channels' database_sync_to_async on the widgets' threads: stale connections are closed before and after
    the work, so a pooled connection goes back to the pool as soon as the hop ends.

    Our own rather than channels' class because channels' test communicator silences channels.db's
    close_old_connections (for the test thread's transaction); these threads are never the test's, and must not
    keep their connections past a test."""

    def thread_handler(self, loop: Any, *args: Any, **kwargs: Any) -> Any:
        close_old_connections()
        try:
            return super().thread_handler(loop, *args, **kwargs)
        finally:
            close_old_connections()


def db_hop(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run `func` on the widgets' threads, with Django's connection handling around it."""
    return _DatabaseHop(func, thread_sensitive=False, executor=executor)


def cache_hop(func: Callable[P, R]) -> Callable[P, Awaitable[R]]:
    """Run `func`, which touches the cache but never the database, on the widgets' threads."""
    return sync_to_async(func, thread_sensitive=False, executor=executor)

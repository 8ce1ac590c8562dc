"""Event ids become visible in commit order, so "everything after id N" is a complete answer.

PostgreSQL hands out sequence values at insert time, not at commit. events.record therefore takes a
transaction-scoped advisory lock before inserting: a second event-writing transaction waits until the
first commits (or rolls back), and only then draws its id. These tests run real transactions on
separate connections and watch the Event table the way a reconnecting client does.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import pytest
from django.db import connection, transaction

from contactcenter import events
from contactcenter.models import Event, Tag

# The key events.record locks; read from the module so the test follows it if it changes.
LOCK_KEY = events._EVENT_ORDER_LOCK
WAIT = 20.0


def an_event(n: int) -> events.BaseEvent:
    return events.PresenceChanged(user_id=n, availability="online")


def committed_ids(after: int) -> list[int]:
    return list(Event.objects.filter(id__gt=after).order_by("id").values_list("id", flat=True))


def last_event_id() -> int:
    return Event.objects.order_by("-id").values_list("id", flat=True).first() or 0


def waiting_for_event_lock() -> int:
    """Backends queued on events.record's advisory lock right now."""
    with connection.cursor() as cursor:
        cursor.execute(
            "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted"
            " AND classid::bigint = %s AND objid::bigint = %s AND objsubid = 1",
            [LOCK_KEY >> 32, LOCK_KEY & 0xFFFFFFFF],
        )
        row = cursor.fetchone()
    assert row is not None
    return int(row[0])


def in_thread(target: Callable[[], None], errors: list[BaseException]) -> threading.Thread:
    def run() -> None:
        try:
            target()
        except BaseException as exc:
            errors.append(exc)
        finally:
            connection.close()

    thread = threading.Thread(target=run)
    thread.start()
    return thread


class Poller(threading.Thread):
    """A client polling on its own connection: full snapshots, and a cursor reader asking for id > last seen."""

    def __init__(self, after: int) -> None:
        super().__init__()
        self.after = after
        self.cursor = after
        self.snapshots: list[list[int]] = []
        self.delivered: list[int] = []
        self.stopping = threading.Event()
        self.errors: list[BaseException] = []

    def poll(self) -> None:
        self.snapshots.append(committed_ids(self.after))
        new = committed_ids(self.cursor)
        if new:
            self.delivered.extend(new)
            self.cursor = new[-1]

    def run(self) -> None:
        try:
            while not self.stopping.is_set():
                self.poll()
                time.sleep(0.002)
            self.poll()
        except BaseException as exc:
            self.errors.append(exc)
        finally:
            connection.close()

    def finish(self) -> None:
        self.stopping.set()
        self.join(timeout=WAIT)
        assert not self.is_alive()
        assert self.errors == []


def wait_until_queued(count: int, threads: list[threading.Thread]) -> int:
    """Until `count` backends wait for the lock, or a thread finished (it was not made to wait)."""
    deadline = time.monotonic() + WAIT
    while time.monotonic() < deadline:
        queued = waiting_for_event_lock()
        if queued >= count or not all(t.is_alive() for t in threads):
            return queued
        time.sleep(0.01)
    return waiting_for_event_lock()


@pytest.mark.django_db(transaction=True)
def test_an_event_recorded_while_an_earlier_one_is_uncommitted_waits_and_gets_a_higher_id() -> None:
    start = last_event_id()
    poller = Poller(start)
    poller.start()
    first_recorded, release_first = threading.Event(), threading.Event()
    ids: dict[str, int] = {}
    errors: list[BaseException] = []

    def first() -> None:
        with transaction.atomic():
            ids["first"] = events.record(an_event(1), events.Audience()).id
            first_recorded.set()
            if not release_first.wait(WAIT):
                raise TimeoutError("the test never let the first transaction commit")

    def later(name: str, n: int) -> Callable[[], None]:
        def write() -> None:
            with transaction.atomic():
                ids[name] = events.record(an_event(n), events.Audience()).id

        return write

    holder = in_thread(first, errors)
    assert first_recorded.wait(WAIT), errors
    followers = [in_thread(later(f"later-{i}", i + 2), errors) for i in range(3)]

    queued = wait_until_queued(len(followers), followers)
    # While the first transaction is open, nothing later may be visible: the first id is not.
    visible_while_first_open = committed_ids(start)
    polls_while_first_open = len(poller.snapshots)
    followers_done_early = [t for t in followers if not t.is_alive()]

    release_first.set()
    for thread in [holder, *followers]:
        thread.join(timeout=WAIT)
        assert not thread.is_alive()
    poller.finish()

    assert errors == []
    assert followers_done_early == [], "a later event committed while an earlier one was still open"
    assert queued == len(followers)
    assert visible_while_first_open == []
    assert polls_while_first_open > 0

    final = committed_ids(start)
    assert final == sorted(ids.values())
    assert len(final) == 1 + len(followers)
    assert final[0] == ids["first"]
    assert all(ids[f"later-{i}"] > ids["first"] for i in range(len(followers)))
    # No reader ever saw a higher id while a lower one was missing...
    for snapshot in poller.snapshots:
        assert snapshot == final[: len(snapshot)], f"gap observed: {snapshot} vs final {final}"
    # ...so a cursor reader asking for "id > last seen" received every event, once, in order.
    assert poller.delivered == final


@pytest.mark.django_db(transaction=True)
def test_a_rolled_back_event_leaves_a_permanent_gap_and_releases_the_lock() -> None:
    start = last_event_id()
    recorded, release = threading.Event(), threading.Event()
    ids: dict[str, int] = {}
    errors: list[BaseException] = []

    class Abandon(Exception):
        pass

    def doomed() -> None:
        try:
            with transaction.atomic():
                ids["doomed"] = events.record(an_event(1), events.Audience()).id
                recorded.set()
                release.wait(WAIT)
                raise Abandon
        except Abandon:
            pass

    def later() -> None:
        with transaction.atomic():
            ids["later"] = events.record(an_event(2), events.Audience()).id

    holder = in_thread(doomed, errors)
    assert recorded.wait(WAIT), errors
    follower = in_thread(later, errors)
    queued = wait_until_queued(1, [follower])
    follower_done_early = not follower.is_alive()
    release.set()
    for thread in (holder, follower):
        thread.join(timeout=WAIT)
        assert not thread.is_alive()

    assert errors == []
    assert not follower_done_early
    assert queued == 1
    assert ids["later"] > ids["doomed"]
    assert committed_ids(start) == [ids["later"]]


@pytest.mark.django_db(transaction=True)
def test_transactions_that_write_no_events_are_not_held_up_by_the_event_lock() -> None:
    recorded, release = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def hold() -> None:
        with transaction.atomic():
            events.record(an_event(1), events.Audience())
            recorded.set()
            release.wait(WAIT)

    def unrelated_write() -> None:
        with transaction.atomic():
            Tag.objects.create(name="written-while-events-locked")

    holder = in_thread(hold, errors)
    try:
        assert recorded.wait(WAIT), errors
        writer = in_thread(unrelated_write, errors)
        writer.join(timeout=WAIT)
        finished_while_locked = not writer.is_alive() and holder.is_alive()
    finally:
        release.set()
        holder.join(timeout=WAIT)
    assert errors == []
    assert finished_while_locked
    assert Tag.objects.filter(name="written-while-events-locked").exists()


@pytest.mark.django_db(transaction=True)
def test_recording_an_event_outside_a_transaction_is_refused() -> None:
    before = Event.objects.count()
    assert not connection.in_atomic_block
    with pytest.raises(RuntimeError, match="inside the action's transaction"):
        events.record(an_event(1), events.Audience())
    assert Event.objects.count() == before
    # The same call inside a transaction is stored.
    with transaction.atomic():
        stored = events.record(an_event(1), events.Audience())
    assert Event.objects.filter(pk=stored.pk, type="presence", op="update").exists()

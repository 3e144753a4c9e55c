"""Posting under concurrent writers: one live entry per eligible row, whatever the interleaving.

Each session is its own connection (the `connect` fixture) driven from its own thread.
Sessions are synchronised on the row locks themselves: the main thread waits until
PostgreSQL reports the second session blocked by the first (pg_blocking_pids).
Expectations come from our own SQL over public.sales, never from ledgeradmin.
"""

from __future__ import annotations

import random
import threading
import time
from decimal import Decimal

import psycopg
import pytest
from psycopg import errors

from ledgeradmin.config import Config
from ledgeradmin.install import install

from invariants import LIVE_ENTRIES, assert_holds

# --------------------------------------------------------------------------- helpers

def assert_sales_ledger_matches(conn: psycopg.Connection) -> None:
    """Exactly one live entry per eligible row, with its lines; nothing for the others;
    every entry balanced (the independent check of tests/invariants.py)."""
    assert_holds(conn)


def wait_until_blocked(observer: psycopg.Connection, blocked_pid: int, blocker_pid: int, timeout: float = 10) -> None:
    """Return once session blocked_pid waits on a lock held by blocker_pid."""
    deadline = time.monotonic() + timeout
    while blocker_pid not in observer.execute("SELECT pg_blocking_pids(%s)", (blocked_pid,)).fetchone()[0]:
        if time.monotonic() > deadline:
            pytest.fail(f"session {blocked_pid} never waited for session {blocker_pid}")
        time.sleep(0.005)


class Session(threading.Thread):
    """Runs fn(conn) on its own connection in a thread; join() re-raises its exception."""

    def __init__(self, conn: psycopg.Connection, fn) -> None:
        super().__init__(daemon=True)
        self.conn, self.fn, self.error, self.done = conn, fn, None, threading.Event()

    def run(self) -> None:
        try:
            self.fn(self.conn)
        except BaseException as exc:  # noqa: BLE001 - reported by join()
            self.error = exc
        finally:
            self.done.set()

    def join(self, timeout: float | None = 30) -> None:
        super().join(timeout)
        assert not self.is_alive(), "session thread did not finish"
        if self.error is not None:
            raise self.error


def add_sales(conn: psycopg.Connection, ids, total: str = "10.00", tax: str = "1.00") -> None:
    conn.execute(
        "INSERT INTO public.sales (id, customer, total, tax) SELECT g, 'c' || g, %s, %s FROM unnest(%s::bigint[]) AS g",
        (total, tax, list(ids)),
    )


# --------------------------------------------------------------------------- tests


def test_two_sessions_update_the_same_sale(shop, connect):
    add_sales(shop, [1])
    a, b = connect(), connect()
    a.execute("UPDATE public.sales SET total = 200 WHERE id = 1")  # holds the row lock, uncommitted

    def second(conn):
        conn.execute("UPDATE public.sales SET total = 300, payment_method = 'card' WHERE id = 1")
        conn.commit()

    session_b = Session(b, second)
    session_b.start()
    wait_until_blocked(shop, b.info.backend_pid, a.info.backend_pid)
    assert not session_b.done.is_set()
    a.commit()
    session_b.join()

    assert shop.execute("SELECT total, payment_method FROM public.sales").fetchone() == (Decimal("300.00"), "card")
    assert_sales_ledger_matches(shop)
    # original, its reversal, A's entry, its reversal, B's entry
    entries = shop.execute("SELECT id, reverses FROM ledger.entry WHERE source_key = '1'").fetchall()
    assert len(entries) == 5
    assert len([e for e in entries if e[1] is not None]) == 2


def test_two_sessions_update_the_same_sale_first_rolls_back(shop, connect):
    add_sales(shop, [1])
    a, b = connect(), connect()
    a.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 1")

    def second(conn):
        conn.execute("UPDATE public.sales SET total = 50 WHERE id = 1")
        conn.commit()

    session_b = Session(b, second)
    session_b.start()
    wait_until_blocked(shop, b.info.backend_pid, a.info.backend_pid)
    a.rollback()
    session_b.join()
    assert_sales_ledger_matches(shop)
    assert shop.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 3


def test_delete_then_reinsert_of_the_same_key_by_another_session(shop, connect):
    add_sales(shop, [1], total="10.00")
    a, b = connect(), connect()
    a.execute("DELETE FROM public.sales WHERE id = 1")

    def reinsert(conn):
        add_sales(conn, [1], total="77.00", tax="7.00")  # waits on A's delete of key 1
        conn.commit()

    session_b = Session(b, reinsert)
    session_b.start()
    wait_until_blocked(shop, b.info.backend_pid, a.info.backend_pid)
    a.commit()
    session_b.join()
    assert_sales_ledger_matches(shop)
    (total,) = shop.execute(
        f"SELECT sum(l.debit) FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id"
    ).fetchone()
    assert total == Decimal("77.00")


def test_overlapping_inserting_transactions_both_commit(shop, connect):
    a, b = connect(), connect()
    add_sales(a, range(1, 201), total="10.00")
    add_sales(b, range(1001, 1201), total="20.00", tax="2.00")  # while A is open
    a.execute("UPDATE public.sales SET total = 11 WHERE id <= 100")
    b.execute("UPDATE public.sales SET status = 'cancelled' WHERE id > 1100")
    b.commit()
    a.commit()
    assert shop.execute("SELECT count(*) FROM public.sales").fetchone()[0] == 400
    assert_sales_ledger_matches(shop)


def test_concurrent_inserts_from_threads_with_identity_keys(shop, connect):
    barrier = threading.Barrier(4)

    def writer(conn):
        barrier.wait()
        for _ in range(20):
            conn.execute(
                "INSERT INTO public.sales (customer, total, tax) SELECT 'c', g, 0 FROM generate_series(1, 10) AS g"
            )
            conn.commit()

    sessions = [Session(connect(), writer) for _ in range(4)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join()
    assert shop.execute("SELECT count(*) FROM public.sales").fetchone()[0] == 800
    assert_sales_ledger_matches(shop)


RANDOM_KEYS = list(range(1, 9))
STATUSES = ("completed", "completed", "draft", "cancelled")
METHODS = ("cash", "card", "invoice")


def random_statement(rng: random.Random) -> tuple[str, tuple]:
    """One random write on the small set of sales."""
    key = rng.choice(RANDOM_KEYS)
    kind = rng.randrange(9)
    if kind == 0:
        return "UPDATE public.sales SET total = %s WHERE id = %s", (Decimal(rng.randrange(0, 10_000)) / 100, key)
    if kind == 1:
        return "UPDATE public.sales SET tax = %s WHERE id = %s", (Decimal(rng.randrange(0, 500)) / 100, key)
    if kind == 2:
        return "UPDATE public.sales SET status = %s WHERE id = %s", (rng.choice(STATUSES), key)
    if kind == 3:
        return "UPDATE public.sales SET payment_method = %s WHERE id = %s", (rng.choice(METHODS), key)
    if kind == 4:
        return "UPDATE public.sales SET note = %s WHERE id = %s", (f"n{rng.random()}", key)
    if kind == 5:
        return "DELETE FROM public.sales WHERE id = %s", (key,)
    if kind == 6:
        return (
            "INSERT INTO public.sales (id, customer, total, tax, currency) VALUES (%s, 'again', %s, 0, %s)"
            " ON CONFLICT (id) DO NOTHING",
            (key, Decimal(rng.randrange(1, 10_000)) / 100, rng.choice(("USD", "EUR"))),
        )
    if kind == 7:
        other = rng.choice(RANDOM_KEYS)
        return "UPDATE public.sales SET total = total + 1 WHERE id IN (%s, %s)", (key, other)
    return "UPDATE public.sales SET currency = %s WHERE id = %s", (rng.choice(("USD", "EUR")), key)


def test_random_concurrent_updates_and_deletes(shop, connect):
    add_sales(shop, RANDOM_KEYS)
    stop_at = time.monotonic() + 3.0
    counts = {"commit": 0, "rollback": 0, "conflict": 0}
    lock = threading.Lock()
    barrier = threading.Barrier(4)

    def worker(seed: int):
        def run(conn):
            rng = random.Random(seed)
            # random row order within transactions deadlocks now and then: detect it fast
            conn.execute("SET deadlock_timeout = '20ms'")
            conn.commit()
            barrier.wait()
            while time.monotonic() < stop_at:
                try:
                    for _ in range(rng.randint(1, 3)):
                        conn.execute(*random_statement(rng))
                    outcome = "commit" if rng.random() < 0.85 else "rollback"
                    conn.commit() if outcome == "commit" else conn.rollback()
                except (errors.DeadlockDetected, errors.SerializationFailure):
                    conn.rollback()
                    outcome = "conflict"
                with lock:
                    counts[outcome] += 1

        return run

    sessions = [Session(connect(), worker(seed)) for seed in range(4)]
    for s in sessions:
        s.start()
    for s in sessions:
        s.join(timeout=60)
    assert counts["commit"] > 100, counts
    assert_sales_ledger_matches(shop)
    # dated at the sale; every reversal reverses an entry of its own key
    wrong_date = shop.execute(
        f"SELECT count(*) FROM ({LIVE_ENTRIES}) AS e JOIN public.sales AS s ON s.id::text = e.source_key"
        " WHERE e.effective_at <> s.sold_at"
    ).fetchone()[0]
    assert wrong_date == 0
    foreign = shop.execute(
        "SELECT count(*) FROM ledger.entry AS r JOIN ledger.entry AS o ON o.id = r.reverses"
        " WHERE r.source_key <> o.source_key"
    ).fetchone()[0]
    assert foreign == 0


def test_concurrent_writers_with_another_rule_installed_meanwhile(shop, connect, shop_config: Config):
    """Re-installing the rules while a writer's transaction is open neither loses nor doubles postings."""
    add_sales(shop, [1, 2])
    writer = connect()
    writer.execute("UPDATE public.sales SET total = 99 WHERE id = 1")

    def reinstall(conn):
        install(conn, shop_config)  # CREATE OR REPLACE of the sale triggers: waits for the writer

    installer = Session(connect(autocommit=True), reinstall)
    installer.start()
    wait_until_blocked(shop, installer.conn.info.backend_pid, writer.info.backend_pid)
    writer.commit()
    installer.join()
    shop.execute("UPDATE public.sales SET total = 5 WHERE id = 2")
    assert_sales_ledger_matches(shop)

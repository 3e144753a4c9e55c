"""Writers at REPEATABLE READ and SERIALIZABLE: concurrent edits of the same few sales fail
with serialization failures (SQLSTATE 40001) that the application retries, as PostgreSQL
requires at those levels; what commits is posted exactly once, and the ledger stays in
sync and balanced."""

from __future__ import annotations

import random
import threading
from decimal import Decimal

import psycopg
import pytest

from invariants import LIVE_ENTRIES
from ledgeradmin.backfill import backfill
from ledgeradmin.verify import verify

SALES = 12
WRITERS = 4
TRANSACTIONS = 120


def writer(dsn: str, isolation: str, seed: int, tally: dict, lock: threading.Lock) -> None:
    rng = random.Random(seed)
    with psycopg.connect(dsn, autocommit=True) as conn:
        conn.execute(f"SET default_transaction_isolation = '{isolation}'")
        for _ in range(TRANSACTIONS):
            ids = rng.sample(range(1, SALES + 1), rng.choice((1, 1, 2)))
            cents = Decimal(rng.randint(1, 999)) / 100
            status = rng.choice(("completed", "completed", "completed", "cancelled"))
            while True:
                try:
                    with conn.transaction():
                        for i in ids:  # an amount edit: reverse and repost; or out of / into `when`
                            conn.execute("UPDATE public.sales SET total = total + %s, status = %s WHERE id = %s",
                                         (cents, status, i))
                    with lock:
                        tally["commits"] += 1
                    break
                except (psycopg.errors.SerializationFailure, psycopg.errors.DeadlockDetected):
                    with lock:
                        tally["retries"] += 1


@pytest.mark.parametrize("isolation", ["repeatable read", "serializable"])
def test_writers_retrying_serialization_failures_leave_the_ledger_in_sync(shop, dsn, shop_config, isolation):
    shop.execute("INSERT INTO public.sales (customer, total, tax) SELECT 'c' || i, 100, 10 FROM generate_series(1, %s) AS i",
                 (SALES,))
    tally = {"commits": 0, "retries": 0}
    lock = threading.Lock()
    errors: list[BaseException] = []

    def run(seed: int) -> None:
        try:
            writer(dsn, isolation, seed, tally, lock)
        except BaseException as exc:  # noqa: BLE001 - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run, args=(seed,)) for seed in range(WRITERS)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert not errors, errors
    assert tally["commits"] == WRITERS * TRANSACTIONS
    assert tally["retries"] > 0, "no transaction conflicted: the test did not test anything"
    result = verify(shop, shop_config)
    assert result.ok, result.as_dict()
    # one live entry per completed sale, for its final amount
    live = live_sale_debits(shop)
    expected = dict(shop.execute("SELECT id, total FROM public.sales WHERE status = 'completed'").fetchall())
    assert live == expected


def test_a_writer_whose_snapshot_predates_a_backfill_retries_instead_of_losing_a_reversal(shop, shop_config,
                                                                                          connect):
    """A REPEATABLE READ writer cannot see the links a backfill committed after its snapshot
    was taken. Deleting or cancelling such a row would keep its entry live, and an amount
    edit would collide with the link; each now fails with a serialization failure (40001),
    and the retry reverses or reposts as it should."""
    with shop.transaction():  # rows written while the triggers were off: backfill posts them
        shop.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")
        shop.execute("INSERT INTO public.sales (id, customer, total, tax) VALUES (1, 'a', 10, 1), (2, 'b', 20, 2),"
                     " (3, 'c', 30, 3), (4, 'd', 40, 4)")
        shop.execute("ALTER TABLE public.sales ENABLE TRIGGER USER")
    statements = {1: "DELETE FROM public.sales WHERE id = 1",
                  2: "UPDATE public.sales SET status = 'cancelled' WHERE id = 2",
                  3: "UPDATE public.sales SET total = 33, tax = 3 WHERE id = 3"}
    writers = {}
    for i in statements:
        writers[i] = connect(autocommit=True)
        writers[i].execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
        writers[i].execute("SELECT count(*) FROM public.sales")  # the snapshot is taken
    assert [r.posted for r in backfill(connect(autocommit=True), shop_config, ["sale"]).rules] == [4]
    for i, statement in statements.items():
        with pytest.raises(psycopg.errors.SerializationFailure):
            writers[i].execute(statement)
        writers[i].execute("ROLLBACK")
        writers[i].execute("BEGIN ISOLATION LEVEL REPEATABLE READ")  # the retry
        writers[i].execute(statement)
        writers[i].execute("COMMIT")
    result = verify(shop, shop_config)
    assert result.ok, result.as_dict()
    live = live_sale_debits(shop)
    assert live == {3: Decimal("33.0000"), 4: Decimal("40.0000")}


def live_sale_debits(conn: psycopg.Connection) -> dict[int, Decimal]:
    """Sale id -> the debits of its live entry."""
    return dict(conn.execute(
        f"""SELECT e.source_key::bigint, sum(l.debit)
            FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
            WHERE e.rule = 'sale'
            GROUP BY e.id, e.source_key""").fetchall())

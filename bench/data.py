"""Benchmark data: deterministic sales (bench/sql/sales_data.sql) as a CSV file for COPY, and
large posted databases built the fast way for verify.

The CSV lives in the server's private directory and is read by the server itself
(`COPY … FROM '/path'`), so client transfer does not blur what is measured.
"""

from __future__ import annotations

import threading
from pathlib import Path

import psycopg

from common import Bench, log, set_triggers, sql_file, timed
from ledgeradmin.compiler import fill

COLUMNS = "id, customer, sold_at, status, currency, payment_method, total, tax, note"
TABLES = ("public.sales", "ledger.entry", "ledger.line", "ledger.posting")
#: The sales data spans 100 days ending on this day; it holds the most recent 1 % of rows.
LAST_DAY = "2025-06-30"


def sales_select(lo: int, hi: int, total: int) -> str:
    return fill(sql_file("sales_data.sql"), lo=str(int(lo)), hi=str(int(hi)), total=str(int(total)))


def journal_limit(lo: int, hi: int) -> str:
    """The hand-written set-based INSERT … SELECT of the journal rows of sales lo..hi."""
    return fill(sql_file("journal_limit.sql"), lo=str(int(lo)), hi=str(int(hi)))


def make_csv(bench: Bench, n: int) -> Path:
    path = bench.tmp / f"sales_{n}.csv"
    if not path.exists():
        with bench.connect("postgres") as conn:
            conn.execute(f"COPY ({sales_select(1, n, n)}) TO '{path}' (FORMAT csv)")
    return path


def copy_sql(path: Path) -> str:
    return f"COPY public.sales ({COLUMNS}) FROM '{path}' (FORMAT csv)"


def prepare(conn: psycopg.Connection, triggers: bool) -> None:
    """Trigger state, statistics and a clean checkpoint before a timed step."""
    set_triggers(conn, triggers)
    conn.execute("VACUUM ANALYZE")
    conn.execute("CHECKPOINT")


def build_posted(bench: Bench, db: str, n: int, workers: int = 2) -> dict:
    """A database of n sales, every completed one posted, built the fast way (not measured).

    The journal rows are written by the hand-written INSERT … SELECT (journal_limit.sql) — the
    same rows the rule writes; verify afterwards must report 0 missing and 0 drifted, which
    the verify section checks. To save minutes, the primary keys, unique constraints and
    indexes of the four tables are dropped first and rebuilt at the end (same definitions),
    and id ranges are loaded by `workers` connections at once.
    """
    bench.fresh_db(db)
    chunk = max(100_000, min(1_000_000, n // 8))
    ranges = [(lo, min(n, lo + chunk - 1)) for lo in range(1, n + 1, chunk)]
    times = {}
    with bench.connect(db) as conn:
        set_triggers(conn, False)
        constraints = conn.execute(
            """
            SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid)
            FROM pg_constraint
            WHERE conrelid = ANY (%s::regclass[]) AND contype IN ('p', 'u')
            """,
            (list(TABLES),),
        ).fetchall()
        indexes = conn.execute(
            """
            SELECT indexrelid::regclass::text, pg_get_indexdef(indexrelid)
            FROM pg_index
            WHERE indrelid = ANY (%s::regclass[])
              AND NOT EXISTS (SELECT FROM pg_constraint WHERE conindid = indexrelid)
            """,
            (list(TABLES),),
        ).fetchall()
        for table, name, _ in constraints:
            conn.execute(f"ALTER TABLE {table} DROP CONSTRAINT {name}")
        for name, _ in indexes:
            conn.execute(f"DROP INDEX {name}")
    with timed() as t:
        _parallel(bench, db, ranges, workers,
                  lambda c, lo, hi: c.execute(f"INSERT INTO public.sales ({COLUMNS}) {sales_select(lo, hi, n)}"))
    times["sales"] = t.seconds
    with timed() as t:
        _parallel(bench, db, ranges, workers, lambda c, lo, hi: c.execute(journal_limit(lo, hi)))
    times["journal"] = t.seconds
    with bench.connect(db) as conn, timed() as t:
        conn.execute("SET maintenance_work_mem = '1GB'")  # this session's index builds only
        for table, name, definition in constraints:
            conn.execute(f"ALTER TABLE {table} ADD CONSTRAINT {name} {definition}")
        for _, definition in indexes:
            conn.execute(definition)
        conn.execute("SELECT setval(pg_get_serial_sequence('public.sales', 'id'), %s)", (n,))
        set_triggers(conn, True)
        conn.execute("VACUUM ANALYZE")
        conn.execute("CHECKPOINT")
    times["indexes_vacuum"] = t.seconds
    log(f"  built {db}: {n:,} sales posted in " + ", ".join(f"{k} {v:.0f} s" for k, v in times.items()))
    return times


def _parallel(bench: Bench, db: str, ranges, workers: int, step) -> None:
    errors: list[BaseException] = []

    def work(k: int) -> None:
        try:
            with bench.connect(db) as conn:
                for lo, hi in ranges[k::workers]:
                    if errors:
                        return
                    step(conn, lo, hi)
        except BaseException as exc:  # re-raised in the caller
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(workers)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    if errors:
        raise errors[0]

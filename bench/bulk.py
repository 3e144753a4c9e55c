"""Section 2 — bulk: one COPY of n sales (90 % completed, so 0.9 n postings, 2.7 n lines).

  i    COPY with the table's triggers disabled (no ledger)
  ii   COPY with the rule installed: the statement-level trigger posts in one set-based pass
  iii  the limit: the same bare COPY plus the hand-written set-based INSERT … SELECT of the
       same journal rows (bench/sql/journal_limit.sql), in one transaction

Each variant: a fresh database from the template (empty tables), VACUUM ANALYZE, CHECKPOINT,
then the timed statement(s), committed. Same CSV file each time, read by the server.

Then, in the database variant ii posted, one DELETE of the first tenth of the sales, rolled
back: with the rule (every posted sale's entry reversed in the same statement) and with the
table's triggers disabled. No target: what a large DELETE costs when each posted sale's
entry is reversed in the same statement.
"""

from __future__ import annotations

from common import Bench, log, median, timed
from data import copy_sql, journal_limit, make_csv, prepare

VARIANTS = ("i_bare", "ii_trigger", "iii_limit")


def run(bench: Bench, *, n: int, rounds: int = 1) -> dict:
    csv = make_csv(bench, n)
    seconds: dict[str, list[float]] = {v: [] for v in VARIANTS}
    deletes: dict[str, list[float]] = {"trigger": [], "bare": []}
    delete_rows = n // 10
    postings: dict[str, int] = {}
    db = "bench_bulk"
    for r in range(1, rounds + 1):
        for variant in VARIANTS:
            bench.fresh_db(db)
            with bench.connect(db) as conn:
                prepare(conn, triggers=variant == "ii_trigger")
                with timed() as t:
                    with conn.transaction():
                        conn.execute(copy_sql(csv))
                        if variant == "iii_limit":
                            conn.execute(journal_limit(1, n))
                seconds[variant].append(t.seconds)
                postings[variant] = conn.execute("SELECT count(*) FROM ledger.posting").fetchone()[0]
                if variant == "ii_trigger":
                    for kind in deletes:
                        deletes[kind].append(_delete(conn, delete_rows, triggers=kind == "trigger"))
                    log(f"  bulk round {r}/{rounds} DELETE of {delete_rows:,} sales: trigger "
                        f"{deletes['trigger'][-1]:.2f} s, bare {deletes['bare'][-1]:.2f} s")
            log(f"  bulk round {r}/{rounds} {variant:<11} {t.seconds:7.2f} s  ({postings[variant]:,} postings)")
    bench.drop_db(db)
    med = {v: median(s) for v, s in seconds.items()}
    if postings["ii_trigger"] != postings["iii_limit"]:
        raise RuntimeError(f"bulk: trigger wrote {postings['ii_trigger']} postings, the limit {postings['iii_limit']}")
    return {
        "rows": n,
        "postings": postings["ii_trigger"],
        "rounds": rounds,
        "seconds": seconds,
        "median_seconds": med,
        "ratios": {
            "ii/i": med["ii_trigger"] / med["i_bare"],
            "ii/iii": med["ii_trigger"] / med["iii_limit"],
        },
        "delete": {
            "rows": delete_rows,
            "seconds": deletes,
            "median_seconds": {kind: median(s) for kind, s in deletes.items()},
        },
    }


def _delete(conn, rows: int, *, triggers: bool) -> float:
    """One DELETE of the first ``rows`` sales, timed and rolled back."""
    with conn.transaction(force_rollback=True):
        if not triggers:
            conn.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")
        with timed() as t:
            conn.execute("DELETE FROM public.sales WHERE id <= %s", (rows,))
    return t.seconds

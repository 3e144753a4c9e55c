"""Section 3 — backfill: n sales loaded with the triggers disabled (an outage), then repaired.

  limit     the hand-written set-based INSERT … SELECT of the same journal rows
            (bench/sql/journal_limit.sql): one statement, no batches, no row locks
  backfill  `ledgeradmin backfill` through the CLI (a child process: wall time and peak RSS)
  again     a second `ledgeradmin backfill` on the repaired database, which is in sync:
            what a scheduled full run costs when there is nothing to repair (time, WAL)

Each: a fresh database from the template, the same CSV loaded with the triggers disabled,
the triggers enabled again (backfill repairs beside an installed rule), VACUUM ANALYZE,
CHECKPOINT, then the timed repair. The database the CLI repaired is kept for verify.
"""

from __future__ import annotations

import json

from common import SHOP, Bench, log, median, set_triggers, timed
from data import copy_sql, journal_limit, make_csv, prepare


def _load(bench: Bench, db: str, csv) -> None:
    bench.fresh_db(db)
    with bench.connect(db) as conn:
        set_triggers(conn, False)
        conn.execute(copy_sql(csv))
        prepare(conn, triggers=True)


def run(bench: Bench, *, n: int, keep_db: str, rounds: int = 1) -> dict:
    csv = make_csv(bench, n)
    limit_s, cli_s, cli_rss, reports = [], [], [], []
    for r in range(1, rounds + 1):
        _load(bench, "bench_backfill_limit", csv)
        with bench.connect("bench_backfill_limit") as conn, timed() as t:
            conn.execute(journal_limit(1, n))
        limit_s.append(t.seconds)
        bench.drop_db("bench_backfill_limit")
        log(f"  backfill round {r}/{rounds} limit     {t.seconds:7.2f} s")

        _load(bench, keep_db, csv)
        res = bench.run_cli("backfill", "--json", "--config", str(SHOP / "ledger.toml"), db=keep_db)
        report = json.loads(res.stdout)
        posted = sum(rule["posted"] for rule in report["rules"])
        cli_s.append(res.seconds)
        cli_rss.append(res.max_rss_mb)
        reports.append({"posted": posted, "duration_seconds": report["duration_seconds"], "ok": report["ok"]})
        log(f"  backfill round {r}/{rounds} backfill  {res.seconds:7.2f} s  ({posted:,} posted, "
            f"peak RSS {res.max_rss_mb:.0f} MB)")
    posted = reports[-1]["posted"]
    with bench.connect(keep_db) as conn:
        in_ledger = conn.execute("SELECT count(*) FROM ledger.posting").fetchone()[0]
    if posted != in_ledger:
        raise RuntimeError(f"backfill reported {posted} postings, the ledger holds {in_ledger}")
    with bench.connect(keep_db) as conn:
        conn.execute("CHECKPOINT")
        before = conn.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        again = bench.run_cli("backfill", "--json", "--config", str(SHOP / "ledger.toml"), db=keep_db)
        wal = conn.execute("SELECT pg_wal_lsn_diff(pg_current_wal_insert_lsn(), %s)", (before,)).fetchone()[0]
    repaired = sum(r["posted"] + r["reversed"] + r["reposted"] for r in json.loads(again.stdout)["rules"])
    if repaired:
        raise RuntimeError(f"a second backfill repaired {repaired} rows of a database in sync")
    log(f"  backfill again, in sync  {again.seconds:7.2f} s  ({float(wal) / 1024:,.0f} kB of WAL)")
    limit_med, cli_med = median(limit_s), median(cli_s)
    return {
        "rows": n,
        "postings": posted,
        "rounds": rounds,
        "limit_seconds": limit_s,
        "backfill_seconds": cli_s,
        "backfill_reports": reports,
        "backfill_peak_rss_mb": max(cli_rss),
        "median_seconds": {"limit": limit_med, "backfill": cli_med},
        "rows_per_second": {"limit": posted / limit_med, "backfill": posted / cli_med},
        "ratio": limit_med / cli_med,  # backfill speed as a share of the limit's speed
        "again_in_sync": {"seconds": again.seconds, "wal_bytes": int(wal), "peak_rss_mb": again.max_rss_mb},
    }

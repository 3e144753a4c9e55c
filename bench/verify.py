"""Section 4 — verify: a full `ledgeradmin verify` (CLI, child process) against the limit, a
hand-written anti-join that finds only the missing rows; and `verify --since` on the most
recent 1 % of the rows.

Per size, the limit and verify alternate (limit, verify, limit, verify, …) on the same
database; medians. The small size reuses the database `ledgeradmin backfill` repaired; the
large one is built the fast way (data.build_posted), and verify must find it in sync —
which also proves that the hand-written journal SQL writes exactly what the rule would.
"""

from __future__ import annotations

import json

from common import SHOP, Bench, log, median, timed
from data import LAST_DAY, build_posted

ANTI_JOIN = """
SELECT count(*)
FROM public.sales AS s
WHERE s.status = 'completed'
  AND NOT EXISTS (SELECT FROM ledger.posting AS p WHERE p.rule = 'sale' AND p.key_num = s.id)
"""


def _verify_cli(bench: Bench, db: str, *args: str) -> tuple[float, float, dict]:
    res = bench.run_cli("verify", "--json", "--config", str(SHOP / "ledger.toml"), *args, db=db, check=False)
    if res.returncode not in (0, 1):
        raise RuntimeError(f"verify failed (exit {res.returncode}):\n{res.stdout}\n{res.stderr}")
    return res.seconds, res.max_rss_mb, json.loads(res.stdout)


def _sale(report: dict) -> dict:
    return next(r for r in report["rules"] if r["rule"] == "sale")


def _parts(report: dict) -> dict[str, float]:
    """Where verify's own time went, as it reports it (`seconds` of each rule and of the ledger)."""
    return {
        "sale rule": _sale(report)["seconds"],
        "other rules": sum(r["seconds"] for r in report["rules"] if r["rule"] != "sale"),
        "ledger checks": report["ledger"]["seconds"],
    }


def run_size(bench: Bench, *, n: int, db: str | None, rounds: int, since_rounds: int) -> dict:
    built = None
    if db is None:
        db = f"bench_verify_{n}"
        log(f"verify: building a posted database of {n:,} sales (not measured)")
        built = build_posted(bench, db, n)
    limit_s, verify_s, verify_server_s, rss = [], [], [], []
    parts: dict[str, list[float]] = {"sale rule": [], "other rules": [], "ledger checks": []}
    missing_found = None
    report = None
    for r in range(1, rounds + 1):
        with bench.connect(db) as conn, timed() as t:
            missing_found = conn.execute(ANTI_JOIN).fetchone()[0]
        limit_s.append(t.seconds)
        seconds, peak, report = _verify_cli(bench, db)
        verify_s.append(seconds)
        verify_server_s.append(report["duration_seconds"])
        for name, seconds_of_part in _parts(report).items():
            parts[name].append(seconds_of_part)
        rss.append(peak)
        log(f"  verify {n:,} round {r}/{rounds}: limit {limit_s[-1]:6.2f} s, verify {seconds:6.2f} s "
            f"(peak RSS {peak:.0f} MB)")
    sale = _sale(report)
    since_s, since_rss, since_report = [], [], None
    for r in range(since_rounds):
        seconds, peak, since_report = _verify_cli(bench, db, "--since", LAST_DAY)
        since_s.append(seconds)
        since_rss.append(peak)
    since_sale = _sale(since_report) if since_report else None
    if since_s:
        log(f"  verify --since {LAST_DAY} ({since_sale['eligible']:,} rows): {median(since_s):.2f} s")
    in_sync = (report["ok"] and sale["missing"] == 0 and sale["drifted"] == 0 and sale["orphaned"] == 0
               and missing_found == 0)
    return {
        "rows": n,
        "database": "repaired by ledgeradmin backfill" if built is None else "built by hand-written SQL",
        "build_seconds": built,
        "rounds": rounds,
        "limit_seconds": limit_s,
        "verify_seconds": verify_s,
        "verify_reported_seconds": verify_server_s,
        "verify_peak_rss_mb": max(rss),
        "median_seconds": {"limit": median(limit_s), "verify": median(verify_s)},
        "parts_seconds": parts,
        "median_parts_seconds": {name: median(values) for name, values in parts.items()},
        "ratio": median(verify_s) / median(limit_s),
        "in_sync": in_sync,
        "verify_counts": {k: sale[k] for k in ("eligible", "posted", "missing", "orphaned", "drifted", "failed")},
        "ledger": {k: report["ledger"][k] for k in ("entries", "unbalanced", "duplicate_live_keys",
                                                    "unlinked_live_entries")},
        "since": {
            "date": LAST_DAY,
            "rows": since_sale["eligible"] if since_sale else None,
            "seconds": since_s,
            "median_seconds": median(since_s) if since_s else None,
            "peak_rss_mb": max(since_rss) if since_rss else None,
            "ok": since_report["ok"] if since_report else None,
        },
    }

"""Section 1 — OLTP: one sale per transaction through pgbench -M prepared.

Insert variants (bench/sql/oltp_*.sql), all writing into the same tables of one database:
  a  bare     the sale INSERT, the table's triggers disabled
  b  trigger  the same INSERT, the rule installed (ledgeradmin's statement-level trigger)
  c  limit    sale + entry + 3 lines + posting link by hand in ONE statement (CTEs), triggers disabled
  d  app      sale INSERT … RETURNING, then one INSERT per journal row, one transaction, triggers disabled
Update variants, on a seeded population of posted sales:
  edit   amount edit of a random sale (ids 1..half): trigger → reversal + repost; bare: UPDATE only
  noop   note edit of a random sale (ids half+1..all): trigger → no column the rule reads changed: returns

Fairness: variants run interleaved (a b c d a b c d …, per client count), each on the same
tables — the bare variant is the same table with `DISABLE TRIGGER USER`, so table and index
sizes are identical and growth during the run affects every variant alike. Before every run:
VACUUM (ANALYZE) of the touched tables and a CHECKPOINT, so no run inherits another's dead
tuples, dirty buffers or a checkpoint in progress. Medians of TPS per variant.
"""

from __future__ import annotations

import re

from common import Bench, checkpoint, log, median, set_triggers, SQL

INSERT_VARIANTS = {  # name: (script, triggers enabled)
    "a_bare": ("oltp_insert.sql", False),
    "b_trigger": ("oltp_insert.sql", True),
    "c_limit": ("oltp_limit.sql", False),
    "d_app": ("oltp_app.sql", False),
}
UPDATE_VARIANTS = {
    "edit_bare": ("oltp_update.sql", False),
    "edit_trigger": ("oltp_update.sql", True),
    "noop_bare": ("oltp_noop_update.sql", False),
    "noop_trigger": ("oltp_noop_update.sql", True),
}
TABLES = "public.sales, ledger.entry, ledger.line, ledger.posting"

SEED_SQL = """
INSERT INTO public.sales (customer, payment_method, total, tax, sold_at)
SELECT 'customer ' || g % 1000, (ARRAY['cash', 'card', 'invoice'])[1 + g % 3],
       (100 + g * 7919 % 999900) / 100.0, round((100 + g * 7919 % 999900) / 1100.0, 2),
       now() - interval '1 day' + g * interval '1 ms'
FROM generate_series(1, {n}) AS g
"""


def run(bench: Bench, *, rounds: int, insert_seconds: int, update_seconds: int, clients: tuple[int, ...],
        update_clients: tuple[int, ...], seed_rows: int, update_rounds: int | None = None) -> dict:
    update_rounds = update_rounds or rounds
    db = bench.fresh_db("bench_oltp")
    with bench.connect(db) as conn:
        log(f"OLTP: seeding {seed_rows:,} posted sales (trigger on)")
        conn.execute(SEED_SQL.format(n=int(seed_rows)))
        conn.execute(f"VACUUM ANALYZE {TABLES}")
    half = seed_rows // 2
    defines = ["-D", f"edit_rows={half}", "-D", f"noop_lo={half + 1}", "-D", f"noop_hi={seed_rows}"]
    result = {
        "rounds": rounds,
        "update_rounds": update_rounds,
        "insert_seconds": insert_seconds,
        "update_seconds": update_seconds,
        "seed_rows": seed_rows,
        "insert": _interleaved(bench, db, INSERT_VARIANTS, rounds, insert_seconds, clients, []),
        "update": _interleaved(bench, db, UPDATE_VARIANTS, update_rounds, update_seconds, update_clients, defines),
    }
    with bench.connect(db) as conn:
        result["rows_after"] = conn.execute("SELECT count(*) FROM public.sales").fetchone()[0]
        result["entries_after"] = conn.execute("SELECT count(*) FROM ledger.entry").fetchone()[0]
    bench.drop_db(db)
    for kind in ("insert", "update"):
        for c, per in result[kind].items():
            per["median_tps"] = {v: median(t) for v, t in per["tps"].items()}
    _ratios(result)
    return result


def _interleaved(bench: Bench, db: str, variants: dict, rounds: int, seconds: int, clients, defines) -> dict:
    out = {str(c): {"tps": {v: [] for v in variants}, "latency_ms": {v: [] for v in variants}} for c in clients}
    for r in range(1, rounds + 1):
        for c in clients:
            for name, (script, triggers) in variants.items():
                with bench.connect(db) as conn:
                    set_triggers(conn, triggers)
                    conn.execute(f"VACUUM (ANALYZE) {TABLES}")
                    checkpoint(conn)
                tps, latency = _pgbench(bench, db, script, c, seconds, defines)
                out[str(c)]["tps"][name].append(tps)
                out[str(c)]["latency_ms"][name].append(latency)
                log(f"  round {r}/{rounds}, {c} clients, {name:<13} {tps:9.0f} TPS")
    with bench.connect(db) as conn:
        set_triggers(conn, True)
    return out


def _pgbench(bench: Bench, db: str, script: str, clients: int, seconds: int, defines) -> tuple[float, float]:
    res = bench.pgbench(
        db, "-n", "-M", "prepared", "-c", str(clients), "-j", str(min(clients, 2)), "-T", str(seconds),
        *defines, "-f", str(SQL / script),
    )
    text = res.stdout + res.stderr
    if "aborted" in text or re.search(r"number of failed transactions: [1-9]", text):
        raise RuntimeError(f"pgbench {script} failed:\n{text}")
    tps = re.search(r"^tps = ([\d.]+)", res.stdout, re.M)
    latency = re.search(r"^latency average = ([\d.]+) ms", res.stdout, re.M)
    if not tps:
        raise RuntimeError(f"no TPS in pgbench output:\n{text}")
    return float(tps.group(1)), float(latency.group(1)) if latency else float("nan")


def _ratios(result: dict) -> None:
    for c, per in result["insert"].items():
        m = per["median_tps"]
        per["ratios"] = {
            "b/a": m["b_trigger"] / m["a_bare"],
            "b/c": m["b_trigger"] / m["c_limit"],
            "b/d": m["b_trigger"] / m["d_app"],
            "c/a": m["c_limit"] / m["a_bare"],
        }
    for c, per in result["update"].items():
        m = per["median_tps"]
        per["ratios"] = {
            "edit trigger/bare": m["edit_trigger"] / m["edit_bare"],
            "noop trigger/bare": m["noop_trigger"] / m["noop_bare"],
        }

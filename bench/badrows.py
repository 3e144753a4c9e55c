"""Section 5 — one bad row in a large statement: an INSERT … SELECT of n rows, clean, and
the same statement with one bad row near its end.

  block   n sales; the bad row has currency 'usd' (the statement fails, naming that row)
  defer   n payment vouchers; the bad row has no paid_at (the statement commits, the row is
          recorded in ledger.failure, the others post)

The posting function's set-based statement fails on the bad row; what follows is measured
here: the set-based search for rows with a problem, then (defer) one reconcile of the
others. Variants interleaved (clean, bad, clean, bad …) on one database; each statement in
a transaction that is rolled back, after VACUUM ANALYZE and CHECKPOINT.
"""

from __future__ import annotations

from common import Bench, checkpoint, log, median, timed

STATEMENTS = {
    "block": """INSERT INTO public.sales (customer, total, tax, currency)
                SELECT 'c' || g, 10, 1, CASE WHEN g = {bad} THEN 'usd' ELSE 'USD' END
                FROM generate_series(1, {n}) AS g""",
    "defer": """INSERT INTO public.payment_vouchers (payee, amount, status, paid_at)
                SELECT 'p' || g, 10, 'paid', CASE WHEN g = {bad} THEN NULL ELSE now() END
                FROM generate_series(1, {n}) AS g""",
}


def run(bench: Bench, *, n: int, rounds: int) -> dict:
    db = bench.fresh_db("bench_badrows")
    seconds = {f"{mode}_{kind}": [] for mode in STATEMENTS for kind in ("clean", "bad")}
    with bench.connect(db) as conn:
        for r in range(1, rounds + 1):
            for mode, statement in STATEMENTS.items():
                for kind in ("clean", "bad"):
                    conn.execute("VACUUM ANALYZE")
                    checkpoint(conn)
                    text = statement.format(n=int(n), bad=int(n) - 1 if kind == "bad" else 0)
                    outcome = "posted"
                    with timed() as t:
                        with conn.transaction(force_rollback=True):
                            try:
                                with conn.transaction():
                                    conn.execute(text)
                            except Exception as exc:  # block: the write is refused, as it must be
                                outcome = f"refused: {str(exc).splitlines()[0][:60]}"
                            else:
                                failed = conn.execute("SELECT count(*) FROM ledger.failure"
                                                      " WHERE resolved_at IS NULL").fetchone()[0]
                                if failed:
                                    outcome = f"posted, {failed} recorded"
                    _check(mode, kind, outcome)
                    seconds[f"{mode}_{kind}"].append(t.seconds)
                    log(f"  bad rows round {r}/{rounds} {mode} {kind:<5} {t.seconds:7.2f} s  ({outcome})")
    bench.drop_db(db)
    med = {k: median(v) for k, v in seconds.items()}
    return {
        "rows": n,
        "rounds": rounds,
        "seconds": seconds,
        "median_seconds": med,
        "ratios": {mode: med[f"{mode}_bad"] / med[f"{mode}_clean"] for mode in STATEMENTS},
    }


def _check(mode: str, kind: str, outcome: str) -> None:
    """The statements do what they must, or the timings mean nothing."""
    expected = {("block", "clean"): "posted", ("block", "bad"): "refused",
                ("defer", "clean"): "posted", ("defer", "bad"): "posted, 1 recorded"}[(mode, kind)]
    if not outcome.startswith(expected):
        raise RuntimeError(f"bad rows: {mode} {kind} statement: {outcome}, expected {expected}")

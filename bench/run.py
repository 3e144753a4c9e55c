"""ledgeradmin benchmark: trigger overhead, bulk loads, backfill and verify, side by side
against the best hand-written SQL, on a throwaway PostgreSQL server (default settings).

    .venv/bin/python bench/run.py            # full run, ≤ 10 minutes
    .venv/bin/python bench/run.py --quick    # ≤ 2 minutes
    make bench BENCH_ARGS="--quick --only oltp"

Prints a table, writes bench/results.json and docs/benchmarks.md. Sections: oltp.py, instructions.py
(cpu), bulk.py, backfill.py, verify.py, badrows.py (memory is measured with backfill and verify);
method in docs/benchmarks.md.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shlex
import signal
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import backfill  # noqa: E402
import badrows  # noqa: E402
import bulk  # noqa: E402
import instructions  # noqa: E402
import oltp  # noqa: E402
import report  # noqa: E402
import verify  # noqa: E402
from common import REPO, Bench, git_state, log, machine, pg_settings  # noqa: E402

SECTIONS = ("oltp", "cpu", "bulk", "backfill", "verify", "badrows")

#: Sizes and durations per mode.
MODES = {
    "full": dict(
        oltp=dict(rounds=4, update_rounds=2, insert_seconds=6, update_seconds=2, clients=(2, 8),
                  update_clients=(2, 8), seed_rows=100_000),
        bulk_rows=1_000_000,
        bulk_rounds=2,
        backfill_rows=1_000_000,
        backfill_rounds=2,
        verify_sizes=(1_000_000, 10_000_000),
        verify_rounds={1_000_000: 2, 10_000_000: 1},
        since_rounds={1_000_000: 1, 10_000_000: 1},
        badrows=dict(n=100_000, rounds=2),
    ),
    "quick": dict(
        oltp=dict(rounds=2, insert_seconds=2, update_seconds=2, clients=(2, 8), update_clients=(2,),
                  seed_rows=20_000),
        bulk_rows=200_000,
        bulk_rounds=1,
        backfill_rows=200_000,
        backfill_rounds=1,
        verify_sizes=(200_000, 1_000_000),
        verify_rounds={200_000: 2, 1_000_000: 1},
        since_rounds={200_000: 1, 1_000_000: 1},
        badrows=dict(n=20_000, rounds=1),
    ),
}


def parse_args(argv=None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("--quick", action="store_true", help="smaller sizes and shorter runs (≤ 2 minutes)")
    p.add_argument("--out-json", default=str(REPO / "bench" / "results.json"), metavar="PATH",
                   help="where to write the results as JSON (default: bench/results.json)")
    p.add_argument("--markdown", default=str(REPO / "docs" / "benchmarks.md"), metavar="PATH",
                   help="where to write the report (default: docs/benchmarks.md)")
    p.add_argument("--only", choices=SECTIONS, action="append", metavar="SECTION",
                   help=f"run only this section (repeatable): {', '.join(SECTIONS)}")
    p.add_argument("--backfill-rows", type=int, metavar="N",
                   help="backfill N sales, one round (e.g. 10000000 with --only backfill: about 5 minutes)")
    return p.parse_args(argv)


def _interrupt(signum, frame):
    raise KeyboardInterrupt


def main(argv=None) -> int:
    args = parse_args(argv)
    mode = dict(MODES["quick" if args.quick else "full"])
    if args.backfill_rows:
        mode.update(backfill_rows=args.backfill_rows, backfill_rounds=1)
    sections = args.only or list(SECTIONS)
    # Stop the server on Ctrl-C and on kill; SIGINT too, which a shell may leave ignored for
    # a background job.
    signal.signal(signal.SIGTERM, _interrupt)
    signal.signal(signal.SIGINT, _interrupt)
    started = time.monotonic()
    results: dict = {}
    bench = Bench()
    try:
        log(f"starting a throwaway PostgreSQL {bench.server.version} (default settings)")
        bench.start()
        results["meta"] = {
            "date": dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC"),
            "command": " ".join(["bench/run.py", *map(shlex.quote, sys.argv[1:] if argv is None else argv)]),
            "quick": args.quick,
            "sections": sections,
            "git": git_state(),
            "machine": machine(),
            "postgres": pg_settings(bench),
        }
        section_seconds = results["meta"]["section_seconds"] = {}
        if "oltp" in sections:
            log("1. OLTP")
            t = time.monotonic()
            results["oltp"] = oltp.run(bench, **mode["oltp"])
            section_seconds["oltp"] = time.monotonic() - t
        if "cpu" in sections:
            if instructions.available():
                log("1b. instructions per sale (callgrind, a second cluster in single-user mode)")
                t = time.monotonic()
                results["cpu"] = instructions.run()
                section_seconds["cpu"] = time.monotonic() - t
            else:
                log("1b. instructions per sale: skipped (valgrind is not installed)")
        if "bulk" in sections:
            log(f"2. bulk COPY of {mode['bulk_rows']:,} sales")
            t = time.monotonic()
            results["bulk"] = bulk.run(bench, n=mode["bulk_rows"], rounds=mode["bulk_rounds"])
            section_seconds["bulk"] = time.monotonic() - t
        repaired_db = None
        if "backfill" in sections:
            log(f"3. backfill of {mode['backfill_rows']:,} sales")
            t = time.monotonic()
            repaired_db = "bench_repaired"
            results["backfill"] = backfill.run(bench, n=mode["backfill_rows"], keep_db=repaired_db,
                                               rounds=mode["backfill_rounds"])
            section_seconds["backfill"] = time.monotonic() - t
        if "verify" in sections:
            log("4. verify")
            results["verify"] = []
            for n in mode["verify_sizes"]:
                t = time.monotonic()
                db = repaired_db if repaired_db and n == mode["backfill_rows"] else None
                results["verify"].append(verify.run_size(
                    bench, n=n, db=db, rounds=mode["verify_rounds"][n], since_rounds=mode["since_rounds"][n]))
                if db is None:
                    bench.drop_db(f"bench_verify_{n}")
                section_seconds[f"verify_{n}"] = time.monotonic() - t
        if "badrows" in sections:
            log(f"5. one bad row in a statement of {mode['badrows']['n']:,} rows")
            t = time.monotonic()
            results["badrows"] = badrows.run(bench, **mode["badrows"])
            section_seconds["badrows"] = time.monotonic() - t
    except KeyboardInterrupt:
        log("interrupted: stopping the server")
        return 130
    finally:
        bench.stop()
    results["meta"]["duration_seconds"] = time.monotonic() - started
    Path(args.out_json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    Path(args.markdown).write_text(report.markdown(results), encoding="utf-8")
    print()
    print(report.stdout_table(results))
    print(f"\n{'quick' if args.quick else 'full'} run took {results['meta']['duration_seconds'] / 60:.1f} min; "
          f"wrote {args.out_json} and {args.markdown}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

"""Section 1b — the CPU cost of one sale, in instructions: exact where TPS on a shared
machine is not (the same count twice, whatever else the machine is doing).

A second throwaway cluster gets the example shop (migrate, install), posted sales and two
procedures that each write n sales, one transaction per sale: the sale INSERT of
bench/sql/oltp_insert.sql (variant a with the table's triggers disabled, b with the rule's
trigger) and the limit's statement of bench/sql/oltp_limit.sql (c, triggers disabled).
Its server is stopped; then, per variant, `postgres --single` runs the procedure for
FEW and for MANY sales under valgrind's callgrind, and the difference divided by
MANY - FEW is what one sale costs: its statement, the trigger, the commit (with
synchronous_commit = off: no wait is counted anyway). Skipped when valgrind is missing.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

from common import Bench, log, sql_file
from ledgeradmin.localpg import LocalPostgres
from oltp import SEED_SQL

FEW, MANY = 20, 220
#: pgbench's random variables of the OLTP scripts, as functions of the procedure's loop counter.
VARIABLES = {":cents": "(100 + i * 7919 % 999900)", ":pm": "(1 + i % 3)", ":c": "(1 + i % 100000)"}
VARIANTS = {  # name: (procedure, triggers enabled)
    "a_bare": ("bench_sale", False),
    "b_trigger": ("bench_sale", True),
    "c_limit": ("bench_limit", False),
}


def available() -> bool:
    return shutil.which("valgrind") is not None


def run(seed_rows: int = 20_000) -> dict:
    bench = Bench(keep=True)
    try:
        bench.start()
        db = "shop_tpl"
        with bench.connect(db) as conn:
            conn.execute(SEED_SQL.format(n=int(seed_rows)))
            for name, script in (("bench_sale", "oltp_insert.sql"), ("bench_limit", "oltp_limit.sql")):
                conn.execute(f"CREATE PROCEDURE public.{name}(n int) LANGUAGE plpgsql AS $body$\n"
                             f"BEGIN\n    FOR i IN 1..n LOOP\n{_statement(script)};\n"
                             f"        COMMIT;\n    END LOOP;\nEND\n$body$")
            conn.execute("VACUUM ANALYZE")
        bench.server.stop()  # single-user mode needs the data directory to itself
        out = {"few": FEW, "many": MANY, "instructions": {}}
        for name, (procedure, triggers) in VARIANTS.items():
            counts = [_count(bench.server, db, procedure, triggers, n) for n in (FEW, MANY)]
            out["instructions"][name] = (counts[1] - counts[0]) / (MANY - FEW)
            log(f"  {name:<10} {out['instructions'][name]:11,.0f} instructions per sale")
        m = out["instructions"]
        out["ratios"] = {"b/c": m["c_limit"] / m["b_trigger"], "b/a": m["a_bare"] / m["b_trigger"]}
        return out
    finally:
        bench.server.keep = False
        bench.server.stop()


def _statement(script: str) -> str:
    """An OLTP script's statement with its pgbench variables turned into loop expressions."""
    text = "\n".join(line for line in sql_file(script).splitlines()
                     if line.strip() and not line.startswith(("--", "\\set")))
    for variable, expression in VARIABLES.items():
        text = re.sub(re.escape(variable) + r"\b", expression, text)
    return text.rstrip().rstrip(";")


def _count(server: LocalPostgres, db: str, procedure: str, triggers: bool, n: int) -> int:
    """Instructions of a single-user backend that sets the triggers and calls ``procedure(n)``."""
    directory = Path(server.host)
    script = directory / f"callgrind_{procedure}_{n}.sql"
    output = directory / f"callgrind_{procedure}_{n}.out"
    state = "ENABLE" if triggers else "DISABLE"
    # -j: a statement ends with a semicolon and an empty line
    script.write_text(f"ALTER TABLE public.sales {state} TRIGGER USER;\n\nCALL public.{procedure}({int(n)});\n\n",
                      encoding="utf-8")
    command = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={output}",
               str(server.bindir / "postgres"), "--single", "-j", "-D", str(server.datadir),
               "-c", "synchronous_commit=off", "-c", "jit=off", db]
    if server.os_user:
        shutil.chown(script, server.os_user)
        command = ["runuser", "-u", server.os_user, "--", *command]
    with open(script, encoding="utf-8") as stdin:
        result = subprocess.run(command, stdin=stdin, capture_output=True, text=True)
    if result.returncode != 0 or "ERROR" in result.stdout + result.stderr:
        raise RuntimeError(f"postgres --single under callgrind failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}")
    match = re.search(r"^(?:summary|totals): (\d+)", output.read_text(encoding="utf-8"), re.M)
    if not match:
        raise RuntimeError(f"no instruction count in {output}")
    return int(match.group(1))

"""Shared pieces of the benchmark: the throwaway server, databases, timing, child RSS.

One LocalPostgres with default settings (synchronous_commit on) serves the whole run.
`shop_tpl` is the template database: examples/shop's schema, `ledgeradmin migrate` and
`ledgeradmin install` (run through the CLI, as a user would). Every section that needs a
clean slate gets `CREATE DATABASE … TEMPLATE shop_tpl`.
"""

from __future__ import annotations

import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import time
from contextlib import contextmanager
from pathlib import Path

import psycopg

from ledgeradmin.localpg import LocalPostgres

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
SQL = BENCH / "sql"
SHOP = REPO / "examples" / "shop"
TEMPLATE_DB = "shop_tpl"
#: The ledgeradmin CLI of this interpreter's environment.
CLI = str(Path(sys.executable).with_name("ledgeradmin"))


def log(message: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def sql_file(name: str) -> str:
    """A file of bench/sql/ (its leading comment lines are kept: PostgreSQL ignores them)."""
    return (SQL / name).read_text(encoding="utf-8")


def median(values: list[float]) -> float:
    return statistics.median(values) if values else float("nan")


class Bench:
    """The server of one benchmark run and helpers bound to it."""

    def __init__(self, keep: bool = False) -> None:
        self.server = LocalPostgres(keep=keep)  # keep: the data directory outlives stop()
        self.tmp: Path | None = None

    def start(self) -> None:
        self.server.start()
        self.tmp = Path(self.server.host)  # the server's private directory: writable by its OS user
        with self.connect("postgres") as conn:
            conn.execute(f"CREATE DATABASE {TEMPLATE_DB}")
        with self.connect(TEMPLATE_DB) as conn:
            conn.execute((SHOP / "schema.sql").read_text(encoding="utf-8"))
        self.run_cli("migrate", db=TEMPLATE_DB)
        self.run_cli("install", "--config", str(SHOP / "ledger.toml"), db=TEMPLATE_DB)

    def stop(self) -> None:
        self.server.stop()

    # -- connections and databases -------------------------------------------------------

    def dsn(self, db: str) -> str:
        return self.server.conninfo(db)

    def connect(self, db: str, **kwargs) -> psycopg.Connection:
        return psycopg.connect(self.dsn(db), autocommit=True, **kwargs)

    def fresh_db(self, name: str) -> str:
        """(Re)create database ``name`` as a copy of the template; return its name."""
        with self.connect("postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
            conn.execute(f"CREATE DATABASE {name} TEMPLATE {TEMPLATE_DB}")
        return name

    def drop_db(self, name: str) -> None:
        with self.connect("postgres") as conn:
            conn.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

    # -- programs -------------------------------------------------------------------------

    def run_cli(self, *args: str, db: str, check: bool = True) -> "ChildResult":
        """Run the ledgeradmin CLI against ``db``; wall time and peak RSS of the child."""
        return run_child([CLI, *args, "--dsn", self.dsn(db)], check=check)

    def pgbench_path(self) -> str:
        """pgbench beside the server programs (also where a symlinked pg_ctl points), else on PATH."""
        for directory in (self.server.bindir, (self.server.bindir / "pg_ctl").resolve().parent):
            if os.access(directory / "pgbench", os.X_OK):
                return str(directory / "pgbench")
        found = shutil.which("pgbench")
        if not found:
            raise RuntimeError(f"pgbench not found beside {self.server.bindir} nor on PATH")
        return found

    def pgbench(self, db: str, *args: str) -> "ChildResult":
        command = [
            self.pgbench_path(), "-h", self.server.host, "-p", str(self.server.port),
            "-U", self.server.user, *args, db,
        ]
        return run_child(command, check=True)


class ChildResult:
    def __init__(self, returncode: int, stdout: str, stderr: str, seconds: float, max_rss_kb: int) -> None:
        self.returncode, self.stdout, self.stderr = returncode, stdout, stderr
        self.seconds, self.max_rss_kb = seconds, max_rss_kb

    @property
    def max_rss_mb(self) -> float:
        return self.max_rss_kb / 1024


def run_child(command: list[str], check: bool = True) -> ChildResult:
    """Run a program; wall time and its own peak RSS (os.wait4's rusage of that child alone)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG") and k != "LEDGERADMIN_DSN"}
    started = time.perf_counter()
    proc = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    # Read the pipes to the end, then reap the child ourselves to get its rusage.
    stdout, stderr = proc.stdout.read(), proc.stderr.read()
    _, status, usage = os.wait4(proc.pid, 0)
    seconds = time.perf_counter() - started
    proc.returncode = os.waitstatus_to_exitcode(status)
    proc.stdout.close()
    proc.stderr.close()
    result = ChildResult(proc.returncode, stdout, stderr, seconds, usage.ru_maxrss)
    if check and proc.returncode != 0:
        raise RuntimeError(f"{' '.join(command[:3])} … exited {proc.returncode}:\n{stdout}\n{stderr}")
    return result


@contextmanager
def timed():
    """with timed() as t: …; t.seconds afterwards."""

    class T:
        seconds = 0.0

    t = T()
    started = time.perf_counter()
    try:
        yield t
    finally:
        t.seconds = time.perf_counter() - started


def set_triggers(conn: psycopg.Connection, enabled: bool, table: str = "public.sales") -> None:
    """ENABLE/DISABLE TRIGGER USER on the source table (ledgeradmin's triggers are its only ones)."""
    conn.execute(f"ALTER TABLE {table} {'ENABLE' if enabled else 'DISABLE'} TRIGGER USER")


def checkpoint(conn: psycopg.Connection) -> None:
    conn.execute("CHECKPOINT")


# -- environment description -----------------------------------------------------------------


def machine() -> dict:
    cpu = platform.processor() or platform.machine()
    try:
        text = Path("/proc/cpuinfo").read_text()
        m = re.search(r"^model name\s*:\s*(.+)$", text, re.M)
        if m:
            cpu = m.group(1).strip()
    except OSError:
        pass
    ram_gib = None
    try:
        m = re.search(r"^MemTotal:\s+(\d+) kB", Path("/proc/meminfo").read_text(), re.M)
        ram_gib = round(int(m.group(1)) / 1024 / 1024, 1) if m else None
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "ram_gib": ram_gib,
        "os": f"{platform.system()} {platform.release()}",
        "python": platform.python_version(),
    }


SETTINGS = ("shared_buffers", "work_mem", "maintenance_work_mem", "synchronous_commit", "max_wal_size",
            "checkpoint_timeout", "jit", "fsync", "wal_level")


def git_state() -> dict:
    """The commit measured, and the product files that differ from it (a dirty tree)."""

    def git(*args: str) -> str:
        try:
            return subprocess.run(["git", *args], cwd=REPO, capture_output=True, text=True, check=True).stdout
        except (OSError, subprocess.CalledProcessError):
            return ""

    changed = [line[3:] for line in git("status", "--porcelain", "--", "src", "db").splitlines() if line.strip()]
    return {"commit": git("rev-parse", "--short", "HEAD").strip(), "changed_product_files": changed}


def pg_settings(bench: Bench) -> dict:
    with bench.connect("postgres") as conn:
        version = conn.execute("SHOW server_version").fetchone()[0]
        values = {name: conn.execute(f"SHOW {name}").fetchone()[0] for name in SETTINGS}
    return {"version": version, "settings": values}

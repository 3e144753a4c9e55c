"""On a hot standby: verify, status and the reports run there (read only); the commands
that write fail with a hint to use the primary; a verify that WAL replay cancels says so.

The module runs a primary of its own and a streaming standby made from it by
pg_basebackup (both stopped at the end).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psycopg
import pytest

from ledgeradmin.localpg import LocalPostgres
from ledgeradmin.migrate import migrate
from test_reliability import wait_for

REPO = Path(__file__).resolve().parents[1]
SHOP_SCHEMA = REPO / "examples" / "shop" / "schema.sql"
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"
CONFIGURED = {"install", "status", "verify", "backfill", "sql"}  # the commands that read ledger.toml


class Standby(LocalPostgres):
    """A hot standby of ``primary``: a base backup (pg_basebackup -R) that streams its WAL."""

    def __init__(self, primary: LocalPostgres, **kwargs) -> None:
        # pg_basebackup lives beside the real pg_ctl (the bindir found may hold links to a few programs)
        super().__init__(bindir=(primary.bindir / "pg_ctl").resolve().parent, **kwargs)
        self.primary = primary

    def _initdb(self) -> None:
        self._run("pg_basebackup", "-D", str(self.datadir), "-R", "-X", "stream", "-c", "fast",
                  "-h", self.primary.host, "-p", str(self.primary.port), "-U", self.primary.user)


@pytest.fixture(scope="module")
def primary():
    # no autovacuum: its cleanup and truncation would be replayed on the standby at random moments
    with LocalPostgres(fast=True, settings={"autovacuum": "off"}) as server:
        conninfo = server.conninfo()
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute(SHOP_SCHEMA.read_text(encoding="utf-8"))
        migrate(conninfo)
        assert ledgeradmin("install", conninfo).returncode == 0
        yield server


@pytest.fixture(scope="module")
def standby(primary):
    with Standby(primary, fast=True) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            assert db.execute("SELECT pg_is_in_recovery()").fetchone()[0]
        yield server


def command_line(command: str, conninfo: str, *args: str) -> tuple[list[str], dict[str, str]]:
    """argv and environment of `ledgeradmin COMMAND --dsn … [--config shop] ARGS`, with no
    PG* or LEDGERADMIN_* variable to change where it connects."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PG", "LEDGERADMIN_"))}
    return [sys.executable, "-m", "ledgeradmin", *command.split(), "--dsn", conninfo,
            *(["--config", str(SHOP_TOML)] if command in CONFIGURED else []), *args], env


def ledgeradmin(command: str, conninfo: str, *args: str) -> subprocess.CompletedProcess:
    """The command in a process of its own, as cron runs it (command_line)."""
    argv, env = command_line(command, conninfo, *args)
    return subprocess.run(argv, capture_output=True, text=True, env=env, timeout=300)


def replayed(primary: LocalPostgres, standby: LocalPostgres) -> None:
    """Wait until the standby has replayed everything the primary wrote so far."""
    with psycopg.connect(primary.conninfo(), autocommit=True) as p, \
            psycopg.connect(standby.conninfo(), autocommit=True) as s:
        target = p.execute("SELECT pg_current_wal_insert_lsn()").fetchone()[0]
        deadline = time.monotonic() + 30
        while not s.execute("SELECT pg_last_wal_replay_lsn() >= %s::pg_lsn", (target,)).fetchone()[0]:
            assert time.monotonic() < deadline, "the standby did not catch up"
            time.sleep(0.05)


def untimed(verify_json: str) -> list[dict]:
    """verify --json's rules without their run times."""
    return [{k: v for k, v in r.items() if k != "seconds"} for r in json.loads(verify_json)["rules"]]


def test_verify_status_and_reports_run_on_a_standby(primary, standby):
    with psycopg.connect(primary.conninfo(), autocommit=True) as db:
        db.execute("INSERT INTO public.sales (customer, total, tax) SELECT 'c' || i, 10 + i, 1 FROM generate_series(1, 50) AS i")
        with db.transaction():  # one sale the triggers never see: missing from the ledger
            db.execute("SET LOCAL session_replication_role = replica")
            db.execute("INSERT INTO public.sales (customer, total, tax) VALUES ('unseen', 99, 9)")
    replayed(primary, standby)

    status = ledgeradmin("status", standby.conninfo(), "--json")
    assert status.returncode == 0, status.stderr
    assert {r["rule"]: r["state"] for r in json.loads(status.stdout)["rules"]}["sale"] == "ok"

    on_standby = ledgeradmin("verify", standby.conninfo(), "--json", "--detailed")
    assert on_standby.returncode == 1, on_standby.stderr
    sale = {r["rule"]: r for r in json.loads(on_standby.stdout)["rules"]}["sale"]
    assert (sale["posted"], sale["missing"], sale["drifted"]) == (50, 1, 0)
    on_primary = ledgeradmin("verify", primary.conninfo(), "--json", "--detailed")
    assert untimed(on_standby.stdout) == untimed(on_primary.stdout)

    since = ledgeradmin("verify", standby.conninfo(), "--since", "2000-01-01")
    assert since.returncode == 1 and "missing" in since.stdout, since.stderr

    report = ledgeradmin("report trial-balance", standby.conninfo(), "--json")
    assert report.returncode == 0, report.stderr
    assert report.stdout == ledgeradmin("report trial-balance", primary.conninfo(), "--json").stdout
    assert json.loads(report.stdout), "the trial balance has rows"


@pytest.mark.parametrize("command", ["migrate", "install", "uninstall", "backfill"])
def test_commands_that_write_fail_on_a_standby_with_a_hint(primary, standby, command):
    result = ledgeradmin(command, standby.conninfo())
    assert result.returncode == 2, (result.stdout, result.stderr)
    assert "read-only transaction" in result.stderr, result.stderr
    assert "Hint: this server takes no writes: it is a hot standby" in result.stderr, result.stderr
    assert "against the primary" in result.stderr
    assert "Traceback" not in result.stderr


def test_verify_cancelled_by_wal_replay_names_the_conflict(primary, standby):
    """Replay takes the locks of the primary's DDL; a standby query holding a lock they need
    is cancelled at once with max_standby_streaming_delay = 0. Here verify holds its lock on
    ledger.rule (read first, by its status step) and waits, inside the savepoint of a probe
    of the sale rule's expressions, for public.sales, which the primary keeps locked:
    replaying a lock of ledger.rule then ends verify's session (a conflict inside a
    savepoint ends the session, not just the statement). verify must say why, not "the
    connection is lost", and the probe must not take it for a config error."""
    with psycopg.connect(standby.conninfo(), autocommit=True) as s:
        s.execute("ALTER SYSTEM SET max_standby_streaming_delay = 0")
        s.execute("SELECT pg_reload_conf()")
    held = psycopg.connect(primary.conninfo())
    run = None
    try:
        held.execute("LOCK TABLE public.sales IN ACCESS EXCLUSIVE MODE")
        replayed(primary, standby)
        argv, env = command_line("verify", standby.conninfo())
        run = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
        with psycopg.connect(standby.conninfo(), autocommit=True) as s:
            wait_for(s, "SELECT EXISTS (SELECT FROM pg_stat_activity WHERE application_name = 'ledgeradmin'"
                        " AND wait_event_type = 'Lock')", ())
        with psycopg.connect(primary.conninfo(), autocommit=True) as p:
            p.execute("BEGIN; LOCK TABLE ledger.rule IN ACCESS EXCLUSIVE MODE; COMMIT")
        out, err = run.communicate(timeout=60)
    finally:
        if run is not None and run.poll() is None:
            run.kill()
        held.rollback()
        held.close()
        with psycopg.connect(standby.conninfo(), autocommit=True) as s:
            s.execute("ALTER SYSTEM RESET max_standby_streaming_delay")
            s.execute("SELECT pg_reload_conf()")
    assert run.returncode == 2, (out, err)
    assert "Error: database error: terminating connection due to conflict with recovery" in err, err
    assert "the connection is lost" not in err
    assert "Hint: WAL replay on this hot standby cancelled the query (User was holding a relation lock" in err, err
    assert "max_standby_streaming_delay" in err
    # the standby serves verify again once the conflict is over
    replayed(primary, standby)
    again = ledgeradmin("verify", standby.conninfo(), "--json")
    assert again.returncode in (0, 1), again.stderr

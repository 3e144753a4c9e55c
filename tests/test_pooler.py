"""Through PgBouncer in transaction mode: every command works when consecutive transactions
run on different server connections (no prepared statement, no session state relied on).

Runs where the `pgbouncer` program is installed (`.ci/run` installs it); skipped elsewhere.
The pooler is started for the module and stopped at its end.
"""

from __future__ import annotations

import json
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledgeradmin.localpg import _free_tcp_port
from test_standby import ledgeradmin

REPO = Path(__file__).resolve().parents[1]
PGBOUNCER = shutil.which("pgbouncer") or next(
    (p for p in ("/usr/sbin/pgbouncer", "/usr/bin/pgbouncer") if os.access(p, os.X_OK)), None)

pytestmark = pytest.mark.skipif(PGBOUNCER is None, reason="pgbouncer is not installed")


@pytest.fixture(scope="module")
def pooler(pg_server):
    """PgBouncer on 127.0.0.1 in front of the test server: transaction pooling, three server
    connections kept open and handed out in turn, so that consecutive transactions of one
    client land on different server connections."""
    directory = Path(tempfile.mkdtemp(prefix="ledgeradmin-pgbouncer-"))  # not under pytest's private tmp
    port = _free_tcp_port()
    (directory / "users.txt").write_text(f'"{pg_server.user}" ""\n')
    (directory / "pgbouncer.ini").write_text(f"""\
[databases]
* = host={pg_server.host} port={pg_server.port}
[pgbouncer]
listen_addr = 127.0.0.1
listen_port = {port}
unix_socket_dir =
auth_type = trust
auth_file = {directory}/users.txt
pool_mode = transaction
default_pool_size = 3
min_pool_size = 3
server_round_robin = 1
logfile = {directory}/pgbouncer.log
pidfile = {directory}/pgbouncer.pid
""")
    command = [PGBOUNCER, "-d", str(directory / "pgbouncer.ini")]
    if os.geteuid() == 0:  # pgbouncer refuses to run as root, like the server
        os.chown(directory, pwd.getpwnam(pg_server.os_user).pw_uid, -1)
        command = ["runuser", "-u", pg_server.os_user, "--", *command]
    subprocess.run(command, check=True, capture_output=True)
    pidfile = directory / "pgbouncer.pid"
    deadline = time.monotonic() + 10
    while not pidfile.exists():
        assert time.monotonic() < deadline, (directory / "pgbouncer.log").read_text()
        time.sleep(0.05)
    pid = int(pidfile.read_text())
    try:
        yield port
    finally:
        os.kill(pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        while pidfile.exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        shutil.rmtree(directory, ignore_errors=True)


def through(pooler: int, dsn: str) -> str:
    """The conninfo of the test database reached through the pooler."""
    params = conninfo_to_dict(dsn)
    return make_conninfo(host="127.0.0.1", port=str(pooler), user=params["user"], dbname=params["dbname"])


def test_every_command_works_through_a_transaction_pooler(pooler, pg_server):
    name = "ledgeradmin_pooled"
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f"DROP DATABASE IF EXISTS {name}")
        admin.execute(f"CREATE DATABASE {name} TEMPLATE template0")
    try:
        direct = pg_server.conninfo(name)
        dsn = through(pooler, direct)
        with psycopg.connect(direct, autocommit=True) as db:
            db.execute((REPO / "examples" / "shop" / "schema.sql").read_text())
        for command in ("migrate", "install", "install"):  # the second install: all unchanged
            result = ledgeradmin(command, dsn)
            assert result.returncode == 0, (command, result.stderr)
            # no session state left on the server connections, which other clients get next
            with psycopg.connect(dsn, autocommit=True, prepare_threshold=None) as pooled:
                paths = {pooled.execute("SHOW search_path").fetchone()[0] for _ in range(6)}
            assert paths == {'"$user", public'}, command
        with psycopg.connect(direct, autocommit=True) as db:
            with db.transaction():  # 3,000 sales the triggers never saw
                db.execute("SET LOCAL session_replication_role = replica")
                db.execute("INSERT INTO public.sales (customer, total, tax)"
                           " SELECT 'c' || i, 10 + i % 100, 1 FROM generate_series(1, 3000) AS i")

        # backfill runs one batch query 30 times: psycopg would prepare it after five runs,
        # and the next batch would fail on another server connection
        result = ledgeradmin("backfill", dsn, "--batch-size", "100", "--json")
        assert result.returncode == 0, result.stderr
        sale = {r["rule"]: r for r in json.loads(result.stdout)["rules"]}["sale"]
        assert sale["posted"] == 3000, sale
        for _ in range(3):
            result = ledgeradmin("verify", dsn)
            assert result.returncode == 0, result.stderr
        for command, *args in (["status"], ["report trial-balance"], ["sql"], ["uninstall", "--rule", "payment"],
                               ["install"]):
            result = ledgeradmin(command, dsn, *args)
            assert result.returncode == 0, (command, result.stderr)
    finally:
        with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as admin:
            admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")

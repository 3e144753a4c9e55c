"""The test infrastructure itself: the local server, the per-test databases, the fixtures."""

import os
import stat
from pathlib import Path

import psycopg
import pytest

from ledgeradmin.localpg import LocalPgError, LocalPostgres, candidate_bindirs, find_bindir


def _fake_bindir(directory: Path) -> Path:
    """A directory with executable files named like the server programs."""
    directory.mkdir(parents=True)
    for name in ("pg_ctl", "initdb", "postgres"):
        program = directory / name
        program.write_text("#!/bin/sh\n")
        program.chmod(program.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
    return directory


def test_server_answers(pg_server, conn):
    row = conn.execute("select version(), current_setting('server_version')").fetchone()
    assert row[0].startswith("PostgreSQL ")
    assert row[1].split()[0] == pg_server.version


def test_session_server_is_fast_and_socket_only(pg_server):
    with psycopg.connect(pg_server.conninfo()) as db:
        settings = dict(db.execute(
            "select name, setting from pg_settings where name in "
            "('fsync', 'synchronous_commit', 'full_page_writes', 'listen_addresses', 'unix_socket_directories')"
        ).fetchall())
    assert settings == {
        "fsync": "off",
        "synchronous_commit": "off",
        "full_page_writes": "off",
        "listen_addresses": "",
        "unix_socket_directories": pg_server.host,
    }


def test_server_runs_as_unprivileged_user(pg_server):
    owner = pg_server.datadir.stat().st_uid
    assert owner != 0
    assert owner == os.geteuid() or os.geteuid() == 0


@pytest.mark.parametrize("attempt", [1, 2])
def test_each_test_gets_a_fresh_database(conn, attempt):
    """Both runs create the same table: the second fails if databases leak between tests."""
    assert conn.execute("select to_regclass('public.isolation_probe')").fetchone()[0] is None
    conn.execute("create table public.isolation_probe (attempt int)")
    conn.execute("insert into public.isolation_probe values (%s)", (attempt,))


def test_database_is_a_copy_of_the_template(pg_server, pg_template, conn):
    query = (
        "select count(*) from pg_class c join pg_namespace n on n.oid = c.relnamespace"
        " where n.nspname not in ('pg_catalog', 'information_schema', 'pg_toast')"
    )
    with psycopg.connect(pg_server.conninfo(pg_template.template_dbname)) as template:
        in_template = template.execute(query).fetchone()[0]
    assert in_template > 0, "TEMPLATE_LOADERS created nothing"
    assert conn.execute(query).fetchone()[0] == in_template
    assert conn.execute("select to_regclass('public.sales')").fetchone()[0] == "sales"


def test_conn_is_autocommit_and_connect_opens_more(conn, connect):
    assert conn.autocommit
    other = connect()
    third = connect(autocommit=True)
    pids = {c.execute("select pg_backend_pid()").fetchone()[0] for c in (conn, other, third)}
    assert len(pids) == 3
    assert other.info.dbname == conn.info.dbname
    assert not other.autocommit and third.autocommit


def test_missing_binaries_give_install_hint(tmp_path):
    with pytest.raises(LocalPgError, match=r"apt-get install -y postgresql"):
        find_bindir(path="", locations=[str(tmp_path / "*" / "bin")])
    with pytest.raises(LocalPgError, match=r"apt-get install -y postgresql"):
        LocalPostgres(bindir=tmp_path)


def test_search_prefers_path_then_highest_version(tmp_path):
    for version in ("9.6", "15", "16"):
        _fake_bindir(tmp_path / "lib" / version / "bin")
    versions = str(tmp_path / "lib" / "*" / "bin")
    assert find_bindir(path="", locations=[versions]) == tmp_path / "lib" / "16" / "bin"
    assert candidate_bindirs(path="", locations=[versions])[-1] == tmp_path / "lib" / "9.6" / "bin"
    on_path = _fake_bindir(tmp_path / "custom")
    assert find_bindir(path=f"{tmp_path / 'nowhere'}:{on_path}", locations=[versions]) == on_path


def test_tcp_server_with_default_settings_stops_cleanly():
    server = LocalPostgres(tcp=True).start()
    try:
        with psycopg.connect(server.conninfo(tcp=True)) as db:
            assert db.execute("show fsync").fetchone()[0] == "on"
            assert db.execute("show listen_addresses").fetchone()[0] == "127.0.0.1"
            assert db.execute("select inet_server_port()").fetchone()[0] == server.port
        directory = Path(server.host)
    finally:
        server.stop()
    assert not directory.exists()
    server.stop()  # idempotent
    with pytest.raises(psycopg.OperationalError):
        psycopg.connect(f"host=127.0.0.1 port={server.port} user=postgres connect_timeout=2")

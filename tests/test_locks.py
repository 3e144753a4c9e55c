"""install and uninstall on tables in use (locks.py): each attempt waits a bounded time for
its locks, so that the queries queued behind it move again; it retries, names the sessions
in the way when it gives up, and one install or uninstall runs at a time per database."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.errors import LedgerError
from ledgeradmin.install import install, uninstall
from ledgeradmin.locks import DDL_LOCK, LockWait
from test_reliability import wait_for

SHOP_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "shop" / "ledger.toml"
RULES = ["manufacturing", "payment", "requisition", "sale"]


def open_writer(connect) -> psycopg.Connection:
    """A session whose open transaction wrote a sale: it holds ROW EXCLUSIVE on public.sales."""
    writer = connect()
    writer.execute("INSERT INTO public.sales (customer, total) VALUES ('open', 10)")
    return writer


def installed(conn: psycopg.Connection) -> list[str]:
    return [r[0] for r in conn.execute("SELECT name FROM ledger.rule ORDER BY name")]


def user_triggers(conn: psycopg.Connection, table: str) -> int:
    return conn.execute("SELECT count(*) FROM pg_trigger WHERE tgrelid = %s::regclass AND NOT tgisinternal",
                        (table,)).fetchone()[0]


def test_install_gives_up_after_its_attempts_and_names_the_session_in_the_way(conn, connect, shop_config):
    writer = open_writer(connect)
    started = time.monotonic()
    with pytest.raises(LedgerError) as err:
        install(conn, shop_config, wait=LockWait(200, 1))
    assert time.monotonic() - started < 5
    message = err.value.message
    assert message.startswith("install gave up after 2 attempts: a lock it needs was not free within 200 ms;")
    assert "nothing was changed" in message
    assert f"public.sales: pid {writer.info.backend_pid} (user " in message
    assert "idle in transaction" in message
    assert "--lock-timeout" in err.value.hint
    assert installed(conn) == [] and user_triggers(conn, "public.sales") == 0
    writer.rollback()
    result = install(conn, shop_config, wait=LockWait(200, 1))
    assert sorted(result.installed) == RULES


def test_install_behind_a_table_locked_for_ddl_retries_and_is_no_config_error(conn, connect, shop_config):
    """install reads the table before it changes anything (its expressions are planned
    against it), so an ACCESS EXCLUSIVE holder (an ALTER TABLE, say) stops it at the first
    read: that wait too is bounded and retried, and the holder named; it is not the rule's fault."""
    alter = connect()
    alter.execute("LOCK TABLE public.purchase_requisitions IN ACCESS EXCLUSIVE MODE")
    with pytest.raises(LedgerError) as err:
        install(conn, shop_config, wait=LockWait(200, 1))
    assert type(err.value) is LedgerError, err.value.message  # not a ConfigError
    assert err.value.message.startswith("install gave up after 2 attempts")
    assert f"public.purchase_requisitions: pid {alter.info.backend_pid} (user " in err.value.message
    assert installed(conn) == []
    released = threading.Timer(0.3, alter.rollback)
    released.start()
    try:
        result = install(conn, shop_config, wait=LockWait(200, 3))
    finally:
        released.join()
    assert sorted(result.installed) == RULES


def test_writers_wait_at_most_one_lock_timeout_behind_a_blocked_install(shop, connect, shop_config):
    """Without a lock timeout the second writer would wait for the first one's transaction,
    queued behind install; here it waits until install's attempt runs out."""
    writer = open_writer(connect)
    installer = connect(autocommit=True)
    outcome: dict = {}

    def run():
        try:
            install(installer, shop_config, wait=LockWait(400, 0))
        except LedgerError as exc:
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        wait_for(connect(autocommit=True),
                 "SELECT count(*) > 0 FROM pg_locks WHERE pid = %s AND NOT granted"
                 " AND relation = 'public.sales'::regclass", (installer.info.backend_pid,))
        second = connect(autocommit=True)
        second.execute("SET statement_timeout = '5s'")
        started = time.monotonic()
        second.execute("INSERT INTO public.sales (customer, total) VALUES ('second', 20)")
        assert time.monotonic() - started < 2
        assert writer.info.transaction_status == psycopg.pq.TransactionStatus.INTRANS  # still open
    finally:
        thread.join(10)
    assert "gave up after 1 attempt:" in outcome["error"].message


def test_install_retries_until_the_lock_is_free(conn, connect, shop_config):
    writer = open_writer(connect)
    pid = writer.info.backend_pid
    notes: list[str] = []
    timer = threading.Timer(0.8, writer.rollback)
    timer.start()
    try:
        result = install(conn, shop_config, wait=LockWait(200, 10), on_retry=notes.append)
    finally:
        timer.join()
    assert sorted(result.installed) == RULES
    assert notes, "install never had to wait"
    assert notes[0].startswith("install: a lock was not free within 200 ms (in the way: public.sales: pid")
    assert f"pid {pid} " in notes[0] and notes[0].endswith("attempt 2 of 11 in 0.5 s")


def test_concurrent_installs_take_turns(dsn, shop_config):
    """Two deployments at once: without the advisory lock, one of two concurrent
    CREATE OR REPLACE FUNCTION statements fails ('tuple concurrently updated')."""
    errors: list[BaseException] = []

    def run():
        with psycopg.connect(dsn, autocommit=True) as c:
            for _ in range(4):
                try:
                    install(c, shop_config)
                except BaseException as exc:  # noqa: BLE001
                    errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(60)
    assert errors == []
    with psycopg.connect(dsn, autocommit=True) as c:
        assert installed(c) == RULES


def test_install_behind_another_install_names_it(conn, connect, shop_config):
    other = connect()
    other.execute("SELECT pg_advisory_xact_lock(%s)", (DDL_LOCK,))
    with pytest.raises(LedgerError) as err:
        install(conn, shop_config, wait=LockWait(100, 0))
    assert f"another ledgeradmin install or uninstall: pid {other.info.backend_pid} (" in err.value.message
    assert installed(conn) == []


def test_uninstall_gives_up_behind_a_reader_and_names_it(shop, connect):
    """Dropping a trigger locks its table against readers too."""
    reader = connect()
    reader.execute("SELECT count(*) FROM public.payment_vouchers")
    with pytest.raises(LedgerError) as err:
        uninstall(shop, wait=LockWait(200, 0))
    assert f"public.payment_vouchers: pid {reader.info.backend_pid} (" in err.value.message
    assert installed(shop) == RULES and user_triggers(shop, "public.payment_vouchers") == 4
    reader.rollback()
    assert uninstall(shop, wait=LockWait(200, 0)) == RULES


def test_install_in_a_callers_transaction_keeps_its_lock_timeout(conn, shop_config):
    with conn.transaction():
        conn.execute("SET LOCAL lock_timeout = '7s'")
        install(conn, shop_config)
        assert conn.execute("SHOW lock_timeout").fetchone()[0] == "7s"
    assert installed(conn) == RULES


def test_cli_lock_options(dsn, connect):
    writer = open_writer(connect)
    runner = CliRunner()
    args = ["install", "--dsn", dsn, "--config", str(SHOP_CONFIG)]
    result = runner.invoke(main, [*args, "--lock-timeout", "150ms", "--lock-retries", "1"])
    assert result.exit_code == 2, result.output
    assert "install: a lock was not free within 150 ms" in result.stderr
    assert "attempt 2 of 2 in 0.5 s" in result.stderr
    assert "Error: install gave up after 2 attempts" in result.stderr
    assert f"public.sales: pid {writer.info.backend_pid} (" in result.stderr
    bad = runner.invoke(main, [*args, "--lock-timeout", "soon"])
    assert bad.exit_code == 2 and "'soon' is not a duration such as 500ms, 2s or 1min" in bad.output
    writer.rollback()
    result = runner.invoke(main, [*args, "--lock-timeout", "1min", "--lock-retries", "0"])
    assert result.exit_code == 0, result.output
    assert result.stdout.count("installed rule") == 4


@pytest.mark.parametrize(("text", "ms"), [("1s", 1000), ("500ms", 500), ("2 min", 120_000), ("250", 250), ("0", 0)])
def test_lock_timeout_reads_postgresql_durations(text, ms):
    from ledgeradmin.cli import _milliseconds

    assert _milliseconds(text) == ms
    assert LockWait().timeout_ms == _milliseconds("1s")  # the default the CLI shows


def test_lock_timeout_0_waits_as_long_as_it_takes(conn, connect, shop_config):
    writer = open_writer(connect)
    timer = threading.Timer(1.5, writer.rollback)
    timer.start()
    started = time.monotonic()
    try:
        result = install(conn, shop_config, wait=LockWait(0, 0))
    finally:
        timer.join()
    assert time.monotonic() - started >= 1.4
    assert sorted(result.installed) == RULES

"""A database with the ledger, dumped (pg_dump) and restored (pg_restore) into an empty one:
the journal comes back with the source rows, the triggers after the data (nothing posts
twice), and the copy is as in sync, as guarded and as live as the original."""

from __future__ import annotations

import subprocess
from contextlib import contextmanager

import psycopg
import pytest
from psycopg.conninfo import conninfo_to_dict

from ledgeradmin.period import close, closed_through
from ledgeradmin.status import status
from ledgeradmin.verify import verify


def program(pg_server, name: str) -> str:
    """A client program of the server's release (beside the real pg_ctl)."""
    return str((pg_server.bindir / "pg_ctl").resolve().parent / name)


@contextmanager
def empty_database(pg_server, name: str):
    with psycopg.connect(pg_server.conninfo("postgres"), autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0')
        try:
            yield pg_server.conninfo(name)
        finally:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')


def entries(conn) -> int:
    return conn.execute("SELECT count(*) FROM ledger.entry").fetchone()[0]


def untimed(result) -> dict:
    data = result.as_dict()
    data.pop("duration_seconds")
    for r in data["rules"]:
        r.pop("seconds")
    data["ledger"].pop("seconds")
    return data


def findings(result) -> list[tuple]:
    return [(r.rule, r.missing, r.orphaned, r.drifted, r.failed) for r in result.rules]


def test_a_dump_restored_is_in_sync_guarded_and_posting(shop, dsn, pg_server, shop_config, tmp_path):
    shop.execute("INSERT INTO public.sales (customer, total, tax)"
                 " SELECT 'c' || i, 10 + i, 1 FROM generate_series(1, 200) AS i")
    shop.execute("UPDATE public.sales SET total = total + 5 WHERE id % 10 = 0")  # reversals and reposts
    shop.execute("DELETE FROM public.sales WHERE id % 25 = 0")
    shop.execute("INSERT INTO public.payment_vouchers (payee, amount, status, paid_at)"
                 " VALUES ('ok', 5, 'paid', now()), ('bad', 'NaN', 'paid', now())")  # defer: one failure
    with shop.transaction():  # a write the triggers never saw: one sale missing
        shop.execute("SET LOCAL session_replication_role = replica")
        shop.execute("INSERT INTO public.sales (customer, total, tax) VALUES ('unseen', 99, 9)")
    close(shop, shop.execute("SELECT (now() AT TIME ZONE 'UTC')::date - 2").fetchone()[0])
    before = verify(shop, shop_config)
    assert [(r.rule, r.missing, r.failed) for r in before.rules if r.missing or r.failed] == \
        [("sale", 1, 0), ("payment", 1, 1)]  # a failed row is missing too

    dump = tmp_path / "shop.dump"
    subprocess.run([program(pg_server, "pg_dump"), "-Fc", "-f", str(dump), "-d", dsn], check=True)
    name = conninfo_to_dict(dsn)["dbname"] + "_restored"
    with empty_database(pg_server, name) as restored_dsn:
        subprocess.run([program(pg_server, "pg_restore"), "--exit-on-error", "-d", restored_dsn, str(dump)],
                       check=True, capture_output=True)
        with psycopg.connect(restored_dsn, autocommit=True) as copy:
            # the same journal, nothing posted twice, the same findings
            assert entries(copy) == entries(shop)
            assert [s.state for s in status(copy, shop_config)] == ["ok"] * 4
            after = verify(copy, shop_config)
            assert untimed(after) == untimed(before)
            assert copy.execute("SELECT source_key, sqlstate FROM ledger.failure").fetchall() == \
                shop.execute("SELECT source_key, sqlstate FROM ledger.failure").fetchall()

            # guarded as before: entries immutable, posting functions pinned and not public
            with pytest.raises(psycopg.Error, match="append-only"):
                copy.execute("UPDATE ledger.line SET debit = debit + 1")
            pinned, definer, public = copy.execute(
                "SELECT proconfig, prosecdef, has_function_privilege('public', oid, 'EXECUTE')"
                " FROM pg_proc WHERE oid = 'ledger.post_sale()'::regprocedure").fetchone()
            assert "search_path=pg_catalog, pg_temp" in pinned and definer and not public

            # and live: writes post, entry ids go on after the restored ones
            last = copy.execute("SELECT max(id) FROM ledger.entry").fetchone()[0]
            copy.execute("INSERT INTO public.sales (customer, total, tax) VALUES ('after', 50, 5)")
            copy.execute("UPDATE public.sales SET total = 70 WHERE id = 1")
            new = copy.execute("SELECT source_key, reverses IS NOT NULL FROM ledger.entry WHERE id > %s ORDER BY id",
                               (last,)).fetchall()
            assert new == [("202", False), ("1", True), ("1", False)]  # posted; reversed and reposted
            assert findings(verify(copy, shop_config)) == findings(before)
            # and the books closed as before
            assert closed_through(copy) == closed_through(shop)
            with pytest.raises(psycopg.errors.CheckViolation, match="closed period"):
                copy.execute("INSERT INTO public.sales (customer, sold_at, total) VALUES ('late', now() - '3 days'::interval, 1)")

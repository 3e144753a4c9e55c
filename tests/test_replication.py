"""Logical replication: publications that include the ledger refuse none of its writes, and
a subscriber that receives the source tables with the journal is in sync, never posting
twice (its triggers do not fire for replicated rows)."""

from __future__ import annotations

import time

import psycopg
import pytest

from ledgeradmin.backfill import backfill
from ledgeradmin.config import load_config
from ledgeradmin.install import install
from ledgeradmin.localpg import LocalPostgres
from ledgeradmin.migrate import migrate
from ledgeradmin.verify import verify
from conftest import SHOP_CONFIG, SHOP_SCHEMA

#: What the subscriber receives: the source tables and the journal. Accounts, rules and the
#: migration bookkeeping are written there by its own `migrate` and `install`.
PUBLISHED = ("public.sales, public.purchase_requisitions, public.payment_vouchers, public.manufacturing_orders,"
             " ledger.entry, ledger.line, ledger.posting, ledger.failure")


def test_a_publication_of_every_table_refuses_no_ledger_write(shop, shop_config):
    """A publication's tables need a replica identity for UPDATE and DELETE: without one on
    ledger.posting, every amount edit, cancellation and DELETE of a posted row failed."""
    shop.execute("CREATE PUBLICATION everything FOR ALL TABLES")
    try:
        assert shop.execute("SELECT relreplident FROM pg_class WHERE oid = 'ledger.posting'::regclass"
                            ).fetchone()[0] == "i"
        shop.execute("INSERT INTO public.sales (customer, total, tax)"
                     " SELECT 'c' || i, 10 + i, 1 FROM generate_series(1, 20) AS i")
        shop.execute("UPDATE public.sales SET total = total + 1 WHERE id <= 5")  # reverse and repost
        shop.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 6")  # reverse
        shop.execute("DELETE FROM public.sales WHERE id IN (7, 8)")  # reverse
        shop.execute("INSERT INTO public.payment_vouchers (payee, amount, status, paid_at)"
                     " VALUES ('later', 'NaN', 'paid', now())")  # defer: recorded
        shop.execute("UPDATE public.payment_vouchers SET amount = 5")  # resolves the failure
        with shop.transaction():  # drift the triggers never saw, for backfill to repost
            shop.execute("SET LOCAL session_replication_role = replica")
            shop.execute("UPDATE public.sales SET total = total + 2 WHERE id = 9")
        assert backfill(shop, shop_config).rules[0].reposted == 1
        assert verify(shop, shop_config).ok
    finally:
        shop.execute("DROP PUBLICATION everything")


@pytest.fixture
def logical_server():
    with LocalPostgres(fast=True, settings={"wal_level": "logical"}) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as admin:
            for db in ("publisher", "subscriber"):
                admin.execute(f"CREATE DATABASE {db}")
                with psycopg.connect(server.conninfo(db), autocommit=True) as conn:
                    conn.execute(SHOP_SCHEMA.read_text(encoding="utf-8"))
                migrate(server.conninfo(db))
        yield server


def replicated(publisher: psycopg.Connection, subscriber: psycopg.Connection) -> None:
    """Wait until the subscriber's journal is the publisher's (at most a minute)."""
    deadline = time.monotonic() + 60
    while journal(subscriber) != journal(publisher) and time.monotonic() < deadline:
        time.sleep(0.05)


def journal(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT e.id, e.source_key, e.reverses, l.line_no, l.account, l.debit, l.credit"
                        " FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id ORDER BY 1, 4").fetchall()


def test_a_subscriber_of_sources_and_journal_is_in_sync_and_posts_nothing_twice(logical_server):
    config = load_config(SHOP_CONFIG)
    with psycopg.connect(logical_server.conninfo("publisher"), autocommit=True) as pub, \
            psycopg.connect(logical_server.conninfo("subscriber"), autocommit=True) as sub:
        install(pub, config)
        install(sub, config)  # triggers in place, accounts and rules written; it fires for local writes only
        pub.execute("INSERT INTO public.sales (customer, total, tax)"
                    " SELECT 'c' || i, 10 + i, 1 FROM generate_series(1, 100) AS i")
        pub.execute(f"CREATE PUBLICATION ledger FOR TABLE {PUBLISHED}")
        # a subscription to the same server needs its slot made beforehand
        pub.execute("SELECT pg_create_logical_replication_slot('ledger', 'pgoutput')")
        sub.execute(f"CREATE SUBSCRIPTION ledger CONNECTION '{logical_server.conninfo('publisher')}'"
                    " PUBLICATION ledger WITH (create_slot = false, slot_name = 'ledger')")
        deadline = time.monotonic() + 60
        while sub.execute("SELECT count(*) FILTER (WHERE srsubstate <> 'r') + (count(*) = 0)::int"
                          " FROM pg_subscription_rel").fetchone()[0]:
            assert time.monotonic() < deadline, "the initial copy did not finish"
            time.sleep(0.05)

        # the initial copy, then edits, a cancellation and deletes: replicated, never reposted
        pub.execute("UPDATE public.sales SET total = total + 1 WHERE id <= 10")
        pub.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 11")
        pub.execute("DELETE FROM public.sales WHERE id IN (12, 13)")
        pub.execute("INSERT INTO public.sales (customer, total, tax) VALUES ('late', 5, 0)")
        replicated(pub, sub)
        # 100 sales, 10 reposted, 10 + 1 + 2 reversed: 3 lines each; 'late' has no tax: 2
        assert len(journal(pub)) == 3 * (100 + 10 + 10 + 1 + 2) + 2
        assert journal(sub) == journal(pub)
        on_sub, on_pub = verify(sub, config), verify(pub, config)
        assert on_sub.ok and on_pub.ok
        assert [(r.rule, r.eligible, r.posted) for r in on_sub.rules] == \
            [(r.rule, r.eligible, r.posted) for r in on_pub.rules]

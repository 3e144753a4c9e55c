"""Posting triggers: invariants, atomicity, statement shapes and updates of the shop rules.

Every expectation is computed here, from the source tables, by our own SQL — never by
ledgeradmin's functions. "Live" is judged from ledger.entry alone: an entry with
reverses IS NULL that no other entry reverses.
"""

from __future__ import annotations

import io
import time
from decimal import Decimal

import psycopg
import pytest

from ledgeradmin.backfill import backfill
from ledgeradmin.config import parse_config
from ledgeradmin.install import install
from ledgeradmin.verify import verify

# --------------------------------------------------------------------------- helpers

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""

#: The sale rule written out independently: (source_key, account, currency, signed amount)
#: for every completed sale, debit positive, zero amounts left out.
EXPECTED_SALE_LINES = """
    SELECT source_key, account, currency, amount FROM (
        SELECT s.id::text AS source_key,
               CASE s.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END
                   AS account,
               s.currency::text AS currency, s.total::numeric AS amount
        FROM public.sales AS s WHERE s.status = 'completed'
        UNION ALL
        SELECT s.id::text, '4000', s.currency::text, -(s.total - s.tax)
        FROM public.sales AS s WHERE s.status = 'completed'
        UNION ALL
        SELECT s.id::text, '2200', s.currency::text, -s.tax
        FROM public.sales AS s WHERE s.status = 'completed'
    ) AS x
    WHERE amount <> 0
"""


def live_lines(conn: psycopg.Connection, rule: str) -> list[tuple]:
    """Sorted (source_key, account, currency, debit - credit) of the live entries of a rule."""
    rows = conn.execute(
        f"""
        SELECT e.source_key, l.account, l.currency, l.debit - l.credit
        FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
        WHERE e.rule = %s
        """,
        (rule,),
    ).fetchall()
    return sorted(rows)


def expected_lines(conn: psycopg.Connection, query: str) -> list[tuple]:
    return sorted(conn.execute(query).fetchall())


def live_totals(conn: psycopg.Connection, rule: str) -> dict[tuple[str, str], Decimal]:
    """{(account, currency): sum(debit - credit)} over the live entries of a rule, zeros left out."""
    rows = conn.execute(
        f"""
        SELECT l.account, l.currency, sum(l.debit - l.credit)
        FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
        WHERE e.rule = %s
        GROUP BY 1, 2 HAVING sum(l.debit - l.credit) <> 0
        """,
        (rule,),
    ).fetchall()
    return {(a, c): v for a, c, v in rows}


def expected_sale_totals(conn: psycopg.Connection) -> dict[tuple[str, str], Decimal]:
    rows = conn.execute(
        f"SELECT account, currency, sum(amount) FROM ({EXPECTED_SALE_LINES}) AS x "
        "GROUP BY 1, 2 HAVING sum(amount) <> 0"
    ).fetchall()
    return {(a, c): v for a, c, v in rows}


def assert_sales_ledger_matches(conn: psycopg.Connection) -> None:
    """The live sale entries are exactly what the sales table says, per row and in total."""
    assert live_totals(conn, "sale") == expected_sale_totals(conn)
    assert live_lines(conn, "sale") == expected_lines(conn, EXPECTED_SALE_LINES)
    dates = conn.execute(
        f"""
        SELECT count(*) FROM ({LIVE_ENTRIES}) AS e
        JOIN public.sales AS s ON s.id::text = e.source_key
        WHERE e.rule = 'sale' AND e.effective_at IS DISTINCT FROM s.sold_at
        """
    ).fetchone()[0]
    assert dates == 0, "a live sale entry is not dated at its sale's sold_at"


def assert_ledger_invariants(conn: psycopg.Connection) -> None:
    """Invariants 1-3 of DESIGN.md, checked over the whole journal."""
    unbalanced = conn.execute(
        "SELECT entry_id, currency, sum(debit), sum(credit) FROM ledger.line "
        "GROUP BY entry_id, currency HAVING sum(debit) <> sum(credit)"
    ).fetchall()
    assert unbalanced == []
    bad_lines = conn.execute(
        "SELECT * FROM ledger.line WHERE NOT (debit >= 0 AND credit >= 0 AND (debit = 0) <> (credit = 0))"
    ).fetchall()
    assert bad_lines == []
    empty = conn.execute(
        "SELECT e.id FROM ledger.entry AS e WHERE NOT EXISTS (SELECT FROM ledger.line AS l WHERE l.entry_id = e.id)"
    ).fetchall()
    assert empty == []
    duplicates = conn.execute(
        f"SELECT rule, source_key, count(*) FROM ({LIVE_ENTRIES}) AS e GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall()
    assert duplicates == []
    # A reversal belongs to its original's (rule, key) and carries its lines swapped.
    foreign = conn.execute(
        "SELECT r.id FROM ledger.entry AS r JOIN ledger.entry AS o ON o.id = r.reverses "
        "WHERE (r.rule, r.source_key) <> (o.rule, o.source_key) OR o.reverses IS NOT NULL"
    ).fetchall()
    assert foreign == []
    not_swapped = conn.execute(
        """
        SELECT r.id FROM ledger.entry AS r
        WHERE r.reverses IS NOT NULL AND (
            (SELECT array_agg((account, currency, debit, credit)::text ORDER BY account, currency, debit, credit)
             FROM ledger.line WHERE entry_id = r.id)
            IS DISTINCT FROM
            (SELECT array_agg((account, currency, credit, debit)::text ORDER BY account, currency, credit, debit)
             FROM ledger.line WHERE entry_id = r.reverses))
        """
    ).fetchall()
    assert not_swapped == []


def entries_of(conn: psycopg.Connection, rule: str, key: str) -> list[tuple]:
    """(id, reverses, effective_at) of every entry of (rule, key), oldest first."""
    return conn.execute(
        "SELECT id, reverses, effective_at FROM ledger.entry WHERE rule = %s AND source_key = %s ORDER BY id",
        (rule, key),
    ).fetchall()


def live_entry_ids(conn: psycopg.Connection, rule: str, key: str) -> list[int]:
    return [
        r[0]
        for r in conn.execute(
            f"SELECT id FROM ({LIVE_ENTRIES}) AS e WHERE rule = %s AND source_key = %s", (rule, key)
        )
    ]


def lines_of(conn: psycopg.Connection, entry_id: int) -> list[tuple]:
    """Sorted (account, currency, debit, credit) of one entry."""
    return sorted(
        conn.execute(
            "SELECT account, currency, debit, credit FROM ledger.line WHERE entry_id = %s", (entry_id,)
        ).fetchall()
    )


def count(conn: psycopg.Connection, table: str) -> int:
    return conn.execute(f"SELECT count(*) FROM {table}").fetchone()[0]


def add_sale(conn: psycopg.Connection, id: int, total: str, tax: str = "0", **cols: str) -> None:
    values = {"id": id, "customer": f"customer {id}", "total": total, "tax": tax, **cols}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    conn.execute(f"INSERT INTO public.sales ({names}) VALUES ({marks})", list(values.values()))


ACCOUNTS = {
    "1100": {"name": "Accounts Receivable", "type": "asset"},
    "4000": {"name": "Sales Revenue", "type": "income"},
}


def install_custom_rule(conn: psycopg.Connection, table_ddl: str, **rule: object):
    """Create a test table and install one rule "custom" on it (accounts 1100 and 4000);
    return the config."""
    conn.execute(table_ddl)
    spec = {"source": "public.custom_src", **rule}
    config = parse_config({"accounts": ACCOUNTS, "rules": {"custom": spec}})
    install(conn, config)
    return config


def assert_names_row(exc: psycopg.Error, rule: str, table: str, key: str, reason: str, sqlstate: str) -> None:
    """The error of a blocked write names the rule, the source row and the reason."""
    diag = exc.diag
    assert diag.sqlstate == sqlstate, diag.message_primary
    prefix = f"ledgeradmin rule {rule} cannot post {table} row {key}: "
    assert diag.message_primary.startswith(prefix), diag.message_primary
    assert reason in diag.message_primary[len(prefix):], diag.message_primary
    assert diag.message_detail.startswith(f"rule {rule}, table {table}, key {key}"), diag.message_detail


# --------------------------------------------------------------------------- 1. invariants


def test_sale_entry_balances_and_dates_at_sold_at(shop):
    add_sale(shop, 1, "110.00", "10.00", sold_at="2024-03-01 12:00+00", payment_method="card")
    (entry_id,) = live_entry_ids(shop, "sale", "1")
    assert lines_of(shop, entry_id) == [
        ("1050", "USD", Decimal("110.0000"), Decimal("0.0000")),
        ("2200", "USD", Decimal("0.0000"), Decimal("10.0000")),
        ("4000", "USD", Decimal("0.0000"), Decimal("100.0000")),
    ]
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_every_entry_balances_per_currency_with_one_side_per_line(shop):
    shop.execute(
        """
        INSERT INTO public.sales (customer, currency, payment_method, total, tax)
        SELECT 'c' || g, (ARRAY['USD', 'EUR', 'JPY'])[1 + g % 3],
               (ARRAY['cash', 'card', 'invoice'])[1 + g / 3 % 3], (g * 7.31)::numeric(14, 2),
               (g % 4 * 1.05)::numeric(14, 2)
        FROM generate_series(1, 60) AS g
        """
    )
    per_entry_currency = shop.execute(
        "SELECT count(*), count(*) FILTER (WHERE sum_d <> sum_c) FROM ("
        " SELECT entry_id, currency, sum(debit) AS sum_d, sum(credit) AS sum_c"
        " FROM ledger.line GROUP BY 1, 2) AS x"
    ).fetchone()
    assert per_entry_currency == (60, 0)
    assert_ledger_invariants(shop)
    assert_sales_ledger_matches(shop)


def test_merge_posts_its_inserts_updates_and_deletes(shop):
    """One MERGE that inserts, updates (amount edit, cancellation) and deletes: each action
    fires its statement trigger with its rows, as a plain INSERT, UPDATE or DELETE would."""
    for i in range(1, 5):
        add_sale(shop, i, f"{10 * i}.00", "1.00")
    shop.execute(
        """MERGE INTO public.sales AS s
           USING (VALUES (1, 'edit', 15.00), (2, 'cancel', 0), (3, 'delete', 0), (9, 'new', 90.00))
                 AS v (id, action, total) ON s.id = v.id
           WHEN MATCHED AND v.action = 'delete' THEN DELETE
           WHEN MATCHED AND v.action = 'cancel' THEN UPDATE SET status = 'cancelled'
           WHEN MATCHED THEN UPDATE SET total = v.total
           WHEN NOT MATCHED THEN INSERT (id, customer, total, tax) VALUES (v.id, 'merged', v.total, 9.00)""")
    assert [len(entries_of(shop, "sale", str(i))) for i in (1, 2, 3, 4, 9)] == [3, 2, 2, 1, 1]
    assert_ledger_invariants(shop)
    assert_sales_ledger_matches(shop)


def test_upsert_posts_the_inserted_rows_and_reposts_the_updated_ones(shop):
    """INSERT … ON CONFLICT DO UPDATE (an ORM's upsert): the new rows post, the conflicting
    ones are amount edits; DO NOTHING posts nothing for the rows it skips."""
    add_sale(shop, 1, "10.00", "1.00")
    shop.execute("""INSERT INTO public.sales (id, customer, total, tax) VALUES (1, 'a', 12.00, 1.00), (2, 'b', 20.00, 2.00)
                    ON CONFLICT (id) DO UPDATE SET total = excluded.total""")
    shop.execute("""INSERT INTO public.sales (id, customer, total, tax) VALUES (2, 'b', 99.00, 9.00)
                    ON CONFLICT (id) DO NOTHING""")
    assert [len(entries_of(shop, "sale", k)) for k in ("1", "2")] == [3, 1]
    assert_ledger_invariants(shop)
    assert_sales_ledger_matches(shop)


#: An application's own trigger that changes the rows a statement just wrote, in a statement
#: of its own that runs before ledgeradmin's trigger of the outer statement: an AFTER ROW
#: trigger (those fire before any AFTER STATEMENT trigger), or an AFTER STATEMENT trigger
#: whose name sorts before ledgeradmin's (same-event triggers fire in name order).
APP_TRIGGERS = {
    "after row": """
        CREATE FUNCTION public.surcharge() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE public.sales SET total = total + 1 WHERE id = NEW.id;
            RETURN NULL;
        END $$;
        CREATE TRIGGER surcharge AFTER INSERT OR UPDATE OF tax ON public.sales
            FOR EACH ROW EXECUTE FUNCTION public.surcharge()""",
    "after statement, sorting first": """
        CREATE FUNCTION public.surcharge() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            IF pg_trigger_depth() = 1 THEN
                UPDATE public.sales AS s SET total = s.total + 1 FROM fresh AS f WHERE s.id = f.id;
            END IF;
            RETURN NULL;
        END $$;
        CREATE TRIGGER a_surcharge_insert AFTER INSERT ON public.sales
            REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION public.surcharge();
        CREATE TRIGGER a_surcharge_update AFTER UPDATE ON public.sales
            REFERENCING NEW TABLE AS fresh FOR EACH STATEMENT EXECUTE FUNCTION public.surcharge()""",
}


@pytest.mark.parametrize("app_trigger", APP_TRIGGERS, ids=list(APP_TRIGGERS))
def test_rows_changed_again_by_an_application_trigger_post_their_final_values(shop, shop_config, app_trigger):
    """The application's trigger adds 1 to the total of each sale inserted, and again when
    the tax changes: the ledger holds the final totals, not those the statement wrote."""
    shop.execute(APP_TRIGGERS[app_trigger])
    add_sale(shop, 1, "10.00", "1.00")
    shop.execute("INSERT INTO public.sales (id, customer, total, tax) SELECT g, 'c', 20, 2 FROM generate_series(2, 4) g")
    shop.execute("UPDATE public.sales SET tax = 3.00 WHERE id IN (1, 2)")
    assert shop.execute("SELECT array_agg(total ORDER BY id) FROM public.sales").fetchone()[0] == [12, 22, 21, 21]
    assert_ledger_invariants(shop)
    assert_sales_ledger_matches(shop)
    assert verify(shop, shop_config).ok


def test_rows_deleted_by_an_application_trigger_post_nothing(shop, shop_config):
    """The application's AFTER ROW trigger deletes some of the rows just inserted (a spam
    filter): they post nothing, the others post."""
    shop.execute("""
        CREATE FUNCTION public.drop_spam() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            DELETE FROM public.sales WHERE id = NEW.id AND customer = 'spam';
            RETURN NULL;
        END $$;
        CREATE TRIGGER drop_spam AFTER INSERT ON public.sales FOR EACH ROW EXECUTE FUNCTION public.drop_spam()""")
    shop.execute("INSERT INTO public.sales (id, customer, total, tax)"
                 " SELECT g, CASE WHEN g % 2 = 0 THEN 'spam' ELSE 'c' END, 10, 1 FROM generate_series(1, 6) g")
    assert shop.execute("SELECT array_agg(id ORDER BY id) FROM public.sales").fetchone()[0] == [1, 3, 5]
    assert [len(entries_of(shop, "sale", str(i))) for i in range(1, 7)] == [1, 0, 1, 0, 1, 0]
    assert_sales_ledger_matches(shop)
    assert verify(shop, shop_config).ok


@pytest.mark.parametrize("on_error", ["block", "defer"])
def test_rows_changed_again_in_a_partition_with_a_two_column_key(conn, on_error):
    """The same through a partitioned table keyed by (id, day), whose partitions order their
    columns differently, written through the parent and straight into a partition; the
    application's row trigger (on the parent, so on every partition) adds 1 to each amount
    inserted, and moves a row to the other partition."""
    install_custom_rule(conn, """
        CREATE TABLE public.custom_src (id int NOT NULL, day date NOT NULL, amount numeric NOT NULL,
                                        PRIMARY KEY (id, day)) PARTITION BY RANGE (day);
        CREATE TABLE public.custom_2024 PARTITION OF public.custom_src FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
        CREATE TABLE public.custom_2025 (amount numeric NOT NULL, day date NOT NULL, id int NOT NULL);
        ALTER TABLE public.custom_src ATTACH PARTITION public.custom_2025 FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
        CREATE FUNCTION public.bump() RETURNS trigger LANGUAGE plpgsql AS $$
        BEGIN
            UPDATE public.custom_src SET amount = amount + 1,
                                         day = CASE WHEN NEW.id = 3 THEN '2025-03-03' ELSE day END
            WHERE id = NEW.id AND day = NEW.day;
            RETURN NULL;
        END $$;
        CREATE TRIGGER bump AFTER INSERT ON public.custom_src FOR EACH ROW EXECUTE FUNCTION public.bump()""",
        key=["id", "day"], date="day", on_error=on_error,
        lines=[{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}])
    conn.execute("INSERT INTO public.custom_src VALUES (1, '2024-05-01', 10), (3, '2024-06-01', 30)")
    conn.execute("INSERT INTO public.custom_2025 (id, day, amount) VALUES (2, '2025-02-01', 20)")
    rows = conn.execute("SELECT ROW(id, day)::text, amount FROM public.custom_src ORDER BY id").fetchall()
    # row 3, moved, is inserted into the other partition, whose copy of the trigger bumps it again
    assert rows == [("(1,2024-05-01)", 11), ("(2,2025-02-01)", 21), ("(3,2025-03-03)", 32)]
    live = conn.execute(f"""SELECT e.source_key, l.debit FROM ({LIVE_ENTRIES}) AS e
                            JOIN ledger.line AS l ON l.entry_id = e.id AND l.debit > 0 ORDER BY 1""").fetchall()
    assert live == rows
    assert count(conn, "ledger.failure") == 0
    assert_ledger_invariants(conn)


#: A no-op UPDATE of each row just inserted, by the application: it marks the statement
#: nested, so the posting function reconciles the rows one by one from the table.
TOUCH = """
    CREATE FUNCTION public.touch() RETURNS trigger LANGUAGE plpgsql AS $$
    BEGIN
        EXECUTE format('UPDATE %I.%I SET id = id WHERE id = $1', TG_TABLE_SCHEMA, TG_TABLE_NAME) USING NEW.id;
        RETURN NULL;
    END $$;
    CREATE TRIGGER touch AFTER INSERT ON public.sales FOR EACH ROW EXECUTE FUNCTION public.touch();
    CREATE TRIGGER touch AFTER INSERT ON public.payment_vouchers FOR EACH ROW EXECUTE FUNCTION public.touch()"""


def test_a_bad_row_of_a_statement_written_again_is_named_or_recorded(shop, shop_config):
    """Rows reconciled one by one from the table after a nested statement: under `block` a
    bad row refuses the write, named; under `defer` it is recorded and the others post."""
    shop.execute(TOUCH)
    add_sale(shop, 1, "10.00")
    assert len(entries_of(shop, "sale", "1")) == 1
    with pytest.raises(psycopg.Error) as info:
        add_sale(shop, 5, "10.00", currency="usd")
    assert_names_row(info.value, "sale", "public.sales", "(id)=(5)", "currency 'usd' is not", "22023")
    assert count(shop, "public.sales") == 1

    shop.execute("INSERT INTO public.payment_vouchers (id, payee, amount, status, paid_at)"
                 " VALUES (1, 'a', 5, 'paid', now()), (2, 'b', 6, 'paid', NULL), (3, 'c', 7, 'paid', now())")
    assert [len(entries_of(shop, "payment", str(i))) for i in (1, 2, 3)] == [1, 0, 1]
    assert shop.execute("SELECT source_key, sqlstate FROM ledger.failure WHERE resolved_at IS NULL").fetchall() == [
        ("2", "22004")]
    assert_ledger_invariants(shop)
    report = verify(shop, shop_config)
    assert [(r.rule, r.problems) for r in report.rules if r.problems] == [("payment", 2)], report.as_dict()


def test_zero_tax_line_is_dropped(shop):
    add_sale(shop, 1, "50.00", "0")
    (entry_id,) = live_entry_ids(shop, "sale", "1")
    assert lines_of(shop, entry_id) == [
        ("1100", "USD", Decimal("50.0000"), Decimal("0.0000")),
        ("4000", "USD", Decimal("0.0000"), Decimal("50.0000")),
    ]


def test_all_zero_sale_posts_nothing(shop):
    add_sale(shop, 1, "0", "0")
    assert entries_of(shop, "sale", "1") == []
    assert_ledger_invariants(shop)


def test_negative_amount_moves_to_the_other_side(conn):
    install_custom_rule(
        conn,
        "CREATE TABLE public.custom_src (id int PRIMARY KEY, total numeric(14, 2) NOT NULL)",
        lines=[{"account": "1100", "debit": "total"}, {"account": "4000", "credit": "total"}],
    )
    conn.execute("INSERT INTO public.custom_src VALUES (1, -50.00), (2, 20.00)")
    (refund,) = live_entry_ids(conn, "custom", "1")
    assert lines_of(conn, refund) == [
        ("1100", "USD", Decimal("0.0000"), Decimal("50.0000")),
        ("4000", "USD", Decimal("50.0000"), Decimal("0.0000")),
    ]
    (sale,) = live_entry_ids(conn, "custom", "2")
    assert lines_of(conn, sale) == [
        ("1100", "USD", Decimal("20.0000"), Decimal("0.0000")),
        ("4000", "USD", Decimal("0.0000"), Decimal("20.0000")),
    ]
    assert_ledger_invariants(conn)



@pytest.mark.parametrize(("before", "after"), [("-300.00", "300.00"), ("7.50", "75000.00"), ("75000.00", "7.50"),
                                               ("12.34", "1234000000.00"), ("0.75", "-7500.00")])
def test_an_edit_that_flips_the_sign_or_scales_by_ten_thousand_reposts(conn, before, after):
    """The fingerprint hashes each line's sign and size: PostgreSQL's numeric hash hashes
    neither (7.5, -7.5 and 75000 hash alike), so such edits once posted nothing and verify
    found no drift."""
    config = install_custom_rule(
        conn,
        "CREATE TABLE public.custom_src (id int PRIMARY KEY, total numeric(14, 2) NOT NULL)",
        lines=[{"account": "1100", "debit": "total"}, {"account": "4000", "credit": "total"}],
    )
    conn.execute("INSERT INTO public.custom_src VALUES (1, %s), (2, %s)", (before, before))
    conn.execute("UPDATE public.custom_src SET total = %s WHERE id = 1", (after,))
    (entry_id,) = live_entry_ids(conn, "custom", "1")
    amount = Decimal(after).quantize(Decimal("0.0001"))
    debit, credit = (amount, Decimal("0.0000")) if amount > 0 else (Decimal("0.0000"), -amount)
    assert lines_of(conn, entry_id) == [("1100", "USD", debit, credit), ("4000", "USD", credit, debit)]
    # the same edit written with the triggers off is drift
    with conn.transaction():
        conn.execute("ALTER TABLE public.custom_src DISABLE TRIGGER USER")
        conn.execute("UPDATE public.custom_src SET total = %s WHERE id = 2", (after,))
        conn.execute("ALTER TABLE public.custom_src ENABLE TRIGGER USER")
    result = verify(conn, config, detailed=True)
    assert [(r.missing, r.drifted, r.keys) for r in result.rules] == [(0, 1, {"drifted": ["2"]})]
    assert_ledger_invariants(conn)


def test_negative_net_revenue_line_moves_to_debit(shop):
    # tax larger than total: the revenue line total - tax is negative
    add_sale(shop, 1, "10.00", "15.00")
    (entry_id,) = live_entry_ids(shop, "sale", "1")
    assert lines_of(shop, entry_id) == [
        ("1100", "USD", Decimal("10.0000"), Decimal("0.0000")),
        ("2200", "USD", Decimal("0.0000"), Decimal("15.0000")),
        ("4000", "USD", Decimal("5.0000"), Decimal("0.0000")),
    ]
    assert_ledger_invariants(shop)


def test_at_most_one_live_entry_per_rule_and_key_after_many_changes(shop):
    add_sale(shop, 1, "10.00")
    add_sale(shop, 2, "20.00", "2.00")
    for total in ("11.00", "12.00", "13.00"):
        shop.execute("UPDATE public.sales SET total = %s", (total,))
    shop.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 2")
    shop.execute("UPDATE public.sales SET status = 'completed' WHERE id = 2")
    live = shop.execute(
        f"SELECT source_key, count(*) FROM ({LIVE_ENTRIES}) AS e WHERE rule = 'sale' GROUP BY 1 ORDER BY 1"
    ).fetchall()
    assert live == [("1", 1), ("2", 1)]
    assert_ledger_invariants(shop)
    assert_sales_ledger_matches(shop)


IMMUTABLE_STATEMENTS = [
    "UPDATE ledger.entry SET memo = 'changed'",
    "DELETE FROM ledger.entry",
    "TRUNCATE ledger.entry",
    "UPDATE ledger.line SET debit = debit + 1 WHERE debit > 0",
    "DELETE FROM ledger.line",
    "TRUNCATE ledger.line",
]


@pytest.mark.parametrize("replica", [False, True], ids=["origin", "replica"])
@pytest.mark.parametrize("statement", IMMUTABLE_STATEMENTS)
def test_entries_and_lines_are_immutable(shop, statement, replica):
    add_sale(shop, 1, "10.00", "1.00")
    before = shop.execute("SELECT (SELECT array_agg(e ORDER BY id) FROM ledger.entry AS e)::text,"
                          " (SELECT array_agg(l ORDER BY entry_id, line_no) FROM ledger.line AS l)::text").fetchone()
    if replica:
        shop.execute("SET session_replication_role = replica")
    with pytest.raises(psycopg.Error) as info:
        shop.execute(statement)
    assert info.value.diag.sqlstate == "42501"
    shop.execute("RESET session_replication_role")
    after = shop.execute("SELECT (SELECT array_agg(e ORDER BY id) FROM ledger.entry AS e)::text,"
                         " (SELECT array_agg(l ORDER BY entry_id, line_no) FROM ledger.line AS l)::text").fetchone()
    assert after == before


def test_truncate_of_a_covered_table_is_refused(shop):
    add_sale(shop, 1, "10.00")
    with pytest.raises(psycopg.Error) as info:
        shop.execute("TRUNCATE public.sales")
    assert info.value.diag.sqlstate == "55006"
    assert count(shop, "public.sales") == 1
    assert len(live_entry_ids(shop, "sale", "1")) == 1


# --------------------------------------------------------------------------- 2. atomicity

#: (case id, amount column type, inserted amount, extra rule fields, reason fragment, SQLSTATE)
CUSTOM_BAD_ROWS = [
    ("null_amount", "numeric", None, {}, "amount of line 1 is NULL", "22004"),
    # row 5 credits one less than it debits
    ("unbalanced", "numeric", "10", {"credit_expr": "CASE WHEN id = 5 THEN amount - 1 ELSE amount END"},
     "unbalanced", "23514"),
    ("unknown_account", "numeric", "10", {"account_sql": "acct"}, "'9999'", "23503"),
    ("overflow", "numeric", "1e17", {}, "overflow", "22003"),
    ("nan_numeric", "numeric", "NaN", {}, "NaN", "22023"),
    ("nan_float8", "float8", "NaN", {}, "NaN", "22023"),
]


def _custom_rule_for(amount_type: str, extra: dict) -> tuple[str, dict]:
    ddl = (
        f"CREATE TABLE public.custom_src (id int PRIMARY KEY, amount {amount_type},"
        " acct text NOT NULL DEFAULT '9999')"
    )
    debit = {"debit": "amount"}
    debit.update({"account_sql": extra["account_sql"]} if "account_sql" in extra else {"account": "1100"})
    credit = {"account": "4000", "credit": extra.get("credit_expr", "amount")}
    return ddl, {"lines": [debit, credit]}


@pytest.mark.parametrize(
    "amount_type, amount, extra, reason, sqlstate",
    [c[1:] for c in CUSTOM_BAD_ROWS],
    ids=[c[0] for c in CUSTOM_BAD_ROWS],
)
def test_block_rolls_back_a_bad_posting(conn, amount_type, amount, extra, reason, sqlstate):
    ddl, rule = _custom_rule_for(amount_type, extra)
    install_custom_rule(conn, ddl, **rule)
    with pytest.raises(psycopg.Error) as info:
        conn.execute("INSERT INTO public.custom_src (id, amount) VALUES (5, %s)", (amount,))
    assert_names_row(info.value, "custom", "public.custom_src", "(id)=(5)", reason, sqlstate)
    assert count(conn, "public.custom_src") == 0
    assert count(conn, "ledger.entry") == 0
    assert count(conn, "ledger.line") == 0
    assert count(conn, "ledger.failure") == 0


def test_account_sql_value_known_only_to_ledger_account_posts(conn):
    """An account_sql value that is not a code of ledger.toml is looked up in ledger.account
    (on INSERT, by ledger.known_account): a code added there by hand posts, alone and beside
    a code of ledger.toml, without a replay; a code in neither is refused, naming the row."""
    install_custom_rule(conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, acct text)",
                        lines=[{"account_sql": "acct", "debit": "amount"}, {"account": "4000", "credit": "amount"}])
    conn.execute("INSERT INTO ledger.account (code, name, type) VALUES ('7777', 'Added by hand', 'asset')")
    calls = "SELECT pg_stat_get_xact_function_calls(%s::regprocedure)"
    with conn.transaction():
        conn.execute("SET LOCAL track_functions = 'pl'")
        conn.execute("INSERT INTO public.custom_src (id, amount, acct) VALUES (1, 10, '7777')")
        conn.execute("INSERT INTO public.custom_src (id, amount, acct) VALUES (2, 5, '1100'), (3, 7, '7777')")
        # posted by the INSERT fast path: the lookup ran, and ledger.posting_problem, which
        # fails a statement for the fallback, was never entered (NULL, not even 0 calls)
        assert conn.execute(calls, ("ledger.known_account(text)",)).fetchone()[0] >= 1
        assert conn.execute(calls, ("ledger.posting_problem(text,numeric[])",)).fetchone()[0] is None
    debited = {}
    for key in ("1", "2", "3"):
        (entry_id,) = live_entry_ids(conn, "custom", key)
        debited[key] = [line[0] for line in lines_of(conn, entry_id) if line[2] > 0]
    assert debited == {"1": ["7777"], "2": ["1100"], "3": ["7777"]}
    with pytest.raises(psycopg.Error) as info:
        conn.execute("INSERT INTO public.custom_src (id, amount, acct) VALUES (4, 10, '8888')")
    assert_names_row(info.value, "custom", "public.custom_src", "(id)=(4)", "'8888'", "23503")
    assert count(conn, "public.custom_src") == 3
    assert_ledger_invariants(conn)


def test_custom_rule_control_row_posts(connect):
    """The rules of the bad-row cases post a good row (so their failures are the rows' fault)."""
    for i, (_, amount_type, _, extra, _, _) in enumerate(CUSTOM_BAD_ROWS, start=100):
        # a fresh connection per rule: the table is recreated with another column type, and
        # install on a reused connection then fails (stale prepared probe, reported separately)
        conn = connect(autocommit=True)
        conn.execute("DROP TABLE IF EXISTS public.custom_src CASCADE")
        ddl, rule = _custom_rule_for(amount_type, extra)
        install_custom_rule(conn, ddl, **rule)
        conn.execute("INSERT INTO public.custom_src (id, amount, acct) VALUES (%s, 10, '1100')", (i,))
    assert count(conn, "ledger.entry") == len(CUSTOM_BAD_ROWS)
    assert_ledger_invariants(conn)


@pytest.mark.parametrize("key_type, key", [("int", "g"), ("text", "'k' || g")])
def test_a_row_s_posting_is_found_by_its_key_whatever_the_statistics_say(conn, key_type, key):
    """The posting of a changed row is looked up by rule and key in the index, even when the
    planner's statistics have not seen the rule's postings (analyzed before they existed,
    or written in the same transaction): a single-row UPDATE reads a few index entries, not
    every posting of the rule (which made a transaction of many such writes quadratic)."""
    install_custom_rule(conn, f"CREATE TABLE public.custom_src (id {key_type} PRIMARY KEY, amount numeric)",
                        lines=[{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}])
    conn.execute("ANALYZE ledger.posting")
    read = "SELECT pg_stat_get_xact_tuples_returned('ledger.posting_live_key'::regclass)"  # index entries read
    with conn.transaction():
        conn.execute(f"INSERT INTO public.custom_src (id, amount) SELECT {key}, g FROM generate_series(1, 3000) AS g")
        (before,) = conn.execute(read).fetchone()
        for i in range(1, 31):
            conn.execute(f"UPDATE public.custom_src SET amount = amount + 1 WHERE id = (SELECT {key} FROM (SELECT %s AS g) AS s)",
                         (i * 97,))
        (after,) = conn.execute(read).fetchone()
    assert after - before <= 30 * 3, f"30 single-row updates read {after - before} posting index entries"
    assert count(conn, "ledger.entry") == 3000 + 2 * 30
    assert_ledger_invariants(conn)


def test_a_row_by_row_replay_reads_no_more_open_failures_than_it_records(conn):
    """A replay row by row (an expression raised: division by zero) under `defer`, of a
    statement where every other row fails: each row looks up its own open failure by key,
    not every open failure of the rule recorded so far in the transaction (which made such
    a replay quadratic)."""
    install_custom_rule(conn, DIVIDED_SRC, lines=DIVIDED_LINES, on_error="defer")
    read = "SELECT pg_stat_get_xact_tuples_returned('ledger.failure_open_key'::regclass)"  # index entries read
    with conn.transaction():
        conn.execute("INSERT INTO public.custom_src (id, amount, divisor)"
                     " SELECT g, 10, g % 2 FROM generate_series(1, 600) AS g")
        (entries_read,) = conn.execute(read).fetchone()
    assert count(conn, "ledger.failure") == 300 and count(conn, "ledger.entry") == 300
    assert entries_read <= 3 * 600, f"the replay of 600 rows read {entries_read} open-failure index entries"


def test_block_bad_currency_names_rule_key_and_reason(shop):
    with pytest.raises(psycopg.Error) as info:
        add_sale(shop, 5, "10.00", currency="usd")
    assert_names_row(info.value, "sale", "public.sales", "(id)=(5)", "currency 'usd' is not", "22023")
    assert count(shop, "public.sales") == 0
    assert count(shop, "ledger.entry") == 0


def test_block_null_date_rolls_back_requisition_approval(shop):
    shop.execute(
        "INSERT INTO public.purchase_requisitions (id, requested_by, department, description, amount)"
        " VALUES (7, 'ann', 'ops', 'chairs', 300)"
    )
    with pytest.raises(psycopg.Error) as info:
        shop.execute("UPDATE public.purchase_requisitions SET status = 'approved' WHERE id = 7")
    assert_names_row(info.value, "requisition", "public.purchase_requisitions", "(id)=(7)", "date", "22004")
    assert shop.execute("SELECT status FROM public.purchase_requisitions WHERE id = 7").fetchone() == ("submitted",)
    assert count(shop, "ledger.entry") == 0


def test_block_bad_update_keeps_the_previous_posting(shop):
    add_sale(shop, 5, "10.00")
    before = entries_of(shop, "sale", "5")
    with pytest.raises(psycopg.Error) as info:
        shop.execute("UPDATE public.sales SET currency = 'us1' WHERE id = 5")
    assert_names_row(info.value, "sale", "public.sales", "(id)=(5)", "currency 'us1'", "22023")
    assert entries_of(shop, "sale", "5") == before
    assert_sales_ledger_matches(shop)


def test_failing_row_in_multi_row_insert_rolls_back_the_statement(shop):
    add_sale(shop, 1, "1.00")
    with pytest.raises(psycopg.Error) as info:
        shop.execute(
            "INSERT INTO public.sales (id, customer, total, currency) VALUES"
            " (10, 'a', 10, 'USD'), (11, 'b', 11, 'EUR'), (12, 'c', 12, 'eur'), (13, 'd', 13, 'USD')"
        )
    assert_names_row(info.value, "sale", "public.sales", "(id)=(12)", "currency 'eur'", "22023")
    assert [r[0] for r in shop.execute("SELECT id FROM public.sales ORDER BY id")] == [1]
    assert shop.execute("SELECT DISTINCT source_key FROM ledger.entry").fetchall() == [("1",)]
    assert_sales_ledger_matches(shop)


DIVIDED_SRC = "CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, divisor numeric)"
DIVIDED_LINES = [{"account": "1100", "debit": "amount / divisor"}, {"account": "4000", "credit": "amount / divisor"}]


def test_block_large_statement_names_its_first_bad_row(shop):
    """In a statement of many rows with several bad ones, the error names the first bad row
    in statement order, and the statement rolls back; the same holds for an UPDATE of many
    rows, which keeps every previous posting."""
    insert = """INSERT INTO public.sales (id, customer, total, currency)
                SELECT g, 'c' || g, g, CASE g WHEN 700 THEN 'eur' WHEN 1500 THEN 'usd' WHEN 2900 THEN 'usd'
                                              ELSE 'USD' END
                FROM generate_series(%s::int, %s::int, %s::int) AS g"""
    with pytest.raises(psycopg.Error) as info:
        shop.execute(insert, (3000, 1, -1))  # the rows come in descending order: 2900 is first
    assert_names_row(info.value, "sale", "public.sales", "(id)=(2900)", "currency 'usd'", "22023")
    with pytest.raises(psycopg.Error) as info:
        shop.execute(insert, (1, 3000, 1))
    assert_names_row(info.value, "sale", "public.sales", "(id)=(700)", "currency 'eur'", "22023")
    assert count(shop, "public.sales") == 0 and count(shop, "ledger.entry") == 0
    shop.execute("INSERT INTO public.sales (id, customer, total) SELECT g, 'c' || g, g FROM generate_series(1, 3000) AS g")
    entries = count(shop, "ledger.entry")
    with pytest.raises(psycopg.Error) as info:
        shop.execute("UPDATE public.sales SET total = total + 1, currency = CASE WHEN id % 1000 = 999 THEN 'eur'"
                      " ELSE currency END")
    assert_names_row(info.value, "sale", "public.sales", "(id)=(999)", "currency 'eur'", "22023")
    assert count(shop, "ledger.entry") == entries
    assert_sales_ledger_matches(shop)


@pytest.mark.parametrize("first, sqlstate", [("error", "22012"), ("problem", "22004")])
def test_block_names_the_first_of_an_expression_error_and_a_problem(conn, first, sqlstate):
    """A row whose expression raises (division by zero) and a row with a NULL amount in one
    statement: whichever comes first in the statement is the row named."""
    install_custom_rule(conn, DIVIDED_SRC, lines=DIVIDED_LINES)
    rows = {"error": "(%s, 10, 0)", "problem": "(%s, NULL, 1)"}
    second = "problem" if first == "error" else "error"
    values = ", ".join(["(1, 10, 1)", rows[first] % 2, "(3, 10, 2)", rows[second] % 4, "(5, 10, 5)"])
    with pytest.raises(psycopg.Error) as info:
        conn.execute(f"INSERT INTO public.custom_src (id, amount, divisor) VALUES {values}")
    assert info.value.diag.sqlstate == sqlstate
    assert info.value.diag.message_primary.startswith("ledgeradmin rule custom cannot post public.custom_src"
                                                      " row (id)=(2): "), info.value.diag.message_primary
    assert count(conn, "public.custom_src") == 0 and count(conn, "ledger.entry") == 0


def add_voucher(conn, id: int, amount: str, status: str = "paid", paid_at: str | None = "2024-05-01 09:00+00",
                method: str = "bank") -> None:
    conn.execute(
        "INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)"
        " VALUES (%s, %s, %s, %s, %s, %s)",
        (id, f"payee {id}", amount, method, status, paid_at),
    )


EXPECTED_PAYMENT_LINES = """
    SELECT v.id::text, '2100', 'USD', v.amount::numeric FROM public.payment_vouchers AS v
    WHERE v.status = 'paid' AND v.paid_at IS NOT NULL AND v.amount <> 0
    UNION ALL
    SELECT v.id::text, CASE v.method WHEN 'cash' THEN '1000' ELSE '1010' END, 'USD', -v.amount
    FROM public.payment_vouchers AS v
    WHERE v.status = 'paid' AND v.paid_at IS NOT NULL AND v.amount <> 0
"""


def test_defer_commits_and_records_the_failure_while_good_rows_post(shop):
    shop.execute(
        "INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at) VALUES"
        " (1, 'a', 100, 'bank', 'paid', '2024-05-01'),"
        " (2, 'b', 200, 'cash', 'paid', NULL),"
        " (3, 'c', 300, 'cash', 'paid', '2024-05-02')"
    )
    assert count(shop, "public.payment_vouchers") == 3
    assert live_lines(shop, "payment") == expected_lines(shop, EXPECTED_PAYMENT_LINES)
    assert sorted(r[0] for r in shop.execute("SELECT source_key FROM ledger.entry")) == ["1", "3"]
    failures = shop.execute(
        "SELECT rule, source_key, sqlstate, message, resolved_at FROM ledger.failure"
    ).fetchall()
    assert len(failures) == 1
    rule, key, sqlstate, message, resolved_at = failures[0]
    assert (rule, key, sqlstate, resolved_at) == ("payment", "2", "22004", None)
    assert "date" in message and "NULL" in message
    assert_ledger_invariants(shop)


@pytest.mark.parametrize("on_error", ["block", "defer"])
def test_a_zero_line_needs_no_account(conn, on_error):
    """A line whose amount is zero is dropped, so its account_sql may be NULL or a code that
    is nowhere: the row posts its other lines, through the INSERT fast path, the full
    reconcile of an UPDATE and backfill alike, and verify finds it in sync. The same
    account on a non-zero amount is refused, naming the line."""
    install_custom_rule(
        conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, gross numeric NOT NULL, discount numeric NOT NULL)",
        on_error=on_error,
        lines=[{"account": "1100", "debit": "gross - discount"},
               {"account_sql": "CASE WHEN discount > 0 THEN '4000' WHEN discount < 0 THEN 'nowhere' END",
                "debit": "discount"},
               {"account": "4000", "credit": "gross"}])
    conn.execute("INSERT INTO public.custom_src VALUES (1, 100, 0), (2, 50, 5)")
    conn.execute("UPDATE public.custom_src SET gross = 120 WHERE id = 1")
    (entry_id,) = live_entry_ids(conn, "custom", "1")
    assert lines_of(conn, entry_id) == [("1100", "USD", Decimal("120.0000"), Decimal("0.0000")),
                                        ("4000", "USD", Decimal("0.0000"), Decimal("120.0000"))]
    assert len(live_entry_ids(conn, "custom", "2")) == 1
    config = parse_config({"accounts": ACCOUNTS, "rules": {"custom": {
        "source": "public.custom_src", "on_error": on_error, "lines": [
            {"account": "1100", "debit": "gross - discount"},
            {"account_sql": "CASE WHEN discount > 0 THEN '4000' WHEN discount < 0 THEN 'nowhere' END",
             "debit": "discount"},
            {"account": "4000", "credit": "gross"}]}}})
    assert verify(conn, config).ok
    conn.execute("ALTER TABLE public.custom_src DISABLE TRIGGER USER")
    conn.execute("INSERT INTO public.custom_src VALUES (3, 10, 0)")
    conn.execute("ALTER TABLE public.custom_src ENABLE TRIGGER USER")
    assert backfill(conn, config).rules[0].posted == 1
    if on_error == "block":
        with pytest.raises(psycopg.Error) as info:
            conn.execute("INSERT INTO public.custom_src VALUES (4, 10, -1)")
        assert_names_row(info.value, "custom", "public.custom_src", "(id)=(4)", "'nowhere' of line 2", "23503")
    assert verify(conn, config).ok


def test_defer_large_statement_records_every_bad_row_without_a_replay(shop, shop_config):
    """A statement of many rows with bad ones of several kinds commits: each bad row is
    recorded with its reason (the same one backfill states later), every other row posts,
    and no row is replayed on its own (ledger.posting_problem, which the replay's
    reconcile would call for each bad row, is never entered)."""
    calls = "SELECT pg_stat_get_xact_function_calls(%s::regprocedure)"
    with shop.transaction():
        shop.execute("SET LOCAL track_functions = 'pl'")
        shop.execute("""INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)
                        SELECT g, 'p' || g, CASE WHEN g % 500 = 1 OR g % 700 = 3 THEN 'NaN'::numeric ELSE g END,
                               'bank', 'paid', CASE WHEN g % 900 = 2 THEN NULL ELSE now() END
                        FROM generate_series(1, 3000) AS g""")
        assert shop.execute(calls, ("ledger.posting_problem(text,numeric[])",)).fetchone()[0] is None
    failures = shop.execute("SELECT source_key, sqlstate, message, detail, hint FROM ledger.failure"
                            " WHERE resolved_at IS NULL ORDER BY source_key::int").fetchall()
    def reason(g: int) -> tuple[str, str] | None:  # the first check a row fails: date, then amounts
        if g % 900 == 2:
            return "22004", "the date is NULL"
        if g % 500 == 1 or g % 700 == 3:
            return "22023", "the amount of line 1 is NaN"
        return None

    expected = sorted((str(g), *reason(g), None, None) for g in range(1, 3001) if reason(g))
    assert sorted(failures) == expected
    bad = {f[0] for f in failures}
    posted = {r[0] for r in shop.execute(f"SELECT source_key FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = 'payment'")}
    assert posted == {str(g) for g in range(1, 3001)} - bad
    assert live_lines(shop, "payment") == expected_lines(
        shop, EXPECTED_PAYMENT_LINES.replace("v.amount <> 0", "v.amount <> 0 AND v.amount <> 'NaN'"))
    backfill(shop, shop_config)  # backfill states the same reasons
    again = shop.execute("SELECT source_key, sqlstate, message, detail, hint, attempts FROM ledger.failure"
                         " WHERE resolved_at IS NULL").fetchall()
    assert sorted(f[:5] for f in again) == expected and {f[5] for f in again} == {2}
    assert_ledger_invariants(shop)


def test_defer_large_update_keeps_the_bad_rows_previous_entries_without_a_replay(shop):
    """An UPDATE of many posted rows that turns some bad: each bad row is recorded and keeps
    its previous entry, every other row is reposted, and no row is replayed on its own."""
    shop.execute("""INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)
                    SELECT g, 'p' || g, g, 'bank', 'paid', now() FROM generate_series(1, 2000) AS g""")
    before = {r[0]: r[1] for r in shop.execute(
        f"SELECT source_key, id FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = 'payment'")}
    scans = "SELECT pg_stat_get_xact_numscans('ledger.posting_live_key'::regclass)"  # a replay: one per row
    with shop.transaction():
        shop.execute("UPDATE public.payment_vouchers SET amount = amount + 1,"
                     " paid_at = CASE WHEN id % 250 = 0 THEN NULL ELSE paid_at END")
        assert shop.execute(scans).fetchone()[0] <= 10
    bad = {str(g) for g in range(250, 2001, 250)}
    failed = {r[0] for r in shop.execute("SELECT source_key FROM ledger.failure WHERE resolved_at IS NULL")}
    assert failed == bad
    after = {r[0]: r[1] for r in shop.execute(
        f"SELECT source_key, id FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = 'payment'")}
    assert after.keys() == before.keys()
    assert {k for k in after if after[k] == before[k]} == bad  # the bad rows keep their entry
    assert_ledger_invariants(shop)


def test_defer_expression_error_replays_row_by_row(conn):
    """When an expression raises (division by zero), the rows are replayed one by one: the
    row that raises and the row with a problem are each recorded, the others post."""
    install_custom_rule(conn, DIVIDED_SRC, lines=DIVIDED_LINES, on_error="defer")
    conn.execute("INSERT INTO public.custom_src (id, amount, divisor)"
                 " VALUES (1, 10, 1), (2, 10, 0), (3, 10, 2), (4, NULL, 1), (5, 10, 5)")
    failures = conn.execute("SELECT source_key, sqlstate, message FROM ledger.failure ORDER BY 1").fetchall()
    assert failures == [("2", "22012", "division by zero"), ("4", "22004", "the amount of line 1 is NULL")]
    assert sorted(r[0] for r in conn.execute("SELECT source_key FROM ledger.entry")) == ["1", "3", "5"]
    assert_ledger_invariants(conn)


def test_defer_failure_resolved_when_an_update_fixes_the_row(shop):
    add_voucher(shop, 2, "200", paid_at=None)
    assert entries_of(shop, "payment", "2") == []
    shop.execute("UPDATE public.payment_vouchers SET paid_at = '2024-05-03 10:00+00' WHERE id = 2")
    assert live_lines(shop, "payment") == expected_lines(shop, EXPECTED_PAYMENT_LINES)
    (entry_id,) = live_entry_ids(shop, "payment", "2")
    assert lines_of(shop, entry_id) == [
        ("1010", "USD", Decimal("0.0000"), Decimal("200.0000")),
        ("2100", "USD", Decimal("200.0000"), Decimal("0.0000")),
    ]
    open_failures = shop.execute(
        "SELECT count(*) FROM ledger.failure WHERE rule = 'payment' AND source_key = '2' AND resolved_at IS NULL"
    ).fetchone()[0]
    resolved = shop.execute(
        "SELECT count(*) FROM ledger.failure WHERE rule = 'payment' AND source_key = '2' AND resolved_at IS NOT NULL"
    ).fetchone()[0]
    assert (open_failures, resolved) == (0, 1)


def test_defer_failure_repeated_is_one_open_failure(shop):
    add_voucher(shop, 2, "200", paid_at=None)
    shop.execute("UPDATE public.payment_vouchers SET amount = 250 WHERE id = 2")
    rows = shop.execute("SELECT source_key, attempts, resolved_at FROM ledger.failure").fetchall()
    assert rows == [("2", 2, None)]
    assert count(shop, "ledger.entry") == 0


def test_rolled_back_transaction_leaves_no_journal_row(shop):
    add_sale(shop, 1, "10.00")
    entries, lines = count(shop, "ledger.entry"), count(shop, "ledger.line")
    with shop.transaction(force_rollback=True):
        add_sale(shop, 2, "20.00", "2.00")
        shop.execute("UPDATE public.sales SET total = 15 WHERE id = 1")
        shop.execute("DELETE FROM public.sales WHERE id = 1")
        add_voucher(shop, 9, "50", paid_at=None)  # a deferred failure, rolled back too
        assert count(shop, "ledger.entry") > entries  # the trigger did post inside
    assert (count(shop, "ledger.entry"), count(shop, "ledger.line")) == (entries, lines)
    assert count(shop, "ledger.failure") == 0
    assert_sales_ledger_matches(shop)


# --------------------------------------------------------------------------- 3. statement shapes

INSERT_500 = """
    INSERT INTO public.sales (customer, sold_at, status, currency, payment_method, total, tax)
    SELECT 'c' || g, timestamptz '2024-01-01 00:00+00' + g * interval '1 hour',
           (ARRAY['completed', 'completed', 'draft', 'cancelled'])[1 + g % 4],
           (ARRAY['USD', 'EUR'])[1 + g % 2],
           (ARRAY['cash', 'card', 'invoice'])[1 + g % 3],
           (g * 3.17)::numeric(14, 2), (g % 5 * 0.5)::numeric(14, 2)
    FROM generate_series(1, 500) AS g
"""


def test_single_row_insert_posts(shop):
    add_sale(shop, 1, "99.99", "9.09", payment_method="cash", currency="EUR")
    assert expected_sale_totals(shop) == {
        ("1000", "EUR"): Decimal("99.99"),
        ("4000", "EUR"): Decimal("-90.90"),
        ("2200", "EUR"): Decimal("-9.09"),
    }
    assert_sales_ledger_matches(shop)
    assert count(shop, "ledger.entry") == 1


def test_multi_row_insert_select_posts_every_row(shop):
    shop.execute(INSERT_500)
    assert count(shop, "ledger.entry") == 250  # only the completed half
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_copy_of_10000_rows_posts_every_row(shop):
    buf = io.StringIO()
    methods, currencies, statuses = ("cash", "card", "invoice"), ("USD", "EUR", "GBP"), ("completed",) * 4 + ("draft",)
    for i in range(1, 10_001):
        buf.write(
            f"{i}\tc{i}\t2024-02-01 00:00:00+00\t{statuses[i % 5]}\t{currencies[i % 3]}\t"
            f"{methods[i % 3 if i % 7 else 0]}\t{i % 997}.{i % 100:02d}\t{i % 13}.00\n"
        )
    with shop.cursor() as cur:
        with cur.copy(
            "COPY public.sales (id, customer, sold_at, status, currency, payment_method, total, tax) FROM STDIN"
        ) as copy:
            copy.write(buf.getvalue())
    assert count(shop, "public.sales") == 10_000
    assert count(shop, "ledger.entry") == shop.execute(
        "SELECT count(*) FROM public.sales WHERE status = 'completed' AND (total <> 0 OR tax <> 0)"
    ).fetchone()[0]
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_one_update_touching_many_rows(shop):
    shop.execute(INSERT_500)
    entries = count(shop, "ledger.entry")
    # raises half the completed totals, completes the drafts, changes a third's payment method
    shop.execute(
        """
        UPDATE public.sales SET
            total = CASE WHEN id % 2 = 0 THEN total + 1 ELSE total END,
            status = CASE status WHEN 'draft' THEN 'completed' ELSE status END,
            payment_method = CASE WHEN id % 3 = 0 THEN 'card' ELSE payment_method END
        """
    )
    assert count(shop, "ledger.entry") > entries
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_delete_of_many_rows(shop):
    shop.execute(INSERT_500)
    shop.execute("DELETE FROM public.sales WHERE id % 3 <> 0")
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)
    shop.execute("DELETE FROM public.sales")
    assert live_totals(shop, "sale") == {}
    assert shop.execute(f"SELECT count(*) FROM ({LIVE_ENTRIES}) AS e").fetchone()[0] == 0
    assert_ledger_invariants(shop)


def test_a_large_delete_takes_time_linear_in_its_rows(shop):
    """Each reversed entry's lines and link are looked up once. A lookup per entry that
    reread an array of every entry reversed made a DELETE of 16,000 posted sales take 27 s
    (quadratic). Compared within one test, each the best of two rolled-back runs: 24,000
    rows against 3,000 take about 8 times as long when linear, 64 times when quadratic."""
    shop.execute("INSERT INTO public.sales (customer, total, tax, status)"
                 " SELECT 'c' || g, 10, 1, 'completed' FROM generate_series(1, 24000) AS g")

    def best_of_two(rows: int) -> float:
        times = []
        for _ in range(2):
            with shop.transaction(force_rollback=True):
                started = time.perf_counter()
                shop.execute("DELETE FROM public.sales WHERE id IN (SELECT id FROM public.sales ORDER BY id LIMIT %s)",
                             (rows,))
                times.append(time.perf_counter() - started)
        return min(times)

    small, large = best_of_two(3000), best_of_two(24000)
    assert large / small < 24, (small, large)
    assert count(shop, "ledger.entry") == 24000  # rolled back


def test_requisition_posts_when_approved(shop):
    shop.execute(
        "INSERT INTO public.purchase_requisitions (id, requested_by, department, description, amount, status,"
        " approved_at) VALUES (1, 'ann', 'ops', 'desks', 1200.50, 'approved', '2024-04-01 08:00+00'),"
        " (2, 'bob', 'it', 'laptops', 999, 'submitted', NULL)"
    )
    expected = """
        SELECT id::text, '5100', 'USD', amount::numeric FROM public.purchase_requisitions WHERE status = 'approved'
        UNION ALL
        SELECT id::text, '2100', 'USD', -amount FROM public.purchase_requisitions WHERE status = 'approved'
    """
    assert live_lines(shop, "requisition") == expected_lines(shop, expected)
    assert [e[2] for e in entries_of(shop, "requisition", "1")] == [
        shop.execute("SELECT approved_at FROM public.purchase_requisitions WHERE id = 1").fetchone()[0]
    ]
    # entering `when`: the first entry of requisition 2
    assert entries_of(shop, "requisition", "2") == []
    shop.execute("UPDATE public.purchase_requisitions SET status = 'approved', approved_at = now() WHERE id = 2")
    assert len(entries_of(shop, "requisition", "2")) == 1
    assert live_lines(shop, "requisition") == expected_lines(shop, expected)


def test_payment_voucher_posts_when_paid(shop):
    add_voucher(shop, 1, "75.25", status="draft", paid_at=None)
    add_voucher(shop, 2, "10.00", method="cash")
    assert entries_of(shop, "payment", "1") == []
    shop.execute("UPDATE public.payment_vouchers SET status = 'paid', paid_at = now() WHERE id = 1")
    assert live_lines(shop, "payment") == expected_lines(shop, EXPECTED_PAYMENT_LINES)
    assert sorted(live_lines(shop, "payment"))[0:2] == [
        ("1", "1010", "USD", Decimal("-75.2500")),
        ("1", "2100", "USD", Decimal("75.2500")),
    ]
    shop.execute("UPDATE public.payment_vouchers SET status = 'void' WHERE id = 2")
    assert live_lines(shop, "payment") == expected_lines(shop, EXPECTED_PAYMENT_LINES)
    assert count(shop, "ledger.failure") == 0


def test_manufacturing_order_posts_when_done(shop):
    shop.execute(
        "INSERT INTO public.manufacturing_orders (id, product, quantity, unit_cost, state) VALUES"
        " (1, 'chair', 12, 7.1234, 'in_progress'), (2, 'table', 3, 40, 'planned')"
    )
    assert count(shop, "ledger.entry") == 0
    shop.execute("UPDATE public.manufacturing_orders SET state = 'done', finished_at = now()")
    expected = """
        SELECT id::text, '1400', 'USD', quantity * unit_cost FROM public.manufacturing_orders WHERE state = 'done'
        UNION ALL
        SELECT id::text, '1300', 'USD', -(quantity * unit_cost) FROM public.manufacturing_orders WHERE state = 'done'
    """
    assert live_lines(shop, "manufacturing") == expected_lines(shop, expected)
    assert ("1", "1400", "USD", Decimal("85.4808")) in live_lines(shop, "manufacturing")
    assert_ledger_invariants(shop)


# --------------------------------------------------------------------------- 4. updates


def test_amount_change_reverses_and_reposts(shop):
    add_sale(shop, 1, "100.00", "10.00")
    (old,) = live_entry_ids(shop, "sale", "1")
    old_lines = lines_of(shop, old)
    shop.execute("UPDATE public.sales SET total = 120.00 WHERE id = 1")
    entries = entries_of(shop, "sale", "1")
    assert len(entries) == 3
    reversal = [e for e in entries if e[1] is not None]
    assert [r[1] for r in reversal] == [old]
    assert lines_of(shop, reversal[0][0]) == sorted((a, c, cr, d) for a, c, d, cr in old_lines)
    (new,) = live_entry_ids(shop, "sale", "1")
    assert new not in (old, reversal[0][0])
    assert lines_of(shop, new) == [
        ("1100", "USD", Decimal("120.0000"), Decimal("0.0000")),
        ("2200", "USD", Decimal("0.0000"), Decimal("10.0000")),
        ("4000", "USD", Decimal("0.0000"), Decimal("110.0000")),
    ]
    assert_sales_ledger_matches(shop)


def test_leaving_when_reverses_only(shop):
    add_sale(shop, 1, "100.00")
    (old,) = live_entry_ids(shop, "sale", "1")
    shop.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 1")
    entries = entries_of(shop, "sale", "1")
    assert [(e[0], e[1]) for e in entries][0] == (old, None)
    assert len(entries) == 2 and entries[1][1] == old
    assert live_entry_ids(shop, "sale", "1") == []
    assert live_totals(shop, "sale") == {}


def test_entering_when_posts_the_first_entry(shop):
    add_sale(shop, 1, "100.00", status="draft")
    assert entries_of(shop, "sale", "1") == []
    shop.execute("UPDATE public.sales SET status = 'completed' WHERE id = 1")
    entries = entries_of(shop, "sale", "1")
    assert len(entries) == 1 and entries[0][1] is None
    assert_sales_ledger_matches(shop)


def test_unrelated_column_update_posts_nothing(shop):
    add_sale(shop, 1, "100.00", "5.00")
    add_sale(shop, 2, "10.00", status="draft")
    before = shop.execute("SELECT id FROM ledger.entry ORDER BY id").fetchall()
    shop.execute("UPDATE public.sales SET note = 'called the customer'")
    shop.execute("UPDATE public.sales SET total = total WHERE id = 1")
    assert shop.execute("SELECT id FROM ledger.entry ORDER BY id").fetchall() == before


def test_key_change_reverses_old_key_and_posts_new_key(shop):
    add_sale(shop, 1, "100.00")
    add_sale(shop, 2, "20.00", "1.00")
    shop.execute("UPDATE public.sales SET id = id + 1000")
    for old_key in ("1", "2"):
        entries = entries_of(shop, "sale", old_key)
        assert len(entries) == 2 and entries[1][1] == entries[0][0]
        assert live_entry_ids(shop, "sale", old_key) == []
    for new_key in ("1001", "1002"):
        assert len(entries_of(shop, "sale", new_key)) == 1
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_delete_reverses_dated_at_transaction_time(shop):
    add_sale(shop, 1, "100.00", "10.00", sold_at="2023-12-31 23:00+00")
    (original,) = live_entry_ids(shop, "sale", "1")
    with shop.transaction():
        (now,) = shop.execute("SELECT now()").fetchone()
        shop.execute("DELETE FROM public.sales WHERE id = 1")
    entries = entries_of(shop, "sale", "1")
    assert len(entries) == 2
    (orig_id, orig_reverses, orig_date), (rev_id, rev_reverses, rev_date) = entries
    assert (orig_id, orig_reverses) == (original, None)
    assert rev_reverses == original
    assert orig_date == shop.execute("SELECT timestamptz '2023-12-31 23:00+00'").fetchone()[0]
    assert rev_date == now
    assert live_entry_ids(shop, "sale", "1") == []
    assert_ledger_invariants(shop)


def test_update_reversal_dated_at_transaction_time(shop):
    add_sale(shop, 1, "100.00", sold_at="2023-06-01 00:00+00")
    with shop.transaction():
        (now,) = shop.execute("SELECT now()").fetchone()
        shop.execute("UPDATE public.sales SET total = 90 WHERE id = 1")
    original, *later = entries_of(shop, "sale", "1")
    (reversal,) = [e for e in later if e[1] is not None]
    (repost,) = [e for e in later if e[1] is None]
    assert original[2] == repost[2] == shop.execute("SELECT sold_at FROM public.sales").fetchone()[0]
    assert reversal[1] == original[0] and reversal[2] == now
    assert live_entry_ids(shop, "sale", "1") == [repost[0]]


@pytest.mark.parametrize("rule", ["sale", "payment"])  # on_error = "block" and "defer"
def test_key_reinserted_while_its_live_posting_remained(shop, rule):
    """A row deleted while the trigger was off leaves its live posting; inserting the key
    again (trigger on) conflicts in the INSERT fast path, and the fallback's full reconcile
    reverses the old entry and posts the new row: the write succeeds, one live entry,
    nothing failed."""
    table, insert = {
        "sale": ("public.sales", "INSERT INTO public.sales (id, customer, payment_method, total, tax, status)"
                                 " VALUES (7001, 'x', 'cash', %s, 1, 'completed')"),
        "payment": ("public.payment_vouchers", "INSERT INTO public.payment_vouchers (id, payee, method, amount,"
                                                " status, paid_at) VALUES (7001, 'x', 'cash', %s, 'paid', now())"),
    }[rule]
    shop.execute(insert, (10,))
    with shop.transaction():
        shop.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        shop.execute(f"DELETE FROM {table} WHERE id = 7001")
        shop.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    shop.execute(insert, (12,))
    assert len(live_entry_ids(shop, rule, "7001")) == 1
    assert [e[1] is not None for e in entries_of(shop, rule, "7001")].count(True) == 1  # one reversal
    assert count(shop, "ledger.failure") == 0
    assert_ledger_invariants(shop)

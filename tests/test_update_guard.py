"""An UPDATE that changes no column a rule reads is not reconciled (update_guard.sql).

The posting function returns before it sets up its statement: no posting link is looked
up. Which columns a rule reads is found by catalog.input_columns; a rule that may read
more than its row (a subquery, a function of another schema, the whole row) keeps
reconciling every UPDATE.
"""

from __future__ import annotations

import psycopg
import pytest

from ledgeradmin import catalog
from ledgeradmin.config import parse_config
from ledgeradmin.install import install
from ledgeradmin.verify import verify

from test_posting import (
    ACCOUNTS,
    add_sale,
    assert_ledger_invariants,
    assert_sales_ledger_matches,
    count,
    install_custom_rule,
    live_entry_ids,
    lines_of,
)

#: index entries of the posting links read in the current transaction
LINKS_READ = "SELECT pg_stat_get_xact_tuples_returned('ledger.posting_live_key'::regclass)"


def links_read_by(conn: psycopg.Connection, statement: str) -> int:
    """Run ``statement`` in a transaction of its own; the posting-link index entries it read."""
    with conn.transaction():
        (before,) = conn.execute(LINKS_READ).fetchone()
        conn.execute(statement)
        (after,) = conn.execute(LINKS_READ).fetchone()
    return after - before


def custom_config(**rule: object):
    return parse_config({"accounts": ACCOUNTS, "rules": {"custom": {"source": "public.custom_src", **rule}}})


def inputs_of(conn: psycopg.Connection, **rule: object) -> tuple[str, ...] | None:
    (resolved,) = custom_config(**rule).select(None)
    return catalog.input_columns(conn, resolved, catalog.resolve(conn, resolved))


def function_body(conn: psycopg.Connection, rule: str) -> str:
    return conn.execute("SELECT prosrc FROM pg_proc WHERE oid = %s::regprocedure",
                        (f"ledger.post_{rule}()",)).fetchone()[0]


# --------------------------------------------------------------------------- which columns

def test_shop_sale_rule_reads_its_key_and_the_columns_of_its_expressions(shop, shop_config):
    (rule,) = shop_config.select(["sale"])
    # customer is read by the memo alone, note by nothing: neither is an input
    assert catalog.input_columns(shop, rule, catalog.resolve(shop, rule)) == ("id", "sold_at", "status", "currency", "payment_method",
                                                  "total", "tax")


def test_input_columns_skip_strings_and_keep_quoted_names(conn):
    conn.execute('CREATE TABLE public.custom_src (id int PRIMARY KEY, "Amount" numeric, amount numeric,'
                 " note text, memo_src text, kind text)")
    lines = [{"account": "1100", "debit": "\"Amount\" /* it's the gross; note isn't read */ + 0"},
             {"account": "4000", "credit": "r.\"Amount\""}]
    inputs = inputs_of(conn, lines=lines, when="kind <> 'amount' AND $$memo_src$$ <> 'it''s' AND $é$r$é$ <> ''",
                       memo="memo_src")
    # note appears in a comment only, amount in string literals only, memo_src in a
    # string literal and in the memo, which is not an input
    assert inputs == ("id", "Amount", "kind")


TRICKY_AMOUNTS = [
    "amount",
    "r.\"Net Amount\" * 1",
    "CASE WHEN kind = 'a' THEN amount ELSE \"Net Amount\" END",
    "(doc ->> 'amount')::numeric + (pair).x",
    "coalesce(amount, 0) /* \"Net Amount\" */ + length($q$kind$q$) - 4",
    "amount -- note\n + 0",
    "greatest(amount, (pair).y::numeric, \"UPPER\")",
]


def test_input_columns_cover_every_column_postgresql_sees_read(conn):
    """Oracle: PostgreSQL records, for a view, each column its expressions read
    (pg_depend). For expressions with quoted names, comments, dollar quotes, field access
    and JSON, input_columns lists at least those columns."""
    conn.execute("CREATE TYPE public.custom_pair AS (x numeric, y int)")
    conn.execute('CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, "Net Amount" numeric,'
                 ' kind text, doc jsonb, pair public.custom_pair, "UPPER" numeric, note text)')
    for i, amount in enumerate(TRICKY_AMOUNTS):
        lines = [{"account": "1100", "debit": amount}, {"account": "4000", "credit": amount}]
        inputs = inputs_of(conn, lines=lines, when="kind IS DISTINCT FROM 'void'")
        assert inputs is not None, amount
        view = f"public.custom_probe_{i}"
        conn.execute(f"CREATE VIEW {view} AS SELECT ({amount}) AS a, (kind IS DISTINCT FROM 'void') AS w"
                     " FROM public.custom_src AS r")
        read = {c for (c,) in conn.execute(
            """SELECT a.attname::text FROM pg_depend AS d
               JOIN pg_rewrite AS w ON w.oid = d.objid
               JOIN pg_attribute AS a ON a.attrelid = d.refobjid AND a.attnum = d.refobjsubid
               WHERE w.ev_class = %s::regclass AND d.refobjid = 'public.custom_src'::regclass
                 AND d.refobjsubid > 0""", (view,))}
        assert read and read <= set(inputs), (amount, read, inputs)


@pytest.mark.parametrize("debit", [
    "(SELECT amount FROM public.custom_src AS o WHERE o.id = 1)",  # a subquery
    "public.custom_amount(amount)",  # a function of another schema
    "(to_jsonb(r) ->> 'amount')::numeric",  # the whole row
    "(to_jsonb(r.*) ->> 'amount')::numeric",  # the whole row again
    'U&"amount"',  # a Unicode-escaped name
    "amount + length(E'\\\\') - 1",  # a backslash: where a string ends depends on a setting
    "amount OPERATOR(pg_catalog.+) 0",  # a named operator
    "amount + 0 * length(table_to_xml('public.custom_src', true, false, '')::text)",  # a table by name
    "pg_catalog.abs(amount)",  # qualified, if only by pg_catalog
], ids=["subquery", "other_schema", "whole_row", "whole_row_star", "unicode_name", "backslash",
        "named_operator", "table_by_name", "qualified"])
def test_rule_that_may_read_beyond_its_row_has_no_guard(conn, debit):
    conn.execute("CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, note text)")
    conn.execute("CREATE FUNCTION public.custom_amount(numeric) RETURNS numeric IMMUTABLE LANGUAGE sql AS 'SELECT $1'")
    lines = [{"account": "1100", "debit": debit}, {"account": "4000", "credit": "amount"}]
    assert inputs_of(conn, lines=lines) is None
    install(conn, custom_config(lines=lines))
    assert "record_image_eq" not in function_body(conn, "custom")
    conn.execute("INSERT INTO public.custom_src VALUES (1, 10, NULL)")
    assert links_read_by(conn, "UPDATE public.custom_src SET note = 'x'") > 0  # reconciled as before


# --------------------------------------------------------------------------- behaviour

def test_update_of_unread_columns_reads_no_posting_link(shop):
    for i in range(1, 6):
        add_sale(shop, i, f"{i}0.00", "1.00")
    entries = count(shop, "ledger.entry")
    assert links_read_by(shop, "UPDATE public.sales SET note = 'called', customer = 'renamed'") == 0
    assert links_read_by(shop, "UPDATE public.sales SET total = total WHERE id = 1") == 0
    assert count(shop, "ledger.entry") == entries
    # one changed row among unchanged ones: the statement is reconciled, that row reposted
    assert links_read_by(shop, "UPDATE public.sales SET note = 'again', total = total + (id = 3)::int") > 0
    assert count(shop, "ledger.entry") == entries + 2
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_each_read_column_and_the_key_count_as_a_change(shop):
    add_sale(shop, 1, "100.00", "10.00", status="draft")
    changes = ["status = 'completed'", "tax = 5", "payment_method = 'card'", "currency = 'EUR'",
               "sold_at = '2024-02-01 10:00+00'", "id = 2"]
    for change in changes:
        before = count(shop, "ledger.entry")
        shop.execute(f"UPDATE public.sales SET {change}")
        assert count(shop, "ledger.entry") > before, change
    assert_sales_ledger_matches(shop)
    assert_ledger_invariants(shop)


def test_a_key_taken_over_by_another_row_of_the_statement(conn):
    """Rows shifted down one key in one statement (install refuses deferrable keys, so keys
    cannot swap): a key passed to a row with equal inputs keeps its entry as it is, one
    passed to a row with other inputs is reposted, the freed key's entry is reversed."""
    install_custom_rule(conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, who text)",
                        memo="who", lines=[{"account": "1100", "debit": "amount"},
                                           {"account": "4000", "credit": "amount"}])
    conn.execute("INSERT INTO public.custom_src VALUES (2, 10, 'ann'), (3, 10, 'bob'), (5, 30, 'cy'), (6, 40, 'di')")
    (kept,) = live_entry_ids(conn, "custom", "2")
    conn.execute("UPDATE public.custom_src SET id = id - 1 WHERE id IN (2, 3)")  # 2 → 1, then 3 → 2
    assert count(conn, "ledger.entry") == 6  # key 1 posted, key 3 reversed
    assert live_entry_ids(conn, "custom", "2") == [kept]  # bob's 10 is what ann's 10 posted
    conn.execute("UPDATE public.custom_src SET id = id - 1 WHERE id IN (5, 6)")  # 5 → 4, then 6 → 5
    assert count(conn, "ledger.entry") == 10  # key 4 posted, key 5 reposted (30 → 40), key 6 reversed
    for key, amount in (("1", 10), ("2", 10), ("4", 30), ("5", 40)):
        (entry,) = live_entry_ids(conn, "custom", key)
        assert [line[2] for line in lines_of(conn, entry) if line[2] > 0] == [amount]
    assert not live_entry_ids(conn, "custom", "3") and not live_entry_ids(conn, "custom", "6")
    assert_ledger_invariants(conn)


def test_unchanged_columns_of_a_type_without_equality_are_compared(conn):
    """json has no equality operator: the guard compares stored images."""
    install_custom_rule(conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, doc json, note text)",
                        lines=[{"account": "1100", "debit": "(doc ->> 'amount')::numeric"},
                               {"account": "4000", "credit": "(doc ->> 'amount')::numeric"}])
    assert "record_image_eq" in function_body(conn, "custom")
    conn.execute("""INSERT INTO public.custom_src VALUES (1, '{"amount": 10}', NULL)""")
    assert links_read_by(conn, "UPDATE public.custom_src SET note = 'x'") == 0
    assert links_read_by(conn, """UPDATE public.custom_src SET doc = '{"amount": 12}'""") > 0
    (entry,) = live_entry_ids(conn, "custom", "1")
    assert [line[2] for line in lines_of(conn, entry) if line[2] > 0] == [12]


def test_generated_column_read_by_a_rule_changes_with_its_inputs(conn):
    """The rule reads a stored generated column only; an UPDATE of a column it is computed
    from changes it in the new row, and is reposted."""
    install_custom_rule(conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, qty int, price numeric,"
                              " amount numeric GENERATED ALWAYS AS (qty * price) STORED, note text)",
                        lines=[{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}])
    assert inputs_of(conn, lines=[{"account": "1100", "debit": "amount"},
                                  {"account": "4000", "credit": "amount"}]) == ("id", "amount")
    conn.execute("INSERT INTO public.custom_src (id, qty, price) VALUES (1, 2, 10)")
    assert links_read_by(conn, "UPDATE public.custom_src SET note = 'x'") == 0
    assert links_read_by(conn, "UPDATE public.custom_src SET qty = 3") > 0
    (entry,) = live_entry_ids(conn, "custom", "1")
    assert [line[2] for line in lines_of(conn, entry) if line[2] > 0] == [30]
    assert_ledger_invariants(conn)


def test_missing_posting_is_left_to_backfill_by_an_update_of_unread_columns(shop, shop_config):
    shop.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")
    add_sale(shop, 1, "100.00")
    shop.execute("ALTER TABLE public.sales ENABLE TRIGGER USER")
    shop.execute("UPDATE public.sales SET note = 'x'")
    (sale,) = [r for r in verify(shop, shop_config).rules if r.rule == "sale"]
    assert sale.missing == 1
    shop.execute("UPDATE public.sales SET tax = 1")
    assert_sales_ledger_matches(shop)


def test_lookup_rule_reposts_on_any_update(conn):
    """A rule whose account comes from another table may change without its row: every
    UPDATE is reconciled, as the account now found says."""
    conn.execute("CREATE TABLE public.custom_map (kind text PRIMARY KEY, account text)")
    conn.execute("INSERT INTO public.custom_map VALUES ('a', '1100')")
    conn.execute("INSERT INTO ledger.account (code, name, type) VALUES ('7777', 'Other', 'asset')")
    install_custom_rule(
        conn, "CREATE TABLE public.custom_src (id int PRIMARY KEY, amount numeric, kind text, note text)",
        lines=[{"account_sql": "(SELECT m.account FROM public.custom_map AS m WHERE m.kind = kind)",
                "debit": "amount"},
               {"account": "4000", "credit": "amount"}],
    )
    conn.execute("INSERT INTO public.custom_src VALUES (1, 10, 'a', NULL)")
    conn.execute("UPDATE public.custom_map SET account = '7777'")
    conn.execute("UPDATE public.custom_src SET note = 'x'")
    (entry,) = live_entry_ids(conn, "custom", "1")
    assert [line[0] for line in lines_of(conn, entry) if line[2] > 0] == ["7777"]


def test_partitioned_table_with_a_two_column_key(conn):
    """Through the parent or a partition (whose columns are in another order), an UPDATE of
    an unread column reads no link; a move to another partition changes the key and is
    reposted."""
    conn.execute("""CREATE TABLE public.custom_src (id bigint NOT NULL, placed_on date NOT NULL, amount numeric,
                                                    note text, PRIMARY KEY (id, placed_on))
                    PARTITION BY RANGE (placed_on)""")
    conn.execute("CREATE TABLE public.custom_2024 PARTITION OF public.custom_src"
                 " FOR VALUES FROM ('2024-01-01') TO ('2025-01-01')")
    conn.execute("CREATE TABLE public.custom_2025 (note text, amount numeric, placed_on date NOT NULL,"
                 " id bigint NOT NULL)")
    conn.execute("ALTER TABLE public.custom_src ATTACH PARTITION public.custom_2025"
                 " FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')")
    install(conn, custom_config(key=["id", "placed_on"], date="placed_on",
                                lines=[{"account": "1100", "debit": "amount"},
                                       {"account": "4000", "credit": "amount"}]))
    conn.execute("INSERT INTO public.custom_src VALUES (1, '2024-03-01', 10, NULL), (2, '2025-03-01', 20, NULL)")
    assert links_read_by(conn, "UPDATE public.custom_src SET note = 'x'") == 0
    assert links_read_by(conn, "UPDATE public.custom_2025 SET note = 'y'") == 0
    assert count(conn, "ledger.entry") == 2
    assert links_read_by(conn, "UPDATE public.custom_src SET placed_on = '2025-01-02' WHERE id = 1") > 0
    assert live_entry_ids(conn, "custom", "(1,2024-03-01)") == []
    (entry,) = live_entry_ids(conn, "custom", "(1,2025-01-02)")
    assert [line[2] for line in lines_of(conn, entry) if line[2] > 0] == [10]
    assert_ledger_invariants(conn)

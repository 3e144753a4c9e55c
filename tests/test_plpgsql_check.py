"""plpgsql_check finds no error in any PL/pgSQL function ledgeradmin installs.

Every function of schema ledger written in PL/pgSQL is checked: the shared routines,
the immutability guard and the generated posting function of each rule — the example
shop's rules (block and defer) plus rules with a text key, a composite key and a
partitioned source, so that every template branch is compiled. Trigger functions are
checked against their table (and the rule's transition tables new_rows / old_rows).
Warnings are listed in the output (pytest -rP), errors fail the test.

Needs the plpgsql_check extension (Debian: postgresql-NN-plpgsql-check; CI installs it);
skipped with that reason when the server does not have it.
"""

from __future__ import annotations

from pathlib import Path

import psycopg
import pytest

from ledgeradmin.config import load_config, parse_config
from ledgeradmin.install import install

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"

EXTRA_TABLES = """
CREATE TABLE public.gift_cards (code text PRIMARY KEY, amount numeric(12, 2) NOT NULL, state text NOT NULL,
                                issued_at timestamptz NOT NULL);
CREATE TABLE public.shipments (region text NOT NULL, no integer NOT NULL, cost numeric(12, 2) NOT NULL,
                               shipped_at date, PRIMARY KEY (region, no));
CREATE TABLE public.events (id bigint NOT NULL, at timestamptz NOT NULL, fee numeric(12, 2) NOT NULL,
                            PRIMARY KEY (id, at)) PARTITION BY RANGE (at);
CREATE TABLE public.events_2024 PARTITION OF public.events FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
CREATE TABLE public.events_2025 PARTITION OF public.events FOR VALUES FROM ('2025-01-01') TO ('2026-01-01');
"""

ACCOUNTS = {
    "1100": {"name": "Accounts Receivable", "type": "asset"},
    "4000": {"name": "Sales Revenue", "type": "income"},
}
EXTRA_RULES = {
    "gift_card": {"source": "public.gift_cards", "when": "state = 'sold'", "date": "issued_at",
                  "memo": "'Gift card ' || code",
                  "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]},
    "shipment": {"source": "public.shipments", "date": "shipped_at", "on_error": "defer",
                 "lines": [{"account_sql": "CASE WHEN region = 'eu' THEN '1100' ELSE '4000' END", "debit": "cost"},
                           {"account": "4000", "credit": "cost"}]},
    "event": {"source": "public.events", "date": "at",
              "lines": [{"account": "1100", "debit": "fee"}, {"account": "4000", "credit": "fee"}]},
}


@pytest.fixture
def checked(conn: psycopg.Connection) -> psycopg.Connection:
    """`conn` with plpgsql_check created and every kind of rule installed."""
    available = conn.execute(
        "SELECT default_version FROM pg_available_extensions WHERE name = 'plpgsql_check'"
    ).fetchone()
    if available is None:
        version = conn.execute("SHOW server_version_num").fetchone()[0][:2]
        pytest.skip(f"the plpgsql_check extension is not installed on this server "
                    f"(Debian: apt-get install postgresql-{version}-plpgsql-check)")
    conn.execute("CREATE EXTENSION IF NOT EXISTS plpgsql_check")
    conn.execute(EXTRA_TABLES)
    install(conn, load_config(SHOP_TOML))
    install(conn, parse_config({"accounts": ACCOUNTS, "rules": EXTRA_RULES}))
    return conn


def test_plpgsql_check_finds_no_error_in_any_ledger_function(checked):
    functions = checked.execute(
        """
        SELECT p.oid, p.oid::regprocedure::text, p.prorettype = 'trigger'::regtype,
               (SELECT t.tgrelid FROM pg_trigger AS t
                WHERE t.tgfoid = p.oid AND NOT t.tgisinternal
                ORDER BY (SELECT c.relkind <> 'p' FROM pg_class AS c WHERE c.oid = t.tgrelid), t.tgrelid LIMIT 1),
               EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgfoid = p.oid AND t.tgoldtable IS NOT NULL),
               EXISTS (SELECT FROM pg_trigger AS t WHERE t.tgfoid = p.oid AND t.tgnewtable IS NOT NULL)
        FROM pg_proc AS p JOIN pg_language AS l ON l.oid = p.prolang
        WHERE p.pronamespace = 'ledger'::regnamespace AND l.lanname = 'plpgsql'
        ORDER BY 2
        """
    ).fetchall()
    names = [f[1] for f in functions]
    expected_posting = {f"ledger.post_{r}()" for r in ("sale", "requisition", "payment", "manufacturing",
                                                       "gift_card", "shipment", "event")}
    assert expected_posting <= set(names), names
    assert {"ledger.refuse_change()", "ledger.posting_problem(text,numeric[])"} <= set(names), names
    errors, warnings = [], []
    for oid, name, is_trigger, relid, old, new in functions:
        assert not is_trigger or relid is not None, f"{name}: a trigger function on no table"
        rows = checked.execute(
            """
            SELECT level, lineno, sqlstate, message, detail, hint, query
            FROM plpgsql_check_function_tb(%(oid)s::regprocedure, coalesce(%(relid)s::regclass, 0::regclass),
                                           fatal_errors => false, other_warnings => true,
                                           performance_warnings => true, extra_warnings => true,
                                           security_warnings => true,
                                           oldtable => %(old)s, newtable => %(new)s)
            """,
            {"oid": oid, "relid": relid, "old": "old_rows" if old else None, "new": "new_rows" if new else None},
        ).fetchall()
        for level, lineno, sqlstate, message, detail, hint, query in rows:
            line = f"{name} line {lineno}: {level} {sqlstate}: {message}" + (f" ({detail})" if detail else "")
            (errors if level == "error" else warnings).append(line)
    print(f"\nplpgsql_check: {len(functions)} functions checked, {len(errors)} errors, {len(warnings)} warnings")
    for line in warnings:
        print("  " + line)
    assert errors == [], "\n".join(errors)


def test_plpgsql_check_notices_an_error(checked):
    """The check is real: a function with a wrong column name is reported."""
    checked.execute(
        """CREATE FUNCTION ledger.broken() RETURNS bigint LANGUAGE plpgsql AS $$
           BEGIN RETURN (SELECT count(no_such_column) FROM ledger.entry); END $$"""
    )
    levels = [r[0] for r in checked.execute(
        "SELECT level FROM plpgsql_check_function_tb('ledger.broken()'::regprocedure, fatal_errors => false)")]
    assert "error" in levels
    # and the posting functions' SQL is really compiled: without its transition tables
    # the check of post_sale() fails on them
    messages = [r[0] for r in checked.execute(
        "SELECT message FROM plpgsql_check_function_tb('ledger.post_sale()'::regprocedure, 'public.sales',"
        " fatal_errors => false) WHERE level = 'error'")]
    assert any("new_rows" in m or "old_rows" in m for m in messages), messages

"""migrate, install, uninstall and `ledgeradmin sql` against a real PostgreSQL.

Every expectation here is written out by hand (entries, lines, names), never computed
with ledgeradmin's own compiler.
"""

from __future__ import annotations

import json
import subprocess
import tomllib
import uuid
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledgeradmin.backfill import backfill
from ledgeradmin.cli import main
from ledgeradmin.config import load_config
from ledgeradmin.errors import ConfigError, LedgerError
from ledgeradmin.install import install, uninstall
from ledgeradmin.migrate import migrate
from ledgeradmin.status import status
from ledgeradmin.verify import verify

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"
SHOP_RULES = {"sale", "requisition", "payment", "manufacturing"}
SHOP_TABLES = {"sales", "purchase_requisitions", "payment_vouchers", "manufacturing_orders"}
MIGRATIONS = ["0001.ledger-schema", "0002.ledger-reader-role", "0003.posting-fingerprint-bigint",
              "0004.posting-replica-identity", "0005.ledger-closed-periods",
              "0006.posting-fingerprint-sign-weight", "0007.closed-period-message-datestyle"]
PSQL = "/usr/bin/psql"
UTC = timezone.utc

# -- helpers ---------------------------------------------------------------------------

ACCOUNTS = """
[accounts.1000]
name = "Cash"
type = "asset"
[accounts.1100]
name = "Accounts Receivable"
type = "asset"
[accounts.2200]
name = "Sales Tax Payable"
type = "liability"
[accounts.4000]
name = "Sales Revenue"
type = "income"
"""


def q(value) -> str:
    """A TOML value: JSON strings and arrays of strings are valid TOML."""
    return json.dumps(value)


def rule_toml(name: str, source: str, lines: list[dict], **fields) -> str:
    out = [f"[rules.{name}]", f"source = {q(source)}"]
    out += [f"{field} = {q(value)}" for field, value in fields.items()]
    rendered = ["{ " + ", ".join(f"{k} = {q(v)}" for k, v in line.items()) + " }" for line in lines]
    out.append("lines = [\n  " + ",\n  ".join(rendered) + ",\n]")
    return "\n".join(out) + "\n"


def sale_rule(name: str = "sale", **overrides) -> str:
    """A simple sale rule on public.sales: receivable debit, revenue + tax credit."""
    fields = {"when": "status = 'completed'", "date": "sold_at", "memo": "'Sale ' || id"} | overrides
    lines = fields.pop("lines", [
        {"account": "1100", "debit": "total"},
        {"account": "4000", "credit": "total - tax"},
        {"account": "2200", "credit": "tax"},
    ])
    return rule_toml(name, "public.sales", lines, **fields)


def write_config(tmp_path: Path, *rules: str, accounts: str = ACCOUNTS, name: str = "ledger.toml"):
    path = tmp_path / name
    path.write_text(accounts + "\n" + "\n".join(rules), encoding="utf-8")
    return load_config(path)


def ledger_functions(conn) -> dict[str, tuple]:
    """name -> (oid, prosrc, security definer, config, acl) of every function in schema ledger."""
    rows = conn.execute(
        """SELECT p.proname::text, p.oid::int, p.prosrc, p.prosecdef, p.proconfig, p.proacl::text[]
           FROM pg_proc AS p WHERE p.pronamespace = 'ledger'::regnamespace"""
    ).fetchall()
    return {r[0]: tuple(r[1:]) for r in rows}


def posting_functions(conn) -> set[str]:
    return {n for n in ledger_functions(conn) if n.startswith("post_")}


def shop_triggers(conn) -> list[tuple[str, str, str]]:
    """(table, trigger, enabled) of every user trigger on tables outside schema ledger."""
    return conn.execute(
        """SELECT c.oid::regclass::text, t.tgname::text, t.tgenabled::text
           FROM pg_trigger AS t JOIN pg_class AS c ON c.oid = t.tgrelid
           WHERE NOT t.tgisinternal AND c.relnamespace <> 'ledger'::regnamespace
           ORDER BY 1, 2"""
    ).fetchall()


def registry(conn) -> dict[str, str]:
    return dict(conn.execute("SELECT name, checksum FROM ledger.rule").fetchall())


def accounts(conn) -> set[tuple[str, str, str]]:
    return set(conn.execute("SELECT code, name, type FROM ledger.account").fetchall())


def count(conn, table: str) -> int:
    return conn.execute(sql.SQL("SELECT count(*) FROM {}").format(sql.Identifier("ledger", table))).fetchone()[0]


def entries(conn, rule: str | None = None) -> list[dict]:
    """Every entry (oldest first) with its lines as a sorted list of (account, debit, credit, currency)."""
    rows = conn.execute(
        """SELECT e.id, e.rule, e.source_key, e.effective_at, e.memo, e.reverses,
                  array_agg(ARRAY[l.account, l.debit::text, l.credit::text, l.currency] ORDER BY l.line_no)
           FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id
           WHERE %(rule)s::text IS NULL OR e.rule = %(rule)s
           GROUP BY e.id ORDER BY e.id""",
        {"rule": rule},
    ).fetchall()
    return [
        {
            "id": r[0], "rule": r[1], "key": r[2], "date": r[3], "memo": r[4], "reverses": r[5],
            "lines": sorted((a, Decimal(d), Decimal(c), cur) for a, d, c, cur in r[6]),
        }
        for r in rows
    ]


def live(conn, rule: str | None = None) -> dict[str, dict]:
    """source_key -> the live entry (not a reversal, reversed by nothing) of ``rule``."""
    all_entries = entries(conn, rule)
    reversed_ids = {e["reverses"] for e in all_entries if e["reverses"] is not None}
    return {e["key"]: e for e in all_entries if e["reverses"] is None and e["id"] not in reversed_ids}


def assert_reversals_consistent(conn) -> None:
    """Every reversal names an existing, earlier entry of the same rule and key, with the lines swapped."""
    all_entries = {e["id"]: e for e in entries(conn)}
    for e in all_entries.values():
        if e["reverses"] is None:
            continue
        original = all_entries.get(e["reverses"])
        assert original is not None, e
        assert original["id"] < e["id"]
        assert (original["rule"], original["key"]) == (e["rule"], e["key"])
        assert e["lines"] == sorted((a, c, d, cur) for a, d, c, cur in original["lines"])


def lines(*triples) -> list[tuple]:
    """Expected lines: (account, debit, credit) in USD, sorted like ``entries``."""
    return sorted((a, Decimal(str(d)), Decimal(str(c)), "USD") for a, d, c in triples)


def balances(conn) -> dict[str, Decimal]:
    """account -> sum(debit - credit) over all lines."""
    return dict(conn.execute("SELECT account, sum(debit - credit) FROM ledger.line GROUP BY account").fetchall())


def rule_states(conn, config) -> dict[str, str]:
    return {s.rule: s.state for s in status(conn, config)}


def insert_sale(conn, id: int, total, tax=0, *, status="completed", method="invoice",
                sold_at="2024-05-01 10:00+00", customer="ann"):
    conn.execute(
        """INSERT INTO public.sales (id, customer, sold_at, status, payment_method, total, tax)
           VALUES (%s, %s, %s, %s, %s, %s, %s)""",
        (id, customer, sold_at, status, method, total, tax),
    )


def dbname(dsn: str) -> str:
    return psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]


def drop_ledger_schema(conn) -> None:
    conn.execute("DROP SCHEMA ledger CASCADE")


def psql(dsn: str, *files: Path) -> None:
    for f in files:
        subprocess.run(
            [PSQL, "-X", "-q", "-v", "ON_ERROR_STOP=1", "-1", "-d", dsn, "-f", str(f)],
            check=True, capture_output=True, text=True,
        )


@pytest.fixture
def make_role(conn):
    """make_role(*attributes) -> a new role with a unique name; dropped (with what it owns) after the test."""
    made: list[str] = []

    def _make(*attributes: str) -> str:
        name = f"la_test_{uuid.uuid4().hex[:10]}"
        conn.execute(sql.SQL("CREATE ROLE {} " + " ".join(attributes)).format(sql.Identifier(name)))
        made.append(name)
        return name

    yield _make
    for name in made:
        conn.execute(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = %s AND pid <> pg_backend_pid()",
            (name,),
        )
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(name)))


# -- migrate ---------------------------------------------------------------------------


def test_migrate_is_idempotent_and_creates_the_read_contract(dsn, conn):
    drop_ledger_schema(conn)
    assert migrate(dsn) == MIGRATIONS
    assert migrate(dsn) == []
    assert migrate(dsn) == []

    columns = {}
    for table, column, typ in conn.execute(
        """SELECT table_name::text, column_name::text, data_type::text FROM information_schema.columns
           WHERE table_schema = 'ledger'"""
    ):
        columns.setdefault(table, {})[column] = typ
    assert {"code": "text", "name": "text", "type": "text"}.items() <= columns["account"].items()
    assert {
        "id": "bigint", "rule": "text", "source_key": "text", "effective_at": "timestamp with time zone",
        "posted_at": "timestamp with time zone", "memo": "text", "reverses": "bigint",
    }.items() <= columns["entry"].items()
    assert {"entry_id": "bigint", "account": "text", "currency": "text", "debit": "numeric",
            "credit": "numeric"}.items() <= columns["line"].items()
    assert {"rule", "source_key", "sqlstate", "message", "detail", "attempts", "first_seen",
            "last_seen"} <= set(columns["failure"])

    primary_keys = dict(conn.execute(
        """SELECT c.conrelid::regclass::text, array_agg(a.attname::text ORDER BY a.attnum)
           FROM pg_constraint AS c JOIN pg_attribute AS a ON a.attrelid = c.conrelid AND a.attnum = ANY (c.conkey)
           WHERE c.contype = 'p' AND c.connamespace = 'ledger'::regnamespace GROUP BY 1"""
    ).fetchall())
    assert primary_keys["ledger.account"] == ["code"]
    assert primary_keys["ledger.entry"] == ["id"]
    # entry.reverses -> entry.id holds by foreign key or by construction (DESIGN.md); the
    # journal tests check it with assert_reversals_consistent.


def test_a_schema_migrated_by_a_later_version_is_refused_by_every_command(dsn, conn, shop_config):
    """An older ledgeradmin (a forgotten cron host) must not reinstall its posting functions
    over a newer ledger schema, nor verify with queries that no longer match it."""
    install(conn, shop_config)
    conn.execute("""INSERT INTO ledger._yoyo_migration (migration_hash, migration_id, applied_at_utc)
                    VALUES ('later', '0099.from-a-later-version', now() AT TIME ZONE 'UTC')""")
    functions = ledger_functions(conn)
    expected = "the ledger schema is newer than this ledgeradmin "
    for run in (lambda: migrate(dsn), lambda: install(conn, shop_config), lambda: status(conn, shop_config),
                lambda: verify(conn, shop_config), lambda: backfill(conn, shop_config)):
        with pytest.raises(LedgerError, match=expected) as err:
            run()
        assert "0099.from-a-later-version were applied by a later version" in err.value.message
        assert "upgrade ledgeradmin" in err.value.hint
    assert ledger_functions(conn) == functions


def test_migrate_on_the_template_database_applies_nothing(dsn, conn):
    before = conn.execute("SELECT count(*) FROM ledger._yoyo_migration").fetchone()[0]
    assert migrate(dsn) == []
    assert conn.execute("SELECT count(*) FROM ledger._yoyo_migration").fetchone()[0] == before == len(MIGRATIONS)


# -- install: idempotence, transactions, dry run ---------------------------------------


def test_install_is_idempotent(conn, shop_config):
    first = install(conn, shop_config)
    assert set(first.installed) == SHOP_RULES
    assert first.updated == [] and first.unchanged == []
    functions, triggers, checksums = ledger_functions(conn), shop_triggers(conn), registry(conn)

    second = install(conn, shop_config)
    assert second.installed == [] and second.updated == []
    assert set(second.unchanged) == SHOP_RULES
    assert ledger_functions(conn) == functions  # same oids, same bodies
    assert shop_triggers(conn) == triggers
    assert registry(conn) == checksums

    expected = sorted(
        (table, f"ledgeradmin_{rule}_{event}", "O")
        for rule, table in [("sale", "sales"), ("requisition", "purchase_requisitions"),
                            ("payment", "payment_vouchers"), ("manufacturing", "manufacturing_orders")]
        for event in ("insert", "update", "delete", "truncate")
    )
    assert sorted(triggers) == expected
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}


def test_install_with_a_bad_second_rule_installs_nothing(conn, tmp_path):
    conn.execute("INSERT INTO ledger.account VALUES ('1000', 'Old cash name', 'asset')")
    config = write_config(
        tmp_path,
        sale_rule(),
        rule_toml("requisition", "public.purchase_requisitions",
                  [{"account": "1000", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
                  when="no_such_column = 'approved'"),
    )
    with pytest.raises(ConfigError) as excinfo:
        install(conn, config)
    assert 'rule "requisition"' in str(excinfo.value)
    assert "when" in str(excinfo.value)
    assert "no_such_column" in str(excinfo.value)

    assert posting_functions(conn) == set()
    assert shop_triggers(conn) == []
    assert count(conn, "rule") == 0
    assert accounts(conn) == {("1000", "Old cash name", "asset")}


def test_install_failing_while_executing_rolls_back_the_rules_before(conn, tmp_path):
    # A foreign function with the posting function's name: CREATE OR REPLACE fails on its
    # return type only when the second rule's statements run, after the first rule's.
    conn.execute("CREATE FUNCTION ledger.post_second() RETURNS integer LANGUAGE sql AS 'SELECT 1'")
    config = write_config(tmp_path, sale_rule("first"), sale_rule("second"))
    with pytest.raises(LedgerError):
        install(conn, config)
    assert posting_functions(conn) == {"post_second"}
    assert shop_triggers(conn) == []
    assert count(conn, "rule") == 0
    assert accounts(conn) == set()


def test_dry_run_changes_nothing(conn, shop_config):
    result = install(conn, shop_config, dry_run=True)
    assert result.dry_run
    assert set(result.installed) == SHOP_RULES
    assert posting_functions(conn) == set()
    assert shop_triggers(conn) == []
    assert count(conn, "rule") == 0
    assert count(conn, "account") == 0
    insert_sale(conn, 1, 100)
    assert count(conn, "entry") == 0


def test_dry_run_of_an_update_keeps_the_installed_version(shop, tmp_path):
    before = ledger_functions(shop), registry(shop)
    changed = tmp_path / "ledger.toml"
    changed.write_text(SHOP_TOML.read_text().replace("'Sale ' || id", "'Changed ' || id"))
    result = install(shop, load_config(changed), dry_run=True)
    assert result.updated == ["sale"]
    assert (ledger_functions(shop), registry(shop)) == before


# -- config errors, refused at install with rule and field ------------------------------


def test_invalid_toml_is_refused(tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text('[rules.sale]\nsource = "public.sales\n')
    with pytest.raises(ConfigError) as excinfo:
        load_config(path)
    assert "invalid TOML" in str(excinfo.value)
    assert str(path) in str(excinfo.value)


BAD_CONFIGS = {
    "unknown account": (
        sale_rule(lines=[{"account": "1100", "debit": "total"}, {"account": "9999", "credit": "total"}]),
        ['rule "sale"', "lines[2]", "9999"],
    ),
    "unknown column in when": (sale_rule(when="stat = 'completed'"), ['rule "sale"', "when", "stat"]),
    "unknown column in memo": (sale_rule(memo="'Sale ' || sale_no"), ['rule "sale"', "memo", "sale_no"]),
    "unknown column in an amount": (
        sale_rule(lines=[{"account": "1100", "debit": "grand_total"}, {"account": "4000", "credit": "total"}]),
        ['rule "sale"', "lines[1]", "grand_total"],
    ),
    "missing source table": (
        rule_toml("sale", "public.no_such_table", [{"account": "1100", "debit": "1"}, {"account": "4000", "credit": "1"}]),
        ['rule "sale"', "source", "no_such_table"],
    ),
    "when not boolean": (sale_rule(when="total"), ['rule "sale"', "when", "boolean"]),
    "amount not numeric": (
        sale_rule(lines=[{"account": "1100", "debit": "customer"}, {"account": "4000", "credit": "total"}]),
        ['rule "sale"', "lines[1]", "numeric"],
    ),
    "rule without lines": ('[rules.sale]\nsource = "public.sales"\nlines = []\n', ['rule "sale"', "lines"]),
    "non-unique key": (sale_rule(key=["customer"]), ['rule "sale"', "key", "customer"]),
    "a column named with the body's quote": (
        rule_toml("odd", "public.odd", [{"account": "1100", "debit": "1"}, {"account": "4000", "credit": "1"}]),
        ['rule "odd"', "field source", "x$ledgeradmin$y", "contains $ledgeradmin$"]),
    "age of a date at today": (sale_rule(when="age(sold_at) < interval '30 days'"),
                               ['rule "sale"', "when", "age() with one argument", "changes with time"]),
    "'today' as a date": (sale_rule(when="sold_at >= 'today'::date - 30"), ['rule "sale"', "when", "'today'"]),
    "'now' as a timestamp": (sale_rule(date="least(sold_at, ' NOW ')"), ['rule "sale"', "date", "' NOW '"]),
}


@pytest.mark.parametrize("case", BAD_CONFIGS, ids=list(BAD_CONFIGS))
def test_config_error_is_refused_with_rule_and_field(conn, tmp_path, case):
    conn.execute('CREATE TABLE public.odd (id int PRIMARY KEY, "x$ledgeradmin$y" int)')
    text, fragments = BAD_CONFIGS[case]
    with pytest.raises(ConfigError) as excinfo:
        install(conn, write_config(tmp_path, text))
    message = str(excinfo.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    assert posting_functions(conn) == set()
    assert count(conn, "rule") == 0


# -- re-install, uninstall, accounts ---------------------------------------------------


def test_reinstall_after_a_rule_change_replaces_the_function_in_place(shop, shop_config, tmp_path):
    insert_sale(shop, 1, 110, 10)
    assert live(shop, "sale")["1"]["memo"] == "Sale 1 to ann"
    oid = ledger_functions(shop)["post_sale"][0]

    text = SHOP_TOML.read_text()
    changed_text = (text.replace("memo = \"'Sale ' || id || ' to ' || customer\"", "memo = \"'Invoice ' || id\"")
                    .replace('{ account = "2200", credit = "tax" }', '{ account = "2200", credit = "tax * 1" }'))
    assert changed_text.count("'Invoice ' || id") == 1 and "tax * 1" in changed_text
    changed_path = tmp_path / "ledger.toml"
    changed_path.write_text(changed_text)
    changed = load_config(changed_path)

    assert rule_states(shop, changed) == {"sale": "OUTDATED", "requisition": "ok", "payment": "ok",
                                          "manufacturing": "ok"}
    result = install(shop, changed)
    assert result.updated == ["sale"]
    assert sorted(result.unchanged) == ["manufacturing", "payment", "requisition"]
    assert ledger_functions(shop)["post_sale"][0] == oid
    assert "'Invoice ' || id" in ledger_functions(shop)["post_sale"][1]
    assert rule_states(shop, changed) == dict.fromkeys(SHOP_RULES, "ok")
    assert rule_states(shop, shop_config)["sale"] == "OUTDATED"
    assert len([t for t in shop_triggers(shop) if t[1].startswith("ledgeradmin_sale_")]) == 4

    insert_sale(shop, 2, 55, 5, method="cash")
    entry = live(shop, "sale")["2"]
    assert entry["memo"] == "Invoice 2"
    assert entry["lines"] == lines(("1000", 55, 0), ("4000", 0, 50), ("2200", 0, 5))
    assert live(shop, "sale")["1"]["memo"] == "Sale 1 to ann"  # history is not rewritten by install


def test_uninstall_keeps_every_journal_row(shop, shop_config):
    insert_sale(shop, 1, 110, 10)
    insert_sale(shop, 2, 50)
    shop.execute("UPDATE public.sales SET total = 120 WHERE id = 1")  # reversal + repost
    shop.execute("DELETE FROM public.sales WHERE id = 2")  # reversal
    journal = entries(shop)
    assert len(journal) == 5
    assert_reversals_consistent(shop)

    assert sorted(uninstall(shop, ["sale"])) == ["sale"]
    assert rule_states(shop, shop_config) == {"sale": "MISSING", "requisition": "ok", "payment": "ok",
                                              "manufacturing": "ok"}
    assert sorted(uninstall(shop)) == ["manufacturing", "payment", "requisition"]
    assert entries(shop) == journal
    assert posting_functions(shop) == set()
    assert shop_triggers(shop) == []
    assert count(shop, "rule") == 0
    assert rule_states(shop, shop_config) == dict.fromkeys(SHOP_RULES, "MISSING")

    insert_sale(shop, 3, 10)
    shop.execute("DELETE FROM public.sales WHERE id = 1")
    assert entries(shop) == journal


def test_uninstall_of_a_rule_not_installed_is_refused(shop):
    with pytest.raises(LedgerError):
        uninstall(shop, ["nosuchrule"])
    assert posting_functions(shop) == {f"post_{r}" for r in SHOP_RULES}


def test_accounts_are_synced(conn, shop_config, tmp_path):
    declared = tomllib.loads(SHOP_TOML.read_text())["accounts"]
    install(conn, shop_config)
    assert accounts(conn) == {(code, a["name"], a["type"]) for code, a in declared.items()}
    assert len(declared) == 10

    # A renamed account is updated; an account no longer declared stays (lines may use it).
    text = SHOP_TOML.read_text().replace('name = "Cash"', 'name = "Petty Cash"')
    text = text.replace('[accounts.1050]\nname = "Card Clearing"\ntype = "asset"\n', "")
    text = text.replace("WHEN 'card' THEN '1050' ", "")
    assert "1050" not in text
    path = tmp_path / "ledger.toml"
    path.write_text(text)
    install(conn, load_config(path))
    got = accounts(conn)
    assert ("1000", "Petty Cash", "asset") in got
    assert ("1000", "Cash", "asset") not in got
    assert ("1050", "Card Clearing", "asset") in got
    assert len(got) == 10


# -- ledgeradmin sql -------------------------------------------------------------------


def installed_state(conn) -> dict:
    """What install leaves behind, comparable across databases (no oids)."""
    return {
        "functions": {name: v[1:] for name, v in ledger_functions(conn).items()},
        "triggers": shop_triggers(conn),
        "rules": sorted(conn.execute("SELECT name, checksum, source, on_error, source_table::text FROM ledger.rule")),
        "accounts": accounts(conn),
    }


def run_sql_command(*args: str) -> str:
    """`ledgeradmin sql ARGS`; its standard output."""
    result = CliRunner().invoke(main, ["sql", *args], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return result.stdout


def test_sql_output_applied_with_psql_equals_install(dsn, other_dsn, conn, tmp_path):
    script = tmp_path / "install.sql"
    script.write_text(run_sql_command("--dsn", dsn, "--config", str(SHOP_TOML)))
    assert installed_state(conn)["triggers"] == []  # printing the SQL changed nothing
    # it takes turns with install, uninstall and period (their advisory lock) first
    first = next(line for line in script.read_text().splitlines() if line and not line.startswith("--"))
    assert first == "SELECT pg_catalog.pg_advisory_xact_lock(5504916514776695876);"
    assert posting_functions(conn) == set()

    psql(dsn, script)
    with psycopg.connect(other_dsn, autocommit=True) as other:
        result = install(other, load_config(SHOP_TOML))
        assert set(result.installed) == SHOP_RULES
        expected = installed_state(other)
    assert installed_state(conn) == expected
    assert len(expected["triggers"]) == 16

    insert_sale(conn, 1, 110, 10, method="card")
    entry = live(conn, "sale")["1"]
    assert entry["memo"] == "Sale 1 to ann"
    assert entry["lines"] == lines(("1050", 110, 0), ("4000", 0, 100), ("2200", 0, 10))
    assert rule_states(conn, load_config(SHOP_TOML)) == dict.fromkeys(SHOP_RULES, "ok")
    # install agrees that nothing is left to do
    assert set(install(conn, load_config(SHOP_TOML)).unchanged) == SHOP_RULES

    psql(dsn, script)  # re-applying is harmless
    assert installed_state(conn) == expected


def test_sql_out_writes_one_file_per_rule_plus_a_shared_file(dsn, conn, tmp_path):
    out = tmp_path / "out"
    printed = run_sql_command("--dsn", dsn, "--config", str(SHOP_TOML), "--out", str(out))
    files = sorted(out.iterdir())
    assert len(files) == len(SHOP_RULES) + 1
    assert sorted(printed.split()) == sorted(str(f) for f in files)
    for rule in SHOP_RULES:
        assert len([f for f in files if rule in f.name]) == 1, rule
    assert len([f for f in files if "shared" in f.name]) == 1
    assert "shared" in files[0].name  # the shared part sorts first

    psql(dsn, *files)
    assert rule_states(conn, load_config(SHOP_TOML)) == dict.fromkeys(SHOP_RULES, "ok")
    assert len(shop_triggers(conn)) == 16
    insert_sale(conn, 7, 30, method="cash")
    assert live(conn, "sale")["7"]["lines"] == lines(("1000", 30, 0), ("4000", 0, 30))


def test_sql_out_with_one_rule(dsn, conn, tmp_path):
    out = tmp_path / "out"
    run_sql_command("--dsn", dsn, "--config", str(SHOP_TOML), "--rule", "payment", "--out", str(out))
    files = sorted(out.iterdir())
    assert len(files) == 2 and "payment" in files[1].name
    psql(dsn, *files)
    assert posting_functions(conn) == {"post_payment"}


# -- unusual source tables -------------------------------------------------------------


def test_mixed_case_table_in_a_schema_off_the_search_path(conn, tmp_path):
    conn.execute(
        """CREATE SCHEMA "Shop";
           CREATE TABLE "Shop"."Sales" ("Id" bigint PRIMARY KEY, "Total" numeric NOT NULL, "Tax" numeric NOT NULL,
                                        "Status" text NOT NULL, "Sold At" timestamptz NOT NULL, "Pay Via" text)"""
    )
    config = write_config(tmp_path, rule_toml(
        "mixed", '"Shop"."Sales"',
        [{"account_sql": "CASE \"Pay Via\" WHEN 'cash' THEN '1000' ELSE '1100' END", "debit": '"Total"'},
         {"account": "4000", "credit": '"Total" - "Tax"'},
         {"account": "2200", "credit": '"Tax"'}],
        when="\"Status\" = 'done'", date='"Sold At"', memo="'Mixed ' || \"Id\"",
    ))
    install(conn, config)
    conn.execute("""INSERT INTO "Shop"."Sales" VALUES (1, 110, 10, 'done', '2024-02-03 04:05+00', 'cash'),
                                                      (2, 20, 0, 'open', '2024-02-03 04:05+00', NULL)""")
    assert list(live(conn)) == ["1"]
    entry = live(conn)["1"]
    assert entry["rule"] == "mixed" and entry["memo"] == "Mixed 1"
    assert entry["date"] == datetime(2024, 2, 3, 4, 5, tzinfo=UTC)
    assert entry["lines"] == lines(("1000", 110, 0), ("4000", 0, 100), ("2200", 0, 10))

    conn.execute("""UPDATE "Shop"."Sales" SET "Status" = 'done' WHERE "Id" = 2""")
    conn.execute("""UPDATE "Shop"."Sales" SET "Total" = 120 WHERE "Id" = 1""")
    assert live(conn)["1"]["lines"] == lines(("1000", 120, 0), ("4000", 0, 110), ("2200", 0, 10))
    assert live(conn)["2"]["lines"] == lines(("1100", 20, 0), ("4000", 0, 20))
    conn.execute('DELETE FROM "Shop"."Sales"')
    assert live(conn) == {}
    assert all(v == 0 for v in balances(conn).values())
    assert rule_states(conn, config) == {"mixed": "ok"}


def orders_by_year(conn, tmp_path: Path, *years: int, **fields):
    """public.orders, partitioned by year (a partition for each of ``years``), and the
    config of rule "orders" on it, keyed by (id, placed_on) and dated placed_on."""
    conn.execute("""CREATE TABLE public.orders (id bigint NOT NULL, placed_on date NOT NULL,
                                                amount numeric(12, 2) NOT NULL, PRIMARY KEY (id, placed_on))
                    PARTITION BY RANGE (placed_on)""")
    for year in years:
        conn.execute(f"CREATE TABLE public.orders_{year} PARTITION OF public.orders"
                     f" FOR VALUES FROM ('{year}-01-01') TO ('{year + 1}-01-01')")
    return write_config(tmp_path, rule_toml(
        "orders", "public.orders", [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
        key=["id", "placed_on"], date="placed_on", **fields))


def test_partitioned_source_table(conn, tmp_path):
    config = orders_by_year(conn, tmp_path, 2024, 2025, memo="'Order ' || id")
    install(conn, config)
    conn.execute("INSERT INTO public.orders VALUES (1, '2024-03-01', 50), (2, '2025-06-30', 7.5)")
    assert set(live(conn)) == {"(1,2024-03-01)", "(2,2025-06-30)"}
    first = live(conn)["(1,2024-03-01)"]
    assert first["date"] == datetime(2024, 3, 1, tzinfo=UTC)
    assert first["lines"] == lines(("1100", 50, 0), ("4000", 0, 50))

    # Moves the row from orders_2024 to orders_2025: its key changes.
    conn.execute("UPDATE public.orders SET placed_on = '2025-02-01' WHERE id = 1")
    assert conn.execute("SELECT tableoid::regclass::text FROM public.orders WHERE id = 1").fetchone()[0] == \
        "orders_2025"
    assert set(live(conn)) == {"(1,2025-02-01)", "(2,2025-06-30)"}
    moved = live(conn)["(1,2025-02-01)"]
    assert moved["date"] == datetime(2025, 2, 1, tzinfo=UTC)
    assert moved["lines"] == lines(("1100", 50, 0), ("4000", 0, 50))
    reversal = [e for e in entries(conn) if e["reverses"] == first["id"]]
    assert len(reversal) == 1 and reversal[0]["lines"] == lines(("1100", 0, 50), ("4000", 50, 0))

    conn.execute("DELETE FROM public.orders WHERE id = 2")
    assert set(live(conn)) == {"(1,2025-02-01)"}
    conn.execute("DELETE FROM public.orders")
    assert live(conn) == {}
    assert balances(conn) == {"1100": 0, "4000": 0}
    assert len(entries(conn)) == 6  # 3 postings, 3 reversals
    assert_reversals_consistent(conn)
    assert rule_states(conn, config) == {"orders": "ok"}


def test_partition_triggers_disabled_detached_or_replica_only_show_in_status(conn, tmp_path):
    """status checks every partition's triggers: one disabled, or enabled for replicas only
    (which the application's writes never fire), is DISABLED; a partition since detached
    keeps the rule's triggers until install removes them (OUTDATED until then)."""
    config = orders_by_year(conn, tmp_path, 2024, 2025)
    install(conn, config)
    conn.execute("ALTER TABLE public.orders_2025 DISABLE TRIGGER ledgeradmin_orders_insert")
    [st] = status(conn, config)
    assert (st.state, st.detail) == ("DISABLED", "disabled: ledgeradmin_orders_insert on public.orders_2025")
    conn.execute("ALTER TABLE public.orders_2025 ENABLE REPLICA TRIGGER ledgeradmin_orders_insert")
    [st] = status(conn, config)
    assert st.detail == "disabled: ledgeradmin_orders_insert on public.orders_2025 (replica only)"
    conn.execute("ALTER TABLE public.orders_2025 ENABLE TRIGGER ledgeradmin_orders_insert")
    conn.execute("ALTER TABLE public.orders ENABLE REPLICA TRIGGER ledgeradmin_orders_update")
    assert status(conn, config)[0].detail == "disabled: ledgeradmin_orders_update (replica only)"
    install(conn, config)  # repairs
    assert rule_states(conn, config) == {"orders": "ok"}

    conn.execute("CREATE TABLE public.orders_2026 PARTITION OF public.orders FOR VALUES FROM ('2026-01-01') TO ('2027-01-01')")
    [st] = status(conn, config)
    assert (st.state, st.detail) == ("OUTDATED", "no triggers yet on partition public.orders_2026: run "
                                                 "`ledgeradmin install`")
    install(conn, config)
    conn.execute("DROP TRIGGER ledgeradmin_orders_delete ON public.orders_2026")  # one of them gone: missing
    [st] = status(conn, config)
    assert (st.state, st.detail) == ("MISSING", "trigger(s) missing: delete on public.orders_2026")
    install(conn, config)
    conn.execute("ALTER TABLE public.orders DETACH PARTITION public.orders_2024")
    [st] = status(conn, config)
    assert st.state == "OUTDATED" and "also on public.orders_2024" in st.detail
    install(conn, config)
    assert rule_states(conn, config) == {"orders": "ok"}
    assert [t for t in shop_triggers(conn) if t[0] == "orders_2024"] == []
    conn.execute("INSERT INTO public.orders_2024 VALUES (1, '2024-03-01', 50)")  # no longer the rule's
    conn.execute("TRUNCATE public.orders_2024")
    assert live(conn) == {}


def test_functions_of_time_with_a_fixed_answer_are_accepted(conn, tmp_path):
    config = write_config(tmp_path, sale_rule(when="age(sold_at, sold_at) = interval '0' AND status <> 'now!'",
                                              memo="'Sale ' || id || ' noted ' || 'today'"))
    install(conn, config)
    assert rule_states(conn, config) == {"sale": "ok"}


def test_multi_column_key(conn, tmp_path):
    conn.execute(
        """CREATE TABLE public.shipments (order_no integer NOT NULL, line_code text NOT NULL, amount numeric NOT NULL,
                                          PRIMARY KEY (order_no, line_code))"""
    )
    config = write_config(tmp_path, rule_toml(
        "shipment", "public.shipments", [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
        key=["order_no", "line_code"], date="'2024-01-01'::date",
    ))
    install(conn, config)
    conn.execute("INSERT INTO public.shipments VALUES (1, 'x', 5), (1, 'y', 6), (2, 'x', 7)")
    assert set(live(conn)) == {"(1,x)", "(1,y)", "(2,x)"}
    conn.execute("UPDATE public.shipments SET amount = 8 WHERE order_no = 1 AND line_code = 'y'")
    assert live(conn)["(1,y)"]["lines"] == lines(("1100", 8, 0), ("4000", 0, 8))
    assert live(conn)["(1,x)"]["lines"] == lines(("1100", 5, 0), ("4000", 0, 5))
    conn.execute("DELETE FROM public.shipments WHERE order_no = 1")
    assert set(live(conn)) == {"(2,x)"}


# -- a non-superuser owner -------------------------------------------------------------


def hand_shop_to(conn, dsn: str, owner: str) -> str:
    """Drop the ledger schema, let ``owner`` create schemas in the database and give it the
    shop tables; return its conninfo (for it to migrate and install)."""
    drop_ledger_schema(conn)
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname(dsn)),
                                                                      sql.Identifier(owner)))
    for table in SHOP_TABLES:
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier("public", table),
                                                                  sql.Identifier(owner)))
    return make_conninfo(dsn, user=owner)


def test_non_superuser_owner_can_migrate_and_install(dsn, conn, make_role):
    owner = make_role("LOGIN", "NOSUPERUSER", "NOCREATEROLE", "NOCREATEDB")
    owner_dsn = hand_shop_to(conn, dsn, owner)

    assert migrate(owner_dsn) == MIGRATIONS
    assert migrate(owner_dsn) == []
    with psycopg.connect(owner_dsn, autocommit=True) as as_owner:
        assert as_owner.execute("SELECT rolsuper OR rolcreaterole FROM pg_roles WHERE rolname = current_user"
                                ).fetchone() == (False,)
        result = install(as_owner, load_config(SHOP_TOML))
        assert set(result.installed) == SHOP_RULES
        assert rule_states(as_owner, load_config(SHOP_TOML)) == dict.fromkeys(SHOP_RULES, "ok")
        insert_sale(as_owner, 1, 110, 10)
        as_owner.execute("INSERT INTO public.payment_vouchers (payee, amount, status, paid_at) "
                         "VALUES ('acme', 40, 'paid', '2024-01-02')")
        entry = live(as_owner, "sale")["1"]
        assert entry["lines"] == lines(("1100", 110, 0), ("4000", 0, 100), ("2200", 0, 10))
        assert live(as_owner, "payment")["1"]["lines"] == lines(("2100", 40, 0), ("1010", 0, 40))
    owners = conn.execute(
        "SELECT DISTINCT pg_get_userbyid(proowner)::text FROM pg_proc WHERE pronamespace = 'ledger'::regnamespace"
    ).fetchall()
    assert owners == [(owner,)]


def test_a_detached_partition_the_installer_does_not_own_keeps_the_triggers_with_a_warning(dsn, conn, make_role,
                                                                                           tmp_path):
    owner = make_role("LOGIN", "NOSUPERUSER", "NOCREATEROLE", "NOCREATEDB")
    owner_dsn = hand_shop_to(conn, dsn, owner)
    migrate(owner_dsn)
    config = orders_by_year(conn, tmp_path, 2024)
    for table in ("orders", "orders_2024"):
        conn.execute(sql.SQL("ALTER TABLE {} OWNER TO {}").format(sql.Identifier("public", table),
                                                                  sql.Identifier(owner)))
    with psycopg.connect(owner_dsn, autocommit=True) as as_owner:
        install(as_owner, config)
    conn.execute("ALTER TABLE public.orders DETACH PARTITION public.orders_2024")
    conn.execute("ALTER TABLE public.orders_2024 OWNER TO CURRENT_USER")  # the installer no longer owns it
    with psycopg.connect(owner_dsn, autocommit=True) as as_owner:
        warnings = []
        as_owner.add_notice_handler(lambda d: warnings.append(d.message_primary))
        install(as_owner, config)
        assert sorted(warnings) == [f"trigger ledgeradmin_orders_{event} stays on public.orders_2024, which is no "
                                    "longer part of the rule's table: only its owner may drop it"
                                    for event in ("delete", "insert", "truncate", "update")]
        [st] = status(as_owner, config)
        assert st.state == "OUTDATED" and "as the owner of that table" in st.detail
    install(conn, config)  # its owner drops them
    assert rule_states(conn, config) == {"orders": "ok"}


def test_migration_0003_recomputes_fingerprints_from_the_journal(conn, tmp_path):
    """Upgrading from md5 text fingerprints: migration 0003 recomputes each posting's
    fingerprint from its entry (lines, currency, and the date unless the rule has none),
    exactly as the rules compute them from the rows: verify then finds everything in sync."""
    undated = rule_toml("undated", "public.sales", [{"account": "1000", "debit": "tax"},
                                                     {"account": "2200", "credit": "tax"}],
                        when="status = 'completed'")
    config = write_config(tmp_path, sale_rule(), undated)
    install(conn, config)
    conn.execute("""INSERT INTO public.sales (customer, payment_method, total, tax, sold_at)
                    SELECT 'c' || i, 'cash', 10 * i + 0.5, i, now() - i * interval '1 day'
                    FROM generate_series(1, 20) AS i""")
    conn.execute("UPDATE public.sales SET total = total + 1, tax = tax + 1 WHERE customer IN ('c3', 'c4')")
    before = dict(conn.execute("SELECT entry_id, fingerprint FROM ledger.posting").fetchall())
    assert len(before) == 40 and len(set(before.values())) >= 38  # undated: equal taxes, equal fingerprints
    migration = REPO / "db" / "migrations"
    # the state before 0003: text fingerprints, and posting functions of that version (the
    # undated rule's hashed no date: its md5 began with concat_ws('|', NULL, ...)
    conn.execute((migration / "0003.posting-fingerprint-bigint.rollback.sql").read_text())
    conn.execute("UPDATE ledger.posting SET fingerprint = md5(fingerprint)")
    conn.execute("""CREATE OR REPLACE FUNCTION ledger.post_undated() RETURNS trigger LANGUAGE plpgsql
                    AS $f$ BEGIN -- md5(concat_ws('|', NULL, d.currency, ...))
                    RETURN NULL; END $f$""")
    conn.execute((migration / "0003.posting-fingerprint-bigint.sql").read_text())
    conn.execute((migration / "0006.posting-fingerprint-sign-weight.sql").read_text())
    after = dict(conn.execute("SELECT entry_id, fingerprint FROM ledger.posting").fetchall())
    assert after == before
    install(conn, config)
    result = verify(conn, config)
    assert result.ok, result.as_dict()
    assert [(r.rule, r.eligible, r.posted, r.drifted) for r in result.rules] == [("sale", 20, 20, 0),
                                                                               ("undated", 20, 20, 0)]


def test_migration_0006_recomputes_fingerprints_with_sign_and_weight(conn, tmp_path):
    """Migration 0006 turns each fingerprint that is the old hash of its entry (dated or
    not) into the new one, leaves any other as it was, and its rollback turns them back:
    the posting functions of each version then find their rows in sync."""
    undated = rule_toml("undated", "public.sales", [{"account": "1000", "debit": "tax"},
                                                     {"account": "2200", "credit": "tax"}],
                        when="status = 'completed'")
    config = write_config(tmp_path, sale_rule(), undated)
    install(conn, config)
    conn.execute("""INSERT INTO public.sales (customer, payment_method, total, tax, sold_at)
                    SELECT 'c' || i, 'cash', 10 * i - 50.5, i - 5, now() - i * interval '1 day'
                    FROM generate_series(1, 20) AS i""")
    new = dict(conn.execute("SELECT entry_id, fingerprint FROM ledger.posting").fetchall())
    assert len(new) == 39  # tax 0: the undated rule posts nothing for that sale
    migration = REPO / "db" / "migrations"
    conn.execute((migration / "0006.posting-fingerprint-sign-weight.rollback.sql").read_text())
    old = dict(conn.execute("SELECT entry_id, fingerprint FROM ledger.posting").fetchall())
    assert old.keys() == new.keys() and all(old[k] != new[k] for k in new)
    # the old hash, as the posting functions before 0006 computed it, of sale 3 (dated)
    sale3 = conn.execute(
        """SELECT e.id, hashtextextended(min(l.currency), hashfloat8extended(date_part('epoch', e.effective_at), 0))
                  # sum((hash_numeric_extended(l.debit - l.credit, hashtext(l.account)) >> 9)
                        - (hash_numeric_extended(0, hashtext(l.account)) >> 9))::bigint
           FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id
           WHERE e.rule = 'sale' AND e.source_key = (SELECT id::text FROM public.sales WHERE customer = 'c3')
           GROUP BY e.id""").fetchone()
    assert old[sale3[0]] == sale3[1]
    conn.execute("UPDATE ledger.posting SET fingerprint = 42 WHERE entry_id = %s", (sale3[0],))  # neither form
    conn.execute((migration / "0006.posting-fingerprint-sign-weight.sql").read_text())
    after = dict(conn.execute("SELECT entry_id, fingerprint FROM ledger.posting").fetchall())
    assert after == {**new, sale3[0]: 42}
    result = verify(conn, config, detailed=True)
    assert [(r.rule, r.posted, r.drifted, r.keys) for r in result.rules] == [
        ("sale", 20, 1, {"drifted": [str(conn.execute("SELECT id FROM public.sales WHERE customer = 'c3'")
                                         .fetchone()[0])]}),
        ("undated", 19, 0, {})]


def test_a_renamed_source_table_is_found_by_status_and_posts_again_after_install(dsn, conn, tmp_path):
    """The posting function names its table: after `ALTER TABLE … RENAME`, writes from new
    sessions fail (nothing posts wrongly, nothing is lost) until the config names the table
    and install runs; status says where the rule's triggers went."""
    config = write_config(tmp_path, sale_rule())
    install(conn, config)
    insert_sale(conn, 1, 110, 10)
    conn.execute("ALTER TABLE public.sales RENAME TO orders")
    [state] = status(conn, config)
    assert state.state == "NO SOURCE"
    assert "its triggers are on public.orders (renamed or moved?)" in state.detail, state.detail
    with psycopg.connect(dsn, autocommit=True) as writer:  # a new session compiles the function anew
        with pytest.raises(psycopg.errors.UndefinedTable, match='relation "public.sales" does not exist'):
            writer.execute("INSERT INTO public.orders (id, customer, total, tax) VALUES (2, 'bo', 50, 0)")
    moved = write_config(tmp_path, sale_rule().replace('"public.sales"', '"public.orders"'), name="moved.toml")
    result = install(conn, moved)
    assert result.updated == ["sale"], result
    with psycopg.connect(dsn, autocommit=True) as writer:
        writer.execute("INSERT INTO public.orders (id, customer, total, tax) VALUES (2, 'bo', 50, 0)")
    assert verify(conn, moved).ok
    assert rule_states(conn, moved) == {"sale": "ok"}

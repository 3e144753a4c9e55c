"""Bad input and attacks: hostile configs, hostile data, hostile sessions.

Config: SQL injection through every field of ledger.toml, quotes and reserved words in
identifiers, expressions reaching other tables or calling volatile functions, huge and
negative literals, unknown currencies, duplicate rules, two rules on one table. Each
either works — and then posts exactly what the independent check (tests/invariants.py)
computes — or is refused at install with a message naming the rule and field; none
executes anything: a canary table stays, and the catalog is unchanged.

Data: infinities (numeric and float), overflow at the edge of numeric(20, 4), rounding
to the ledger's 4 decimals, far-past, far-future and infinite dates, and the client's
TimeZone. Under `block` a clear error and the write rolled back; under `defer` the write
kept and the failure recorded; never a silently wrong entry. (NULL, NaN, unknown accounts,
bad currencies and 1e17 under `block` are in test_posting.py.)

Attacks: every SECURITY DEFINER function ledgeradmin installs, run by an application role
that plants shadow objects everywhere it can; what `ledger_reader` can read; a password
given in a DSN, searched for in every output, log record and the server's own log.
"""

from __future__ import annotations

import datetime as dt
import logging
import re
import uuid
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import errors, sql
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from invariants import SHOP, Spec, assert_holds, live_entries, problems
from ledgeradmin.backfill import backfill
from ledgeradmin.cli import main
from ledgeradmin.config import load_config, parse_config
from ledgeradmin.errors import ConfigError, LedgerError
from ledgeradmin.install import install, script
from ledgeradmin.localpg import LocalPostgres
from ledgeradmin.verify import verify

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"
SHOP_SCHEMA = REPO / "examples" / "shop" / "schema.sql"
ACCOUNTS = {
    "1100": {"name": "Accounts Receivable", "type": "asset"},
    "4000": {"name": "Sales Revenue", "type": "income"},
}
CANARY = "public.canary"


# --------------------------------------------------------------------------- helpers


def config_of(rules: dict, accounts: dict = ACCOUNTS, **ledger) -> object:
    data = {"accounts": accounts, "rules": rules}
    if ledger:
        data["ledger"] = ledger
    return parse_config(data)


def simple_rule(**fields) -> dict:
    """A rule on public.src (id, amount, status, currency, note) debiting 1100, crediting 4000."""
    rule = {"source": "public.src", "when": "status = 'ok'", "memo": "'src ' || id",
            "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]}
    rule.update(fields)
    return rule


def simple_spec(rule: str = "r", **fields) -> Spec:
    spec = dict(rule=rule, table="public.src", key="s.id::text", eligible="s.status = 'ok'",
                memo="'src ' || s.id", lines=(("'1100'", "s.amount"), ("'4000'", "-s.amount")))
    spec.update(fields)
    return Spec(**spec)


def catalog_state(conn: psycopg.Connection) -> dict:
    """Everything an injected statement could create, drop or change."""
    return {
        "relations": conn.execute(
            """SELECT n.nspname, c.relname, c.relkind FROM pg_class AS c
               JOIN pg_namespace AS n ON n.oid = c.relnamespace
               WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
                 AND n.nspname NOT LIKE 'pg_temp%' ORDER BY 1, 2"""
        ).fetchall(),
        "functions": conn.execute(
            """SELECT p.oid::regprocedure::text, md5(p.prosrc) FROM pg_proc AS p
               WHERE p.pronamespace NOT IN ('pg_catalog'::regnamespace, 'information_schema'::regnamespace)
               ORDER BY 1"""
        ).fetchall(),
        "triggers": conn.execute(
            "SELECT tgrelid::regclass::text, tgname, tgenabled FROM pg_trigger WHERE NOT tgisinternal ORDER BY 1, 2"
        ).fetchall(),
        "schemas": conn.execute("SELECT nspname FROM pg_namespace ORDER BY 1").fetchall(),
        "roles": conn.execute("SELECT rolname, rolsuper FROM pg_roles ORDER BY 1").fetchall(),
        "canary": conn.execute(f"SELECT count(*) FROM {CANARY}").fetchone()[0],
        "ledger": conn.execute(
            "SELECT (SELECT count(*) FROM ledger.rule), (SELECT count(*) FROM ledger.account),"
            " (SELECT count(*) FROM ledger.entry), (SELECT count(*) FROM ledger.failure)"
        ).fetchone(),
    }


@pytest.fixture
def src(conn: psycopg.Connection) -> psycopg.Connection:
    """`conn` with a canary table (one row) and the source table public.src."""
    conn.execute(f"CREATE TABLE {CANARY} (x int); INSERT INTO {CANARY} VALUES (1)")
    conn.execute("""CREATE TABLE public.src (id int PRIMARY KEY, amount numeric(12, 2) NOT NULL,
                                             status text NOT NULL DEFAULT 'ok', currency text NOT NULL DEFAULT 'USD',
                                             note text)""")
    return conn


def assert_refused(conn: psycopg.Connection, rules: dict, fragments: list[str], accounts: dict = ACCOUNTS) -> str:
    """The config is refused — at parse, by `sql` and by install — with every fragment in
    the message; nothing in the database changed."""
    before = catalog_state(conn)
    messages = []
    try:
        config = config_of(rules, accounts)
    except ConfigError as exc:
        messages.append(str(exc))
    else:
        with pytest.raises(LedgerError) as info:
            with conn.transaction(force_rollback=True):
                script(conn, config)
        messages.append(str(info.value))
        with pytest.raises(LedgerError) as info:
            install(conn, config)
        messages.append(str(info.value))
    for message in messages:
        for fragment in fragments:
            assert fragment in message, f"{fragment!r} not in {message!r}"
    assert catalog_state(conn) == before
    return messages[-1]


def install_rules(conn: psycopg.Connection, rules: dict, accounts: dict = ACCOUNTS):
    """Install the rules (on top of the accounts); returns their config."""
    config = config_of(rules, accounts)
    install(conn, config)
    return config


def assert_in_sync(conn: psycopg.Connection, config, specs: list[Spec]) -> None:
    """verify is ok, backfill changes nothing and the independent check holds."""
    report = verify(conn, config)
    assert report.ok, report.as_dict()
    result = backfill(conn, config)
    assert result.ok and sum(r.repaired for r in result.rules) == 0, result.as_dict()
    assert_holds(conn, specs)


# --------------------------------------------------------------------------- config: injection

DROP = "DROP TABLE public.canary"

#: (case, rule fields, fragments of the refusal)
INJECTIONS = {
    "when closes the parenthesis": ({"when": f"true); {DROP}; --"}, ['rule "r"', "field when"]),
    "when over several lines": ({"when": f"true\n) AS value FROM public.src AS r LIMIT 0;\n{DROP};\n--"},
                                ['rule "r"', "field when"]),
    "when ends in a comment": ({"when": "status = 'ok' --"}, ['rule "r"', "field when"]),
    "when opens a comment": ({"when": "status = 'ok' /*"}, ['rule "r"', "field when"]),
    "memo": ({"memo": f"'x'; {DROP}"}, ['rule "r"', "field memo"]),
    "memo closes the quote": ({"memo": f"'x'''; {DROP}; --'"}, ['rule "r"', "field memo"]),
    "memo ends the function body": ({"memo": f"'x' $ledgeradmin$; {DROP}; $ledgeradmin$"},
                                    ['rule "r"', "field memo", "forbidden"]),
    "date": ({"date": f"now()); {DROP}; --"}, ['rule "r"', "field date"]),
    "currency": ({"currency": f"'USD'; {DROP}; --"}, ['rule "r"', "field currency"]),
    "amount": ({"lines": [{"account": "1100", "debit": f"amount); {DROP}; --"},
                          {"account": "4000", "credit": "amount"}]}, ['rule "r"', "lines[1].debit"]),
    "account_sql": ({"lines": [{"account_sql": f"'1100'; {DROP}", "debit": "amount"},
                               {"account": "4000", "credit": "amount"}]}, ['rule "r"', "lines[1].account_sql"]),
    "source": ({"source": f"public.src; {DROP}"}, ['rule "r"', "field source"]),
    "source as a quoted name": ({"source": f'public."src""; {DROP}; --"'}, ['rule "r"', "field source",
                                                                            "does not exist"]),
    "key": ({"key": [f"id); {DROP}; --"]}, ['rule "r"', "field key", "does not exist"]),
    "expression reading a table off the search path": (
        {"lines": [{"account": "1100", "debit": "(SELECT count(*) FROM canary)"},
                   {"account": "4000", "credit": "(SELECT count(*) FROM canary)"}]},
        ['rule "r"', "lines[1].debit", "canary"]),
    "a second statement after a balanced expression": ({"when": f"true) AS value; {DROP}; SELECT (true"},
                                                       ['rule "r"', "field when"]),
}


@pytest.mark.parametrize("case", INJECTIONS, ids=list(INJECTIONS))
def test_injection_through_a_rule_field_is_refused(src, case):
    fields, fragments = INJECTIONS[case]
    assert_refused(src, {"r": simple_rule(**fields)}, fragments)


@pytest.mark.parametrize("name, fragment", [
    ("r; drop table public.canary", 'rule "r; drop table public.canary"'),
    ("R", 'rule "R"'),
    ("r" * 41, "1-40 lowercase"),
])
def test_bad_rule_names_are_refused(src, name, fragment):
    assert_refused(src, {name: simple_rule()}, [fragment])


def test_injection_through_an_account_code_is_refused(src):
    code = f"1100'; {DROP}; --"
    accounts = {**ACCOUNTS, code: {"name": "x", "type": "asset"}}
    rule = simple_rule(lines=[{"account": code, "debit": "amount"}, {"account": "4000", "credit": "amount"}])
    assert_refused(src, {"r": rule}, [f"account {code}", "code must be"], accounts)


def test_expressions_with_semicolons_dollar_quotes_and_comments_inside_literals_work(src):
    """Inside string literals and dollar quotes, `;`, `--`, `/*`, line breaks and SQL text
    are just text: the memo posts exactly as written."""
    memo = ("'a;b'' -- not a comment /* nor this */; ' || $$; " + DROP + "; $$ || $x$;\n" + DROP + ";\n$x$"
            " || E'\\n;' || id")
    config = install_rules(src, {"r": simple_rule(memo=memo)})
    src.execute("INSERT INTO public.src (id, amount) VALUES (1, 10)")
    expected = ("a;b' -- not a comment /* nor this */; ; " + DROP + "; ;\n" + DROP + ";\n\n;1")
    assert live_entries(src, "r")["1"][1] == expected
    assert_in_sync(src, config, [simple_spec(memo=(
        "'a;b'' -- not a comment /* nor this */; ' || $$; " + DROP + "; $$ || $x$;\n" + DROP + ";\n$x$"
        " || E'\\n;' || s.id"))])
    assert src.execute(f"SELECT count(*) FROM {CANARY}").fetchone()[0] == 1


def test_a_multi_line_literal_posts_the_same_text_from_trigger_and_backfill(src):
    """A line break inside a string literal is part of the value: the trigger and backfill
    post the memo as written, and the same for the same row."""
    config = install_rules(src, {"r": simple_rule(memo="'first\nsecond'")})
    src.execute("INSERT INTO public.src (id, amount) VALUES (1, 10)")
    with src.transaction():
        src.execute("SET LOCAL session_replication_role = replica")
        src.execute("INSERT INTO public.src (id, amount) VALUES (2, 10)")
    backfill(src, config)
    memos = {key: entry[1] for key, entry in live_entries(src, "r").items()}
    assert memos == {"1": "first\nsecond", "2": "first\nsecond"}


def test_a_balanced_parenthesis_in_when_stays_one_boolean_expression(src):
    """`true) OR (true` plans as an expression, so it is installed; it is still only the
    rule's condition: every row posts, ineligible or not."""
    config = install_rules(src, {"r": simple_rule(when="status = 'no') OR (true")})
    src.execute("INSERT INTO public.src (id, amount, status) VALUES (1, 10, 'ok'), (2, 20, 'no'), (3, 30, 'x')")
    assert sorted(live_entries(src, "r")) == ["1", "2", "3"]
    assert_in_sync(src, config, [simple_spec(eligible="s.status = 'no' OR true")])


# --------------------------------------------------------------------------- config: identifiers


def test_reserved_words_and_quotes_in_identifiers_work(src):
    src.execute('CREATE SCHEMA "select"')
    src.execute('''CREATE TABLE "select"."order" ("select" int PRIMARY KEY, "from" numeric(12, 2) NOT NULL,
                                                  "where" text NOT NULL, "Mixed ""Quote""" text)''')
    rule = {"source": '"select"."order"', "key": ["select"], "when": '"where" = \'yes\'',
            "memo": '"Mixed ""Quote""" || \' \' || "select"',
            "lines": [{"account": "1100", "debit": '"from"'}, {"account": "4000", "credit": '"from"'}]}
    config = install_rules(src, {"order": rule})
    src.execute('''INSERT INTO "select"."order" VALUES (1, 5, 'yes', 'it''s'), (2, 6, 'no', 'b'), (3, 7, 'yes', '"')''')
    src.execute('''UPDATE "select"."order" SET "from" = 8 WHERE "select" = 3''')
    src.execute('''DELETE FROM "select"."order" WHERE "select" = 1''')
    spec = Spec(rule="order", table='"select"."order"', key='s."select"::text', eligible="s.\"where\" = 'yes'",
                memo='s."Mixed ""Quote""" || \' \' || s."select"',
                lines=(("'1100'", 's."from"'), ("'4000'", '-s."from"')))
    assert sorted(live_entries(src, "order")) == ["3"]
    assert live_entries(src, "order")["3"][1] == '" 3'
    assert_in_sync(src, config, [spec])


@pytest.mark.parametrize("table", [
    'weird "; DROP TABLE public.canary; --',
    "new\nline",
    "semicolon;\nDROP TABLE public.canary;\n",
    "dollar $x$ tag",
])
def test_any_table_name_works_or_is_refused_clearly(src, table):
    """A table may be named anything PostgreSQL accepts; the rule on it installs and posts,
    or install refuses with the rule and field named. Nothing else runs."""
    src.execute(sql.SQL("CREATE TABLE {} (id int PRIMARY KEY, amount numeric(12, 2) NOT NULL, status text)")
                .format(sql.Identifier("public", table)))
    quoted = sql.Identifier("public", table).as_string(src)
    rule = simple_rule(source=quoted, when=None)
    del rule["when"]
    before = catalog_state(src)
    try:
        config = install_rules(src, {"r": rule})
    except LedgerError as exc:
        message = str(exc)
        assert 'rule "r"' in message and "source" in message, f"refused without naming rule and field: {message!r}"
        assert catalog_state(src) == before
        return
    src.execute(sql.SQL("INSERT INTO {} VALUES (1, 10, 'ok'), (2, 0, 'ok')").format(sql.Identifier("public", table)))
    assert_in_sync(src, config, [simple_spec(table=quoted, eligible="true")])
    assert src.execute(f"SELECT count(*) FROM {CANARY}").fetchone()[0] == 1


@pytest.mark.parametrize("name", [
    'O\'Reilly "; DROP TABLE public.canary; --',
    "semicolon;\nDROP TABLE public.canary;\n",
    "backslash \\'; DROP TABLE public.canary; --",
    "dollar $ledgeradmin$ tag",
])
def test_any_account_name_works_or_is_refused_clearly(src, name):
    accounts = {**ACCOUNTS, "1100": {"name": name, "type": "asset"}}
    before = catalog_state(src)
    try:
        install(src, config_of({"r": simple_rule()}, accounts))
    except LedgerError as exc:
        assert "1100" in str(exc), f"refused without naming the account: {exc!r}"
        assert catalog_state(src) == before
        return
    assert src.execute("SELECT name FROM ledger.account WHERE code = '1100'").fetchone()[0] == name
    assert src.execute(f"SELECT count(*) FROM {CANARY}").fetchone()[0] == 1


# --------------------------------------------------------------------------- config: expressions


def test_an_expression_may_read_another_table_schema_qualified(src):
    """Accepted: the posting function (SECURITY DEFINER) reads public.fx. verify and
    backfill evaluate the same expression, so a change of the rate is drift: the entries
    of the rows it affects are reversed and reposted at the new rate."""
    src.execute("CREATE TABLE public.fx (currency text PRIMARY KEY, rate numeric NOT NULL)")
    src.execute("INSERT INTO public.fx VALUES ('USD', 1), ('EUR', 1.1)")
    usd = "round(amount * (SELECT f.rate FROM public.fx AS f WHERE f.currency = r.currency), 2)"
    rule = simple_rule(lines=[{"account": "1100", "debit": usd}, {"account": "4000", "credit": usd}])
    config = install_rules(src, {"r": rule})
    src.execute("INSERT INTO public.src (id, amount, currency) VALUES (1, 100, 'USD'), (2, 100, 'EUR')")
    expected = "round(s.amount * (SELECT f.rate FROM public.fx AS f WHERE f.currency = s.currency), 2)"
    spec = simple_spec(lines=(("'1100'", expected), ("'4000'", f"-{expected}")))
    assert_in_sync(src, config, [spec])
    src.execute("UPDATE public.fx SET rate = 1.2 WHERE currency = 'EUR'")
    report = verify(src, config)
    assert report.rules[0].drifted == 1
    assert problems(src, [spec])  # the ledger is now behind the rate
    result = backfill(src, config)
    assert result.rules[0].reposted == 1
    assert_in_sync(src, config, [spec])
    assert live_entries(src, "r")["2"][2][0][3] == "120.0000"


VOLATILE = {
    "random() in an amount": {"lines": [{"account": "1100", "debit": "round(amount * random()::numeric, 2)"},
                                        {"account": "4000", "credit": "round(amount * random()::numeric, 2)"}]},
    "clock_timestamp() as the date": {"date": "clock_timestamp()"},
    "timeofday() in the date": {"date": "timeofday()::timestamptz"},
    "nextval() in the memo": {"memo": "'n' || nextval('public.memo_seq')"},
    "gen_random_uuid() in the memo": {"memo": "gen_random_uuid()::text"},
}


def outcome_of_a_write(conn: psycopg.Connection, config) -> str:
    """What happens to one row under an installed rule: the write, verify, two backfills."""
    said = []
    try:
        conn.execute("INSERT INTO public.src (id, amount) VALUES (1, 10)")
        said.append("the write posted")
    except psycopg.Error as exc:
        said.append(f"the write was refused ({exc.diag.message_primary})")
    try:
        report = verify(conn, config).rules[0]
        said.append(f"verify: missing {report.missing}, drifted {report.drifted}, failed {report.failed}")
    except psycopg.Error as exc:
        said.append(f"verify failed: {exc.diag.message_primary}")
    for _ in range(2):
        try:
            result = backfill(conn, config).rules[0]
            said.append(f"backfill: reposted {result.reposted}, posted {result.posted}, failed {result.failed}")
        except LedgerError as exc:
            said.append(f"backfill failed: {exc}")
    memos = conn.execute("SELECT array_agg(memo ORDER BY id) FROM ledger.entry WHERE reverses IS NULL").fetchone()[0]
    return "; ".join(said) + f"; memos {memos}"


@pytest.mark.parametrize("case", VOLATILE, ids=list(VOLATILE))
def test_volatile_expressions_are_refused_at_install(src, case):
    """A rule's desired posting must be a function of the row: verify and backfill
    evaluate the expressions again and must find what the trigger posted. A volatile
    function gives another value at every call, so install must refuse it, naming the
    rule and field."""
    src.execute("CREATE SEQUENCE public.memo_seq")
    fields = VOLATILE[case]
    field = "lines[1]" if "lines" in fields else next(iter(fields))
    try:
        config = install_rules(src, {"r": simple_rule(**fields)})
    except ConfigError as exc:
        assert 'rule "r"' in str(exc) and field in str(exc), str(exc)
        return
    pytest.fail(f"{case}: accepted at install; then {outcome_of_a_write(src, config)}")


def test_now_as_the_date_is_refused_or_stays_in_sync(src):
    """now() is not volatile, but it differs in every transaction: as a rule's explicit
    date it must be refused, or treated like a rule without date (left out of the
    fingerprint): verify in sync and backfill idle after the write."""
    try:
        config = install_rules(src, {"r": simple_rule(date="now()")})
    except ConfigError as exc:
        assert 'rule "r"' in str(exc) and "date" in str(exc), str(exc)
        return
    said = outcome_of_a_write(src, config)
    assert "verify: missing 0, drifted 0, failed 0" in said and "reposted 1" not in said, said


def test_literal_amounts_huge_negative_and_toml_numbers(src):
    # negative literals move to the other side; TOML integers are expressions too
    rule = simple_rule(lines=[{"account": "1100", "debit": "-5"}, {"account": "4000", "credit": -5},
                              {"account": "1100", "debit": 3}, {"account": "4000", "credit": "3.0"}])
    config = install_rules(src, {"r": rule})
    src.execute("INSERT INTO public.src (id, amount) VALUES (1, 10)")
    assert live_entries(src, "r")["1"][2] == (
        ("1", "1100", "USD", "0.0000", "5.0000"), ("2", "4000", "USD", "5.0000", "0.0000"),
        ("3", "1100", "USD", "3.0000", "0.0000"), ("4", "4000", "USD", "0.0000", "3.0000"))
    assert_in_sync(src, config, [simple_spec(lines=(("'1100'", "-5"), ("'4000'", "5"), ("'1100'", "3"),
                                                    ("'4000'", "-3")))])
    # a literal beyond numeric(20, 4): refused at install; TOML inf / nan are not SQL
    for amount, fragments in (("1e30", ["overflow"]), (float("inf"), ["lines[1].debit", '"inf"']),
                              (float("nan"), ["lines[1].debit", '"nan"'])):
        big = simple_rule(lines=[{"account": "1100", "debit": amount}, {"account": "4000", "credit": amount}])
        assert_refused(src, {"big": big}, ['rule "big"', *fragments])


def test_currencies(src):
    """The ledger checks a currency's form (three capital letters), not the ISO 4217 list:
    'ZZZ' posts. A malformed default is refused at parse; a malformed rule currency is
    refused at the first write (test_posting)."""
    config = install_rules(src, {"r": simple_rule(currency="'ZZZ'")})
    src.execute("INSERT INTO public.src (id, amount) VALUES (1, 10)")
    assert {line[2] for line in live_entries(src, "r")["1"][2]} == {"ZZZ"}
    assert_in_sync(src, config, [simple_spec(currency="'ZZZ'")])
    for bad in ("usd", "US$", "EURO", ""):
        with pytest.raises(ConfigError, match=r"\[ledger\] currency"):
            config_of({"r": simple_rule()}, currency=bad)


DUPLICATES = {
    "two tables": '[rules.r]\nsource = "public.src"\n[rules.r]\nsource = "public.src"\n',
    "table and dotted key": '[rules]\nr.source = "public.src"\n[rules.r]\nsource = "public.src"\n',
    "two accounts": '[accounts.1100]\nname = "a"\ntype = "asset"\n[accounts.1100]\nname = "b"\ntype = "asset"\n',
}


@pytest.mark.parametrize("case", DUPLICATES, ids=list(DUPLICATES))
def test_duplicate_rule_or_account_is_refused_by_toml(tmp_path, case):
    path = tmp_path / "ledger.toml"
    path.write_text(DUPLICATES[case])
    with pytest.raises(ConfigError) as info:
        load_config(path)
    message = str(info.value)
    assert str(path) in message and "invalid TOML" in message, message
    assert re.search(r"Cannot (declare|overwrite)|already", message), message
    assert "line" in message, message


def test_two_rules_on_one_table_both_post(src):
    rules = {
        "gross": simple_rule(),
        "fee": simple_rule(when="status = 'ok' AND amount > 50", memo="'fee ' || id",
                           lines=[{"account": "4000", "debit": "round(amount * 0.03, 2)"},
                                  {"account": "1100", "credit": "round(amount * 0.03, 2)"}]),
    }
    config = install_rules(src, rules)
    src.execute("INSERT INTO public.src (id, amount) SELECT g, g * 10 FROM generate_series(1, 12) AS g")
    src.execute("UPDATE public.src SET amount = amount + 1 WHERE id % 3 = 0")
    src.execute("UPDATE public.src SET status = 'void' WHERE id = 11")
    src.execute("DELETE FROM public.src WHERE id IN (2, 12)")
    specs = [simple_spec("gross"),
             simple_spec("fee", eligible="s.status = 'ok' AND s.amount > 50", memo="'fee ' || s.id",
                         lines=(("'4000'", "round(s.amount * 0.03, 2)"), ("'1100'", "-round(s.amount * 0.03, 2)")))]
    assert sorted(live_entries(src, "gross"), key=int) == ["1", "3", "4", "5", "6", "7", "8", "9", "10"]
    assert sorted(live_entries(src, "fee"), key=int) == ["6", "7", "8", "9", "10"]
    assert_in_sync(src, config, specs)


# --------------------------------------------------------------------------- data

ODD_TABLE = """CREATE TABLE public.odd (id int PRIMARY KEY, n numeric, f float8, d date, ts timestamp,
                                        tstz timestamptz)"""
ODD_DEFAULTS = {"n": "10", "f": "10", "d": "2024-01-01", "ts": "2024-01-01 00:00", "tstz": "2024-01-01 00:00+00"}

#: case -> (column, value, amount expression, date expression,
#:          None when it must post, else the SQLSTATE (or its class) it must fail with)
ODD_DATA = {
    "numeric Infinity": ("n", "Infinity", "n", "tstz", "22003"),
    "numeric -Infinity": ("n", "-Infinity", "n", "tstz", "22003"),
    "float8 Infinity": ("f", "Infinity", "f", "tstz", "22003"),
    "float8 -Infinity": ("f", "-Infinity", "f", "tstz", "22003"),
    "float8 1e300": ("f", "1e300", "f", "tstz", "22003"),
    "numeric 1e16 (just beyond numeric(20, 4))": ("n", "1e16", "n", "tstz", "22003"),
    "numeric 9999999999999999.9999 (the largest)": ("n", "9999999999999999.9999", "n", "tstz", None),
    "numeric -9999999999999999.9999": ("n", "-9999999999999999.9999", "n", "tstz", None),
    "numeric 0.00005 rounds to 0.0001": ("n", "0.00005", "n", "tstz", None),
    "numeric 0.00004 rounds to nothing": ("n", "0.00004", "n", "tstz", None),
    "float8 0.1 + 0.2": ("f", "0.30000000000000004", "f", "tstz", None),
    "timestamptz 4713-01-01 BC": ("tstz", "4713-01-01 00:00+00 BC", "n", "tstz", None),
    "timestamptz 294276-12-31 (the last)": ("tstz", "294276-12-31 23:59:59+00", "n", "tstz", None),
    "date 4713-01-01 BC": ("d", "4713-01-01 BC", "n", "d", None),
    "date 5874897-12-31 (beyond timestamptz)": ("d", "5874897-12-31", "n", "d", "22008"),
    # an entry dated ±infinity belongs to no period and no report: refused (any data exception)
    "timestamptz infinity": ("tstz", "infinity", "n", "tstz", "22"),
    "timestamptz -infinity": ("tstz", "-infinity", "n", "tstz", "22"),
    "timestamp infinity": ("ts", "infinity", "n", "ts", "22"),
    "date infinity": ("d", "infinity", "n", "d", "22"),
}


def odd_spec(rule: str, amount: str, date: str) -> Spec:
    return Spec(rule=rule, table="public.odd", key="s.id::text", eligible="true", date=f"s.{date}",
                lines=(("'1100'", f"s.{amount}"), ("'4000'", f"-s.{amount}")))


@pytest.mark.parametrize("on_error", ["block", "defer"])
@pytest.mark.parametrize("case", ODD_DATA, ids=list(ODD_DATA))
def test_odd_values_post_exactly_or_fail_clearly(conn, case, on_error):
    column, value, amount, date, sqlstate = ODD_DATA[case]
    conn.execute(ODD_TABLE)
    rule = {"source": "public.odd", "date": date, "on_error": on_error,
            "lines": [{"account": "1100", "debit": amount}, {"account": "4000", "credit": amount}]}
    config = config_of({"odd": rule})
    install(conn, config)
    values = {**ODD_DEFAULTS, column: value}
    insert = ("INSERT INTO public.odd (id, n, f, d, ts, tstz)"
              " VALUES (1, %(n)s, %(f)s, %(d)s, %(ts)s, %(tstz)s)")
    if sqlstate is None:
        conn.execute(insert, values)
        assert conn.execute("SELECT count(*) FROM ledger.failure").fetchone()[0] == 0
        assert_in_sync(conn, config, [odd_spec("odd", amount, date)])  # dates compared in SQL, exactly
        return
    if on_error == "block":
        with pytest.raises(psycopg.Error) as info:
            conn.execute(insert, values)
        diag = info.value.diag
        assert diag.sqlstate.startswith(sqlstate), (diag.sqlstate, diag.message_primary)
        assert diag.message_primary.startswith("ledgeradmin rule odd cannot post public.odd row (id)=(1): "), \
            diag.message_primary
        assert conn.execute("SELECT count(*) FROM public.odd").fetchone()[0] == 0
        assert conn.execute("SELECT count(*) FROM ledger.failure").fetchone()[0] == 0
    else:
        conn.execute(insert, values)
        assert conn.execute("SELECT count(*) FROM public.odd").fetchone()[0] == 1
        failures = conn.execute("SELECT rule, source_key, sqlstate FROM ledger.failure WHERE resolved_at IS NULL"
                                ).fetchall()
        assert [f[:2] for f in failures] == [("odd", "1")] and failures[0][2].startswith(sqlstate), failures
        # the deferred row is reported, not a reason for verify or backfill to fail
        try:
            report = verify(conn, config)
        except psycopg.Error as exc:
            pytest.fail(f"verify fails on a row whose posting was deferred: {exc.sqlstate} {exc.diag.message_primary}")
        assert not report.ok and report.rules[0].failed == 1, report.as_dict()
        # a dry run says what verify could not evaluate, instead of "nothing to repair"
        dry = backfill(conn, config, dry_run=True)
        assert dry.rules[0].error == report.rules[0].error and dry.ok == (report.rules[0].error is None)
        result = backfill(conn, config)
        assert result.rules[0].failed == 1 and result.rules[0].failed_keys == ["1"], result.as_dict()
    assert conn.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 0


def test_a_function_of_the_rule_that_raises_makes_verify_report_the_rule_not_fail(conn):
    """A rule calling the application's own function, which raises (P0001) on some row:
    the write of that row is deferred; verify reports the rule as not evaluable and checks
    every other rule; backfill records the row."""
    conn.execute("""
        CREATE FUNCTION public.price(qty numeric) RETURNS numeric LANGUAGE plpgsql IMMUTABLE AS $$
        BEGIN
            IF qty < 0 THEN RAISE EXCEPTION 'negative quantity %', qty; END IF;
            RETURN qty * 10;
        END $$;
        CREATE TABLE public.orders (id int PRIMARY KEY, qty numeric NOT NULL);
        CREATE TABLE public.fees (id int PRIMARY KEY, amount numeric NOT NULL)""")
    config = parse_config({"accounts": ACCOUNTS, "rules": {
        "order": {"source": "public.orders", "on_error": "defer",
                  "lines": [{"account": "1100", "debit": "public.price(qty)"},
                            {"account": "4000", "credit": "public.price(qty)"}]},
        "fee": {"source": "public.fees", "lines": [{"account": "1100", "debit": "amount"},
                                                    {"account": "4000", "credit": "amount"}]}}})
    install(conn, config)
    conn.execute("INSERT INTO public.orders VALUES (1, 2), (2, -1)")
    conn.execute("ALTER TABLE public.fees DISABLE TRIGGER USER")
    conn.execute("INSERT INTO public.fees VALUES (1, 5)")  # missing
    conn.execute("ALTER TABLE public.fees ENABLE TRIGGER USER")
    report = verify(conn, config)
    order, fee = report.rules
    assert "could not evaluate the rule on every row: negative quantity -1 (SQLSTATE P0001)" in order.error
    assert order.failed == 1
    assert (fee.error, fee.missing) == (None, 1)
    result = backfill(conn, config)
    assert [(r.rule, r.posted, r.failed) for r in result.rules] == [("order", 0, 1), ("fee", 1, 0)]


def test_rounding_that_unbalances_an_entry_is_refused_not_adjusted(conn):
    """Each amount is rounded to 4 decimals before the balance check: 0.0001 split in two
    halves rounds to 0.0001 + 0.0001 — refused, never posted out of balance or 'fixed'."""
    conn.execute(ODD_TABLE)
    rule = {"source": "public.odd", "lines": [{"account": "1100", "debit": "n"},
                                               {"account": "4000", "credit": "n / 2"},
                                               {"account": "4000", "credit": "n / 2"}]}
    install(conn, config_of({"odd": rule}))
    conn.execute("INSERT INTO public.odd (id, n) VALUES (1, 0.0002)")  # 0.0001 + 0.0001: fine
    with pytest.raises(errors.CheckViolation, match="unbalanced: debits 0.0001 <> credits 0.0002"):
        conn.execute("INSERT INTO public.odd (id, n) VALUES (2, 0.0001)")
    assert conn.execute("SELECT array_agg(source_key) FROM ledger.entry").fetchone()[0] == ["1"]


@pytest.mark.parametrize("column, kind", [("ts", "timestamp without time zone"), ("d", "date")])
def test_client_time_zone_changes_nothing(dsn, conn, column, kind):
    """A `timestamp` or `date` column is read as UTC, whatever the writer's TimeZone (or
    DateStyle): rows written from Kiritimati (+14) and from UTC-12, and a row written behind
    the trigger's back then backfilled from a third zone, post the same date and fingerprint."""
    conn.execute(ODD_TABLE)
    rule = {"source": "public.odd", "date": column,
            "lines": [{"account": "1100", "debit": "n"}, {"account": "4000", "credit": "n"}]}
    config = config_of({"odd": rule})
    install(conn, config)
    value = "2024-03-10 02:30" if column == "ts" else "2024-12-31"  # a DST gap in New York; a year's end
    for i, (zone, style) in enumerate([("Pacific/Kiritimati", "ISO, DMY"), ("Etc/GMT+12", "SQL, MDY")], start=1):
        with psycopg.connect(dsn, autocommit=True) as writer:
            writer.execute(f"SET TimeZone = '{zone}'")
            writer.execute(f"SET DateStyle = '{style}'")
            writer.execute(f"INSERT INTO public.odd (id, n, {column}) VALUES (%s, 10, %s::{kind})", (i, value))
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SET TimeZone = 'America/St_Johns'")
        other.execute("SET DateStyle = 'German'")
        with other.transaction():
            other.execute("SET LOCAL session_replication_role = replica")
            other.execute(f"INSERT INTO public.odd (id, n, {column}) VALUES (3, 10, %s::{kind})", (value,))
        assert backfill(other, config).rules[0].posted == 1
        assert verify(other, config).ok
    rows = conn.execute("SELECT e.effective_at, p.fingerprint FROM ledger.posting AS p"
                        " JOIN ledger.entry AS e ON e.id = p.entry_id ORDER BY p.source_key").fetchall()
    assert len(rows) == 3 and len(set(rows)) == 1, rows
    want = dt.datetime(2024, 3, 10, 2, 30) if column == "ts" else dt.datetime(2024, 12, 31)
    assert rows[0][0] == want.replace(tzinfo=dt.timezone.utc)
    assert_holds(conn, [odd_spec("odd", "n", column)])


NEUTRAL_TABLE = """CREATE TABLE public.neutral (id int PRIMARY KEY, "Label" text NOT NULL, n numeric NOT NULL,
                                               qty int NOT NULL, flag boolean NOT NULL, at timestamptz NOT NULL,
                                               d date, f float8, span interval)"""
NEUTRAL_RULE = {"source": "public.neutral", "when": "flag AND n <> 0", "date": "r.at",
                "memo": "'Neutral ' || id || ' ' || substring(\"Label\" FROM 1 FOR 3) || ' x' || qty || ' ' || flag",
                "lines": [{"account": "1100", "debit": "round(n * qty, 2)"}, {"account": "4000", "credit": "n * qty"}]}
SESSION_PINS = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits")


def pinned_settings(conn, rule: str) -> set[str]:
    config = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = %s::regproc",
                          (f"ledger.post_{rule}",)).fetchone()[0]
    return {c.split("=", 1)[0] for c in config}


def test_a_rule_of_neutral_columns_posts_the_same_from_any_session(dsn, conn):
    """A rule that reads only integers, numbers, text and booleans, dated by a timestamptz
    column, has no time zone or date style to pin (each pin costs every call): rows written
    from sessions with odd settings, and a row backfilled from another, post the same
    date, memo and fingerprint, and the writers' settings are left as they were."""
    conn.execute(NEUTRAL_TABLE)
    config = config_of({"neutral": NEUTRAL_RULE})
    install(conn, config)
    assert pinned_settings(conn, "neutral") == {"search_path", "jit"}
    sessions = [("Pacific/Kiritimati", "SQL, DMY", "sql_standard", "-15"),
                ("Etc/GMT+12", "German, DMY", "iso_8601", "3")]
    for i, settings in enumerate(sessions, start=1):
        with psycopg.connect(dsn, autocommit=True) as writer:
            for name, value in zip(SESSION_PINS, settings):
                writer.execute(sql.SQL("SET {} = {}").format(sql.Identifier(name), sql.Literal(value)))
            writer.execute("""INSERT INTO public.neutral (id, "Label", n, qty, flag, at)
                              VALUES (%s, 'a', 2.5, 3, true, '2024-12-31 23:30:00+00')""", (i,))
            assert [writer.execute(f"SHOW {name}").fetchone()[0] for name in SESSION_PINS] == list(settings)
    with psycopg.connect(dsn, autocommit=True) as other:
        other.execute("SET TimeZone = 'America/St_Johns'")
        other.execute("SET DateStyle = 'Postgres, DMY'")
        with other.transaction():
            other.execute("SET LOCAL session_replication_role = replica")
            other.execute("""INSERT INTO public.neutral (id, "Label", n, qty, flag, at)
                             VALUES (3, 'a', 2.5, 3, true, '2024-12-31 23:30:00+00')""")
        assert backfill(other, config).rules[0].posted == 1
        assert verify(other, config).ok
    rows = conn.execute("""SELECT e.effective_at, regexp_replace(e.memo, '^Neutral [0-9]+ ', ''), p.fingerprint
                           FROM ledger.posting AS p JOIN ledger.entry AS e ON e.id = p.entry_id
                           ORDER BY p.source_key""").fetchall()
    assert len(rows) == 3 and len(set(rows)) == 1, rows
    assert rows[0][:2] == (dt.datetime(2024, 12, 31, 23, 30, tzinfo=dt.timezone.utc), "a x3 true")


@pytest.mark.parametrize("change", [
    {"date": "d"},                                          # a date: read as midnight in the session's zone
    {"date": "at::date"},                                   # a cast to date: in the session's zone
    {"memo": "'Sale on ' || at"},                           # a timestamp written as text
    {"memo": "'Sale on ' || to_char(at, 'YYYY-MM-DD')"},    # a function of time
    {"memo": "'Qty ' || round(qty)"},                       # round() of an integer: a float, written as text
    {"memo": "'Span ' || span"},                            # an interval written as text
    {"when": "at >= '2024-01-01'"},                         # a literal read in the session's zone
    {"when": "flag AND f > 1"},                             # a float column
    {"lines": [{"account": "1100", "debit": "n"}, {"account": "4000", "credit": "n + 0 * extract(day FROM at)"}]},
    {"lines": [{"account": "1100", "debit": "n"}, {"account_sql": "public.my_account(id)", "credit": "n"}]},
    {"memo": "'x' || (SELECT 1)"},                          # a subquery
])
def test_session_settings_are_pinned_for_a_rule_that_may_depend_on_them(conn, change):
    conn.execute(NEUTRAL_TABLE)
    conn.execute("CREATE FUNCTION public.my_account(int) RETURNS text LANGUAGE sql IMMUTABLE AS $$ SELECT '4000' $$")
    install(conn, config_of({"neutral": {**NEUTRAL_RULE, **change}}))
    assert pinned_settings(conn, "neutral") == {"search_path", "jit", *SESSION_PINS}


def test_a_closed_period_ends_at_midnight_utc_for_a_writer_in_any_zone(conn):
    """The posting function of a rule it pins no time zone for still reads the close in UTC,
    also in the fallback that sorts a failed statement's rows: written from 12 hours behind
    UTC, a row dated just after the closed day posts beside a bad row (recorded, defer), a
    row dated on it is recorded too, naming the closed period."""
    from ledgeradmin.period import close

    conn.execute(NEUTRAL_TABLE)
    install(conn, config_of({"neutral": {**NEUTRAL_RULE, "on_error": "defer"}}))
    close(conn, dt.date(2024, 12, 31))
    conn.execute("SET TimeZone = 'Etc/GMT+12'")
    conn.execute("""INSERT INTO public.neutral (id, "Label", n, qty, flag, at) VALUES
                    (1, 'a', 1, 1, true, '2025-01-01 00:30:00+00'),
                    (2, 'a', 0.001, 1, true, '2025-01-02 00:00:00+00'),
                    (3, 'a', 1, 1, true, '2024-12-31 23:00:00+00')""")
    assert conn.execute("SELECT array_agg(source_key) FROM ledger.entry").fetchone()[0] == ["1"]
    failures = dict(conn.execute("SELECT source_key, sqlstate FROM ledger.failure ORDER BY source_key").fetchall())
    assert failures == {"2": "23514", "3": "23514"}
    conn.execute("SET DateStyle = 'German, DMY'")  # the failure's message is written in ISO whatever the writer's
    conn.execute("""UPDATE public.neutral SET n = 2 WHERE id = 3""")
    (message,) = conn.execute("SELECT message FROM ledger.failure WHERE source_key = '3' AND resolved_at IS NULL"
                              " ORDER BY id DESC LIMIT 1").fetchone()
    assert "closed through 2024-12-31" in message and "2024-12-31 23:00:00 UTC" in message, message


# --------------------------------------------------------------------------- attacks: search path

#: Argument types of the shadow functions planted for every function name the posting
#: functions call (one and two arguments), and of the shadow operators.
PLANTED_SIGNATURES = ("text", "numeric", "bigint", "anyelement", "text[]", "numeric[]", "text, text",
                      "numeric, numeric", "bigint, bigint", "anyarray, anyelement", "text, integer", "text, bigint",
                      "numeric, bigint", "numeric, integer", "double precision, bigint", "text, timestamptz")
PLANTED_OPERATORS = ("=", "<>", "||", "+", "-", "<", ">", "@>", "<@", "~", "!~")
PLANTED_OPERANDS = ("text", "numeric", "bigint", "text[]", "numeric[]")


def _plant(attacker: psycopg.Connection, called: set[str], relations: set[str]) -> int:
    """Plants, in schema evil (first on the attacker's search_path), a shadow of every
    function the posting functions call and of the operators they use, and in evil and
    pg_temp a table named after every word of their bodies. Planted functions record who
    called them; planted tables hold one row and must keep it."""
    attacker.execute("CREATE SCHEMA evil")
    attacker.execute("CREATE TABLE evil.calls (fn text, caller name)")
    attacker.execute("GRANT USAGE ON SCHEMA evil TO PUBLIC")
    attacker.execute("GRANT INSERT ON evil.calls TO PUBLIC")
    planted = 0

    def create(*statements: str) -> None:
        nonlocal planted
        try:
            with attacker.transaction():
                for statement in statements:
                    attacker.execute(statement)
            planted += 1
        except psycopg.Error:
            pass  # a signature PostgreSQL does not accept for that name

    def body(label: str, result: str) -> str:
        return (f"LANGUAGE plpgsql AS $f$ BEGIN INSERT INTO evil.calls VALUES ({sql.Literal(label).as_string(None)},"
                f" current_user); RETURN {result}; END $f$")

    for name in sorted(called):
        fn = sql.Identifier("evil", name).as_string(None)
        for args in PLANTED_SIGNATURES:
            result = "anyelement" if "anyelement" in args else args.split(",")[0].strip()
            create(f"CREATE FUNCTION {fn}({args}) RETURNS {result} " + body(name, "$1"))
        create(f"CREATE FUNCTION {fn}() RETURNS text " + body(name, "NULL"))
    for name in ("sum", "count", "min", "max", "array_agg"):
        create(f"CREATE FUNCTION evil.{name}_step(numeric, numeric) RETURNS numeric " + body(name, "0"),
               f"CREATE AGGREGATE evil.{name}(numeric) (SFUNC = evil.{name}_step, STYPE = numeric, INITCOND = '0')")
    for i, op in enumerate(PLANTED_OPERATORS):
        for j, operand in enumerate(PLANTED_OPERANDS):
            create(f"CREATE FUNCTION evil.op_{i}_{j}({operand}, {operand}) RETURNS boolean "
                   + body(f"operator {op}", "true"),
                   f"CREATE OPERATOR evil.{op} (LEFTARG = {operand}, RIGHTARG = {operand}, FUNCTION = evil.op_{i}_{j})")
    for name in sorted(relations):
        for schema in ("evil", "pg_temp"):
            table = sql.Identifier(schema, name).as_string(None)
            create(f"CREATE TABLE {table} (rule text, source_key text, key_num bigint, entry_id bigint,"
                   " fingerprint text, id bigint, code text, account text, amount numeric)",
                   f"INSERT INTO {table} (rule, source_key, key_num, code, account, amount)"
                   " VALUES ('sale', '101', 101, '1100', '1100', 666)")
    return planted


#: Per rule, the attacker's writes: literals only (no operator or function of its own,
#: which would resolve to the planted ones in its session). Rows 101-103 are eligible,
#: 104 is a deferred failure for the payment rule, 105 becomes eligible by an update,
#: 101 leaves `when`, 102 is deleted, 103 changes amount and memo.
ATTACKER_WRITES = {
    "sale": [
        """INSERT INTO public.sales (id, customer, sold_at, status, payment_method, total, tax) VALUES
           (101, 'a', '2024-01-01 00:00+00', 'completed', 'card', 10, 1),
           (102, 'b', '2024-01-02 00:00+00', 'completed', 'cash', 20, 2),
           (103, 'c', '2024-01-03 00:00+00', 'completed', 'invoice', 30, 0),
           (104, 'd', '2024-01-04 00:00+00', 'draft', 'card', 40, 4),
           (105, 'e', '2024-01-05 00:00+00', 'draft', 'card', 50, 5)""",
        "UPDATE public.sales SET customer = 'zed', total = 31 WHERE id = 103",
        "UPDATE public.sales SET status = 'completed' WHERE id = 105",
        "UPDATE public.sales SET status = 'cancelled' WHERE id = 101",
        "DELETE FROM public.sales WHERE id = 102",
    ],
    "requisition": [
        """INSERT INTO public.purchase_requisitions (id, requested_by, department, description, amount, status,
                                                    approved_at) VALUES
           (101, 'a', 'ops', 'x', 10, 'approved', '2024-01-01 00:00+00'),
           (102, 'a', 'ops', 'y', 20, 'approved', '2024-01-02 00:00+00'),
           (103, 'a', 'ops', 'z', 30, 'approved', '2024-01-03 00:00+00'),
           (104, 'a', 'ops', 'w', 40, 'draft', NULL),
           (105, 'a', 'ops', 'v', 50, 'submitted', '2024-01-05 00:00+00')""",
        "UPDATE public.purchase_requisitions SET department = 'it', amount = 31 WHERE id = 103",
        "UPDATE public.purchase_requisitions SET status = 'approved' WHERE id = 105",
        "UPDATE public.purchase_requisitions SET status = 'rejected' WHERE id = 101",
        "DELETE FROM public.purchase_requisitions WHERE id = 102",
    ],
    "payment": [
        """INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at) VALUES
           (101, 'a', 10, 'cash', 'paid', '2024-01-01 00:00+00'),
           (102, 'b', 20, 'bank', 'paid', '2024-01-02 00:00+00'),
           (103, 'c', 30, 'cash', 'paid', '2024-01-03 00:00+00'),
           (104, 'd', 40, 'cash', 'paid', NULL),
           (105, 'e', 50, 'bank', 'draft', '2024-01-05 00:00+00')""",
        "UPDATE public.payment_vouchers SET payee = 'zed', amount = 31 WHERE id = 103",
        "UPDATE public.payment_vouchers SET status = 'paid' WHERE id = 105",
        "UPDATE public.payment_vouchers SET status = 'void' WHERE id = 101",
        "DELETE FROM public.payment_vouchers WHERE id = 102",
    ],
    "manufacturing": [
        """INSERT INTO public.manufacturing_orders (id, product, quantity, unit_cost, state, finished_at) VALUES
           (101, 'a', 1, 2.5, 'done', '2024-01-01 00:00+00'),
           (102, 'b', 2, 2.5, 'done', '2024-01-02 00:00+00'),
           (103, 'c', 3, 2.5, 'done', '2024-01-03 00:00+00'),
           (104, 'd', 4, 2.5, 'planned', NULL),
           (105, 'e', 5, 2.5, 'in_progress', '2024-01-05 00:00+00')""",
        "UPDATE public.manufacturing_orders SET product = 'zed', quantity = 7 WHERE id = 103",
        "UPDATE public.manufacturing_orders SET state = 'done' WHERE id = 105",
        "UPDATE public.manufacturing_orders SET state = 'cancelled' WHERE id = 101",
        "DELETE FROM public.manufacturing_orders WHERE id = 102",
    ],
}


def test_every_security_definer_function_resists_search_path_attacks(shop, dsn, conn):
    """Each SECURITY DEFINER function in schema ledger, run by an application role whose
    search_path puts shadow functions, operators, aggregates and tables first (and shadow
    tables in pg_temp), posts exactly what the independent check computes, records only the
    failure it must, and calls nothing planted."""
    definers = dict(conn.execute(
        """SELECT p.oid::regprocedure::text, p.prosrc FROM pg_proc AS p
           WHERE p.pronamespace = 'ledger'::regnamespace AND p.prosecdef ORDER BY 1""").fetchall())
    tables = dict(conn.execute(
        """SELECT DISTINCT p.oid::regprocedure::text, t.tgrelid::regclass::text FROM pg_trigger AS t
           JOIN pg_proc AS p ON p.oid = t.tgfoid
           WHERE p.pronamespace = 'ledger'::regnamespace AND p.prosecdef""").fetchall())
    assert sorted(definers) == ["ledger.post_manufacturing()", "ledger.post_payment()", "ledger.post_requisition()",
                                "ledger.post_sale()"], "a new SECURITY DEFINER function: add its attack here"
    assert set(tables) == set(definers), "a SECURITY DEFINER function that is no posting trigger: test it here"
    words, called = set(), set()
    for text in definers.values():
        words |= {w.lower() for w in re.findall(r"(?<![.\w$])([A-Za-z_][A-Za-z0-9_]*)", text)}
        called |= {w.lower() for w in re.findall(r"(?<![\w$])([A-Za-z_][A-Za-z0-9_]*)\s*\(", text)}
    assert {"hash_numeric_extended", "hashtextextended", "unnest", "nextval", "isfinite", "coalesce", "greatest",
            "posting_problem"} <= called
    role = f"la_attacker_{uuid.uuid4().hex[:8]}"
    dbname = conninfo_to_dict(dsn)["dbname"]
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN").format(sql.Identifier(role)))
    try:
        conn.execute(sql.SQL("GRANT CREATE, TEMP ON DATABASE {} TO {}").format(sql.Identifier(dbname),
                                                                             sql.Identifier(role)))
        conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA public TO {}")
                     .format(sql.Identifier(role)))
        with psycopg.connect(make_conninfo(dsn, user=role), autocommit=True) as attacker:
            planted = _plant(attacker, called, words)
            attacker.execute("SET search_path = evil, pg_temp, public, pg_catalog")
            # the planted objects do win in the attacker's own session
            assert attacker.execute("SELECT hashtextextended('x', 0)::pg_catalog.text, 'a'::pg_catalog.text = 'b'::pg_catalog.text").fetchone() \
                == ("x", True)
            assert attacker.execute("SELECT to_regtype('text')::oid <> 'pg_catalog.text'::regtype::oid").fetchone()[0]
            assert attacker.execute("SELECT pg_catalog.count(*) FROM posting").fetchone()[0] == 1
            for function, table in sorted(tables.items()):
                rule = function.removeprefix("ledger.post_").removesuffix("()")
                for statement in ATTACKER_WRITES[rule]:
                    attacker.execute(statement)
                failed = {r[0] for r in conn.execute(
                    "SELECT source_key FROM ledger.failure WHERE rule = %s AND resolved_at IS NULL", (rule,))}
                assert failed == ({"104"} if rule == "payment" else set()), (rule, failed)
                assert_holds(conn, [s for s in SHOP if s.rule == rule], skip_keys={rule: failed})
                assert sorted(live_entries(conn, rule)) == ["103", "105"], rule
                calls = conn.execute("SELECT DISTINCT fn FROM evil.calls WHERE caller <> %s", (role,)).fetchall()
                assert calls == [], f"{function} called planted objects: {calls}"
            for name in sorted(words):
                for schema in ("evil", "pg_temp"):
                    if attacker.execute("SELECT pg_catalog.to_regclass(%s)", (f"{schema}.{name}",)).fetchone()[0]:
                        assert attacker.execute(sql.SQL("SELECT pg_catalog.count(*) FROM {}").format(
                            sql.Identifier(schema, name))).fetchone()[0] == 1, (schema, name)
        assert planted > 300, planted
    finally:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(role)))
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(role)))


# --------------------------------------------------------------------------- attacks: ledger_reader


def test_ledger_reader_reads_the_journal_and_nothing_else(shop, dsn, conn):
    """The auditor role of migration 0002: SELECT on account, entry, line and failure (and
    period_close, 0005) — and not on the source tables, the implementation tables (posting, rule, yoyo's), the
    sequences or any function; no other privilege, attribute or membership."""
    rows = conn.execute("""
        SELECT n.nspname || '.' || c.relname, c.relkind,
               has_table_privilege('ledger_reader', c.oid, 'SELECT'),
               has_table_privilege('ledger_reader', c.oid, 'INSERT, UPDATE, DELETE, TRUNCATE, REFERENCES, TRIGGER')
        FROM pg_class AS c JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname NOT IN ('pg_catalog', 'information_schema') AND n.nspname NOT LIKE 'pg_toast%'
          AND c.relkind IN ('r', 'p', 'v', 'm', 'f')
    """).fetchall()
    readable = sorted(name for name, _, select, _ in rows if select)
    assert readable == ["ledger.account", "ledger.entry", "ledger.failure", "ledger.line", "ledger.period_close"]
    assert [name for name, _, _, write in rows if write] == []
    assert {"public.sales", "ledger.posting", "ledger.rule"} <= {name for name, *_ in rows}
    sequences = conn.execute("""
        SELECT c.oid::regclass::text FROM pg_class AS c
        WHERE c.relkind = 'S'
          AND CASE WHEN c.relkind = 'S' THEN has_sequence_privilege('ledger_reader', c.oid, 'USAGE, SELECT, UPDATE') END
    """).fetchall()
    assert sequences == []
    columns = conn.execute("""
        SELECT a.attrelid::regclass::text, a.attname FROM pg_attribute AS a
        JOIN pg_class AS c ON c.oid = a.attrelid JOIN pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname IN ('public', 'ledger') AND a.attnum > 0
          AND has_column_privilege('ledger_reader', a.attrelid, a.attnum, 'SELECT')
          AND NOT has_table_privilege('ledger_reader', a.attrelid, 'SELECT')
    """).fetchall()
    assert columns == []
    functions = conn.execute("""
        SELECT p.oid::regprocedure::text FROM pg_proc AS p
        WHERE p.pronamespace = 'ledger'::regnamespace AND has_function_privilege('ledger_reader', p.oid, 'EXECUTE')
    """).fetchall()
    assert functions == []
    assert conn.execute("""SELECT has_schema_privilege('ledger_reader', 'ledger', 'CREATE'),
                                  has_schema_privilege('ledger_reader', 'public', 'CREATE')""").fetchone() == (False, False)
    role = conn.execute("""SELECT rolsuper, rolinherit, rolcreaterole, rolcreatedb, rolcanlogin, rolreplication,
                                  rolbypassrls FROM pg_roles WHERE rolname = 'ledger_reader'""").fetchone()
    assert role == (False, True, False, False, False, False, False)
    assert conn.execute("""SELECT count(*) FROM pg_auth_members
                           WHERE member = 'ledger_reader'::regrole""").fetchone()[0] == 0
    # and in practice, as a login role that is a member of ledger_reader and nothing else
    auditor = f"la_auditor_{uuid.uuid4().hex[:8]}"
    conn.execute(sql.SQL("CREATE ROLE {} LOGIN IN ROLE ledger_reader").format(sql.Identifier(auditor)))
    try:
        shop.execute("INSERT INTO public.sales (customer, total) VALUES ('ann', 10)")
        with psycopg.connect(make_conninfo(dsn, user=auditor), autocommit=True) as reader:
            assert reader.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 1
            for statement in ("SELECT * FROM public.sales", "SELECT * FROM ledger.posting",
                              "SELECT * FROM ledger.rule", "SELECT * FROM ledger._yoyo_migration",
                              "SELECT nextval('ledger.entry_id_seq')", "SELECT ledger.post_sale()",
                              "SELECT ledger.posting_problem('23514 x', NULL)", "CREATE TABLE ledger.mine (x int)",
                              "INSERT INTO ledger.entry (rule, source_key, effective_at) VALUES ('x', 'y', now())"):
                with pytest.raises(errors.InsufficientPrivilege):
                    reader.execute(statement)
    finally:
        conn.execute(sql.SQL("DROP ROLE {}").format(sql.Identifier(auditor)))


# --------------------------------------------------------------------------- attacks: passwords

SECRET = "Pw-9f8e7d6c5b4a"


@pytest.fixture(scope="module")
def password_server():
    """A server of its own requiring a SCRAM password over TCP, logging every connection
    and every statement (so a password sent in SQL would show in its log)."""
    settings = {"log_statement": "all", "log_connections": "on", "log_disconnections": "on",
                "log_min_messages": "debug1", "log_min_error_statement": "debug1",
                "password_encryption": "scram-sha-256"}
    with LocalPostgres(fast=True, tcp=True, settings=settings) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            db.execute("SET log_statement = 'none'")  # not even the ALTER ROLE goes to the log
            db.execute(sql.SQL("ALTER ROLE postgres PASSWORD {}").format(sql.Literal(SECRET)))
            db.execute("CREATE DATABASE shop")
            db.execute("CREATE DATABASE empty")
            db.execute("CREATE DATABASE demo")
        with psycopg.connect(server.conninfo("shop"), autocommit=True) as db:
            db.execute(SHOP_SCHEMA.read_text(encoding="utf-8"))
        hba = server.datadir / "pg_hba.conf"
        hba.write_text("host all all 127.0.0.1/32 scram-sha-256\n" + hba.read_text())
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            db.execute("SELECT pg_reload_conf()")
        yield server


def _secret_dsns(server: LocalPostgres, dbname: str, password: str = SECRET) -> dict[str, str]:
    return {
        "keyword": f"host=127.0.0.1 port={server.port} user=postgres password={password} dbname={dbname}",
        "uri": f"postgresql://postgres:{password}@127.0.0.1:{server.port}/{dbname}",
    }


def test_password_never_appears_in_output_logs_or_the_server_log(password_server, tmp_path, monkeypatch, caplog):
    """With the right password every command succeeds, with the wrong one (or a database
    that fails later) it fails; in no case does the password appear on stdout, stderr,
    in a log record (any logger, DEBUG) or in the server's log (every statement logged)."""
    monkeypatch.chdir(tmp_path)
    caplog.set_level(logging.DEBUG)
    server = password_server
    start = server.logfile.stat().st_size
    wrong = "Wr0ng-" + SECRET[::-1]
    config = str(SHOP_TOML)
    runs = []
    for form, dsn in _secret_dsns(server, "shop").items():
        for args, code in (
            (["migrate"], 0), (["install", "--config", config], 0), (["status", "--config", config], 0),
            (["sql", "--config", config], 0), (["verify", "--config", config], 0),
            (["backfill", "--config", config], 0), (["report", "trial-balance"], 0),
            (["report", "account", "1100"], 0), (["init", "--from-table", "public.sales", "--out", "-"], 0),
            (["--traceback", "install", "--config", str(tmp_path / "missing.toml")], 2),
            (["--traceback", "init", "--from-table", "public.nosuchtable", "--out", "-"], 2),
            (["uninstall"], 0),
        ):
            runs.append((form, args, dsn, code))
        empty = _secret_dsns(server, "empty")[form]
        runs += [(form, ["--traceback", "verify", "--config", config], empty, 2),
                 (form, ["--traceback", "backfill", "--config", config], empty, 2)]
        runs.append((form, ["--traceback", "status", "--config", config], _secret_dsns(server, "shop", wrong)[form], 2))
    runs.append(("keyword", ["demo"], _secret_dsns(server, "demo")["keyword"], 0))
    for form, args, dsn, code in runs:
        result = CliRunner().invoke(main, [*args, "--dsn", dsn])
        label = f"{form}: ledgeradmin {' '.join(args)}"
        assert result.exit_code == code, (label, result.stdout[-500:], result.stderr[-2000:], result.exception)
        for secret in (SECRET, wrong, wrong[::-1]):
            assert secret not in result.stdout, label
            assert secret not in result.stderr, label
    # the Python API's errors too
    for dsn in _secret_dsns(server, "nosuchdb").values():
        with pytest.raises(LedgerError) as info:
            from ledgeradmin.connection import connect
            connect(dsn)
        assert SECRET not in str(info.value) and SECRET not in repr(info.value)
    logged = "\n".join(f"{r.name} {r.getMessage()} {r.args!r}" for r in caplog.records)
    assert SECRET not in logged and wrong not in logged
    server_log = server.logfile.read_text(errors="replace")[start:]
    assert "connection authorized: user=postgres database=shop" in server_log
    assert "password authentication failed" in server_log
    assert "ledger" in server_log  # statements were logged
    assert SECRET not in server_log and wrong not in server_log

"""Keys of every kind stay one key: a key column that changes type keeps its rows' entries
(install rewrites their links), a bytea key reads the same whatever the writer's
bytea_output, and key types whose comparisons are not built in are refused at install, as
are keys and tables whose writes the triggers could not follow."""

from __future__ import annotations

import psycopg
import pytest

from invariants import LIVE_ENTRIES
from ledgeradmin.backfill import backfill
from ledgeradmin.config import parse_config
from ledgeradmin.errors import ConfigError, LedgerError
from ledgeradmin.install import install
from ledgeradmin.status import status
from ledgeradmin.verify import verify

ACCOUNTS = {"1000": {"name": "Cash", "type": "asset"}, "4000": {"name": "Revenue", "type": "income"}}
LINES = [{"account": "1000", "debit": "amount"}, {"account": "4000", "credit": "amount"}]


def config(table: str = "public.inv", **rule):
    return parse_config({"accounts": ACCOUNTS, "rules": {"inv": {"source": table, "lines": LINES, **rule}}})


def live_entries(conn) -> dict[str, int]:
    """source_key -> number of live entries of rule inv (one each, or a row is booked twice)."""
    return dict(conn.execute(
        f"SELECT e.source_key, count(*)::int FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = 'inv' GROUP BY 1").fetchall())


def cash(conn):
    return conn.execute("SELECT coalesce(sum(debit - credit), 0) FROM ledger.line WHERE account = '1000'").fetchone()[0]


@pytest.mark.parametrize("new_type", ["public.app_id", "text", "numeric", "integer"])
def test_a_key_column_that_changes_type_keeps_its_entries(conn, new_type):
    """From bigint to a domain, text, numeric (links rewritten from key_num to source_key
    form) and back to an integer type (rewritten back): no row is booked twice, by an edit
    or by backfill, and verify is in sync."""
    conn.execute("CREATE DOMAIN public.app_id AS bigint")
    conn.execute("CREATE TABLE public.inv (id bigint PRIMARY KEY, amount numeric NOT NULL)")
    install(conn, config())
    conn.execute("INSERT INTO public.inv VALUES (1, 100), (2, 200), (3, 300)")

    conn.execute(f"ALTER TABLE public.inv ALTER id TYPE {new_type}")
    assert [s.state for s in status(conn, config())] == ["ok" if new_type == "integer" else "OUTDATED"]
    relinked = install(conn, config()).relinked
    conn.execute("UPDATE public.inv SET amount = 150 WHERE id = '1'")
    assert backfill(conn, config()).rules[0].repaired == 0
    assert live_entries(conn) == {"1": 1, "2": 1, "3": 1}
    assert cash(conn) == 650
    assert verify(conn, config()).ok
    if new_type == "integer":
        assert relinked == {}  # bigint to integer: the same (integer) form
        return
    assert relinked == {"inv": 3}

    conn.execute("ALTER TABLE public.inv ALTER id TYPE bigint USING id::bigint")
    assert install(conn, config()).relinked == {"inv": 3}
    conn.execute("UPDATE public.inv SET amount = 250 WHERE id = '2'")
    assert backfill(conn, config()).rules[0].repaired == 0
    assert live_entries(conn) == {"1": 1, "2": 1, "3": 1}
    assert cash(conn) == 700
    assert verify(conn, config()).ok


def test_a_key_that_becomes_an_integer_keeps_entries_keyed_in_any_text_of_that_integer(conn):
    """numeric(10, 1) keys ('1.0') and text keys ('+3', ' 4') changed to integer: their links
    are found by the integer rule (no row booked twice); a key no integer matches (the row
    of '1.5', deleted while the trigger was off) refuses the install, naming it."""
    conn.execute("CREATE TABLE public.inv (id numeric(10, 1) PRIMARY KEY, amount numeric NOT NULL)")
    conn.execute("CREATE TABLE public.txt (id text PRIMARY KEY, amount numeric NOT NULL)")
    both = parse_config({"accounts": ACCOUNTS, "rules": {
        "inv": {"source": "public.inv", "lines": LINES}, "txt": {"source": "public.txt", "lines": LINES}}})
    install(conn, both)
    conn.execute("INSERT INTO public.inv VALUES (1, 10), (2, 20), (1.5, 5)")
    conn.execute("INSERT INTO public.txt VALUES ('+3', 30), (' 4', 40)")
    conn.execute("ALTER TABLE public.inv DISABLE TRIGGER USER")
    conn.execute("DELETE FROM public.inv WHERE id = 1.5")
    conn.execute("ALTER TABLE public.inv ENABLE TRIGGER USER")
    conn.execute("ALTER TABLE public.inv ALTER id TYPE integer USING id::integer")
    conn.execute("ALTER TABLE public.txt ALTER id TYPE bigint USING id::bigint")
    with pytest.raises(LedgerError, match=r"rule inv: 1 live entries are keyed in a form its integer key \(id\) "
                                          r"cannot match: '1\.5'"):
        install(conn, both)
    conn.execute("ALTER TABLE public.inv ALTER id TYPE numeric(10, 1)")
    assert install(conn, both).relinked == {"txt": 2}  # the refused install changed nothing
    assert backfill(conn, both, ["inv"]).rules[0].reversed == 1
    conn.execute("ALTER TABLE public.inv ALTER id TYPE integer USING id::integer")
    assert install(conn, both).relinked == {"inv": 2}
    conn.execute("UPDATE public.inv SET amount = amount + 1")
    conn.execute("UPDATE public.txt SET amount = amount + 1")
    assert [r.repaired for r in backfill(conn, both).rules] == [0, 0]
    assert cash(conn) == 11 + 21 + 31 + 41
    assert verify(conn, both).ok


def test_a_bytea_key_is_the_same_key_whatever_the_writers_bytea_output(conn):
    conn.execute("CREATE TABLE public.docs (h bytea PRIMARY KEY, amount numeric NOT NULL)")
    install(conn, config("public.docs"))
    conn.execute("INSERT INTO public.docs VALUES ('\\x01', 10)")
    conn.execute("SET bytea_output = 'escape'")
    conn.execute("UPDATE public.docs SET amount = 20 WHERE h = '\\x01'")
    conn.execute("INSERT INTO public.docs VALUES ('\\x02', 5)")
    assert live_entries(conn) == {"\\x01": 1, "\\x02": 1}
    assert cash(conn) == 25
    result = verify(conn, config("public.docs"))
    assert result.ok, result.as_dict()
    assert backfill(conn, config("public.docs")).rules[0].repaired == 0


def test_an_expression_with_a_backslash_means_the_same_to_every_writer(conn):
    r"""`ref ~ '^\d+$'` under standard_conforming_strings = off would read '^d+$': the
    posting function pins the setting when an expression has a backslash."""
    conn.execute("CREATE TABLE public.inv (id bigint PRIMARY KEY, ref text NOT NULL, amount numeric NOT NULL)")
    rule = config(when="ref ~ '^\\d+$'")
    install(conn, rule)
    conn.execute("SET standard_conforming_strings = off")
    conn.execute("INSERT INTO public.inv VALUES (1, 'ddd', 40), (2, '789', 50)")
    conn.execute("RESET standard_conforming_strings")
    assert live_entries(conn) == {"2": 1}
    assert verify(conn, rule).ok
    settings = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = 'ledger.post_inv()'::regprocedure").fetchone()[0]
    assert "standard_conforming_strings=on" in settings


def test_an_expression_comparing_with_null_means_the_same_to_every_writer(conn):
    """`ref = NULL` is never true, unless the writer's session reads it as `ref IS NULL`
    (transform_null_equals = on): the posting function pins the setting."""
    conn.execute("CREATE TABLE public.inv (id bigint PRIMARY KEY, ref text, amount numeric NOT NULL)")
    rule = config(when="NOT coalesce(ref = NULL, false)")
    install(conn, rule)
    conn.execute("SET transform_null_equals = on")
    conn.execute("INSERT INTO public.inv VALUES (1, NULL, 40), (2, 'x', 50)")
    conn.execute("RESET transform_null_equals")
    assert live_entries(conn) == {"1": 1, "2": 1}
    assert verify(conn, rule).ok


def test_settings_are_pinned_only_for_the_rules_that_need_them(conn):
    conn.execute("CREATE TABLE public.inv (id bigint PRIMARY KEY, ref text NOT NULL, amount numeric NOT NULL)")
    install(conn, config())
    settings = conn.execute("SELECT proconfig FROM pg_proc WHERE oid = 'ledger.post_inv()'::regprocedure").fetchone()[0]
    assert not any(s.startswith(("standard_conforming_strings", "bytea_output", "transform_null_equals"))
                   for s in settings), settings


EXTENSION_KEYS = {
    "citext": ("citext", "CREATE TABLE public.inv (id citext PRIMARY KEY, amount numeric NOT NULL)"),
    "isbn13": ("isn", "CREATE TABLE public.inv (id isbn13 PRIMARY KEY, amount numeric NOT NULL)"),
    "ltree": ("ltree", "CREATE TABLE public.inv (id ltree PRIMARY KEY, amount numeric NOT NULL)"),
    "composite": (None, "CREATE TYPE public.pair AS (a int, b int);"
                        " CREATE TABLE public.inv (id public.pair PRIMARY KEY, amount numeric NOT NULL)"),
    "domain over citext": ("citext", "CREATE DOMAIN public.email AS citext;"
                                     " CREATE TABLE public.inv (id public.email PRIMARY KEY, amount numeric NOT NULL)"),
}


@pytest.mark.parametrize("case", EXTENSION_KEYS)
def test_a_key_of_a_type_without_built_in_comparisons_is_refused_at_install(conn, case):
    extension, ddl = EXTENSION_KEYS[case]
    if extension:
        conn.execute(f"CREATE EXTENSION {extension} SCHEMA public")
    conn.execute(ddl)
    with pytest.raises(ConfigError, match=r'rule "inv", field key: key column id \(.*\) is of a type whose '
                                          "comparisons are not built in"):
        install(conn, config())
    assert conn.execute("SELECT count(*) FROM ledger.rule").fetchone()[0] == 0


UNFOLLOWABLE = {
    "nondeterministic collation": (
        "CREATE COLLATION public.ci (provider = icu, locale = 'und-u-ks-level2', deterministic = false);"
        " CREATE TABLE public.inv (id text COLLATE public.ci PRIMARY KEY, amount numeric NOT NULL)",
        r'field key: key column id \(COLLATE public.ci\) has a nondeterministic collation'),
    "deferrable key": (
        "CREATE TABLE public.inv (id int PRIMARY KEY DEFERRABLE INITIALLY DEFERRED, amount numeric NOT NULL)",
        r"field key: every unique constraint on \(id\) of public.inv is DEFERRABLE"),
    "partition": (
        "CREATE TABLE public.p (id int PRIMARY KEY, amount numeric NOT NULL) PARTITION BY RANGE (id);"
        " CREATE TABLE public.inv PARTITION OF public.p FOR VALUES FROM (0) TO (100)",
        "field source: public.inv is a partition or an inheritance child of public.p: a statement on public.p "
        "fires only"),
    "inheritance child": (
        "CREATE TABLE public.base (id int PRIMARY KEY, amount numeric NOT NULL);"
        " CREATE TABLE public.inv (PRIMARY KEY (id)) INHERITS (public.base)",
        "field source: public.inv is a partition or an inheritance child of public.base"),
    "inheritance parent": (
        "CREATE TABLE public.inv (id int PRIMARY KEY, amount numeric NOT NULL);"
        " CREATE TABLE public.inv_child (PRIMARY KEY (id)) INHERITS (public.inv)",
        r"field source: public.inv has inheritance children \(public.inv_child\): a statement on a child"),
}


@pytest.mark.parametrize("case", UNFOLLOWABLE)
def test_a_table_or_key_whose_writes_the_triggers_cannot_follow_is_refused(conn, case):
    """A partition or inheritance child (a statement on the parent fires only the parent's
    statement triggers), an inheritance parent (a statement on a child fires none of its
    triggers), a deferrable key (two rows share it until commit) and a key compared
    case-insensitively (the journal would keep a row's old spelling) cannot be followed."""
    ddl, message = UNFOLLOWABLE[case]
    conn.execute(ddl)
    with pytest.raises(ConfigError, match=f'rule "inv", {message}'):
        install(conn, config())
    assert conn.execute("SELECT count(*) FROM ledger.rule").fetchone()[0] == 0


def test_a_table_that_gets_an_inheritance_child_after_install_is_invalid(conn):
    conn.execute("CREATE TABLE public.inv (id int PRIMARY KEY, amount numeric NOT NULL,"
                 " CONSTRAINT inv_id UNIQUE (id) DEFERRABLE)")  # an immediate primary key beside it: fine
    install(conn, config())
    assert [s.state for s in status(conn, config())] == ["ok"]
    conn.execute("CREATE TABLE public.inv_child () INHERITS (public.inv)")
    [state] = status(conn, config())
    assert state.state == "INVALID"
    assert state.detail.startswith("field source: public.inv has inheritance children (public.inv_child)"), state.detail
    with pytest.raises(LedgerError, match="inv is INVALID"):
        backfill(conn, config())


def test_an_enum_key_and_a_generated_text_key_are_accepted(conn):
    conn.execute("CREATE EXTENSION citext SCHEMA public")
    conn.execute("CREATE TYPE public.region AS ENUM ('north', 'south')")
    conn.execute("CREATE TABLE public.inv (id public.region PRIMARY KEY, amount numeric NOT NULL)")
    conn.execute("CREATE TABLE public.cust (email citext NOT NULL, amount numeric NOT NULL,"
                 " email_key text GENERATED ALWAYS AS (lower(email::text)) STORED UNIQUE NOT NULL)")
    rules = parse_config({"accounts": ACCOUNTS, "rules": {
        "inv": {"source": "public.inv", "lines": LINES},
        "cust": {"source": "public.cust", "key": ["email_key"], "lines": LINES}}})
    install(conn, rules)
    conn.execute("INSERT INTO public.inv VALUES ('south', 1), ('north', 2)")
    conn.execute("UPDATE public.inv SET amount = 3 WHERE id = 'north'")
    conn.execute("INSERT INTO public.cust (email, amount) VALUES ('A@x', 4), ('b@x', 5)")
    conn.execute("UPDATE public.cust SET amount = 6 WHERE email = 'a@X'")
    assert cash(conn) == 1 + 3 + 6 + 5
    result = verify(conn, rules)
    assert result.ok, result.as_dict()
    with pytest.raises(psycopg.errors.UniqueViolation):
        conn.execute("INSERT INTO public.cust (email, amount) VALUES ('a@x', 1)")

"""Only ledgeradmin's functions write the ledger (DESIGN invariant 5).

An application role with plain DML on the shop tables gets its writes posted, but can
neither read nor write the ledger, nor call the posting routines, nor switch the guards
off; objects it plants on its search_path change nothing the triggers do.
"""

from __future__ import annotations

import uuid
from datetime import datetime, timedelta, timezone
from pathlib import Path

import psycopg
import pytest
from psycopg import errors, sql
from psycopg.conninfo import make_conninfo

from ledgeradmin.config import load_config
from ledgeradmin.install import install


SHOP_TOML = Path(__file__).resolve().parents[1] / "examples" / "shop" / "ledger.toml"
SHOP_TABLES = ("sales", "purchase_requisitions", "payment_vouchers", "manufacturing_orders")
LEDGER_TABLES = ("account", "entry", "line", "failure", "posting", "rule", "period_close")
JOURNAL_TABLES = ("account", "entry", "line", "failure", "period_close")

# -- helpers ---------------------------------------------------------------------------


def ident(*names: str) -> sql.Identifier:
    return sql.Identifier(*names)


def refused(connection, statement) -> bool:
    """True when ``statement`` fails with insufficient_privilege (42501)."""
    try:
        connection.execute(statement)
    except errors.InsufficientPrivilege:
        return True
    return False


def grant_app_privileges(conn, role: str) -> None:
    """What an application role typically gets: DML on its tables, USAGE on their sequences."""
    conn.execute(sql.SQL("GRANT SELECT, INSERT, UPDATE, DELETE ON {} TO {}").format(
        sql.SQL(", ").join(ident("public", t) for t in SHOP_TABLES), ident(role)))
    conn.execute(sql.SQL("GRANT USAGE ON ALL SEQUENCES IN SCHEMA public TO {}").format(ident(role)))


def ledger_columns(conn, table: str) -> list[str]:
    """The columns of a ledger table that an UPDATE may name (no identity columns)."""
    return [r[0] for r in conn.execute(
        "SELECT attname::text FROM pg_attribute WHERE attrelid = %s::regclass AND attnum > 0 AND NOT attisdropped "
        "AND attidentity = '' ORDER BY attnum", (f"ledger.{table}",))]


def workload(db) -> None:
    """The same application writes, whoever runs them (all names schema-qualified)."""
    db.execute("""INSERT INTO public.sales (id, customer, sold_at, status, payment_method, total, tax)
                  VALUES (1, 'ann', '2024-05-01 10:00+00', 'completed', 'card', 110, 10),
                         (2, 'bob', '2024-05-02 11:00+00', 'completed', 'cash', 50, 0),
                         (3, 'cy', '2024-05-03 12:00+00', 'draft', 'invoice', 70, 7)""")
    db.execute("UPDATE public.sales SET total = 120 WHERE id = 1")
    db.execute("UPDATE public.sales SET status = 'completed' WHERE id = 3")
    db.execute("UPDATE public.sales SET status = 'cancelled' WHERE id = 2")
    db.execute("DELETE FROM public.sales WHERE id = 3")
    db.execute("""INSERT INTO public.purchase_requisitions (id, requested_by, department, description, amount,
                                                            status, approved_at)
                  VALUES (1, 'dee', 'ops', 'chairs', 300, 'approved', '2024-06-01 09:00+00')""")
    db.execute("""INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)
                  VALUES (1, 'acme', 300, 'bank', 'paid', '2024-06-02 09:00+00')""")
    db.execute("""INSERT INTO public.manufacturing_orders (id, product, quantity, unit_cost, state, finished_at)
                  VALUES (1, 'desk', 3, 12.5, 'done', '2024-06-03 09:00+00')""")


def journal(conn) -> list[tuple]:
    """The whole journal, ids replaced by positions, reversal dates by 'recent' (they are now())."""
    rows = conn.execute(
        """SELECT e.id, e.rule, e.source_key, e.effective_at, e.posted_at, e.memo, e.reverses,
                  array_agg(ARRAY[l.line_no::text, l.account, l.currency, l.debit::text, l.credit::text]
                            ORDER BY l.line_no)
           FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id
           GROUP BY e.id ORDER BY e.id"""
    ).fetchall()
    position = {r[0]: i for i, r in enumerate(rows)}
    now = datetime.now(timezone.utc)
    out = []
    for id_, rule, key, effective_at, posted_at, memo, reverses, lines in rows:
        assert abs(posted_at - now) < timedelta(minutes=5), posted_at
        if reverses is not None:
            assert abs(effective_at - now) < timedelta(minutes=5), effective_at
            effective_at = "recent"
        out.append((rule, key, effective_at, memo, position.get(reverses), lines))
    return out


def postings(conn) -> list[tuple]:
    return conn.execute(
        """SELECT p.rule, p.source_key, p.fingerprint, e.memo FROM ledger.posting AS p
           JOIN ledger.entry AS e ON e.id = p.entry_id ORDER BY 1, 2"""
    ).fetchall()


@pytest.fixture
def roles(conn):
    """roles.create(*attributes) -> unique role name; roles.connect(role, dsn) -> autocommit connection.

    Connections are closed, and the roles dropped with what they own, after the test.
    """

    class Roles:
        def __init__(self):
            self.made: list[str] = []
            self.connections: list[psycopg.Connection] = []
            self.databases: list[str] = []

        def create(self, *attributes: str) -> str:
            name = f"la_sec_{uuid.uuid4().hex[:10]}"
            conn.execute(sql.SQL("CREATE ROLE {} LOGIN " + " ".join(attributes)).format(ident(name)))
            self.made.append(name)
            return name

        def connect(self, role: str, dsn: str) -> psycopg.Connection:
            connection = psycopg.connect(make_conninfo(dsn, user=role), autocommit=True)
            self.connections.append(connection)
            self.databases.append(dsn)
            return connection

    r = Roles()
    yield r
    for connection in r.connections:
        connection.close()
    for dsn in dict.fromkeys(r.databases):
        try:
            db = psycopg.connect(dsn, autocommit=True)
        except psycopg.OperationalError:  # that database is gone already
            continue
        with db:
            for name in r.made:
                db.execute(sql.SQL("DROP OWNED BY {}").format(ident(name)))
    for name in r.made:
        conn.execute(sql.SQL("DROP OWNED BY {}").format(ident(name)))
        conn.execute(sql.SQL("DROP ROLE {}").format(ident(name)))


@pytest.fixture
def app(shop, dsn, roles):
    """A connection as an application role with DML on the shop tables and nothing else."""
    role = roles.create()
    grant_app_privileges(shop, role)
    connection = roles.connect(role, dsn)
    connection.role = role  # type: ignore[attr-defined]
    return connection


# -- the application role --------------------------------------------------------------


def test_app_role_writes_are_posted(shop, app):
    workload(app)
    live = shop.execute(
        """SELECT e.rule, e.source_key FROM ledger.entry AS e
           WHERE e.reverses IS NULL AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
           ORDER BY 1, 2"""
    ).fetchall()
    assert live == [("manufacturing", "1"), ("payment", "1"), ("requisition", "1"), ("sale", "1")]
    sale = shop.execute(
        """SELECT l.account, l.debit, l.credit FROM ledger.posting AS p JOIN ledger.line AS l ON l.entry_id = p.entry_id
           WHERE p.rule = 'sale' AND p.source_key = '1' ORDER BY l.account"""
    ).fetchall()
    assert sale == [("1050", 120, 0), ("2200", 0, 10), ("4000", 0, 110)]
    # postings: sale 1 twice (updated), sale 2, sale 3, requisition, payment, manufacturing;
    # reversals: sale 1 (updated), sale 2 (cancelled), sale 3 (deleted)
    assert shop.execute("SELECT count(*) FILTER (WHERE reverses IS NULL), count(reverses) FROM ledger.entry"
                        ).fetchone() == (7, 3)


@pytest.mark.parametrize("table", LEDGER_TABLES)
def test_app_role_cannot_touch_ledger_tables(shop, app, table):
    workload(app)  # so that there are rows to change
    column = ident(ledger_columns(shop, table)[0])
    target = ident("ledger", table)
    before = shop.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0]
    statements = {
        "select": sql.SQL("SELECT * FROM {}").format(target),
        "insert": sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
        "update": sql.SQL("UPDATE {} SET {} = {}").format(target, column, column),
        "delete": sql.SQL("DELETE FROM {}").format(target),
        "truncate": sql.SQL("TRUNCATE {}").format(target),
    }
    allowed = [what for what, statement in statements.items() if not refused(app, statement)]
    assert allowed == []
    assert shop.execute(sql.SQL("SELECT count(*) FROM {}").format(target)).fetchone()[0] == before


def test_app_role_has_no_privileges_on_schema_ledger(shop, app):
    privileges = ("USAGE", "CREATE")
    assert [p for p in privileges if shop.execute(
        "SELECT has_schema_privilege(%s, 'ledger', %s)", (app.role, p)).fetchone()[0]] == []
    for table in LEDGER_TABLES:
        for privilege in ("SELECT", "INSERT", "UPDATE", "DELETE", "TRUNCATE", "REFERENCES", "TRIGGER"):
            assert not shop.execute("SELECT has_table_privilege(%s, %s, %s)",
                                    (app.role, f"ledger.{table}", privilege)).fetchone()[0], (table, privilege)


CALLS = {
    "post_sale": "SELECT ledger.post_sale()",
    "record_failure": "SELECT ledger.record_failure('sale', '1', '23514', 'forged', NULL, NULL)",
    "posting_problem": "SELECT ledger.posting_problem('23514 forged', NULL)",
    "problem_message": "SELECT ledger.problem_message('23514 unbalanced', '{1,-2}')",
    "refuse_change": "SELECT ledger.refuse_change()",
    "known_account": "SELECT ledger.known_account('1000')",
    "linked_meanwhile": "SELECT ledger.linked_meanwhile('sale', 'forged')",
    "set_closed_through": "SELECT ledger.set_closed_through('2020-01-31')",
    "closed_period": "SELECT ledger.closed_period(now(), '2020-01-31')",
}


@pytest.mark.parametrize("call", CALLS)
def test_app_role_cannot_call_ledger_functions(shop, app, call):
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(CALLS[call])


@pytest.mark.parametrize("call", CALLS)
def test_even_with_usage_on_the_schema_the_functions_are_not_executable(shop, app, call):
    shop.execute(sql.SQL("GRANT USAGE ON SCHEMA ledger TO {}").format(ident(app.role)))
    name = CALLS[call].split("(")[0].removeprefix("SELECT ")
    function = shop.execute("SELECT oid FROM pg_proc WHERE oid::regproc::text = %s", (name,)).fetchone()
    assert function is not None, name
    assert not shop.execute("SELECT has_function_privilege(%s, %s, 'EXECUTE')", (app.role, function[0])).fetchone()[0]
    with pytest.raises(errors.InsufficientPrivilege, match="permission denied for function"):
        app.execute(CALLS[call])
    assert shop.execute("SELECT count(*) FROM ledger.failure").fetchone()[0] == 0


GUARD_STATEMENTS = [
    "ALTER TABLE ledger.entry DISABLE TRIGGER entry_immutable",
    "ALTER TABLE ledger.entry DISABLE TRIGGER ALL",
    "ALTER TABLE ledger.line DISABLE TRIGGER line_immutable",
    "ALTER TABLE ledger.line DISABLE TRIGGER line_no_truncate",
    "ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_insert",
    "ALTER TABLE public.sales DISABLE TRIGGER ALL",
    "DROP TRIGGER ledgeradmin_sale_update ON public.sales",
    "SET session_replication_role = replica",
]


@pytest.mark.parametrize("statement", GUARD_STATEMENTS)
def test_app_role_cannot_switch_guards_off(shop, app, statement):
    with pytest.raises(errors.InsufficientPrivilege):
        app.execute(statement)
    disabled = shop.execute(
        """SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'"""
    ).fetchall()
    assert disabled == []
    app.execute("INSERT INTO public.sales (customer, total) VALUES ('eve', 10)")
    assert shop.execute("SELECT count(*) FROM ledger.posting WHERE rule = 'sale'").fetchone()[0] == 1


# -- planted objects -------------------------------------------------------------------


def test_every_ledger_function_pins_its_search_path(shop):
    functions = shop.execute(
        """SELECT p.oid::regprocedure::text, p.prosecdef, coalesce(p.proconfig, '{}')
           FROM pg_proc AS p WHERE p.pronamespace = 'ledger'::regnamespace"""
    ).fetchall()
    posting = sorted(name for name, _, _ in functions if name.startswith("ledger.post_"))
    assert posting == ["ledger.post_manufacturing()", "ledger.post_payment()", "ledger.post_requisition()",
                       "ledger.post_sale()"]
    unpinned = [name for name, _, config in functions if "search_path=pg_catalog, pg_temp" not in config]
    assert unpinned == []
    assert [name for name, definer, _ in functions if name in posting and not definer] == []


EVIL = """
CREATE SCHEMA evil;
CREATE FUNCTION evil.md5(text) RETURNS text LANGUAGE sql AS $$ SELECT 'same for everyone' $$;
CREATE FUNCTION evil.hashtextextended(text, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 42::bigint $$;
CREATE FUNCTION evil.hash_numeric_extended(numeric, bigint) RETURNS bigint LANGUAGE sql AS $$ SELECT 0::bigint $$;
CREATE FUNCTION evil.round(numeric, integer) RETURNS numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
CREATE FUNCTION evil.now() RETURNS timestamptz LANGUAGE sql AS $$ SELECT timestamptz '1999-12-31 00:00+00' $$;
CREATE FUNCTION evil.coalesce(text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE FUNCTION evil.concat_ws(text, text, text, text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE FUNCTION evil.quote_literal(text) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE FUNCTION evil.substr(text, integer) RETURNS text LANGUAGE sql AS $$ SELECT '23514' $$;
CREATE FUNCTION evil.unnest(numeric[]) RETURNS SETOF numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
CREATE FUNCTION evil.array_position(text[], text) RETURNS integer LANGUAGE sql AS $$ SELECT 1 $$;
CREATE FUNCTION evil.greatest(numeric, numeric) RETURNS numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
CREATE FUNCTION evil.upper(text) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE FUNCTION evil.sum_sfunc(numeric, numeric) RETURNS numeric LANGUAGE sql AS $$ SELECT 0::numeric $$;
CREATE AGGREGATE evil.sum(numeric) (SFUNC = evil.sum_sfunc, STYPE = numeric, INITCOND = '0');
CREATE FUNCTION evil.text_eq(text, text) RETURNS boolean LANGUAGE plpgsql
    AS $$ BEGIN RAISE EXCEPTION 'evil = operator called'; END $$;
CREATE OPERATOR evil.= (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_eq);
CREATE FUNCTION evil.text_cat(text, text) RETURNS text LANGUAGE sql AS $$ SELECT 'evil' $$;
CREATE OPERATOR evil.|| (LEFTARG = text, RIGHTARG = text, FUNCTION = evil.text_cat);
CREATE FUNCTION evil.numeric_ne(numeric, numeric) RETURNS boolean LANGUAGE sql AS $$ SELECT false $$;
CREATE OPERATOR evil.<> (LEFTARG = numeric, RIGHTARG = numeric, FUNCTION = evil.numeric_ne);
CREATE TABLE evil.posting (rule text, source_key text, entry_id bigint, fingerprint bigint);
CREATE TABLE evil.entry (id bigint, rule text, source_key text);
CREATE TABLE evil.line (entry_id bigint, account text);
CREATE TABLE evil.account (code text);
"""


def test_objects_planted_on_the_search_path_change_nothing(shop, dsn, other_dsn, roles, conn):
    # The reference: the same writes by an application role with a clean session.
    with psycopg.connect(other_dsn, autocommit=True) as clean_db:
        install(clean_db, load_config(SHOP_TOML))
        clean_role = roles.create()
        grant_app_privileges(clean_db, clean_role)
        workload(roles.connect(clean_role, other_dsn))
        expected_journal, expected_postings = journal(clean_db), postings(clean_db)
    assert len(expected_journal) == 10

    # The attacker: the application role plants objects and puts them first on its path.
    attacker = roles.create()
    grant_app_privileges(shop, attacker)
    shop.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(
        ident(psycopg.conninfo.conninfo_to_dict(dsn)["dbname"]), ident(attacker)))
    app = roles.connect(attacker, dsn)
    app.execute(EVIL)
    app.execute("CREATE TEMP TABLE posting (rule text, source_key text, entry_id bigint, fingerprint bigint)")
    app.execute("CREATE TEMP TABLE entry (id bigint)")
    app.execute("SET search_path = evil, pg_catalog, public")
    # The planted objects do win in the attacker's own session.
    assert app.execute(
        """SELECT md5('x'), 'a' || 'b', now() = '1999-12-31 00:00+00', substr('abc', 2),
                  array_position(ARRAY['a', 'b'], 'b'), (SELECT sum(v) FROM unnest(ARRAY[1.5, 2]::numeric[]) AS v),
                  1::numeric <> 2::numeric, hashtextextended('x', 0), hash_numeric_extended(1, 0), round(1.5, 0)"""
    ).fetchone() == ("same for everyone", "evil", True, "23514", 1, 0, False, 42, 0, 0)
    with pytest.raises(psycopg.errors.RaiseException):
        app.execute("SELECT 'a'::text = 'b'::text")

    workload(app)
    assert journal(shop) == expected_journal
    assert postings(shop) == expected_postings
    assert shop.execute("SELECT count(*) FROM ledger.failure").fetchone()[0] == 0
    for table in ("posting", "entry", "line", "account"):
        assert shop.execute(sql.SQL("SELECT count(*) FROM {}").format(ident("evil", table))).fetchone()[0] == 0


# -- ledger_reader ---------------------------------------------------------------------


def test_an_auditor_sees_the_closed_period_and_a_monitor_without_it_still_verifies(shop, dsn, roles, shop_config):
    from click.testing import CliRunner

    from ledgeradmin.cli import main
    from ledgeradmin.period import close
    from ledgeradmin.verify import verify

    workload(shop)
    close(shop, shop.execute("SELECT (now() AT TIME ZONE 'UTC')::date - 5").fetchone()[0])
    auditor = roles.create("IN ROLE ledger_reader")
    shown = CliRunner().invoke(main, ["period", "--dsn", make_conninfo(dsn, user=auditor)])
    assert shown.exit_code == 0 and shown.stdout.startswith("the books are closed through "), shown.stderr
    # a monitoring role created when ledger_reader lacked the grant on period_close
    shop.execute("REVOKE SELECT ON ledger.period_close FROM ledger_reader")
    monitor = roles.create("IN ROLE ledger_reader")
    shop.execute(sql.SQL("GRANT SELECT ON ledger.posting, ledger.rule, ledger._yoyo_migration, public.sales, "
                         "public.purchase_requisitions, public.payment_vouchers, public.manufacturing_orders "
                         "TO {}").format(ident(monitor)))
    result = verify(roles.connect(monitor, dsn), shop_config)
    assert result.ok and result.closed_through is None
    shop.execute("GRANT SELECT ON ledger.period_close TO ledger_reader")


def test_ledger_reader_reads_the_journal_and_cannot_write_it(shop, dsn, roles):
    workload(shop)
    auditor = roles.create("IN ROLE ledger_reader")
    reader = roles.connect(auditor, dsn)
    for table in JOURNAL_TABLES:
        reader.execute(sql.SQL("SELECT * FROM {}").format(ident("ledger", table))).fetchall()
    assert reader.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 10
    assert reader.execute("SELECT count(*) FROM ledger.line").fetchone()[0] > 10
    assert reader.execute("SELECT count(*) FROM ledger.account").fetchone()[0] == 10

    for table in JOURNAL_TABLES:
        column = ident(ledger_columns(shop, table)[0])
        target = ident("ledger", table)
        for statement in (
            sql.SQL("INSERT INTO {} DEFAULT VALUES").format(target),
            sql.SQL("UPDATE {} SET {} = {}").format(target, column, column),
            sql.SQL("DELETE FROM {}").format(target),
            sql.SQL("TRUNCATE {}").format(target),
        ):
            assert refused(reader, statement), statement.as_string(reader)
    with pytest.raises(errors.InsufficientPrivilege):
        reader.execute("SELECT ledger.record_failure('sale', '1', '23514', 'forged', NULL, NULL)")
    assert shop.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 10

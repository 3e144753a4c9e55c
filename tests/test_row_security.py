"""Row-level security on a source table: verify and backfill compare whole tables, so a role
that the policies show only some rows must be refused (naming the rule and what to do), never
left to count the others' postings as orphaned, or to reverse them.

The setting is the usual multi-tenant one: a non-superuser owns the tables and the ledger,
and the table's row-level security is FORCEd, so that it applies to the owner too."""

from __future__ import annotations

import psycopg
import pytest
from psycopg import sql

from ledgeradmin.backfill import backfill
from ledgeradmin.config import load_config
from ledgeradmin.errors import ConfigError
from ledgeradmin.install import install
from ledgeradmin.migrate import migrate
from ledgeradmin.rename import rename
from ledgeradmin.verify import verify
from test_install import SHOP_TOML, hand_shop_to, make_role  # noqa: F401 - make_role: a fixture


@pytest.fixture
def tenants(dsn, conn, make_role):
    """An owner connection to a shop of two tenants' sales, every rule installed by the owner,
    and the sales table's row-level security forced: the owner sees the sales of the tenant
    named by the setting app.tenant, and none without it."""
    owner_dsn = hand_shop_to(conn, dsn, make_role("LOGIN", "NOSUPERUSER", "NOBYPASSRLS"))
    migrate(owner_dsn)
    with psycopg.connect(owner_dsn, autocommit=True) as db:
        install(db, load_config(SHOP_TOML))
        db.execute("INSERT INTO public.sales (customer, total, tax) SELECT CASE WHEN i % 2 = 0 THEN 'acme'"
                   " ELSE 'globex' END, 10 + i, 1 FROM generate_series(1, 40) AS i")
        db.execute("ALTER TABLE public.sales ENABLE ROW LEVEL SECURITY")
        db.execute("ALTER TABLE public.sales FORCE ROW LEVEL SECURITY")
        db.execute("CREATE POLICY tenant ON public.sales USING (customer = current_setting('app.tenant', true))")
    connection = psycopg.connect(owner_dsn, autocommit=True)
    yield connection
    connection.close()


def journal(conn) -> list[tuple]:
    return conn.execute("SELECT id, source_key, reverses FROM ledger.entry ORDER BY id").fetchall()


@pytest.mark.parametrize("tenant", [None, "acme"])
def test_verify_backfill_and_rename_refuse_a_table_they_see_in_part(tenants, conn, tenant, tmp_path):
    config = load_config(SHOP_TOML)
    if tenant:
        tenants.execute("SELECT set_config('app.tenant', %s, false)", (tenant,))
    assert tenants.execute("SELECT count(*) FROM public.sales").fetchone()[0] == (20 if tenant else 0)
    before = journal(conn)
    assert len(before) == 40

    result = verify(tenants, config)
    sale = result.rules[0]
    assert not result.ok and sale.rule == "sale" and sale.orphaned is None
    assert sale.error.startswith('rule "sale": row-level security on public.sales applies to role ')
    assert "BYPASSRLS" in sale.error
    assert all(r.error is None and r.ok for r in result.rules[1:])  # the other rules are checked

    for dry_run in (True, False):
        with pytest.raises(ConfigError, match='rule "sale": row-level security on public.sales') as err:
            backfill(tenants, config, dry_run=dry_run)
        assert "BYPASSRLS" in err.value.hint
    assert journal(conn) == before  # nothing reversed

    renamed = tmp_path / "renamed.toml"
    renamed.write_text(SHOP_TOML.read_text().replace("[rules.sale]", "[rules.sales]"))
    with pytest.raises(ConfigError, match='rule "sales": row-level security on public.sales'):
        rename(tenants, load_config(renamed), "sale", "sales")
    assert conn.execute("SELECT DISTINCT rule FROM ledger.posting WHERE source_key = '1'").fetchall() == [("sale",)]


def test_a_rule_reading_another_table_under_row_level_security_fails_verify_instead_of_seeing_part(
        tenants, conn, tmp_path):
    """A table the rule's expressions read (not its source) is filtered too: verify stops with
    an error rather than compare against the rows it happens to see."""
    conn.execute("CREATE TABLE public.tax_rates (currency text PRIMARY KEY, rate numeric)")
    conn.execute(sql.SQL("ALTER TABLE public.tax_rates OWNER TO {}").format(sql.Identifier(tenants.info.user)))
    tenants.execute("INSERT INTO public.tax_rates VALUES ('USD', 0.1)")
    tenants.execute("ALTER TABLE public.tax_rates ENABLE ROW LEVEL SECURITY")
    tenants.execute("ALTER TABLE public.tax_rates FORCE ROW LEVEL SECURITY")
    tenants.execute("CREATE POLICY visible ON public.tax_rates USING (current_setting('app.rates', true) = 'on')")
    tenants.execute("ALTER TABLE public.sales NO FORCE ROW LEVEL SECURITY")  # the source: seen whole
    config_file = tmp_path / "ledger.toml"
    config_file.write_text(SHOP_TOML.read_text().replace(
        'when = "status = \'completed\'"',
        'when = "status = \'completed\' AND EXISTS (SELECT FROM public.tax_rates AS t WHERE t.currency = r.currency)"',
        1))
    config = load_config(config_file)
    assert "tax_rates" in config.rules["sale"].when
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="row-level security"):
        verify(tenants, config, ["sale"])


def test_the_owner_of_a_table_whose_row_level_security_is_not_forced_sees_every_row(tenants, conn):
    tenants.execute("ALTER TABLE public.sales NO FORCE ROW LEVEL SECURITY")
    config = load_config(SHOP_TOML)
    assert verify(tenants, config).ok
    assert backfill(tenants, config).ok

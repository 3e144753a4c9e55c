"""Migration pipelines: `ledgeradmin sql --out DIR` applied by yoyo end to end, and
upgrading a rule on a live database (install again under traffic, verify, backfill).

Every expectation is computed here, from the source tables, by our own SQL — never by
ledgeradmin's functions. "Live" is judged from ledger.entry alone: an entry with
reverses IS NULL that no other entry reverses.
"""

from __future__ import annotations

import json
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import yoyo
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict

from ledgeradmin.cli import main

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"
SHOP_RULES = ("sale", "requisition", "payment", "manufacturing")

# --------------------------------------------------------------------------- helpers

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""


def expected_sale_lines(tax_account: str) -> str:
    """The sale rule written out by hand, with its tax line booked to ``tax_account``:
    (k, currency, account, signed amount, date) of every non-zero line of a completed sale."""
    return f"""
        SELECT * FROM (
            SELECT s.id::text AS k, s.currency::text AS currency, v.account, v.amount, s.sold_at AS d
            FROM public.sales AS s
            CROSS JOIN LATERAL (VALUES
                (CASE s.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END,
                 s.total::numeric),
                ('4000', -(s.total - s.tax)::numeric),
                ('{tax_account}', -s.tax::numeric)) AS v (account, amount)
            WHERE s.status = 'completed'
        ) AS x WHERE amount <> 0
    """


LIVE_SALE_LINES = f"""
    SELECT e.source_key AS k, l.currency, l.account, l.debit - l.credit AS amount, e.effective_at AS d
    FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
    WHERE e.rule = 'sale'
"""


def totals(conn: psycopg.Connection, query: str) -> dict[tuple[str, str], Decimal]:
    rows = conn.execute(
        f"SELECT account, currency, sum(amount) FROM ({query}) AS t GROUP BY 1, 2 HAVING sum(amount) <> 0"
    ).fetchall()
    return {(a, c): v for a, c, v in rows}


def lines_by_key(conn: psycopg.Connection, query: str) -> dict[str, tuple]:
    """key -> sorted ((currency, account, amount, date), …) of a lines query."""
    out: dict[str, list] = {}
    for k, currency, account, amount, d in conn.execute(query):
        out.setdefault(k, []).append((currency, account, amount, d))
    return {k: tuple(sorted(v)) for k, v in out.items()}


def live_count_per_key(conn: psycopg.Connection, rule: str) -> dict[str, int]:
    return dict(conn.execute(f"SELECT source_key, count(*) FROM ({LIVE_ENTRIES}) e WHERE rule = %s GROUP BY 1",
                             (rule,)).fetchall())


def assert_sales_ledger_right(conn: psycopg.Connection, tax_account: str = "2200") -> None:
    """Live sale entries: one per eligible sale, exactly its lines and date; totals per
    account and currency equal those computed from the sales table; every entry balances."""
    expected = expected_sale_lines(tax_account)
    assert totals(conn, LIVE_SALE_LINES) == totals(conn, expected)
    per_key = live_count_per_key(conn, "sale")
    assert {k for k, n in per_key.items() if n != 1} == set()
    assert lines_by_key(conn, LIVE_SALE_LINES) == lines_by_key(conn, expected)
    unbalanced = conn.execute(
        "SELECT entry_id, currency FROM ledger.line GROUP BY 1, 2 HAVING sum(debit) <> sum(credit)"
    ).fetchall()
    assert unbalanced == []


def entry_ids(conn: psycopg.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM ledger.entry")}


def ledgeradmin_triggers(conn: psycopg.Connection) -> list[str]:
    return sorted(r[0] for r in conn.execute(
        "SELECT tgname::text FROM pg_trigger WHERE NOT tgisinternal AND tgname LIKE 'ledgeradmin\\_%'"))


def cli(*args: str) -> object:
    """`ledgeradmin ARGS…` in-process; stdout and stderr apart."""
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def add_sales(conn: psycopg.Connection, first: int, n: int, sold_from: str = "2024-01-01") -> None:
    """n varied sales: payment methods, currencies, one in 5 without tax, one in 9 a draft."""
    conn.execute(
        """
        INSERT INTO public.sales (customer, sold_at, status, currency, payment_method, total, tax)
        SELECT 'customer ' || g, %(sold)s::timestamptz + g * interval '7 minutes',
               CASE WHEN g %% 9 = 0 THEN 'draft' ELSE 'completed' END,
               (ARRAY['USD', 'EUR', 'JPY'])[1 + g %% 3], (ARRAY['cash', 'card', 'invoice'])[1 + g / 3 %% 3],
               (g %% 89 * 11.37 + 3)::numeric(14, 2),
               CASE WHEN g %% 5 = 0 THEN 0 ELSE ((g %% 89 * 11.37 + 3) / 11)::numeric(14, 2) END
        FROM generate_series(%(first)s::int, %(last)s::int) AS g
        """,
        {"sold": sold_from, "first": first, "last": first + n - 1},
    )


# --------------------------------------------------------------------------- yoyo


def yoyo_uri(dsn: str) -> str:
    p = conninfo_to_dict(dsn)
    return f"postgresql+psycopg://{p['user']}@/{p['dbname']}?host={p['host']}&port={p['port']}"


def build_yoyo_migration(out: Path, migrations: Path) -> list[str]:
    """Turn `ledgeradmin sql --out` files into one yoyo migration (applied in one
    transaction) whose rollback drops the rule functions (their triggers go with them).
    Returns the rule names."""
    files = sorted(out.glob("*.sql"))
    rules = [f.stem.split("_rule_", 1)[1] for f in files if "_rule_" in f.stem]
    migrations.mkdir()
    (migrations / "0001.ledgeradmin-install.sql").write_text(
        "\n".join(f.read_text(encoding="utf-8") for f in files), encoding="utf-8"
    )
    (migrations / "0001.ledgeradmin-install.rollback.sql").write_text(
        "".join(f"DROP FUNCTION IF EXISTS ledger.post_{r}() CASCADE;\n" for r in rules)
        + "DELETE FROM ledger.rule WHERE name IN ({});\n".format(", ".join(f"'{r}'" for r in rules)),
        encoding="utf-8",
    )
    return rules


def test_yoyo_applies_and_rolls_back_the_sql_output(conn, dsn, tmp_path):
    out = tmp_path / "ledgeradmin-sql"
    done = cli("sql", "--dsn", dsn, "--config", str(SHOP_TOML), "--out", str(out))
    assert done.exit_code == 0, done.stderr
    names = sorted(p.name for p in out.iterdir())
    assert names == ["00_ledgeradmin_shared.sql", "01_rule_sale.sql", "02_rule_requisition.sql",
                     "03_rule_payment.sql", "04_rule_manufacturing.sql"]
    assert done.stdout.split() == [str(out / n) for n in names]
    assert ledgeradmin_triggers(conn) == []  # `sql` changes nothing
    assert cli("status", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 1

    rules = build_yoyo_migration(out, tmp_path / "migrations")
    assert rules == list(SHOP_RULES)
    conn.execute("INSERT INTO public.sales (id, customer, total, tax) VALUES (1, 'before', 30.00, 3.00)")

    backend = yoyo.get_backend(yoyo_uri(dsn))
    try:
        migrations = yoyo.read_migrations(str(tmp_path / "migrations"))
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        assert [m.id for m in backend.to_apply(migrations)] == []

        status = cli("status", "--dsn", dsn, "--config", str(SHOP_TOML))
        assert status.exit_code == 0, status.stdout + status.stderr
        assert len(ledgeradmin_triggers(conn)) == 4 * len(SHOP_RULES)
        # The sale written before the rules existed is history: backfill posts it.
        assert cli("verify", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 1
        assert cli("backfill", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 0
        conn.execute("INSERT INTO public.sales (id, customer, total, tax, payment_method) "
                     "VALUES (2, 'after', 110.00, 10.00, 'card')")
        conn.execute("INSERT INTO public.purchase_requisitions (requested_by, department, description, amount,"
                     " status, approved_at) VALUES ('r', 'ops', 'desk', 250, 'approved', now())")
        assert live_count_per_key(conn, "sale") == {"1": 1, "2": 1}
        assert live_count_per_key(conn, "requisition") == {"1": 1}
        assert_sales_ledger_right(conn)
        assert cli("verify", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 0

        kept = entry_ids(conn)
        with backend.lock():
            backend.rollback_migrations(backend.to_rollback(migrations))
        assert ledgeradmin_triggers(conn) == []
        assert conn.execute("SELECT count(*) FROM pg_proc WHERE proname LIKE 'post\\_%' "
                            "AND pronamespace = 'ledger'::regnamespace").fetchone()[0] == 0
        assert entry_ids(conn) == kept  # every journal row stays
        conn.execute("INSERT INTO public.sales (id, customer, total) VALUES (3, 'unposted', 5.00)")
        assert entry_ids(conn) == kept
        assert cli("status", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 1

        # Applying it again reinstalls; backfill posts what was written in between.
        with backend.lock():
            backend.apply_migrations(backend.to_apply(migrations))
        assert cli("status", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 0
        assert cli("backfill", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 0
        assert cli("verify", "--dsn", dsn, "--config", str(SHOP_TOML)).exit_code == 0
        assert_sales_ledger_right(conn)
    finally:
        backend.connection.close()


# --------------------------------------------------------------------------- upgrading a rule

OLD_MEMO = "'Sale ' || id || ' to ' || customer"
NEW_MEMO = "'Sale #' || id || ' to ' || customer"


def upgraded_config(tmp_path: Path) -> Path:
    """The shop's ledger.toml with the sale memo changed and tax booked to a new account 2300."""
    text = SHOP_TOML.read_text(encoding="utf-8")
    changed = (
        text.replace(f'memo = "{OLD_MEMO}"', f'memo = "{NEW_MEMO}"')
        .replace('{ account = "2200", credit = "tax" }', '{ account = "2300", credit = "tax" }')
        .replace("[accounts.4000]", '[accounts.2300]\nname = "Sales Tax Payable (new regime)"\n'
                                    'type = "liability"\n[accounts.4000]')
    )
    assert changed.count("2300") == 2 and NEW_MEMO in changed and OLD_MEMO not in changed
    path = tmp_path / "ledger.toml"
    path.write_text(changed, encoding="utf-8")
    return path


class Writer(threading.Thread):
    """Inserts completed, taxed sales one short transaction after another, recording for
    each the phase it started in; any error is kept, and stops it."""

    def __init__(self, dsn: str) -> None:
        super().__init__(daemon=True)
        self.dsn = dsn
        self.phase = "before"
        self.stop = threading.Event()
        self.written: list[tuple[int, str]] = []
        self.errors: list[BaseException] = []

    def count(self, phase: str) -> int:
        return sum(1 for _, p in self.written if p == phase)

    def run(self) -> None:
        try:
            with psycopg.connect(self.dsn, autocommit=True) as c:
                i = 0
                while not self.stop.is_set():
                    i += 1
                    phase = self.phase
                    rows = 3 if i % 5 == 0 else 1  # now and then a multi-row INSERT
                    ids = c.execute(
                        """
                        INSERT INTO public.sales (customer, sold_at, currency, payment_method, total, tax)
                        SELECT 'live ' || %(i)s || '/' || g,
                               timestamptz '2025-02-01 08:00+00' + %(i)s * interval '1 minute',
                               (ARRAY['USD', 'EUR'])[1 + %(i)s %% 2],
                               (ARRAY['cash', 'card', 'invoice'])[1 + %(i)s %% 3],
                               (20 + %(i)s %% 50)::numeric(14, 2), (2 + %(i)s %% 7)::numeric(14, 2)
                        FROM generate_series(1, %(rows)s) AS g
                        RETURNING id
                        """,
                        {"i": i, "rows": rows},
                    ).fetchall()
                    self.written += [(r[0], phase) for r in ids]
        except BaseException as exc:  # noqa: BLE001 - reported by the test
            self.errors.append(exc)


def wait_for(predicate, timeout: float = 20.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def test_upgrading_a_rule_on_a_live_database(shop, dsn, connect, tmp_path):
    # History under the shop's rule: sales, cancellations and amount corrections.
    add_sales(shop, 1, 300)
    shop.execute("UPDATE public.sales SET status = 'cancelled' WHERE id % 17 = 0")
    shop.execute("UPDATE public.sales SET total = total + 5 WHERE id % 23 = 0")
    assert_sales_ledger_right(shop, "2200")
    history = {r[0] for r in shop.execute("SELECT id FROM public.sales")}
    live_before = dict(shop.execute(f"SELECT id, memo FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    lines_before = shop.execute("SELECT entry_id, line_no, account, currency, debit, credit FROM ledger.line "
                                "ORDER BY 1, 2").fetchall()
    all_before = entry_ids(shop)

    new_config = upgraded_config(tmp_path)
    writer = Writer(dsn)
    writer.start()
    try:
        wait_for(lambda: writer.count("before") >= 20 or writer.errors)
        writer.phase = "during"
        done = cli("install", "--dsn", dsn, "--config", str(new_config))
        writer.phase = "after"
        wait_for(lambda: writer.count("after") >= 20 or writer.errors)
    finally:
        writer.stop.set()
        writer.join(timeout=30)
    assert done.exit_code == 0, done.stderr
    assert "updated rule sale" in done.stdout
    assert "unchanged rule requisition" in done.stdout
    assert writer.errors == []  # no write failed

    # Already-posted entries are untouched: still live, same memo, same lines (tax on 2200).
    live_now = dict(shop.execute(f"SELECT id, memo FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    assert {i: live_now.get(i) for i in live_before} == live_before
    assert shop.execute("SELECT entry_id, line_no, account, currency, debit, credit FROM ledger.line "
                        "WHERE entry_id = ANY(%s) ORDER BY 1, 2", (sorted(all_before),)).fetchall() == lines_before

    # No posting lost: every completed sale has one live entry, carrying exactly the lines of
    # the old rule or of the new one; sales begun after install returned post under the new.
    old = lines_by_key(shop, expected_sale_lines("2200"))
    new = lines_by_key(shop, expected_sale_lines("2300"))
    live = lines_by_key(shop, LIVE_SALE_LINES)
    assert set(live) == set(old) == set(new)
    assert {k for k, n in live_count_per_key(shop, "sale").items() if n != 1} == set()
    assert [k for k in live if live[k] not in (old[k], new[k])] == []
    after = {str(i) for i, p in writer.written if p == "after"}
    assert [k for k in after if live[k] != new[k]] == []
    before = {str(i) for i, p in writer.written if p == "before"} | {str(i) for i in history}
    assert [k for k in before if k in live and live[k] != old[k]] == []
    memos = dict(shop.execute(f"SELECT source_key, memo FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    customers = dict(shop.execute("SELECT id::text, customer FROM public.sales").fetchall())
    assert [k for k in after if memos[k] != f"Sale #{k} to {customers[k]}"] == []

    # verify: the sales posted under the old rule with a tax line are drifted (their desired
    # lines changed); nothing is missing or orphaned.
    drifted = {k for k in live if old[k] != new[k] and live[k] == old[k]}
    taxed_before = {r[0] for r in shop.execute(
        "SELECT id::text FROM public.sales WHERE status = 'completed' AND tax <> 0 AND id::text = ANY(%s)",
        (sorted(before),))}
    assert taxed_before <= drifted and len(taxed_before) >= 200
    verify = cli("verify", "--dsn", dsn, "--config", str(new_config), "--json", "--detailed", "--max-keys", "100000")
    assert verify.exit_code == 1, verify.stdout + verify.stderr
    report = {r["rule"]: r for r in json.loads(verify.stdout)["rules"]}
    assert (report["sale"]["missing"], report["sale"]["orphaned"]) == (0, 0)
    assert drifted <= set(report["sale"]["keys"]["drifted"])
    assert all(report[r]["drifted"] == report[r]["missing"] == report[r]["orphaned"] == 0
               for r in SHOP_RULES if r != "sale")

    # backfill reverses the drifted entries (the reversals dated now) and reposts them.
    started = shop.execute("SELECT clock_timestamp()").fetchone()[0]
    fill = cli("backfill", "--dsn", dsn, "--config", str(new_config))
    finished = shop.execute("SELECT clock_timestamp()").fetchone()[0]
    assert fill.exit_code == 0, fill.stdout + fill.stderr
    reversals = shop.execute(
        "SELECT o.source_key, r.effective_at FROM ledger.entry AS r JOIN ledger.entry AS o ON o.id = r.reverses "
        "WHERE r.rule = 'sale' AND NOT r.id = ANY(%s)", (sorted(all_before),)
    ).fetchall()
    assert drifted <= {k for k, _ in reversals}
    assert [d for _, d in reversals if not started <= d <= finished] == []
    assert cli("verify", "--dsn", dsn, "--config", str(new_config)).exit_code == 0
    assert_sales_ledger_right(shop, "2300")
    assert shop.execute("SELECT count(*) FROM ledger.line WHERE account = '2200' AND entry_id IN "
                        f"(SELECT id FROM ({LIVE_ENTRIES}) e)").fetchone()[0] == 0
    live_memos = dict(shop.execute(f"SELECT source_key, memo FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    assert [k for k in drifted if live_memos[k] != f"Sale #{k} to {customers[k]}"] == []


def test_upgrading_a_rule_drifts_exactly_the_rows_whose_posting_changes(shop, dsn, tmp_path):
    """Only a sale whose posted lines change under the new rule is drift: a sale without tax
    posts the same lines (1100/4000; the zero tax line is dropped) under both rules, and a
    memo alone is not drift (the fingerprint is date, currency, accounts and amounts)."""
    add_sales(shop, 1, 200)
    shop.execute("UPDATE public.sales SET status = 'cancelled' WHERE id % 17 = 0")
    live_before = dict(shop.execute(f"SELECT source_key, id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    taxed = {r[0] for r in shop.execute("SELECT id::text FROM public.sales WHERE status = 'completed' AND tax <> 0")}
    untaxed = {r[0] for r in shop.execute("SELECT id::text FROM public.sales WHERE status = 'completed' AND tax = 0")}
    assert taxed and untaxed and set(live_before) == taxed | untaxed

    new_config = upgraded_config(tmp_path)
    assert cli("install", "--dsn", dsn, "--config", str(new_config)).exit_code == 0
    verify = cli("verify", "--dsn", dsn, "--config", str(new_config), "--json", "--detailed", "--max-keys", "100000")
    assert verify.exit_code == 1
    sale = {r["rule"]: r for r in json.loads(verify.stdout)["rules"]}["sale"]
    assert (sale["missing"], sale["orphaned"]) == (0, 0)
    reported = set(sale["keys"]["drifted"])
    same_posting = sorted(reported - taxed, key=int)
    assert same_posting == [], "sales whose posting is the same under both rules reported as drifted"
    assert sorted(taxed - reported, key=int) == []
    assert sale["drifted"] == len(taxed)

    fill = cli("backfill", "--dsn", dsn, "--config", str(new_config), "--json")
    assert fill.exit_code == 0
    summary = {r["rule"]: r for r in json.loads(fill.stdout)["rules"]}["sale"]
    assert (summary["reposted"], summary["posted"], summary["reversed"]) == (len(taxed), 0, 0)
    live_after = dict(shop.execute(f"SELECT source_key, id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchall())
    assert {k: live_after[k] for k in untaxed} == {k: live_before[k] for k in untaxed}  # not reposted
    assert all(live_after[k] != live_before[k] for k in taxed)
    assert cli("verify", "--dsn", dsn, "--config", str(new_config)).exit_code == 0
    assert_sales_ledger_right(shop, "2300")

"""backfill (issue 4): history and repair, safe beside live traffic.

Expectations are computed by the test's own SQL from the source tables (what each shop
rule should have posted for each row), never by ledgeradmin's queries; "live" is judged
from ledger.entry alone (reverses IS NULL and reversed by no other entry).
"""

from __future__ import annotations

import datetime as dt
import json
import random
import threading
import time
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledgeradmin.backfill import backfill
from ledgeradmin.cli import main
from ledgeradmin.config import parse_config
from ledgeradmin.errors import LedgerError
from ledgeradmin.install import install
from ledgeradmin.verify import verify

REPO = Path(__file__).resolve().parents[1]
SHOP_CONFIG = REPO / "examples" / "shop" / "ledger.toml"
OLD = dt.datetime(2020, 3, 15, 10, 30, tzinfo=dt.timezone.utc)

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""

#: What the sale rule must post, written out independently: one row per line
#: (source_key, date, account, currency, debit, credit), zero lines left out.
EXPECTED_SALE_LINES = """
    SELECT source_key, effective_at, account, currency, greatest(amount, 0), greatest(-amount, 0)
    FROM (
        SELECT s.id::text AS source_key, s.sold_at AS effective_at,
               CASE s.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END AS account,
               s.currency::text AS currency, s.total::numeric AS amount
        FROM public.sales AS s WHERE s.status = 'completed'
        UNION ALL
        SELECT s.id::text, s.sold_at, '4000', s.currency::text, -(s.total - s.tax)
        FROM public.sales AS s WHERE s.status = 'completed'
        UNION ALL
        SELECT s.id::text, s.sold_at, '2200', s.currency::text, -s.tax
        FROM public.sales AS s WHERE s.status = 'completed'
    ) AS x
    WHERE amount <> 0
"""

EXPECTED_PAYMENT_LINES = """
    SELECT v.id::text, v.paid_at, '2100', 'USD', v.amount::numeric, 0::numeric
    FROM public.payment_vouchers AS v WHERE v.status = 'paid'
    UNION ALL
    SELECT v.id::text, v.paid_at, CASE v.method WHEN 'cash' THEN '1000' ELSE '1010' END, 'USD', 0, v.amount
    FROM public.payment_vouchers AS v WHERE v.status = 'paid'
"""


# --------------------------------------------------------------------------- helpers


def scalar(conn: psycopg.Connection, query: str, params=None):
    return conn.execute(query, params).fetchone()[0]


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_backfill(dsn: str, *args: str) -> tuple[int, dict]:
    result = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--json", *args)
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.stderr)
    return result.exit_code, json.loads(result.stdout)


def run_verify(dsn: str, *args: str) -> tuple[int, dict]:
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--json", "--detailed", *args)
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.stderr)
    return result.exit_code, json.loads(result.stdout)


def rule_of(doc: dict, name: str) -> dict:
    (found,) = [r for r in doc["rules"] if r["rule"] == name]
    return found


def untracked(conn: psycopg.Connection, statement: str, params=None) -> list[tuple]:
    """One write that no ledgeradmin trigger sees (session_replication_role = replica)."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        cur = conn.execute(statement, params)
        return cur.fetchall() if cur.description else []


def add_sales(conn: psycopg.Connection, n: int, *, sold_at=OLD, status_every: int = 0, tracked: bool = True,
              currency: str = "USD") -> list[int]:
    """n sales (every status_every-th a draft); through the triggers unless tracked=False."""
    statement = """
        INSERT INTO public.sales (customer, sold_at, status, currency, payment_method, total, tax)
        SELECT 'customer ' || g, %(sold_at)s::timestamptz + g * interval '1 minute',
               CASE WHEN %(every)s > 0 AND g %% %(every)s = 0 THEN 'draft' ELSE 'completed' END,
               %(currency)s, (ARRAY['cash', 'card', 'invoice'])[g %% 3 + 1],
               10 + g %% 40 + 0.25, CASE WHEN g %% 4 = 0 THEN 0 ELSE 1 + g %% 3 END
        FROM generate_series(1, %(n)s) AS g
        RETURNING id
    """
    params = {"sold_at": sold_at, "every": status_every, "n": n, "currency": currency}
    rows = conn.execute(statement, params).fetchall() if tracked else untracked(conn, statement, params)
    return [r[0] for r in rows]


def live_ledger(conn: psycopg.Connection, rule: str) -> dict[str, tuple]:
    """{source_key: (effective_at, sorted lines)} of the live entries of a rule; fails on a
    key with two live entries."""
    rows = conn.execute(
        f"""
        SELECT e.source_key, e.id, e.effective_at, l.account, l.currency, l.debit, l.credit
        FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
        WHERE e.rule = %s
        """,
        (rule,),
    ).fetchall()
    entries: dict[str, dict] = {}
    for key, entry_id, date, account, currency, debit, credit in rows:
        entries.setdefault(key, {}).setdefault(entry_id, [date, []])[1].append((account, currency, debit, credit))
    out = {}
    for key, by_id in entries.items():
        assert len(by_id) == 1, f"{rule} {key}: {len(by_id)} live entries"
        ((date, lines),) = by_id.values()
        out[key] = (date, tuple(sorted(lines)))
    return out


def expected_ledger(conn: psycopg.Connection, query: str) -> dict[str, tuple]:
    out: dict[str, list] = {}
    for key, date, account, currency, debit, credit in conn.execute(query):
        out.setdefault(key, [date, []])[1].append((account, currency, Decimal(debit), Decimal(credit)))
    return {k: (d, tuple(sorted(lines))) for k, (d, lines) in out.items()}


def assert_sales_ledger_is_right(conn: psycopg.Connection) -> None:
    """Exactly one live sale entry per completed sale, with the right lines and the sale's
    date; none for any other key."""
    live, expected = live_ledger(conn, "sale"), expected_ledger(conn, EXPECTED_SALE_LINES)
    assert set(live) - set(expected) == set(), "live entries for sales that are not completed or gone"
    assert set(expected) - set(live) == set(), "completed sales without a live entry"
    wrong = {k: (live[k], expected[k]) for k in expected if live[k] != expected[k]}
    assert wrong == {}


def assert_ledger_balanced(conn: psycopg.Connection) -> None:
    assert conn.execute(
        "SELECT entry_id FROM ledger.line GROUP BY entry_id, currency HAVING sum(debit) <> sum(credit)"
    ).fetchall() == []
    assert conn.execute(
        f"SELECT rule, source_key FROM ({LIVE_ENTRIES}) e GROUP BY 1, 2 HAVING count(*) > 1"
    ).fetchall() == []


def db_now(conn: psycopg.Connection) -> dt.datetime:
    return scalar(conn, "SELECT statement_timestamp()")


def summary_of(doc: dict, rule: str) -> dict:
    return rule_of(doc, rule)


# --------------------------------------------------------------------------- 1. repairs each problem


@pytest.fixture
def base(shop: psycopg.Connection) -> psycopg.Connection:
    """Shop with some ordinary, correctly posted traffic on every table."""
    add_sales(shop, 40, sold_at=dt.datetime(2024, 5, 1, tzinfo=dt.timezone.utc), status_every=6)
    shop.execute(
        "INSERT INTO public.purchase_requisitions (requested_by, department, description, amount, status, approved_at)"
        " SELECT 'r', 'ops', 'x' || g, 10 + g, 'approved', now() FROM generate_series(1, 5) g"
    )
    shop.execute(
        "INSERT INTO public.payment_vouchers (payee, amount, status, paid_at)"
        " SELECT 'p', 20 + g, 'paid', now() FROM generate_series(1, 5) g"
    )
    return shop


def test_missing_rows_written_with_trigger_disabled_are_posted_with_their_own_dates(base, dsn):
    with base.transaction():
        base.execute("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_insert")
        keys = add_sales(base, 3, sold_at=OLD)
        base.execute("ALTER TABLE public.sales ENABLE TRIGGER ledgeradmin_sale_insert")
    assert run_verify(dsn)[0] == 1
    code, doc = run_backfill(dsn)
    assert code == 0 and doc["ok"] is True and doc["dry_run"] is False
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reversed"], sale["reposted"], sale["failed"]) == (3, 0, 0, 0)
    assert sale["scanned"] == scalar(base, "SELECT count(*) FROM public.sales")
    for other in ("requisition", "payment", "manufacturing"):
        assert summary_of(doc, other)["posted"] == 0
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)
    live = live_ledger(base, "sale")
    for i, key in enumerate(keys, start=1):
        assert live[str(key)][0] == OLD + dt.timedelta(minutes=i), "history must keep the sale's date"
    posted_at = base.execute(
        "SELECT posted_at FROM ledger.entry WHERE rule = 'sale' AND source_key = ANY(%s)", ([str(k) for k in keys],)
    ).fetchall()
    assert all(abs(p - db_now(base)) < dt.timedelta(minutes=5) for (p,) in posted_at)


def test_replica_bulk_load_is_posted_across_batches(base, dsn):
    keys = add_sales(base, 250, status_every=5, tracked=False)
    code, doc = run_verify(dsn)
    assert rule_of(doc, "sale")["missing"] == 200
    code, doc = run_backfill(dsn, "--batch-size", "37")
    assert code == 0
    assert summary_of(doc, "sale")["posted"] == 200
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)
    assert_ledger_balanced(base)
    # a second run finds nothing to do
    code, doc = run_backfill(dsn, "--batch-size", "37")
    assert code == 0 and all(r["posted"] + r["reversed"] + r["reposted"] == 0 for r in doc["rules"])
    assert len(keys) == 250


def _entries_of(conn, rule, key):
    return conn.execute(
        "SELECT id, reverses, effective_at, memo FROM ledger.entry WHERE rule = %s AND source_key = %s ORDER BY id",
        (rule, str(key)),
    ).fetchall()


def _lines(conn, entry_id):
    return sorted(conn.execute(
        "SELECT account, currency, debit, credit FROM ledger.line WHERE entry_id = %s", (entry_id,)
    ).fetchall())


def test_drift_is_reversed_now_and_reposted_with_the_sale_date(base, dsn):
    (key,) = add_sales(base, 1, sold_at=OLD)
    (original,) = _entries_of(base, "sale", key)
    untracked(base, "UPDATE public.sales SET total = total + 7, tax = 0 WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert rule_of(doc, "sale")["keys"] == {"drifted": [str(key)]}
    code, doc = run_backfill(dsn)
    assert code == 0
    assert (summary_of(doc, "sale")["reposted"], summary_of(doc, "sale")["posted"]) == (1, 0)
    entries = _entries_of(base, "sale", key)
    assert len(entries) == 3
    first, reversal, repost = entries
    assert first == original
    assert reversal[1] == original[0], "the second entry reverses the original"
    assert abs(reversal[2] - db_now(base)) < dt.timedelta(minutes=5), "a reversal is dated when it happens"
    assert repost[1] is None and repost[2] == OLD + dt.timedelta(minutes=1)
    assert _lines(base, reversal[0]) == sorted((a, c, cr, d) for a, c, d, cr in _lines(base, original[0]))
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


@pytest.mark.parametrize(
    "change",
    ["DELETE FROM public.sales WHERE id = %s", "UPDATE public.sales SET status = 'cancelled' WHERE id = %s"],
    ids=["deleted", "left-when"],
)
def test_orphan_is_reversed_now(base, dsn, change):
    (key,) = add_sales(base, 1, sold_at=OLD)
    (original,) = _entries_of(base, "sale", key)
    untracked(base, change, (key,))
    code, doc = run_verify(dsn)
    assert rule_of(doc, "sale")["keys"] == {"orphaned": [str(key)]}
    code, doc = run_backfill(dsn, "--batch-size", "7")
    assert code == 0
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reversed"], sale["reposted"]) == (0, 1, 0)
    entries = _entries_of(base, "sale", key)
    assert len(entries) == 2 and entries[0] == original
    reversal = entries[1]
    assert reversal[1] == original[0]
    assert abs(reversal[2] - db_now(base)) < dt.timedelta(minutes=5)
    assert str(key) not in live_ledger(base, "sale")
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_orphans_of_deleted_rows_beyond_the_last_row_are_reversed(base, dsn):
    """Deleted rows with the highest keys: no remaining row's batch covers their range."""
    keys = add_sales(base, 10, sold_at=OLD)
    untracked(base, "DELETE FROM public.sales WHERE id >= %s", (keys[3],))
    code, doc = run_backfill(dsn, "--batch-size", "4")
    assert code == 0
    assert summary_of(doc, "sale")["reversed"] == 7
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_more_deleted_rows_between_two_rows_than_a_batch_holds_are_all_reversed(base, dsn):
    keys = add_sales(base, 12, sold_at=OLD)
    untracked(base, "DELETE FROM public.sales WHERE id > %s AND id < %s", (keys[0], keys[-1]))
    code, doc = run_backfill(dsn, "--batch-size", "4")
    assert code == 0
    assert summary_of(doc, "sale")["reversed"] == 10
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_every_row_deleted_reverses_every_entry(base, dsn):
    untracked(base, "DELETE FROM public.sales")
    code, doc = run_backfill(dsn, "--batch-size", "3")
    assert code == 0
    assert summary_of(doc, "sale")["reversed"] == scalar(base, "SELECT count(*) FROM ledger.entry WHERE rule = 'sale' AND reverses IS NOT NULL")
    assert live_ledger(base, "sale") == {}
    assert run_verify(dsn)[0] == 0


def _deferred_failure(conn) -> int:
    key = scalar(conn, "INSERT INTO public.payment_vouchers (payee, amount, method, status) "
                       "VALUES ('late', 64.5, 'cash', 'paid') RETURNING id")
    assert conn.execute(
        "SELECT sqlstate, resolved_at FROM ledger.failure WHERE rule = 'payment' AND source_key = %s", (str(key),)
    ).fetchall() == [("22004", None)]
    return key


def test_deferred_failure_fixed_in_the_source_is_posted_and_resolved(base, dsn):
    key = _deferred_failure(base)
    untracked(base, "UPDATE public.payment_vouchers SET paid_at = %s WHERE id = %s", (OLD, key))
    code, doc = run_verify(dsn)
    assert rule_of(doc, "payment")["keys"] == {"missing": [str(key)], "failed": [str(key)]}
    code, doc = run_backfill(dsn)
    assert code == 0
    payment = summary_of(doc, "payment")
    assert (payment["posted"], payment["failed"], payment["failed_keys"]) == (1, 0, [])
    (resolved,) = base.execute(
        "SELECT resolved_at FROM ledger.failure WHERE rule = 'payment' AND source_key = %s", (str(key),)
    ).fetchone()
    assert resolved is not None
    live = live_ledger(base, "payment")
    assert live == expected_ledger(base, EXPECTED_PAYMENT_LINES)
    assert live[str(key)][0] == OLD
    assert run_verify(dsn)[0] == 0


def test_deferred_failure_of_a_deleted_row_is_resolved(base, dsn):
    key = _deferred_failure(base)
    untracked(base, "DELETE FROM public.payment_vouchers WHERE id = %s", (key,))
    assert run_verify(dsn)[0] == 1
    code, doc = run_backfill(dsn)
    assert code == 0
    assert scalar(base, "SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL") == 0
    assert run_verify(dsn)[0] == 0


def test_deferred_failure_not_fixed_stays_failed(base, dsn):
    key = _deferred_failure(base)
    code, doc = run_backfill(dsn)
    assert code == 1 and doc["ok"] is False
    payment = summary_of(doc, "payment")
    assert (payment["failed"], payment["failed_keys"]) == (1, [str(key)])
    sqlstate, attempts, resolved = base.execute(
        "SELECT sqlstate, attempts, resolved_at FROM ledger.failure WHERE rule = 'payment' AND source_key = %s",
        (str(key),),
    ).fetchone()
    assert (sqlstate, resolved) == ("22004", None)
    assert attempts == 2  # the trigger's attempt and backfill's
    assert scalar(base, "SELECT count(*) FROM ledger.failure") == 1
    text = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert text.exit_code == 1
    assert f"still failing: {key}" in text.stdout


def test_all_problem_kinds_at_once(base, dsn):
    missing = add_sales(base, 30, status_every=4, tracked=False)
    drifted = add_sales(base, 6)
    untracked(base, "UPDATE public.sales SET total = total * 2 WHERE id = ANY(%s)", (drifted,))
    gone = add_sales(base, 5)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (gone,))
    cancelled = add_sales(base, 4)
    untracked(base, "UPDATE public.sales SET status = 'cancelled' WHERE id = ANY(%s)", (cancelled,))
    untracked(base, "UPDATE public.sales SET payment_method = 'card' WHERE id = %s", (missing[1],))
    code, doc = run_backfill(dsn, "--batch-size", "9")
    assert code == 0
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reposted"], sale["reversed"]) == (
        sum(1 for i in range(1, 31) if i % 4), 6, 9)
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)
    assert_ledger_balanced(base)


# --------------------------------------------------------------------------- 2. --limit and --dry-run


def _new_entries(conn, since_id: int) -> list[tuple]:
    return conn.execute("SELECT rule, source_key, reverses FROM ledger.entry WHERE id > %s", (since_id,)).fetchall()


def test_limit_repairs_at_most_n_rows_and_a_second_run_finishes(base, dsn):
    add_sales(base, 30, tracked=False)
    last = scalar(base, "SELECT coalesce(max(id), 0) FROM ledger.entry")
    code, doc = run_backfill(dsn, "--limit", "7", "--batch-size", "4")
    assert code == 0
    assert doc["limit_reached"] is True
    assert summary_of(doc, "sale")["posted"] == 7
    new = _new_entries(base, last)
    assert len(new) == 7 and len({k for _, k, _ in new}) == 7
    assert rule_of(run_verify(dsn)[1], "sale")["missing"] == 23

    text = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--limit", "5")
    assert text.exit_code == 0
    assert "limit reached" in text.stdout
    assert rule_of(run_verify(dsn)[1], "sale")["missing"] == 18

    code, doc = run_backfill(dsn, "--batch-size", "4")
    assert code == 0 and doc["limit_reached"] is False
    assert summary_of(doc, "sale")["posted"] == 18
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_limit_counts_repairs_of_every_kind_and_across_rules(base, dsn):
    drifted = add_sales(base, 3)
    untracked(base, "UPDATE public.sales SET total = total + 1 WHERE id = ANY(%s)", (drifted,))
    add_sales(base, 3, tracked=False)
    untracked(
        base,
        "INSERT INTO public.purchase_requisitions (requested_by, department, description, amount, status, approved_at)"
        " SELECT 'r', 'ops', 'late' || g, 5, 'approved', now() FROM generate_series(1, 4) g",
    )
    last = scalar(base, "SELECT max(id) FROM ledger.entry")
    code, doc = run_backfill(dsn, "--limit", "5", "--batch-size", "2")
    assert code == 0
    repaired = sum(r["posted"] + r["reversed"] + r["reposted"] for r in doc["rules"])
    assert repaired == 5
    changed_keys = {(rule, key) for rule, key, _ in _new_entries(base, last)}
    assert len(changed_keys) == 5
    code, vdoc = run_verify(dsn)
    assert sum(r["missing"] + r["drifted"] + r["orphaned"] for r in vdoc["rules"]) == 10 - 5
    code, doc = run_backfill(dsn, "--limit", "100")
    assert code == 0 and doc["limit_reached"] is False
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def snapshot(conn: psycopg.Connection) -> dict[str, tuple]:
    """Row count and checksum of every table of the public and ledger schemas."""
    tables = [
        r[0]
        for r in conn.execute(
            "SELECT format('%I.%I', schemaname, tablename) FROM pg_tables"
            " WHERE schemaname IN ('public', 'ledger') ORDER BY 1"
        )
    ]
    assert "ledger.entry" in tables and "public.sales" in tables
    return {
        t: conn.execute(f"SELECT count(*), md5(coalesce(string_agg(x::text, '|' ORDER BY x::text), '')) FROM {t} AS x").fetchone()
        for t in tables
    }


def test_dry_run_changes_nothing_and_reports_what_would_change(base, dsn):
    missing = add_sales(base, 6, tracked=False)
    drifted = add_sales(base, 2)
    untracked(base, "UPDATE public.sales SET tax = tax + 1 WHERE id = ANY(%s)", (drifted,))
    gone = add_sales(base, 3)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (gone,))
    _deferred_failure(base)
    before = snapshot(base)
    code, doc = run_backfill(dsn, "--dry-run", "--detailed", "--batch-size", "2")
    assert snapshot(base) == before
    assert doc["dry_run"] is True
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reposted"], sale["reversed"]) == (6, 2, 3)
    assert sorted(sale["keys"]["missing"], key=int) == [str(k) for k in missing]
    assert sorted(sale["keys"]["drifted"], key=int) == [str(k) for k in drifted]
    assert sorted(sale["keys"]["orphaned"], key=int) == [str(k) for k in gone]
    text = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--dry-run", "--limit", "4")
    assert text.exit_code in (0, 1)
    assert "nothing was changed" in text.stdout
    assert "would repair 4 rows" in text.stdout
    assert snapshot(base) == before
    # the real run then does exactly what the dry run announced
    code, real = run_backfill(dsn)
    real_sale = summary_of(real, "sale")
    assert (real_sale["posted"], real_sale["reposted"], real_sale["reversed"]) == (6, 2, 3)


def test_more_reversals_than_allowed_refuse_the_run_before_any_change(base, dsn):
    """A mass of orphans (a dropped partition, a replaced table, a wrong `when`) is refused
    whole, with the count, before anything is posted or reversed; the dry run says so; a
    run allowed that many repairs everything."""
    gone = add_sales(base, 6)
    left = add_sales(base, 2)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (gone,))
    untracked(base, "UPDATE public.sales SET status = 'cancelled' WHERE id = ANY(%s)", (left,))
    add_sales(base, 3, tracked=False)  # missing: held back too, the run is refused whole
    before = snapshot(base)
    args = ["backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--max-reversals", "7"]
    refused = cli(*args)
    assert refused.exit_code == 2
    assert snapshot(base) == before
    assert ('Error: backfill refused, nothing was changed: rule "sale" would reverse 8 live entries whose rows are'
            " gone or no longer post, more than --max-reversals 7") in refused.stderr
    assert "dropped or detached partition" in refused.stderr and "--max-reversals 8" in refused.stderr

    dry = cli(*args, "--dry-run")
    assert dry.exit_code == 1 and snapshot(base) == before
    assert "  sale: a real run refuses this rule: it would reverse 8 live entries" in dry.stdout
    code, doc = run_backfill(dsn, "--max-reversals", "7", "--dry-run")
    assert code == 1 and doc["ok"] is False and "more than --max-reversals 7" in summary_of(doc, "sale")["refused"]
    assert "refused" not in summary_of(doc, "payment")

    code, doc = run_backfill(dsn, "--max-reversals", "8")
    assert code == 0
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reversed"], sale["reposted"]) == (3, 8, 0) and "refused" not in sale
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_a_thousand_reversals_at_most_by_default(base, shop_config):
    """The library's default is the CLI's: 1,000 reversals pass, 1,001 are refused."""
    keys = add_sales(base, 1001)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (keys[1:],))
    result = backfill(base, shop_config, dry_run=True)
    assert result.ok and summary_of_result(result, "sale").reversed == 1000
    untracked(base, "DELETE FROM public.sales WHERE id = %s", (keys[0],))
    with pytest.raises(LedgerError, match='rule "sale" would reverse 1,001 live entries'):
        backfill(base, shop_config)
    assert summary_of_result(backfill(base, shop_config, max_reversals=None), "sale").reversed == 1001


def summary_of_result(result, rule: str):
    (found,) = [r for r in result.rules if r.rule == rule]
    return found


def test_reversals_are_counted_even_when_a_row_cannot_be_evaluated(conn):
    """A deferred row whose amount raises (division by zero) keeps verify from counting the
    rule; backfill's guard then counts the live entries of rows that are gone."""
    conn.execute("CREATE TABLE public.shares (id int PRIMARY KEY, parts numeric NOT NULL)")
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"share": {
            "source": "public.shares", "on_error": "defer",
            "lines": [{"account": "1100", "debit": "100 / parts"}, {"account": "4000", "credit": "100 / parts"}],
        }},
    })
    install(conn, config)
    conn.execute("INSERT INTO public.shares SELECT g, g FROM generate_series(0, 5) AS g")  # 0 is deferred
    untracked(conn, "DELETE FROM public.shares WHERE id IN (1, 2, 3)")
    assert verify(conn, config).rules[0].error is not None
    before = journal(conn)
    with pytest.raises(LedgerError, match='rule "share" would reverse 3 live entries'):
        backfill(conn, config, max_reversals=2)
    assert journal(conn) == before
    result = backfill(conn, config, max_reversals=3)
    (summary,) = result.rules
    assert (summary.reversed, summary.failed, summary.failed_keys) == (3, 1, ["0"])


def journal(conn) -> list[tuple]:
    return conn.execute("SELECT id, source_key, reverses FROM ledger.entry ORDER BY id").fetchall()


# --------------------------------------------------------------------------- 3. bad rows


@pytest.mark.parametrize("fix", ["USD", "EUR"])
def test_bad_row_is_recorded_and_the_run_goes_on(base, dsn, fix):
    keys = add_sales(base, 20, tracked=False)
    bad = keys[9]
    untracked(base, "UPDATE public.sales SET currency = 'usd' WHERE id = %s", (bad,))
    code, doc = run_backfill(dsn, "--batch-size", "8")
    assert code == 1 and doc["ok"] is False
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["failed"], sale["failed_keys"]) == (19, 1, [str(bad)])
    (sqlstate, message, resolved) = base.execute(
        "SELECT sqlstate, message, resolved_at FROM ledger.failure WHERE rule = 'sale' AND source_key = %s",
        (str(bad),),
    ).fetchone()
    assert resolved is None
    assert sqlstate == "22023"
    assert "usd" in message and "currency" in message
    assert str(bad) not in live_ledger(base, "sale")
    code, vdoc = run_verify(dsn)
    assert rule_of(vdoc, "sale")["keys"] == {"missing": [str(bad)], "failed": [str(bad)]}

    untracked(base, "UPDATE public.sales SET currency = %s WHERE id = %s", (fix, bad))
    code, doc = run_backfill(dsn, "--batch-size", "8")
    assert code == 0
    assert (summary_of(doc, "sale")["posted"], summary_of(doc, "sale")["failed"]) == (1, 0)
    assert scalar(base, "SELECT resolved_at IS NOT NULL FROM ledger.failure WHERE source_key = %s", (str(bad),))
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


@pytest.mark.parametrize("fix", ["USD", "EUR"], ids=["fixed-back", "fixed-other"])
def test_bad_update_of_a_posted_row_keeps_its_entry_until_fixed(base, dsn, fix):
    keys = add_sales(base, 12)
    bad = keys[4]
    before = live_ledger(base, "sale")[str(bad)]
    untracked(base, "UPDATE public.sales SET currency = 'usd' WHERE id = %s", (bad,))
    untracked(base, "UPDATE public.sales SET total = total + 1 WHERE id = ANY(%s)", ([keys[3], keys[5]],))
    code, doc = run_backfill(dsn, "--batch-size", "5")
    assert code == 1
    sale = summary_of(doc, "sale")
    assert (sale["reposted"], sale["failed"], sale["failed_keys"]) == (2, 1, [str(bad)])
    assert live_ledger(base, "sale")[str(bad)] == before
    untracked(base, "UPDATE public.sales SET currency = %s WHERE id = %s", (fix, bad))
    code, doc = run_backfill(dsn, "--batch-size", "5")
    assert code == 0
    assert summary_of(doc, "sale")["reposted"] == (0 if fix == "USD" else 1)
    assert scalar(base, "SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL") == 0
    assert run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)


def test_many_bad_rows_are_isolated(base, dsn):
    keys = add_sales(base, 64, tracked=False)
    bad = keys[::9]
    untracked(base, "UPDATE public.sales SET currency = 'us$' WHERE id = ANY(%s)", (bad,))
    code, doc = run_backfill(dsn, "--batch-size", "16")
    assert code == 1
    sale = summary_of(doc, "sale")
    assert sale["posted"] == 64 - len(bad)
    assert sorted(sale["failed_keys"], key=int) == [str(k) for k in bad]
    assert sorted(
        int(k) for (k,) in base.execute("SELECT source_key FROM ledger.failure WHERE resolved_at IS NULL")
    ) == bad


# --------------------------------------------------------------------------- batches and locks


def test_each_batch_commits_and_no_lock_is_held_between_batches(base, dsn, shop_config, connect):
    add_sales(base, 50, tracked=False)
    worker = connect(autocommit=True)
    pid = worker.info.backend_pid
    watcher = connect(autocommit=True)
    seen = []

    def progress(summary, estimate):
        assert isinstance(estimate, int)
        assert worker.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
        locks = scalar(watcher, "SELECT count(*) FROM pg_locks WHERE pid = %s AND locktype <> 'virtualxid'", (pid,))
        committed = scalar(watcher, "SELECT count(*) FROM ledger.entry WHERE rule = 'sale'")
        seen.append((summary.rule, summary.scanned, summary.posted, locks, committed))

    result = backfill(worker, shop_config, ["sale"], batch_size=10, progress=progress)
    assert result.ok
    assert len(seen) >= 9  # 90 rows in batches of 10
    assert all(locks == 0 for *_, locks, _ in seen), seen
    # what a batch posted is committed (seen by another session) before the next one starts
    base_entries = seen[0][4] - seen[0][2]
    assert all(committed == base_entries + posted for _, _, posted, _, committed in seen), seen
    assert [s for _, s, *_ in seen] == sorted(s for _, s, *_ in seen)


def test_rows_locked_by_a_writer_are_skipped_not_waited_for(base, dsn, connect):
    keys = add_sales(base, 10, tracked=False)
    writer = connect()
    writer.execute("SELECT * FROM public.sales WHERE id = %s FOR UPDATE", (keys[4],))
    started = time.monotonic()
    result = cli("backfill", "--dsn", dsn + " options='-c lock_timeout=3000'", "--config", str(SHOP_CONFIG),
                 "--json", "--batch-size", "3")
    assert time.monotonic() - started < 3
    assert result.exit_code == 0, result.output
    assert summary_of(json.loads(result.stdout), "sale")["posted"] == 9
    writer.rollback()
    code, doc = run_verify(dsn)
    assert rule_of(doc, "sale")["keys"] == {"missing": [str(keys[4])]}
    assert run_backfill(dsn)[0] == 0
    assert run_verify(dsn)[0] == 0


@pytest.mark.parametrize("with_orphan", [False, True], ids=["missing-only", "with-orphan"])
def test_a_lock_timeout_is_an_error_not_bad_rows(base, dsn, connect, with_orphan):
    """A batch that cannot take its locks (here: a session holds SHARE on ledger.entry and
    the DBA set lock_timeout) is a "could not run" (exit 2), not bad data: nothing goes to
    ledger.failure — least of all rows that were in sync."""
    add_sales(base, 2, tracked=False)
    if with_orphan:
        gone = add_sales(base, 1)
        untracked(base, "DELETE FROM public.sales WHERE id = %s", (gone[0],))
    locker = connect()
    locker.execute("LOCK TABLE ledger.entry IN SHARE MODE")
    try:
        result = CliRunner().invoke(
            main,
            ["backfill", "--dsn", dsn + " options='-c lock_timeout=1'", "--config", str(SHOP_CONFIG), "--json"],
        )
    finally:
        locker.rollback()
    assert not isinstance(result.exception, RecursionError), "backfill recursed without end"
    assert result.exit_code == 2, (result.exit_code, repr(result.exception), result.output[-500:])
    assert "lock timeout" in result.stderr
    assert base.execute("SELECT rule, source_key, sqlstate FROM ledger.failure").fetchall() == []


def test_json_summary_has_the_documented_shape(base, dsn):
    add_sales(base, 2, tracked=False)
    code, doc = run_backfill(dsn, "--batch-size", "10")
    assert code == 0
    assert set(doc) >= {"ok", "dry_run", "limit_reached", "since", "duration_seconds", "rules"}
    assert doc["since"] is None
    assert doc["ok"] is True and doc["dry_run"] is False and doc["limit_reached"] is False
    assert isinstance(doc["duration_seconds"], (int, float)) and doc["duration_seconds"] >= 0
    assert [r["rule"] for r in doc["rules"]] == ["sale", "requisition", "payment", "manufacturing"]
    for r in doc["rules"]:
        assert set(r) >= {"rule", "source", "scanned", "posted", "reversed", "reposted", "failed", "failed_keys"}
        for k in ("scanned", "posted", "reversed", "reposted", "failed"):
            assert isinstance(r[k], int) and not isinstance(r[k], bool) and r[k] >= 0
        assert r["failed_keys"] == []
    sale = summary_of(doc, "sale")
    assert (sale["source"], sale["posted"], sale["scanned"]) == (
        "public.sales", 2, scalar(base, "SELECT count(*) FROM public.sales"))
    assert summary_of(doc, "requisition")["scanned"] == 5


def test_unknown_rule_and_bad_dsn_exit_2(shop, dsn):
    result = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--rule", "nope")
    assert result.exit_code == 2 and "nope" in result.stderr
    result = cli("backfill", "--dsn", "host=/nonexistent dbname=x", "--config", str(SHOP_CONFIG))
    assert result.exit_code == 2 and result.stderr.startswith("Error:")


def test_rule_option_repairs_only_that_rule(base, dsn):
    add_sales(base, 3, tracked=False)
    untracked(
        base,
        "INSERT INTO public.purchase_requisitions (requested_by, department, description, amount, status, approved_at)"
        " VALUES ('r', 'ops', 'late', 5, 'approved', now())",
    )
    code, doc = run_backfill(dsn, "--rule", "requisition")
    assert code == 0 and [r["rule"] for r in doc["rules"]] == ["requisition"]
    assert summary_of(doc, "requisition")["posted"] == 1
    code, vdoc = run_verify(dsn)
    assert rule_of(vdoc, "sale")["missing"] == 3 and rule_of(vdoc, "requisition")["missing"] == 0


# --------------------------------------------------------------------------- 4. concurrency


def test_backfill_beside_writers_and_a_second_backfill(shop, dsn, shop_config, connect):
    add_sales(shop, 400, status_every=5)
    posted = [r[0] for r in shop.execute("SELECT id FROM public.sales ORDER BY id")]
    untracked(shop, "UPDATE public.sales SET total = total + 2 WHERE id = ANY(%s)", (posted[::3],))
    untracked(shop, "DELETE FROM public.sales WHERE id = ANY(%s)", (posted[1::7],))
    untracked(shop, "UPDATE public.sales SET status = 'cancelled' WHERE id = ANY(%s)", (posted[2::11],))
    add_sales(shop, 3000, status_every=6, tracked=False)
    max_id = scalar(shop, "SELECT max(id) FROM public.sales")

    stop = threading.Event()
    errors: list[BaseException] = []
    writes = [0]
    results = []
    windows = []
    start = threading.Barrier(2)

    def writer(seed: int) -> None:
        conn = connect(autocommit=True)
        r = random.Random(seed)
        try:
            while not stop.is_set() or writes[0] < 300:
                op = r.random()
                key = r.randint(1, max_id + 200)
                try:
                    if op < 0.35:
                        conn.execute(
                            "INSERT INTO public.sales (customer, status, payment_method, total, tax) "
                            "VALUES ('live', %s, %s, %s, %s)",
                            (r.choice(["completed", "completed", "draft"]), r.choice(["cash", "card", "invoice"]),
                             r.randint(5, 500), r.randint(0, 4)),
                        )
                    elif op < 0.75:
                        conn.execute(
                            "UPDATE public.sales SET total = total + 1, "
                            "status = CASE WHEN %s THEN 'completed' ELSE status END WHERE id = %s",
                            (r.random() < 0.3, key),
                        )
                    elif op < 0.85:
                        conn.execute(
                            "UPDATE public.sales SET status = 'cancelled' WHERE id = %s", (key,)
                        )
                    else:
                        conn.execute("DELETE FROM public.sales WHERE id = %s", (key,))
                    writes[0] += 1
                except Exception as exc:  # noqa: BLE001 - any failed application write fails the test
                    errors.append(exc)
        finally:
            conn.close()

    def backfiller(batch_size: int) -> None:
        conn = connect(autocommit=True)
        start.wait()
        began, writes_before = time.monotonic(), writes[0]
        try:
            results.append(backfill(conn, shop_config, ["sale"], batch_size=batch_size))
        except BaseException as exc:  # noqa: BLE001
            results.append(exc)
        windows.append((began, time.monotonic(), writes[0] - writes_before))

    writers = [threading.Thread(target=writer, args=(seed,)) for seed in range(3)]
    for t in writers:
        t.start()
    backfills = [threading.Thread(target=backfiller, args=(size,)) for size in (25, 40)]
    for t in backfills:
        t.start()
    for t in backfills:
        t.join(120)
    stop.set()
    for t in writers:
        t.join(60)
    assert not any(t.is_alive() for t in writers + backfills)
    assert errors == [], f"{len(errors)} application writes failed: {errors[:3]}"
    assert writes[0] >= 300
    (a_start, a_end, a_writes), (b_start, b_end, b_writes) = windows
    assert max(a_start, b_start) < min(a_end, b_end), "the two backfills did not overlap"
    assert min(a_writes, b_writes) >= 20, f"too few application writes during the backfills: {windows}"
    assert len(results) == 2
    for r in results:
        assert not isinstance(r, BaseException), repr(r)
        assert r.ok, r.as_dict()
    # together the two runs repaired at least what was broken before they started, no more
    # than once per key: every key's live entry count is checked below
    final = backfill(connect(autocommit=True), shop_config, ["sale"], batch_size=100)
    assert final.ok
    result = verify(shop, shop_config)
    assert result.ok, result.as_dict()
    assert_sales_ledger_is_right(shop)
    assert_ledger_balanced(shop)


@pytest.mark.parametrize("kind", ["integer", "text"])
def test_a_key_inserted_again_after_it_was_found_gone_keeps_its_new_entry(conn, connect, monkeypatch, kind):
    """A writer that inserts a deleted key again, and commits, between backfill's search
    for gone keys and its reconcile, has posted the row: backfill leaves that entry live."""
    from ledgeradmin import backfill as backfill_module

    column = "no integer" if kind == "integer" else "code text"
    conn.execute(f"CREATE TABLE public.tickets ({column} PRIMARY KEY, amount numeric NOT NULL)")
    key = "no" if kind == "integer" else "code"
    config = parse_config({"accounts": ACCOUNTS, "rules": {"ticket": {
        "source": "public.tickets",
        "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]}}})
    install(conn, config)
    values = [(5, 10), (6, 11)] if kind == "integer" else [("e", 10), ("f", 11)]
    conn.cursor().executemany("INSERT INTO public.tickets VALUES (%s, %s)", values)
    untracked(conn, f"DELETE FROM public.tickets WHERE {key} = ANY(%s)", ([v[0] for v in values],))
    writer = connect(autocommit=True)
    found_gone = backfill_module._outside_rows

    def insert_again_then(*args):  # runs after the gone keys are found, before their reconcile
        if not writer.execute("SELECT count(*) FROM public.tickets").fetchone()[0]:
            writer.execute("INSERT INTO public.tickets VALUES (%s, 20)", (values[0][0],))
        return found_gone(*args)

    monkeypatch.setattr(backfill_module, "_outside_rows", insert_again_then)
    (summary,) = backfill(conn, config).rules
    assert summary.reversed == 1  # the other key, gone for good
    live = live_ledger(conn, "ticket")
    assert set(live) == {str(values[0][0])} and live[str(values[0][0])][1][0][2] == 20
    assert verify(conn, config).ok


# --------------------------------------------------------------------------- 5. terminated mid-run


def _setup_termination_data(conn: psycopg.Connection) -> None:
    """1,600 sales; in every key range some are missing (odd ids, written untracked), some
    drifted, some orphaned by a delete or by leaving `when` (even ids, posted, then changed
    untracked)."""
    install(conn, _shop_config())
    insert = """
        INSERT INTO public.sales (id, customer, sold_at, status, payment_method, total, tax)
        SELECT g, 'c' || g, timestamptz '2021-01-01 00:00+00' + g * interval '1 hour',
               CASE WHEN g %% 7 = 0 THEN 'draft' ELSE 'completed' END,
               (ARRAY['cash', 'card', 'invoice'])[g %% 3 + 1], 5 + g %% 70, g %% 4
        FROM generate_series(1, 1600) AS g WHERE g %% 2 = %s
    """
    conn.execute(insert, (0,))
    untracked(conn, insert, (1,))
    untracked(conn, "UPDATE public.sales SET total = total + 3 WHERE id % 8 = 0")
    untracked(conn, "DELETE FROM public.sales WHERE id % 18 = 0")
    untracked(conn, "UPDATE public.sales SET status = 'cancelled' WHERE id % 20 = 2")


def _shop_config():
    from ledgeradmin.config import load_config

    return load_config(SHOP_CONFIG)


def ledger_state(conn: psycopg.Connection) -> dict:
    """The ledger without ids: live entries per key (date, memo, lines), and the reversals
    per key (their lines); enough to tell two runs apart."""
    live = {}
    for rule, key, date, memo, lines in conn.execute(
        f"""
        SELECT e.rule, e.source_key, e.effective_at, e.memo,
               (SELECT array_agg((l.line_no, l.account, l.currency, l.debit, l.credit)::text ORDER BY l.line_no)
                FROM ledger.line AS l WHERE l.entry_id = e.id)
        FROM ({LIVE_ENTRIES}) AS e
        """
    ):
        assert (rule, key) not in live
        live[(rule, key)] = (date, memo, tuple(lines))
    reversals = sorted(
        conn.execute(
            """
            SELECT r.rule, r.source_key,
                   (SELECT array_agg((l.account, l.currency, l.debit, l.credit)::text ORDER BY l.line_no)
                    FROM ledger.line AS l WHERE l.entry_id = r.id)::text
            FROM ledger.entry AS r WHERE r.reverses IS NOT NULL
            """
        ).fetchall()
    )
    entries = scalar(conn, "SELECT count(*) FROM ledger.entry")
    failures = scalar(conn, "SELECT count(*) FROM ledger.failure")
    return {"live": live, "reversals": reversals, "entries": entries, "failures": failures}


@pytest.fixture
def twin_dsns(dsn: str, pg_server):
    """Two databases with identical data: the test's own and a copy made from it."""
    with psycopg.connect(dsn, autocommit=True) as conn:
        _setup_termination_data(conn)
    params = conninfo_to_dict(dsn)
    copy_name = params["dbname"] + "_twin"
    admin = psycopg.connect(make_conninfo(dsn, dbname="postgres"), autocommit=True)
    try:
        admin.execute(f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)')
        admin.execute(f'CREATE DATABASE "{copy_name}" TEMPLATE "{params["dbname"]}"')
        yield dsn, make_conninfo(dsn, dbname=copy_name)
    finally:
        admin.execute(f'DROP DATABASE IF EXISTS "{copy_name}" WITH (FORCE)')
        admin.close()


@pytest.mark.parametrize("where", ["between-batches", "inside-a-batch"])
def test_terminated_backfill_converges_to_an_uninterrupted_run(twin_dsns, where):
    killed_dsn, clean_dsn = twin_dsns
    config = _shop_config()
    with psycopg.connect(killed_dsn, autocommit=True) as check:
        before = ledger_state(check)
    victim = psycopg.connect(killed_dsn, autocommit=True)
    killer = psycopg.connect(killed_dsn, autocommit=True)
    locker = psycopg.connect(killed_dsn)
    pid = victim.info.backend_pid
    batches = [0]
    outcome: dict = {}

    def progress(summary, estimate):
        batches[0] += 1
        if batches[0] == 2:
            if where == "between-batches":
                killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
            else:  # the next batch, its rows locked and entries written, will wait to link
                # postings of keys another transaction is linking: killed there
                locker.execute("""INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
                                  SELECT 'sale', s.id, s.id::text, -s.id, 0
                                  FROM public.sales AS s
                                  WHERE s.id BETWEEN 150 AND 450
                                    AND NOT EXISTS (SELECT FROM ledger.posting AS p
                                                    WHERE p.rule = 'sale' AND p.key_num = s.id)""")

    def run():
        try:
            outcome["result"] = backfill(victim, config, batch_size=100, progress=progress)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        if where == "inside-a-batch":
            deadline = time.monotonic() + 20
            while scalar(killer, "SELECT wait_event_type FROM pg_stat_activity WHERE pid = %s", (pid,)) != "Lock":
                assert time.monotonic() < deadline and thread.is_alive(), outcome
                time.sleep(0.01)
            assert scalar(killer, "SELECT backend_xid IS NOT NULL FROM pg_stat_activity WHERE pid = %s", (pid,))
            killer.execute("SELECT pg_terminate_backend(%s)", (pid,))
    finally:
        thread.join(60)
        locker.rollback()
    assert "error" in outcome, "the backfill was not interrupted"
    with psycopg.connect(killed_dsn, autocommit=True) as check:
        partial = ledger_state(check)
        assert partial["entries"] > before["entries"], "the first batches committed"
        assert not verify(check, config).ok, "killed before the end"
        assert scalar(check, "SELECT count(*) FROM ledger.failure") == 0, "the kill was recorded as a bad row"
    for c in (victim, killer, locker):
        c.close()

    with psycopg.connect(killed_dsn, autocommit=True) as again:
        resumed = backfill(again, config, batch_size=100)
        assert resumed.ok
        assert verify(again, config).ok
        assert_sales_ledger_is_right(again)
        killed_state = ledger_state(again)
    with psycopg.connect(clean_dsn, autocommit=True) as twin:
        assert ledger_state(twin) == before
        uninterrupted = backfill(twin, config, batch_size=100)
        assert uninterrupted.ok
        assert verify(twin, config).ok
        clean_state = ledger_state(twin)
    assert killed_state["live"] == clean_state["live"]
    assert killed_state["reversals"] == clean_state["reversals"]
    assert killed_state["entries"] == clean_state["entries"]
    assert killed_state["failures"] == clean_state["failures"] == 0
    sale_done = uninterrupted.rules[0]
    assert sale_done.rule == "sale" and sale_done.posted > 0 and sale_done.reversed > 0 and sale_done.reposted > 0
    assert resumed.rules[0].repaired < sale_done.repaired
    # a killed connection stops the run with an error that names it and says how to resume
    error = outcome["error"]
    assert isinstance(error, LedgerError), repr(error)[:300]
    assert "57P01" in error.message and "run backfill again" in error.hint


# --------------------------------------------------------------------------- 6. keys that are not one integer

ACCOUNTS = {
    "1100": {"name": "Accounts Receivable", "type": "asset"},
    "4000": {"name": "Sales Revenue", "type": "income"},
}

TEXT_KEYS = ["a", "A", "a'b", "a b", "comma,key", "(paren)", "é", "Z", "10", "9", "zz", "-", "ß", "\"q\"", "x" * 40]

KEYED_TABLES = {
    "text": (
        "CREATE TABLE public.gift_cards (code text PRIMARY KEY, amount numeric(12, 2) NOT NULL,"
        " state text NOT NULL, issued_at timestamptz NOT NULL)",
        ["code"],
        "code",
    ),
    "composite": (
        "CREATE TABLE public.gift_cards (region text NOT NULL, no integer NOT NULL, amount numeric(12, 2) NOT NULL,"
        " state text NOT NULL, issued_at timestamptz NOT NULL, PRIMARY KEY (region, no))",
        ["region", "no"],
        "ROW(region, no)::text",
    ),
}


def _key_values(kind: str, i: int) -> dict:
    if kind == "text":
        return {"code": TEXT_KEYS[i % len(TEXT_KEYS)] + ("" if i < len(TEXT_KEYS) else f"#{i}")}
    return {"region": ["eu", "us", "a b", "x,y"][i % 4], "no": i}


@pytest.mark.parametrize("kind", ["text", "composite"])
def test_rule_with_a_key_that_is_not_an_integer(conn, dsn, kind):
    ddl, key, key_sql = KEYED_TABLES[kind]
    conn.execute(ddl)
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"gift": {
            "source": "public.gift_cards", "key": key, "when": "state = 'issued'", "date": "issued_at",
            "currency": "'EUR'",
            "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
        }},
    })
    install(conn, config)

    def insert(i: int, tracked: bool) -> None:
        values = {**_key_values(kind, i), "amount": Decimal(10 + i), "state": "issued" if i % 6 else "void",
                  "issued_at": OLD + dt.timedelta(days=i)}
        statement = (f"INSERT INTO public.gift_cards ({', '.join(values)}) "
                     f"VALUES ({', '.join(['%s'] * len(values))})")
        if tracked:
            conn.execute(statement, list(values.values()))
        else:
            untracked(conn, statement, list(values.values()))

    for i in range(30):
        insert(i, tracked=True)
    for i in range(30, 45):
        insert(i, tracked=False)  # missing
    rows = [r[0] for r in conn.execute(f"SELECT {key_sql} FROM public.gift_cards ORDER BY 1")]
    assert len(rows) == 45
    where = f"{key_sql} = ANY(%s)"
    tracked_issued = [r[0] for r in conn.execute(
        f"SELECT {key_sql} FROM public.gift_cards WHERE state = 'issued' AND issued_at < %s ORDER BY 1",
        (OLD + dt.timedelta(days=30),))]
    untracked(conn, f"DELETE FROM public.gift_cards WHERE {where}", (tracked_issued[0:8],))  # orphans
    untracked(conn, f"UPDATE public.gift_cards SET amount = amount + 1 WHERE {where}", (tracked_issued[8:11],))
    untracked(conn, f"UPDATE public.gift_cards SET state = 'void' WHERE {where}", (tracked_issued[11:13],))

    before = verify(conn, config)
    (report,) = before.rules
    assert (report.orphaned, report.drifted) == (10, 3)
    result = backfill(conn, config, batch_size=3)
    assert result.ok
    (summary,) = result.rules
    assert (summary.reversed, summary.reposted) == (10, 3)
    assert summary.posted == report.missing == sum(1 for i in range(30, 45) if i % 6)
    after = verify(conn, config)
    assert after.ok, after.as_dict()

    expected = expected_ledger(conn, f"""
        SELECT {key_sql}, issued_at, '1100', 'EUR', amount::numeric, 0::numeric FROM public.gift_cards
        WHERE state = 'issued'
        UNION ALL
        SELECT {key_sql}, issued_at, '4000', 'EUR', 0, amount FROM public.gift_cards WHERE state = 'issued'
    """)
    assert live_ledger(conn, "gift") == expected
    assert all(k not in expected for k in tracked_issued[0:8])
    # a second run has nothing left to do
    again = backfill(conn, config, batch_size=3)
    assert again.rules[0].repaired == 0


def test_text_key_orphans_beyond_one_batch_are_all_reversed(conn):
    conn.execute(KEYED_TABLES["text"][0])
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"gift": {
            "source": "public.gift_cards", "when": "state = 'issued'", "date": "issued_at",
            "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
        }},
    })
    install(conn, config)
    conn.execute(
        "INSERT INTO public.gift_cards SELECT 'card-' || g, g, 'issued', now() FROM generate_series(1, 25) g"
    )
    untracked(conn, "DELETE FROM public.gift_cards WHERE code <> 'card-13'")
    result = backfill(conn, config, batch_size=2)
    assert result.ok and result.rules[0].reversed == 24
    assert set(live_ledger(conn, "gift")) == {"card-13"}
    assert verify(conn, config).ok


def test_percent_signs_in_expressions_from_the_first_batch_on(conn):
    """Rule expressions may hold '%' (modulo, LIKE patterns): every batch statement, the
    first one included, passes them to PostgreSQL as written."""
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"even": {
            "source": "public.sales", "when": "id % 2 = 0 AND customer LIKE 'c%'", "date": "sold_at",
            "lines": [{"account": "1100", "debit": "total % 1000"}, {"account": "4000", "credit": "total % 1000"}],
        }},
    })
    install(conn, config)
    untracked(conn, "INSERT INTO public.sales (id, customer, total, tax, status, payment_method)"
                    " SELECT g, 'c' || g, 1000 + g, 0, 'completed', 'cash' FROM generate_series(1, 30) AS g")
    result = backfill(conn, config, batch_size=7)
    assert result.ok and result.rules[0].posted == 15
    assert verify(conn, config).ok
    amounts = {r[0]: r[1] for r in conn.execute(
        "SELECT e.source_key, l.debit FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id"
        " WHERE e.rule = 'even' AND l.debit > 0")}
    assert amounts == {str(i): Decimal(i) for i in range(2, 31, 2)}


# --------------------------------------------------------------------------- 7. --since

RECENT = dt.datetime(2026, 11, 20, 9, 0, tzinfo=dt.timezone.utc)
SINCE = "2026-11-01"


def test_since_repairs_the_rows_and_entries_dated_in_the_window_only(base, dsn):
    """`backfill --since` repairs what `verify --since` finds (a recent outage) and leaves
    older problems to a full run. A row moved out of the window while the trigger was off
    is found by its entry's date and reposted with its new date, not reversed."""
    old_missing = add_sales(base, 3, tracked=False)
    old_drifted = add_sales(base, 2)
    untracked(base, "UPDATE public.sales SET total = total + 1 WHERE id = ANY(%s)", (old_drifted,))
    old_gone = add_sales(base, 2)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (old_gone,))
    add_sales(base, 5, sold_at=RECENT, status_every=5, tracked=False)  # 4 missing, 1 draft
    drifted = add_sales(base, 3, sold_at=RECENT)
    untracked(base, "UPDATE public.sales SET total = total * 2 WHERE id = ANY(%s)", (drifted,))
    gone = add_sales(base, 2, sold_at=RECENT)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (gone,))
    cancelled = add_sales(base, 2, sold_at=RECENT)
    untracked(base, "UPDATE public.sales SET status = 'cancelled' WHERE id = ANY(%s)", (cancelled,))
    moved_out = add_sales(base, 2, sold_at=RECENT)
    untracked(base, "UPDATE public.sales SET sold_at = %s WHERE id = ANY(%s)", (OLD, moved_out))
    moved_in = add_sales(base, 1)
    untracked(base, "UPDATE public.sales SET sold_at = %s WHERE id = ANY(%s)", (RECENT, moved_in))
    code, recent = run_verify(dsn, "--rule", "sale", "--since", SINCE)
    sale = rule_of(recent, "sale")
    # verify --since sees only the entries dated in the window: a row moved in is missing
    # there, a row moved out orphaned; the dry run shows verify's view
    assert code == 1 and (sale["missing"], sale["drifted"], sale["orphaned"]) == (4 + 1, 3, 2 + 2 + 2)
    code, dry = run_backfill(dsn, "--rule", "sale", "--since", SINCE, "--dry-run")
    sale = summary_of(dry, "sale")
    assert code == 0 and dry["since"] == SINCE
    assert (sale["posted"], sale["reversed"], sale["reposted"]) == (4 + 1, 2 + 2 + 2, 3)

    before = scalar(base, "SELECT max(id) FROM ledger.entry")
    code, doc = run_backfill(dsn, "--rule", "sale", "--since", SINCE, "--batch-size", "3")
    assert code == 0 and doc["since"] == SINCE
    sale = summary_of(doc, "sale")
    assert (sale["posted"], sale["reversed"], sale["reposted"]) == (4, 2 + 2, 3 + 2 + 1)
    changed = {int(k) for _, k, _ in _new_entries(base, before)}
    assert changed.isdisjoint(old_missing + old_drifted + old_gone)
    assert set(moved_out) <= changed
    for key in moved_out:  # reposted with the date it has now
        assert live_ledger(base, "sale")[str(key)][0] == scalar(
            base, "SELECT sold_at FROM public.sales WHERE id = %s", (key,))

    assert run_verify(dsn, "--rule", "sale", "--since", SINCE)[0] == 0
    sale = rule_of(run_verify(dsn, "--rule", "sale")[1], "sale")
    assert (sale["missing"], sale["drifted"], sale["orphaned"]) == (3, 2, 2)
    code, doc = run_backfill(dsn, "--rule", "sale")
    assert code == 0 and run_verify(dsn)[0] == 0
    assert_sales_ledger_is_right(base)
    assert_ledger_balanced(base)


@pytest.mark.parametrize("kind", ["integer", "text", "composite"])
def test_since_with_every_kind_of_key(conn, kind):
    """Rows moved out of the window are found by key whatever the key; gone rows are
    reversed; rows before the window stay as they are."""
    ddl, key, key_sql = KEYED_TABLES.get(kind) or (
        "CREATE TABLE public.gift_cards (no integer PRIMARY KEY, amount numeric(12, 2) NOT NULL,"
        " state text NOT NULL, issued_at timestamptz NOT NULL)", ["no"], "no::text")
    conn.execute(ddl)
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"gift": {
            "source": "public.gift_cards", "key": key, "when": "state = 'issued'", "date": "issued_at",
            "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}],
        }},
    })
    install(conn, config)
    for i in range(24):
        values = {**(_key_values(kind, i) if kind != "integer" else {"no": i}), "amount": Decimal(10 + i),
                  "state": "issued", "issued_at": (RECENT if i % 2 else OLD) + dt.timedelta(hours=i)}
        conn.execute(f"INSERT INTO public.gift_cards ({', '.join(values)}) VALUES ({', '.join(['%s'] * len(values))})",
                     list(values.values()))
    keys = {d: [r[0] for r in conn.execute(
        f"SELECT {key_sql} FROM public.gift_cards WHERE (issued_at >= %s) = %s ORDER BY 1", (SINCE, d))]
        for d in (True, False)}
    recent, old = keys[True], keys[False]
    where = f"{key_sql} = ANY(%s)"
    untracked(conn, f"DELETE FROM public.gift_cards WHERE {where}", (recent[0:2] + old[0:2],))
    untracked(conn, f"UPDATE public.gift_cards SET issued_at = %s WHERE {where}", (OLD, recent[2:5]))
    untracked(conn, f"UPDATE public.gift_cards SET amount = amount + 1 WHERE {where}", (recent[5:6] + old[2:4],))

    result = backfill(conn, config, since=dt.date.fromisoformat(SINCE), batch_size=2)
    (summary,) = result.rules
    assert (summary.posted, summary.reversed, summary.reposted) == (0, 2, 3 + 1)
    assert verify(conn, config, since=dt.date.fromisoformat(SINCE)).ok
    (report,) = verify(conn, config).rules
    assert (report.missing, report.orphaned, report.drifted) == (0, 2, 2)
    assert backfill(conn, config).ok and verify(conn, config).ok


def test_since_counts_only_the_windows_reversals_against_the_limit(base, dsn):
    old_gone = add_sales(base, 5)
    gone = add_sales(base, 2, sold_at=RECENT)
    untracked(base, "DELETE FROM public.sales WHERE id = ANY(%s)", (old_gone + gone,))
    before = snapshot(base)
    refused = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--max-reversals", "3")
    assert refused.exit_code == 2 and snapshot(base) == before
    code, doc = run_backfill(dsn, "--max-reversals", "3", "--since", SINCE)
    assert code == 0 and summary_of(doc, "sale")["reversed"] == 2
    assert rule_of(run_verify(dsn)[1], "sale")["orphaned"] == 5


def test_since_repairs_a_rule_without_a_date_whole(conn):
    conn.execute("CREATE TABLE public.fees (id int PRIMARY KEY, amount numeric NOT NULL)")
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"fee": {"source": "public.fees",
                          "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]}},
    })
    install(conn, config)
    untracked(conn, "INSERT INTO public.fees SELECT g, g FROM generate_series(1, 5) AS g")
    result = backfill(conn, config, since=dt.date(2999, 1, 1))
    assert result.rules[0].posted == 5 and verify(conn, config).ok


def test_since_in_text_output_and_percent_signs_in_the_date(conn):
    """The window's condition is the rule's `date` expression, passed as written."""
    config = parse_config({
        "accounts": ACCOUNTS,
        "rules": {"even": {
            "source": "public.sales", "when": "id % 2 = 0",
            "date": "CASE WHEN id % 2 = 0 THEN sold_at END",
            "lines": [{"account": "1100", "debit": "total"}, {"account": "4000", "credit": "total"}],
        }},
    })
    install(conn, config)
    untracked(conn, "INSERT INTO public.sales (id, customer, total, tax, status, payment_method, sold_at)"
                    " SELECT g, 'c' || g, 10 + g, 0, 'completed', 'cash', %s FROM generate_series(1, 10) AS g",
              (RECENT,))
    result = backfill(conn, config, since=dt.date.fromisoformat(SINCE), batch_size=3)
    assert result.ok and result.rules[0].posted == 5
    untracked(conn, "DELETE FROM public.sales WHERE id IN (2, 4)")
    result = backfill(conn, config, since=dt.date.fromisoformat(SINCE))
    assert result.rules[0].reversed == 2 and verify(conn, config).ok
    from ledgeradmin.backfill_report import render_text
    assert render_text(result).startswith(f"rows dated on or after {SINCE} and the entries dated so")


def test_since_retries_every_open_failure_whatever_its_date(base, dsn):
    fixed, broken, deleted = (_deferred_failure(base) for _ in range(3))
    untracked(base, "UPDATE public.payment_vouchers SET paid_at = %s WHERE id = %s", (OLD, fixed))  # before the window
    untracked(base, "DELETE FROM public.payment_vouchers WHERE id = %s", (deleted,))
    code, doc = run_backfill(dsn, "--rule", "payment", "--since", SINCE)
    payment = summary_of(doc, "payment")
    assert code == 1 and (payment["posted"], payment["failed"], payment["failed_keys"]) == (1, 1, [str(broken)])
    open_failures = base.execute(
        "SELECT source_key, attempts FROM ledger.failure WHERE rule = 'payment' AND resolved_at IS NULL").fetchall()
    assert open_failures == [(str(broken), 2)]
    assert live_ledger(base, "payment")[str(fixed)][0] == OLD
    payment = rule_of(run_verify(dsn, "--rule", "payment")[1], "payment")
    assert (payment["missing"], payment["failed"], payment["orphaned"], payment["drifted"]) == (1, 1, 0, 0)


# --------------------------------------------------------------------------- 8. what a run writes


def locked_ids(conn) -> set[int]:
    """Sales whose row carries a lock (a row lock is a write: xmax is set, WAL is written)."""
    return {r[0] for r in conn.execute("SELECT id FROM public.sales WHERE xmax::text <> '0'")}


def test_rows_in_sync_are_read_not_locked(shop):
    """Backfill locks only the rows it repairs while most rows of a batch are in sync, and
    every row of a batch where more than half need repair (one pass, as a first backfill
    posts everything); it goes back once a batch is mostly in sync."""
    config = parse_config({"accounts": {**ACCOUNTS, "1000": {"name": "Cash", "type": "asset"}}, "rules": {"s": {
        "source": "public.sales", "date": "sold_at",
        "lines": [{"account": "1100", "debit": "total"}, {"account": "4000", "credit": "total"}]}}})
    install(shop, config)
    untracked(shop, "INSERT INTO public.sales (id, customer, total) SELECT g, 'c', g FROM generate_series(1, 10) g")
    assert backfill(shop, config, batch_size=5).rules[0].posted == 10
    assert locked_ids(shop) == set(range(1, 11))  # all missing: every row locked
    untracked(shop, "UPDATE public.sales SET total = total + 100 WHERE id <= 10")  # new versions, unlocked
    assert backfill(shop, config, batch_size=5).rules[0].reposted == 10
    shop.execute("INSERT INTO public.sales (id, customer, total) SELECT g, 'c', g FROM generate_series(21, 30) g")
    untracked(shop, "INSERT INTO public.sales (id, customer, total) SELECT g, 'c', g FROM generate_series(11, 20) g")
    shop.execute("VACUUM (FREEZE) public.sales")
    assert locked_ids(shop) == set()
    (summary,) = backfill(shop, config, batch_size=5).rules
    assert (summary.scanned, summary.posted) == (30, 10)
    # 1-5, 6-10 in sync: read; 11-15 missing: locked; 16-20 after a batch all repaired:
    # locked with the batch; 21-25 the same, though in sync; 26-30 after a batch in sync: read
    assert locked_ids(shop) == set(range(11, 26))
    assert verify(shop, config).ok


def test_a_failure_open_on_a_row_in_sync_is_resolved(shop, shop_config):
    """A row whose posting is what it should be, but whose failure is still open (the row
    was put back while its trigger was off), is locked and reconciled: the failure is
    resolved."""
    key = scalar(shop, "INSERT INTO public.payment_vouchers (payee, amount, method, status, paid_at) "
                       "VALUES ('p', 64.5, 'cash', 'paid', %s) RETURNING id", (OLD,))
    shop.execute("UPDATE public.payment_vouchers SET paid_at = NULL WHERE id = %s", (key,))  # deferred: fails
    assert scalar(shop, "SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL") == 1
    untracked(shop, "UPDATE public.payment_vouchers SET paid_at = %s WHERE id = %s", (OLD, key))
    (report,) = verify(shop, shop_config, ["payment"]).rules
    assert (report.missing, report.drifted, report.failed) == (0, 0, 1)
    (summary,) = backfill(shop, shop_config, ["payment"]).rules
    assert summary.repaired == 0 and summary.failed == 0
    assert scalar(shop, "SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL") == 0
    assert verify(shop, shop_config, ["payment"]).ok


def test_a_missing_row_that_cannot_post_is_tried_among_rows_in_sync(base, shop_config):
    """A row without a fingerprint (its date is NULL) in a batch otherwise in sync is still
    tried, and its failure recorded."""
    key = untracked(base, "INSERT INTO public.payment_vouchers (payee, amount, method, status) "
                          "VALUES ('late', 5, 'cash', 'paid') RETURNING id")[0][0]
    (summary,) = backfill(base, shop_config, ["payment"]).rules
    assert (summary.failed, summary.failed_keys) == (1, [str(key)])


# --------------------------------------------------------------------------- 9. --key


def test_key_repairs_those_rows_only_and_its_dry_run_is_exact(base, dsn):
    in_sync, drifted, gone = add_sales(base, 3)
    untracked(base, "UPDATE public.sales SET total = total + 1 WHERE id = %s", (drifted,))
    untracked(base, "DELETE FROM public.sales WHERE id = %s", (gone,))
    missing, other = add_sales(base, 2, tracked=False)
    args = ["--rule", "sale", *(f"--key={k}" for k in (in_sync, drifted, gone, missing, 999999))]
    before = snapshot(base)
    code, dry = run_backfill(dsn, *args, "--dry-run")
    assert snapshot(base) == before and code == 0 and dry["dry_run"] is True
    code, doc = run_backfill(dsn, *args)
    assert code == 0
    for result in (dry, doc):
        sale = summary_of(result, "sale")
        assert (sale["scanned"], sale["posted"], sale["reversed"], sale["reposted"]) == (3, 1, 1, 1)
    sale = rule_of(run_verify(dsn, "--rule", "sale")[1], "sale")
    assert (sale["missing"], sale["drifted"], sale["orphaned"], sale["keys"]) == (1, 0, 0, {"missing": [str(other)]})


@pytest.mark.parametrize("kind", ["text", "composite"])
def test_key_of_a_rule_keyed_otherwise(conn, kind):
    ddl, key, key_sql = KEYED_TABLES[kind]
    conn.execute(ddl)
    config = parse_config({"accounts": ACCOUNTS, "rules": {"gift": {
        "source": "public.gift_cards", "key": key, "date": "issued_at",
        "lines": [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]}}})
    install(conn, config)
    for i in range(4):
        values = {**_key_values(kind, i), "amount": 10, "state": "issued", "issued_at": OLD}
        untracked(conn, f"INSERT INTO public.gift_cards ({', '.join(values)}) VALUES "
                        f"({', '.join(['%s'] * len(values))})", list(values.values()))
    keys = [r[0] for r in conn.execute(f"SELECT {key_sql} FROM public.gift_cards ORDER BY 1")]
    (summary,) = backfill(conn, config, keys=keys[1:3]).rules
    assert (summary.scanned, summary.posted) == (2, 2)
    assert set(live_ledger(conn, "gift")) == set(keys[1:3])


def test_key_refuses_what_it_cannot_mean(base, dsn):
    def refused(*args):
        result = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), *args)
        assert result.exit_code == 2, result.output
        return result.stderr

    before = snapshot(base)
    assert "needs exactly one --rule" in refused("--key", "1")
    assert "needs exactly one --rule" in refused("--rule", "sale", "--rule", "payment", "--key", "1")
    assert "key 'x1' is not an integer" in refused("--rule", "sale", "--key", "x1")
    assert "key '\u0663' is not an integer" in refused("--rule", "sale", "--key", "\u0663")  # Arabic-Indic 3
    assert "exclude each other" in refused("--rule", "sale", "--key", "1", "--since", "2026-01-01")
    assert snapshot(base) == before

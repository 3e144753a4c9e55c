"""verify (issue 3): gap, drift and orphan detection.

Every expectation is computed here — counts of source rows by our own SQL, problems made
deliberately with a known key — never by ledgeradmin's queries. The CLI is driven in
process (click's CliRunner) with --json, so the numbers and keys are read, not grepped.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import threading
import time
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.config import load_config
from ledgeradmin.verify import verify

REPO = Path(__file__).resolve().parents[1]
SHOP_CONFIG = REPO / "examples" / "shop" / "ledger.toml"
RULES = ("sale", "requisition", "payment", "manufacturing")
COUNTS = ("eligible", "posted", "missing", "orphaned", "drifted", "failed")
PROBLEMS = ("missing", "orphaned", "drifted", "failed")

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""

# --------------------------------------------------------------------------- helpers


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def run_verify(dsn: str, *args: str, config: Path | str = SHOP_CONFIG) -> tuple[int, dict]:
    """`ledgeradmin verify --json --detailed …`: (exit code, parsed document)."""
    result = cli("verify", "--dsn", dsn, "--config", str(config), "--json", "--detailed", "--max-keys", "1000", *args)
    assert result.exit_code in (0, 1), (result.exit_code, result.output, result.stderr)
    return result.exit_code, json.loads(result.stdout)


def rule_of(doc: dict, name: str) -> dict:
    (found,) = [r for r in doc["rules"] if r["rule"] == name]
    return found


def keys_of(report: dict, category: str) -> list[str]:
    return sorted(report.get("keys", {}).get(category, []), key=_key_order)


def _key_order(key: str):
    return (0, int(key), "") if key.isdigit() else (1, 0, key)


def assert_clean_except(doc: dict, *names: str) -> None:
    """Every rule not named has no problem and an ok trigger; the ledger has no problem."""
    for r in doc["rules"]:
        if r["rule"] in names:
            continue
        assert {c: r[c] for c in PROBLEMS} == dict.fromkeys(PROBLEMS, 0), r
        assert r["trigger"] == "ok", r
        assert r["error"] is None, r


def assert_ledger_clean(doc: dict) -> None:
    ledger = doc["ledger"]
    assert (ledger["unbalanced"], ledger["duplicate_live_keys"], ledger["unlinked_live_entries"]) == (0, 0, 0)
    assert all(Decimal(v) == 0 for v in ledger["trial_balance"].values()), ledger


def scalar(conn: psycopg.Connection, query: str, params=None):
    return conn.execute(query, params).fetchone()[0]


def write_untracked(conn: psycopg.Connection, table: str, statement: str, params=None) -> list[tuple]:
    """Run one write with every ledgeradmin trigger of ``table`` disabled, in one transaction
    that re-enables them: no other session ever sees a disabled trigger."""
    with conn.transaction():
        conn.execute(f"ALTER TABLE {table} DISABLE TRIGGER USER")
        cur = conn.execute(statement, params)
        rows = cur.fetchall() if cur.description else []
        conn.execute(f"ALTER TABLE {table} ENABLE TRIGGER USER")
    return rows


def add_sale(conn: psycopg.Connection, total: str = "100.00", tax: str = "10.00", **cols) -> int:
    values = {"customer": "walk-in", "total": total, "tax": tax, **cols}
    names = ", ".join(values)
    marks = ", ".join(["%s"] * len(values))
    return scalar(conn, f"INSERT INTO public.sales ({names}) VALUES ({marks}) RETURNING id", list(values.values()))


def business_day(conn: psycopg.Connection) -> None:
    """A day of ordinary application writes through the installed triggers: bulk and single
    inserts, updates in and out of `when`, amount changes, deletes, on all four tables."""
    conn.execute(
        """
        INSERT INTO public.sales (customer, sold_at, status, currency, payment_method, total, tax)
        SELECT 'customer ' || g,
               timestamptz '2024-06-03 08:00:00+00' + g * interval '3 minutes',
               CASE WHEN g % 7 = 0 THEN 'draft' WHEN g % 11 = 0 THEN 'cancelled' ELSE 'completed' END,
               CASE WHEN g % 13 = 0 THEN 'EUR' ELSE 'USD' END,
               (ARRAY['cash', 'card', 'invoice'])[g % 3 + 1],
               10 + g % 50 + 0.99,
               CASE WHEN g % 5 = 0 THEN 0 ELSE round((10 + g % 50 + 0.99) * 0.08, 2) END
        FROM generate_series(1, 300) AS g
        """
    )
    for i in range(5):
        add_sale(conn, total=f"{20 + i}.50", tax="1.50", payment_method="card")
    conn.execute("UPDATE public.sales SET status = 'completed' WHERE status = 'draft' AND id % 2 = 0")
    conn.execute("UPDATE public.sales SET total = total + 5 WHERE status = 'completed' AND id % 17 = 0")
    conn.execute("UPDATE public.sales SET status = 'cancelled' WHERE status = 'completed' AND id % 19 = 0")
    conn.execute("UPDATE public.sales SET payment_method = 'cash' WHERE id % 23 = 0")
    conn.execute("DELETE FROM public.sales WHERE id % 29 = 0")

    conn.execute(
        """
        INSERT INTO public.purchase_requisitions (requested_by, department, description, amount)
        SELECT 'clerk ' || g, (ARRAY['ops', 'it', 'sales'])[g % 3 + 1], 'item ' || g, 50 + g
        FROM generate_series(1, 60) AS g
        """
    )
    conn.execute(
        "UPDATE public.purchase_requisitions SET status = 'approved', approved_at = now() - interval '1 hour'"
        " WHERE id % 3 <> 0"
    )
    conn.execute("UPDATE public.purchase_requisitions SET status = 'rejected' WHERE id % 10 = 0")
    conn.execute("UPDATE public.purchase_requisitions SET amount = amount * 2 WHERE id % 4 = 0")

    conn.execute(
        """
        INSERT INTO public.payment_vouchers (payee, amount, method)
        SELECT 'supplier ' || g, 100 + g, CASE WHEN g % 4 = 0 THEN 'cash' ELSE 'bank' END
        FROM generate_series(1, 40) AS g
        """
    )
    conn.execute("UPDATE public.payment_vouchers SET status = 'paid', paid_at = now() WHERE id % 2 = 0")
    conn.execute("UPDATE public.payment_vouchers SET status = 'void' WHERE id % 5 = 0 AND status = 'draft'")

    conn.execute(
        """
        INSERT INTO public.manufacturing_orders (product, quantity, unit_cost)
        SELECT 'widget ' || g, 1 + g % 9, 2.5 + g % 4 FROM generate_series(1, 30) AS g
        """
    )
    conn.execute("UPDATE public.manufacturing_orders SET state = 'in_progress', started_at = now()")
    conn.execute(
        "UPDATE public.manufacturing_orders SET state = 'done', finished_at = now() WHERE id % 3 = 0"
    )
    conn.execute("DELETE FROM public.manufacturing_orders WHERE id = 1")


#: Our own count of the rows meeting each rule's `when` (the shop data has no all-zero rows).
OWN_ELIGIBLE = {
    "sale": "SELECT count(*) FROM public.sales WHERE status = 'completed'",
    "requisition": "SELECT count(*) FROM public.purchase_requisitions WHERE status = 'approved'",
    "payment": "SELECT count(*) FROM public.payment_vouchers WHERE status = 'paid'",
    "manufacturing": "SELECT count(*) FROM public.manufacturing_orders WHERE state = 'done'",
}


@pytest.fixture
def day(shop: psycopg.Connection) -> psycopg.Connection:
    business_day(shop)
    return shop


# --------------------------------------------------------------------------- 1. clean database


def test_clean_database_exits_0_with_consistent_counts(day, dsn):
    code, doc = run_verify(dsn)
    assert code == 0, doc
    assert doc["ok"] is True
    assert [r["rule"] for r in doc["rules"]] == list(RULES)
    total = 0
    for r in doc["rules"]:
        own = scalar(day, OWN_ELIGIBLE[r["rule"]])
        assert own > 0, r["rule"]
        assert r["eligible"] == own, r
        assert r["posted"] == own, r
        assert {c: r[c] for c in PROBLEMS} == dict.fromkeys(PROBLEMS, 0), r
        assert r["trigger"] == "ok" and r["error"] is None, r
        assert not r.get("keys"), r
        total += own
    assert doc["total"] == total
    assert doc["in_sync"] == total
    assert doc["problems"] == 0
    ledger = doc["ledger"]
    assert ledger["entries"] == scalar(day, "SELECT count(*) FROM ledger.entry")
    assert ledger["entries"] > total  # the day reversed and reposted some entries
    assert_ledger_clean(doc)
    assert set(ledger["trial_balance"]) == {"USD", "EUR"}

    text = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert text.exit_code == 0, text.output
    assert "no problems" in text.stdout


def test_python_api_matches_own_counts(day, shop_config):
    result = verify(day, shop_config)
    assert result.ok
    assert {r.rule: r.eligible for r in result.rules} == {n: scalar(day, q) for n, q in OWN_ELIGIBLE.items()}
    assert result.problems == 0
    assert result.total == result.in_sync == sum(r.posted for r in result.rules)
    # verify leaves the connection as it found it: autocommit, idle, not read only
    assert day.autocommit and not day.read_only
    assert day.info.transaction_status == psycopg.pq.TransactionStatus.IDLE


def test_empty_database_is_in_sync(shop, dsn):
    code, doc = run_verify(dsn)
    assert code == 0
    assert all(r["eligible"] == 0 and r["posted"] == 0 for r in doc["rules"])
    assert doc["ledger"]["entries"] == 0 and doc["total"] == 0


# --------------------------------------------------------------------------- 2. each problem


def test_insert_with_trigger_disabled_is_missing(day, dsn):
    (key,) = write_untracked(
        day, "public.sales", "INSERT INTO public.sales (customer, total, tax) VALUES ('x', 42, 2) RETURNING id"
    )[0]
    code, doc = run_verify(dsn)
    assert code == 1 and doc["ok"] is False
    sale = rule_of(doc, "sale")
    own = scalar(day, OWN_ELIGIBLE["sale"])
    assert (sale["eligible"], sale["posted"], sale["missing"]) == (own, own - 1, 1)
    assert (sale["orphaned"], sale["drifted"], sale["failed"]) == (0, 0, 0)
    assert keys_of(sale, "missing") == [str(key)]
    assert set(sale["keys"]) == {"missing"}
    assert sale["trigger"] == "ok"
    assert_clean_except(doc, "sale")
    assert_ledger_clean(doc)
    assert doc["problems"] == 1


def test_insert_of_ineligible_row_with_trigger_disabled_is_no_problem(day, dsn):
    write_untracked(day, "public.sales", "INSERT INTO public.sales (customer, status, total) VALUES ('x', 'draft', 5)")
    code, doc = run_verify(dsn)
    assert code == 0, doc


def test_replica_bulk_load_is_missing(day, dsn):
    before = scalar(day, "SELECT coalesce(max(id), 0) FROM public.sales")
    with day.transaction():
        day.execute("SET LOCAL session_replication_role = replica")
        day.execute(
            """
            INSERT INTO public.sales (customer, status, total, tax)
            SELECT 'bulk ' || g, CASE WHEN g % 4 = 0 THEN 'draft' ELSE 'completed' END, g, 0
            FROM generate_series(1, 400) AS g
            """
        )
    expected = [
        str(k)
        for (k,) in day.execute(
            "SELECT id FROM public.sales WHERE id > %s AND status = 'completed' ORDER BY id", (before,)
        )
    ]
    assert len(expected) == 300
    code, doc = run_verify(dsn)
    assert code == 1
    sale = rule_of(doc, "sale")
    assert sale["missing"] == 300
    assert sale["eligible"] == scalar(day, OWN_ELIGIBLE["sale"])
    assert sale["posted"] == sale["eligible"] - 300
    assert keys_of(sale, "missing") == expected
    assert_clean_except(doc, "sale")


def test_max_keys_caps_the_listed_keys(day, dsn):
    with day.transaction():
        day.execute("SET LOCAL session_replication_role = replica")
        day.execute("INSERT INTO public.sales (customer, total) SELECT 'bulk', g FROM generate_series(1, 30) AS g")
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--json", "--detailed", "--max-keys", "5")
    assert result.exit_code == 1
    sale = rule_of(json.loads(result.stdout), "sale")
    assert sale["missing"] == 30
    assert len(sale["keys"]["missing"]) == 5
    text = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--detailed", "--max-keys", "5")
    assert text.exit_code == 1
    assert "and 25 more" in text.stdout


def test_amount_update_with_trigger_disabled_is_drifted(day, dsn):
    key = scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed' AND id > 100")
    write_untracked(day, "public.sales", "UPDATE public.sales SET total = total + 1 WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert code == 1
    sale = rule_of(doc, "sale")
    own = scalar(day, OWN_ELIGIBLE["sale"])
    assert (sale["eligible"], sale["posted"], sale["drifted"]) == (own, own, 1)
    assert (sale["missing"], sale["orphaned"], sale["failed"]) == (0, 0, 0)
    assert keys_of(sale, "drifted") == [str(key)]
    assert set(sale["keys"]) == {"drifted"}
    assert doc["in_sync"] == doc["total"] - 1
    assert_clean_except(doc, "sale")


@pytest.mark.parametrize(
    "change",
    [
        "sold_at = sold_at - interval '1 day'",  # date
        "currency = 'EUR'",  # currency
        "payment_method = CASE payment_method WHEN 'cash' THEN 'card' ELSE 'cash' END",  # account
    ],
)
def test_other_changes_with_trigger_disabled_are_drifted(day, dsn, change):
    key = scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed' AND currency = 'USD'")
    write_untracked(day, "public.sales", f"UPDATE public.sales SET {change} WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert code == 1
    assert keys_of(rule_of(doc, "sale"), "drifted") == [str(key)]
    assert_clean_except(doc, "sale")


def test_delete_with_trigger_disabled_is_orphaned(day, dsn):
    key = scalar(day, "SELECT max(id) FROM public.sales WHERE status = 'completed'")
    write_untracked(day, "public.sales", "DELETE FROM public.sales WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert code == 1
    sale = rule_of(doc, "sale")
    own = scalar(day, OWN_ELIGIBLE["sale"])
    assert (sale["eligible"], sale["posted"], sale["orphaned"]) == (own, own, 1)
    assert (sale["missing"], sale["drifted"], sale["failed"]) == (0, 0, 0)
    assert keys_of(sale, "orphaned") == [str(key)]
    assert doc["total"] == sum(r["eligible"] for r in doc["rules"]) + 1
    assert_clean_except(doc, "sale")


def test_more_orphans_than_backfill_reverses_unasked_are_pointed_out(shop, dsn):
    """verify says when backfill would refuse to reverse a rule's orphans, and why that many
    deserve a look first."""
    shop.execute("INSERT INTO public.sales (customer, total, tax) SELECT 'c', 10, 1 FROM generate_series(1, 1002)")
    write_untracked(shop, "public.sales", "DELETE FROM public.sales WHERE id > 1")
    text = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert text.exit_code == 1
    assert ("sale: 1,001 orphaned, more than backfill reverses unasked (--max-reversals): has the rule lost sight"
            " of its rows (a dropped partition, a replaced table)?") in text.stdout
    write_untracked(shop, "public.sales", "INSERT INTO public.sales (id, customer, total, tax) VALUES (2, 'c', 10, 1)")
    assert "more than backfill reverses" not in cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG)).stdout


def test_status_change_out_of_when_with_trigger_disabled_is_orphaned(day, dsn):
    key = scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed'")
    write_untracked(day, "public.sales", "UPDATE public.sales SET status = 'cancelled' WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert code == 1
    sale = rule_of(doc, "sale")
    assert sale["orphaned"] == 1 and sale["eligible"] == scalar(day, OWN_ELIGIBLE["sale"])
    assert keys_of(sale, "orphaned") == [str(key)]
    assert set(sale["keys"]) == {"orphaned"}
    assert_clean_except(doc, "sale")


def test_deferred_failure_is_failed_and_missing(day, dsn):
    key = scalar(
        day, "INSERT INTO public.payment_vouchers (payee, amount, status) VALUES ('acme', 75, 'paid') RETURNING id"
    )  # paid_at NULL: the payment rule (on_error = defer) cannot date it
    assert scalar(day, "SELECT count(*) FROM ledger.failure WHERE rule = 'payment' AND source_key = %s", (str(key),)) == 1
    code, doc = run_verify(dsn)
    assert code == 1
    payment = rule_of(doc, "payment")
    own = scalar(day, OWN_ELIGIBLE["payment"])
    assert (payment["eligible"], payment["posted"], payment["missing"], payment["failed"]) == (own, own - 1, 1, 1)
    assert keys_of(payment, "failed") == [str(key)]
    assert keys_of(payment, "missing") == [str(key)]
    assert_clean_except(doc, "payment")


def test_resolved_failure_is_not_failed(day, dsn):
    key = scalar(
        day, "INSERT INTO public.payment_vouchers (payee, amount, status) VALUES ('acme', 75, 'paid') RETURNING id"
    )
    day.execute("UPDATE public.payment_vouchers SET paid_at = now() WHERE id = %s", (key,))
    code, doc = run_verify(dsn)
    assert code == 0, rule_of(doc, "payment")


def test_dropped_trigger_is_missing(day, dsn):
    day.execute("DROP TRIGGER ledgeradmin_sale_insert ON public.sales")
    code, doc = run_verify(dsn)
    assert code == 1
    sale = rule_of(doc, "sale")
    assert sale["trigger"] == "MISSING"
    assert {c: sale[c] for c in PROBLEMS} == dict.fromkeys(PROBLEMS, 0)
    assert_clean_except(doc, "sale")
    assert doc["problems"] == 0  # no row is off, yet the run is not ok


def test_dropped_posting_function_is_missing(day, dsn):
    day.execute("DROP FUNCTION ledger.post_manufacturing() CASCADE")
    code, doc = run_verify(dsn)
    assert code == 1
    assert rule_of(doc, "manufacturing")["trigger"] == "MISSING"
    assert_clean_except(doc, "manufacturing")


def test_disabled_trigger_is_disabled(day, dsn):
    day.execute("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_update")
    code, doc = run_verify(dsn)
    assert code == 1
    assert rule_of(doc, "sale")["trigger"] == "DISABLED"
    assert_clean_except(doc, "sale")


def test_function_replaced_by_hand_is_outdated(day, dsn):
    definition = scalar(day, "SELECT pg_get_functiondef('ledger.post_requisition()'::regprocedure)")
    marker = "BEGIN\n"
    assert marker in definition
    day.execute(definition.replace(marker, marker + "    -- hot fix by hand\n", 1))
    code, doc = run_verify(dsn)
    assert code == 1
    assert rule_of(doc, "requisition")["trigger"] == "OUTDATED"
    assert_clean_except(doc, "requisition")


def test_config_change_not_installed_is_outdated(day, dsn, tmp_path):
    text = SHOP_CONFIG.read_text(encoding="utf-8")
    old = "memo = \"'Sale ' || id || ' to ' || customer\""
    assert old in text
    changed = tmp_path / "ledger.toml"
    changed.write_text(text.replace(old, "memo = \"'Sale #' || id\""), encoding="utf-8")
    code, doc = run_verify(dsn, config=changed)
    assert code == 1
    assert rule_of(doc, "sale")["trigger"] == "OUTDATED"
    assert_clean_except(doc, "sale")



def test_a_rule_that_no_longer_fits_its_table_is_invalid(day, dsn, tmp_path):
    """A column only memo reads, renamed, or a function memo calls, dropped, leaves the
    installed function as it was (nothing it compares reads memo) while each sale's posting
    fails: status, verify and backfill name the field and the reason; the other rules are
    still checked."""
    def sale_status(config=SHOP_CONFIG) -> dict:
        result = cli("status", "--dsn", dsn, "--config", str(config), "--json")
        assert result.exit_code == 1, result.output
        return next(r for r in json.loads(result.stdout)["rules"] if r["rule"] == "sale")

    day.execute("ALTER TABLE public.sales RENAME customer TO client")
    with pytest.raises(psycopg.Error, match='cannot post public.sales row .*column "customer" does not exist'):
        day.execute("INSERT INTO public.sales (client, total, tax) VALUES ('ann', 11, 1)")
    day.rollback()
    assert sale_status()["state"] == "INVALID"
    assert sale_status()["detail"].startswith('field memo: column "customer" does not exist;')
    code, doc = run_verify(dsn)
    assert code == 1
    assert rule_of(doc, "sale")["trigger"] == "INVALID"
    assert rule_of(doc, "sale")["error"].startswith('field memo: column "customer" does not exist;')
    assert_clean_except(doc, "sale")
    result = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert result.exit_code == 2 and 'sale is INVALID (field memo: column "customer"' in result.stderr
    day.execute("ALTER TABLE public.sales RENAME client TO customer")
    assert run_verify(dsn)[0] == 0

    day.execute("CREATE FUNCTION public.sale_label(bigint) RETURNS text LANGUAGE sql IMMUTABLE"
                " RETURN 'Sale ' || $1")
    text = SHOP_CONFIG.read_text(encoding="utf-8")
    old = "memo = \"'Sale ' || id || ' to ' || customer\""
    assert old in text
    labelled = tmp_path / "ledger.toml"
    labelled.write_text(text.replace(old, 'memo = "public.sale_label(id)"'), encoding="utf-8")
    assert cli("install", "--dsn", dsn, "--config", str(labelled)).exit_code == 0
    day.execute("DROP FUNCTION public.sale_label(bigint)")
    assert sale_status(labelled)["detail"].startswith("field memo: function public.sale_label(bigint) does not exist;")
    day.execute("ALTER TABLE public.sales ALTER total TYPE text")  # and an amount of the wrong type
    assert sale_status(SHOP_CONFIG)["detail"].startswith("field lines[1].debit: 'total' is of type text, expected")

@contextmanager
def guards_off(conn):
    """A transaction in which the ledger's immutability guards are off, to plant damage."""
    guards = (("entry", "entry_immutable"), ("line", "line_immutable"))
    with conn.transaction():
        for table, trigger in guards:
            conn.execute(f"ALTER TABLE ledger.{table} DISABLE TRIGGER {trigger}")
        yield
        for table, trigger in guards:
            conn.execute(f"ALTER TABLE ledger.{table} ENABLE ALWAYS TRIGGER {trigger}")


def test_planted_duplicate_live_entry(day, dsn):
    key = str(scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed'"))
    (original,) = [r[0] for r in day.execute(f"SELECT id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale' AND source_key = %s", (key,))]
    with guards_off(day):
        dup = scalar(
            day,
            "INSERT INTO ledger.entry (rule, source_key, effective_at, memo) "
            "SELECT rule, source_key, effective_at, 'imported twice' FROM ledger.entry WHERE id = %s RETURNING id",
            (original,),
        )
        day.execute(
            "INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit) "
            "SELECT %s, line_no, account, currency, debit, credit FROM ledger.line WHERE entry_id = %s",
            (dup, original),
        )
    code, doc = run_verify(dsn)
    assert code == 1
    ledger = doc["ledger"]
    assert ledger["duplicate_live_keys"] == 1
    assert ledger["unlinked_live_entries"] == 1  # the planted entry has no posting link
    assert ledger["unbalanced"] == 0
    assert all(Decimal(v) == 0 for v in ledger["trial_balance"].values())
    (item,) = ledger["keys"]["duplicate_live_keys"]
    assert re.fullmatch(rf"sale\W+{key}", item), item
    assert ledger["entries"] == scalar(day, "SELECT count(*) FROM ledger.entry")
    assert_clean_except(doc)


def test_planted_unbalanced_entry(day, dsn):
    key = str(scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed' AND currency = 'USD'"))
    (entry,) = [r[0] for r in day.execute(f"SELECT id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale' AND source_key = %s", (key,))]
    with guards_off(day):
        n = day.execute(
            "UPDATE ledger.line SET debit = debit + 1.25 WHERE entry_id = %s AND debit > 0", (entry,)
        ).rowcount
        assert n == 1
    code, doc = run_verify(dsn)
    assert code == 1
    ledger = doc["ledger"]
    assert ledger["unbalanced"] == 1
    assert ledger["keys"]["unbalanced"] == [str(entry)]
    assert Decimal(ledger["trial_balance"]["USD"]) == Decimal("1.25")
    assert Decimal(ledger["trial_balance"]["EUR"]) == 0
    assert (ledger["duplicate_live_keys"], ledger["unlinked_live_entries"]) == (0, 0)
    assert_clean_except(doc)
    text = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert text.exit_code == 1
    assert "UNBALANCED" in text.stdout and "OFF" in text.stdout


def test_planted_unbalanced_pair_that_cancels_in_the_trial_balance(day, dsn):
    """Two entries unbalanced by +1.25 and -1.25: the trial balance is 0, yet the weighted
    checksum (a new random seed each run) finds them, and verify counts them exactly."""
    keys = [str(r[0]) for r in day.execute(
        "SELECT id FROM public.sales WHERE status = 'completed' AND currency = 'USD' ORDER BY id LIMIT 2")]
    entries = [scalar(day, f"SELECT id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale' AND source_key = %s", (k,))
               for k in keys]
    with guards_off(day):
        for entry, delta in zip(entries, ("1.25", "-1.25")):
            day.execute("UPDATE ledger.line SET debit = debit + %s::numeric WHERE entry_id = %s AND debit > 0",
                        (delta, entry))
    for _ in range(3):  # each run draws another seed
        code, doc = run_verify(dsn)
        assert code == 1
        ledger = doc["ledger"]
        assert ledger["unbalanced"] == 2
        assert sorted(ledger["keys"]["unbalanced"]) == sorted(str(e) for e in entries)
        assert all(Decimal(v) == 0 for v in ledger["trial_balance"].values())


def test_planted_entry_that_balances_only_across_currencies(day, dsn):
    """One line of a USD entry moved to EUR: debits equal credits over the entry, not in
    either currency. The checksum without grouping weighs lines by currency too."""
    key = str(scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed' AND currency = 'USD'"
                          " AND tax > 0"))
    (entry,) = [r[0] for r in day.execute(f"SELECT id FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale' AND source_key = %s", (key,))]
    tax = scalar(day, "SELECT credit FROM ledger.line WHERE entry_id = %s AND account = '2200'", (entry,))
    with guards_off(day):
        day.execute("UPDATE ledger.line SET currency = 'EUR' WHERE entry_id = %s AND account = '2200'", (entry,))
    code, doc = run_verify(dsn)
    assert code == 1
    ledger = doc["ledger"]
    assert ledger["unbalanced"] == 1
    assert ledger["keys"]["unbalanced"] == [str(entry)]
    assert Decimal(ledger["trial_balance"]["USD"]) == tax
    assert Decimal(ledger["trial_balance"]["EUR"]) == -tax


def test_line_check_without_grouping_agrees_with_the_exact_one(day, shop_config, monkeypatch):
    """Full verify first checks the lines in one pass without grouping; when it cannot tell
    (here: a sample that missed a currency, then no page sampled at all), the exact
    per-currency query runs. All give the same ledger report."""
    from ledgeradmin import verify as verify_module

    outcomes = []
    real = verify_module._balanced_currencies
    monkeypatch.setattr(verify_module, "_balanced_currencies", lambda conn: outcomes.append(real(conn)) or outcomes[-1])
    fast = verify(day, shop_config).ledger
    with monkeypatch.context() as m:
        # a sample that found USD only: the pass sees EUR lines, and the exact query runs
        real_template = verify_module.template
        m.setattr(verify_module, "template", lambda name: "SELECT 'USD'::text WHERE %(percent)s > 0"
                  if name == "queries/verify_lines_currencies.sql" else real_template(name))
        partial = verify(day, shop_config).ledger
    monkeypatch.setattr(verify_module, "CURRENCY_SAMPLE_PAGES", 0)
    exact = verify(day, shop_config).ledger
    assert outcomes == [["EUR", "USD"], None, None]
    assert list(partial.trial_balance.items()) == list(exact.trial_balance.items())
    assert list(fast.trial_balance.items()) == list(exact.trial_balance.items())
    assert [str(v) for v in fast.trial_balance.values()] == ["0.0000", "0.0000"]
    assert (fast.entries, fast.unbalanced, fast.duplicate_live_keys, fast.unlinked_live_entries) == (
        exact.entries, exact.unbalanced, exact.duplicate_live_keys, exact.unlinked_live_entries)


def test_planted_posting_moved_to_a_reversal_is_caught(day, dsn):
    """A posting link repointed by a superuser from its live entry to a reversal entry:
    the entry checksum differs (a posting links a non-live entry and a live entry lost its
    link), so verify counts the unlinked live entry exactly."""
    day.execute("UPDATE public.sales SET total = total + 1 WHERE id = (SELECT min(id) FROM public.sales"
                " WHERE status = 'completed')")  # a repost: one reversal entry
    reversal = scalar(day, "SELECT max(id) FROM ledger.entry WHERE reverses IS NOT NULL")
    live = scalar(day, "SELECT max(entry_id) FROM ledger.posting WHERE rule = 'sale'")
    day.execute("UPDATE ledger.posting SET entry_id = %s WHERE entry_id = %s", (reversal, live))
    code, doc = run_verify(dsn)
    assert code == 1
    assert doc["ledger"]["unlinked_live_entries"] == 1


def test_guards_refuse_changes_without_bypass(day):
    """The bypass above is needed: the guards fire even under session_replication_role = replica."""
    with pytest.raises(psycopg.errors.InsufficientPrivilege):
        with day.transaction():
            day.execute("SET LOCAL session_replication_role = replica")
            day.execute("UPDATE ledger.line SET debit = debit + 1 WHERE debit > 0")


def test_several_problems_at_once(day, dsn):
    missing = write_untracked(
        day, "public.sales", "INSERT INTO public.sales (customer, total) VALUES ('a', 1), ('b', 2) RETURNING id"
    )
    drifted = scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed'")
    write_untracked(day, "public.sales", "UPDATE public.sales SET tax = tax + 1 WHERE id = %s", (drifted,))
    orphan = scalar(day, "SELECT min(id) FROM public.purchase_requisitions WHERE status = 'approved'")
    write_untracked(day, "public.purchase_requisitions", "DELETE FROM public.purchase_requisitions WHERE id = %s", (orphan,))
    code, doc = run_verify(dsn)
    assert code == 1
    sale, req = rule_of(doc, "sale"), rule_of(doc, "requisition")
    assert keys_of(sale, "missing") == [str(k) for (k,) in missing]
    assert keys_of(sale, "drifted") == [str(drifted)]
    assert keys_of(req, "orphaned") == [str(orphan)]
    assert doc["problems"] == 4
    assert_clean_except(doc, "sale", "requisition")


# --------------------------------------------------------------------------- 3. output formats


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


def test_json_has_the_documented_shape(day, dsn):
    write_untracked(day, "public.sales", "INSERT INTO public.sales (customer, total) VALUES ('a', 1)")
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--json")
    assert result.exit_code == 1
    doc = json.loads(result.stdout)
    assert {"ok", "since", "closed_through", "duration_seconds", "rules", "ledger", "in_sync", "total",
            "problems"} <= set(doc)
    assert doc["ok"] is False
    assert doc["since"] is None and doc["closed_through"] is None
    assert isinstance(doc["duration_seconds"], (int, float)) and not isinstance(doc["duration_seconds"], bool)
    assert doc["duration_seconds"] >= 0
    for key in ("in_sync", "total", "problems"):
        assert _is_int(doc[key]), key
    assert isinstance(doc["rules"], list) and len(doc["rules"]) == 4
    for r in doc["rules"]:
        assert {"rule", "source", "eligible", "posted", "missing", "orphaned", "drifted", "failed", "trigger",
                "error"} <= set(r)
        assert set(r) <= {"rule", "source", "eligible", "posted", "missing", "orphaned", "drifted", "failed",
                          "missing_closed", "drifted_closed", "trigger", "error", "seconds", "keys"}
        assert r["missing_closed"] is None and r["drifted_closed"] is None  # no period closed
        assert isinstance(r["rule"], str) and isinstance(r["source"], str) and isinstance(r["trigger"], str)
        assert isinstance(r["seconds"], (int, float)) and not isinstance(r["seconds"], bool) and r["seconds"] >= 0
        assert r["error"] is None
        for c in COUNTS:
            assert _is_int(r[c]) and r[c] >= 0, (r["rule"], c)
    assert rule_of(doc, "sale")["source"] == "public.sales"
    ledger = doc["ledger"]
    assert {"entries", "unbalanced", "duplicate_live_keys", "unlinked_live_entries", "trial_balance",
            "seconds"} <= set(ledger)
    assert isinstance(ledger["seconds"], (int, float)) and ledger["seconds"] >= 0
    for k in ("entries", "unbalanced", "duplicate_live_keys", "unlinked_live_entries"):
        assert _is_int(ledger[k]), k
    assert isinstance(ledger["trial_balance"], dict)
    for currency, value in ledger["trial_balance"].items():
        assert re.fullmatch(r"[A-Z]{3}", currency)
        assert isinstance(value, (str, int, float)) and not isinstance(value, bool)
        assert Decimal(str(value)) == 0
    # the totals are consistent with the rules
    assert doc["total"] == sum(r["eligible"] + r["orphaned"] for r in doc["rules"])
    assert doc["in_sync"] == sum(r["posted"] - r["drifted"] for r in doc["rules"])
    assert doc["problems"] == 1
    assert doc["in_sync"] == doc["total"] - 1


def test_json_with_since_reports_the_date(day, dsn):
    code, doc = run_verify(dsn, "--since", "2024-06-01")
    assert doc["since"] == "2024-06-01"
    assert code == 0


PROM_NAME = r"[a-zA-Z_:][a-zA-Z0-9_:]*"
PROM_LABEL = r'[a-zA-Z_][a-zA-Z0-9_]*="(?:[^"\\\n]|\\["\\n])*"'
PROM_SAMPLE = re.compile(
    rf"^(?P<name>{PROM_NAME})(?:\{{(?P<labels>{PROM_LABEL}(?:,{PROM_LABEL})*,?)?\}})? (?P<value>\S+)(?: -?\d+)?$"
)
PROM_TYPES = ("counter", "gauge", "histogram", "summary", "untyped")


def parse_prometheus(text: str) -> dict[tuple[str, frozenset], float]:
    """A strict reader of the Prometheus text exposition format (version 0.0.4)."""
    assert text.endswith("\n"), "the last line must end with a newline"
    types: dict[str, str] = {}
    helps: set[str] = set()
    samples: dict[tuple[str, frozenset], float] = {}
    seen_sample_names: set[str] = set()
    for n, line in enumerate(text.splitlines(), start=1):
        assert line.strip() == line and line, f"line {n}: blank or padded line {line!r}"
        if line.startswith("#"):
            parts = line.split(" ", 3)
            if len(parts) >= 3 and parts[1] == "HELP":
                assert re.fullmatch(PROM_NAME, parts[2]), f"line {n}: {line!r}"
                assert parts[2] not in helps, f"line {n}: second HELP for {parts[2]}"
                helps.add(parts[2])
            elif len(parts) >= 3 and parts[1] == "TYPE":
                assert len(parts) == 4 and parts[3] in PROM_TYPES, f"line {n}: {line!r}"
                assert re.fullmatch(PROM_NAME, parts[2]), f"line {n}: {line!r}"
                assert parts[2] not in types, f"line {n}: second TYPE for {parts[2]}"
                assert parts[2] not in seen_sample_names, f"line {n}: TYPE after samples of {parts[2]}"
                types[parts[2]] = parts[3]
            continue
        m = PROM_SAMPLE.match(line)
        assert m, f"line {n}: not a sample: {line!r}"
        name = m.group("name")
        assert name in types, f"line {n}: sample of {name} without a TYPE line"
        value = m.group("value")
        assert re.fullmatch(r"[+-]?(\d+(\.\d*)?|\.\d+)([eE][+-]?\d+)?|[+-]?Inf|NaN", value), f"line {n}: {value!r}"
        labels = frozenset(re.findall(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"', m.group("labels") or ""))
        assert (name, labels) not in samples, f"line {n}: duplicate sample {line!r}"
        samples[(name, labels)] = float(value)
        seen_sample_names.add(name)
    # samples of one metric are grouped together
    order = [PROM_SAMPLE.match(l).group("name") for l in text.splitlines() if not l.startswith("#")]
    groups = [name for i, name in enumerate(order) if i == 0 or order[i - 1] != name]
    assert len(groups) == len(set(groups)), "samples of one metric are not contiguous"
    return samples


def sample(samples, name, **labels) -> float:
    return samples[(name, frozenset(labels.items()))]


def test_prometheus_textfile_parses_and_carries_the_counts(day, dsn, tmp_path):
    key = scalar(day, "SELECT min(id) FROM public.sales WHERE status = 'completed'")
    write_untracked(day, "public.sales", "UPDATE public.sales SET total = total + 3 WHERE id = %s", (key,))
    out_dir = tmp_path / "textfiles"
    out_dir.mkdir()
    target = out_dir / "ledgeradmin.prom"
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--prometheus", str(target))
    assert result.exit_code == 1, result.output
    assert sorted(p.name for p in out_dir.iterdir()) == ["ledgeradmin.prom"], "a temporary file was left behind"
    samples = parse_prometheus(target.read_text(encoding="utf-8"))
    own = scalar(day, OWN_ELIGIBLE["sale"])
    assert sample(samples, "ledgeradmin_rows", rule="sale", state="eligible") == own
    assert sample(samples, "ledgeradmin_rows", rule="sale", state="drifted") == 1
    assert sample(samples, "ledgeradmin_rows", rule="sale", state="missing") == 0
    for rule in RULES:
        assert sample(samples, "ledgeradmin_rows", rule=rule, state="eligible") == scalar(day, OWN_ELIGIBLE[rule])
        assert sample(samples, "ledgeradmin_trigger_ok", rule=rule) == 1
    assert sample(samples, "ledgeradmin_verify_ok") == 0
    duration = sample(samples, "ledgeradmin_verify_duration_seconds")
    assert 0 <= duration < 60
    stamp = sample(samples, "ledgeradmin_verify_timestamp_seconds")
    assert abs(stamp - time.time()) < 120
    assert sample(samples, "ledgeradmin_ledger_entries") == scalar(day, "SELECT count(*) FROM ledger.entry")
    assert os.stat(target).st_mode & 0o777 == 0o644


def test_prometheus_textfile_is_replaced_atomically(day, dsn, tmp_path):
    target = tmp_path / "ledgeradmin.prom"
    target.write_text("# old content\n", encoding="utf-8")
    with open(target, encoding="utf-8") as reader:  # a collector reading while verify writes
        result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--prometheus", str(target))
        assert result.exit_code == 0, result.output
        # the file was renamed over, not rewritten in place: the open reader still sees
        # the complete old version, never a half-written new one
        assert reader.read() == "# old content\n"
    samples = parse_prometheus(target.read_text(encoding="utf-8"))
    assert sample(samples, "ledgeradmin_verify_ok") == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == ["ledgeradmin.prom"]


def slow_sale_config(conn: psycopg.Connection, tmp_path: Path, seconds: float) -> Path:
    """The shop's ledger.toml with rule `sale` made slow on one row: its `when` sleeps there."""
    slow_key = scalar(conn, "SELECT min(id) FROM public.sales")
    text = SHOP_CONFIG.read_text(encoding="utf-8")
    slow = text.replace(
        "when = \"status = 'completed'\"",
        f"when = \"status = 'completed' AND pg_sleep(CASE WHEN id = {slow_key} THEN {seconds} ELSE 0 END)"
        " IS NOT NULL\"",
    )
    assert slow != text
    config_path = tmp_path / "slow.toml"
    config_path.write_text(slow, encoding="utf-8")
    return config_path


def test_json_and_prometheus_say_which_check_took_the_time(day, dsn, tmp_path):
    """The rule `sale` is made slow on one row (0.4 s): its own time shows it, the other
    rules' and the ledger checks' do not, and the parts add up to at most the whole run."""
    config_path = slow_sale_config(day, tmp_path, 0.4)
    prom = tmp_path / "ledgeradmin.prom"
    result = cli("verify", "--dsn", dsn, "--config", str(config_path), "--json", "--prometheus", str(prom))
    assert result.exit_code == 1, result.output  # the edited rule is not the installed one: OUTDATED
    doc = json.loads(result.stdout)
    seconds = {r["rule"]: r["seconds"] for r in doc["rules"]}
    assert set(seconds) == set(RULES)
    assert seconds["sale"] >= 0.4
    assert all(0 <= s < 0.4 for rule, s in seconds.items() if rule != "sale"), seconds
    assert 0 <= doc["ledger"]["seconds"] < 0.4
    assert sum(seconds.values()) + doc["ledger"]["seconds"] <= doc["duration_seconds"] + 0.005
    samples = parse_prometheus(prom.read_text(encoding="utf-8"))
    for rule, s in seconds.items():
        assert sample(samples, "ledgeradmin_verify_rule_duration_seconds", rule=rule) == pytest.approx(s, abs=0.001)
    assert sample(samples, "ledgeradmin_verify_ledger_duration_seconds") == pytest.approx(
        doc["ledger"]["seconds"], abs=0.001)


def test_statement_timeout_is_reported_with_what_to_do(day, dsn, tmp_path):
    config_path = slow_sale_config(day, tmp_path, 1)
    result = CliRunner().invoke(main, ["verify", "--dsn", dsn, "--config", str(config_path)],
                                env={"PGOPTIONS": "-c statement_timeout=200"})
    assert result.exit_code == 2, result.output
    assert "Error: database error: canceling statement due to statement timeout" in result.stderr
    assert "Hint: the session's statement_timeout (set for the role or the database, or in PGOPTIONS)" in result.stderr


def test_prometheus_label_values_are_escaped():
    from ledgeradmin.metrics import render
    from ledgeradmin.verify import LedgerReport, RuleReport, VerifyResult

    result = VerifyResult([RuleReport('we"ird\\rule\n', "public.x", 1, 1, 0, 0, 0, 0)], LedgerReport(), None, 0.5)
    samples = parse_prometheus(render(result))
    assert sample(samples, "ledgeradmin_rows", rule='we\\"ird\\\\rule\\n', state="eligible") == 1


# --------------------------------------------------------------------------- 4. locks, read only, --since, --rule


SLOW_CONFIG = """
[accounts.1100]
name = "Accounts Receivable"
type = "asset"
[accounts.4000]
name = "Sales Revenue"
type = "income"

[rules.sale]
source = "public.sales"
when = "status = 'completed' AND pg_sleep(0.01) IS NOT NULL"
date = "sold_at"
lines = [
  { account = "1100", debit = "total" },
  { account = "4000", credit = "total" },
]
"""


def test_verify_never_blocks_writers_and_takes_only_access_share(day, dsn, connect, tmp_path):
    """A verify made slow (its `when` sleeps 10 ms per completed sale, ~2.5 s in all) runs in
    a thread; while it is inside its snapshot, writers with lock_timeout = 500ms insert,
    update and delete sales, and pg_locks shows only ACCESS SHARE locks for it."""
    config_path = tmp_path / "slow.toml"
    config_path.write_text(SLOW_CONFIG, encoding="utf-8")
    config = load_config(config_path)
    reader = connect(autocommit=True)
    reader_pid = reader.info.backend_pid
    outcome: dict = {}

    def run():
        try:
            outcome["result"] = verify(reader, config)
        except BaseException as exc:  # noqa: BLE001
            outcome["error"] = exc

    thread = threading.Thread(target=run)
    thread.start()
    try:
        watcher = connect(autocommit=True)
        deadline = time.monotonic() + 10
        while not scalar(
            watcher,
            "SELECT count(*) FROM pg_locks WHERE pid = %s AND relation = 'public.sales'::regclass",
            (reader_pid,),
        ):
            assert time.monotonic() < deadline, "verify never read the sales table"
            assert thread.is_alive(), outcome
            time.sleep(0.01)
        writer = connect(autocommit=True)
        writer.execute("SET lock_timeout = '500ms'")
        started = time.monotonic()
        new_id = add_sale(writer, total="12.00", tax="1.00")
        writer.execute("UPDATE public.sales SET total = total + 1 WHERE id = %s", (new_id,))
        writer.execute("DELETE FROM public.sales WHERE id = %s", (new_id,))
        add_sale(writer, total="13.00", tax="0")
        writer.execute("UPDATE public.sales SET tax = tax + 0.01 WHERE status = 'completed' AND id % 10 = 0")
        assert time.monotonic() - started < 2
        locks = watcher.execute(
            "SELECT relation = 'public.sales'::regclass, mode, granted FROM pg_locks"
            " WHERE pid = %s AND locktype = 'relation'",
            (reader_pid,),
        ).fetchall()
        assert thread.is_alive(), "verify finished too early for the check to mean anything"
        assert (True, "AccessShareLock", True) in locks
        assert {mode for _, mode, _ in locks} == {"AccessShareLock"}, locks
        activity = watcher.execute(
            "SELECT backend_xid, state FROM pg_stat_activity WHERE pid = %s", (reader_pid,)
        ).fetchone()
        assert activity[0] is None, "verify took a transaction id: it wrote something"
    finally:
        thread.join(30)
    assert "error" not in outcome, outcome.get("error")
    # one snapshot: the rows committed while verify ran are not in its counts
    assert outcome["result"].rules[0].eligible == scalar(day, OWN_ELIGIBLE["sale"]) - 1


def test_verify_runs_with_default_transaction_read_only(day, dsn, connect):
    dbname = scalar(day, "SELECT current_database()")
    write_untracked(day, "public.sales", "INSERT INTO public.sales (customer, total) VALUES ('ro', 9)")
    day.execute(f'ALTER DATABASE "{dbname}" SET default_transaction_read_only = on')
    probe = connect(autocommit=True)
    assert scalar(probe, "SHOW default_transaction_read_only") == "on"
    with pytest.raises(psycopg.errors.ReadOnlySqlTransaction):
        probe.execute("INSERT INTO public.sales (customer, total) VALUES ('no', 1)")
    code, doc = run_verify(dsn)
    assert code == 1  # it ran, and found the missing row
    assert rule_of(doc, "sale")["missing"] == 1
    assert all(r["error"] is None for r in doc["rules"])


def test_verify_runs_in_a_read_only_session_api(day, shop_config, connect):
    ro = connect(autocommit=True)
    ro.execute("SET default_transaction_read_only = on")
    result = verify(ro, shop_config)
    assert result.ok


def test_verify_works_for_a_role_with_only_select(day, dsn, shop_config, connect):
    """As on a replica or for an auditor: SELECT on the ledger and source tables suffices."""
    day.execute("DROP ROLE IF EXISTS verify_auditor_t")
    day.execute("CREATE ROLE verify_auditor_t LOGIN")
    try:
        day.execute("GRANT USAGE ON SCHEMA ledger TO verify_auditor_t")
        day.execute("GRANT SELECT ON ALL TABLES IN SCHEMA ledger TO verify_auditor_t")
        day.execute("GRANT SELECT ON ALL TABLES IN SCHEMA public TO verify_auditor_t")
        auditor = connect(autocommit=True, user="verify_auditor_t")
        result = verify(auditor, shop_config)
        assert result.ok, result.as_dict()
        # without SELECT on a source table every rule on it would seem changed: an error naming the grant
        day.execute("REVOKE SELECT ON public.payment_vouchers FROM verify_auditor_t")
        for command in ("status", "verify"):
            denied = cli(command, "--dsn", auditor.info.dsn, "--config", str(SHOP_CONFIG))
            assert denied.exit_code == 2, denied.output
            assert denied.stderr.startswith("Error: permission denied for table public.payment_vouchers: status and "
                                            "verify plan the rules against their tables\nHint: GRANT SELECT ON "
                                            "public.payment_vouchers TO "), denied.stderr
        auditor.close()
    finally:
        day.execute("DROP OWNED BY verify_auditor_t")
        day.execute("DROP ROLE verify_auditor_t")


def test_since_restricts_to_recent_rows(day, dsn):
    old = write_untracked(
        day,
        "public.sales",
        "INSERT INTO public.sales (customer, sold_at, total) "
        "SELECT 'old', timestamptz '2020-01-15 12:00+00' + g * interval '1 day', 10 FROM generate_series(1, 3) g "
        "RETURNING id",
    )
    recent = write_untracked(
        day,
        "public.sales",
        "INSERT INTO public.sales (customer, sold_at, total) VALUES ('new', now(), 11), ('new', now(), 12) RETURNING id",
    )
    # an old entry whose row is gone: outside the range too; a recent one: inside
    old_posted = add_sale(day, sold_at=dt.datetime(2020, 2, 1, tzinfo=dt.timezone.utc))
    recent_posted = add_sale(day)
    write_untracked(day, "public.sales", "DELETE FROM public.sales WHERE id IN (%s, %s)", (old_posted, recent_posted))
    since = (dt.date.today() - dt.timedelta(days=2)).isoformat()
    code, doc = run_verify(dsn, "--since", since)
    assert code == 1
    sale = rule_of(doc, "sale")
    assert keys_of(sale, "missing") == sorted(str(k) for (k,) in recent)
    assert sale["missing"] == 2 and sale["orphaned"] == 1
    assert keys_of(sale, "orphaned") == [str(recent_posted)]
    own_recent = scalar(
        day, "SELECT count(*) FROM public.sales WHERE status = 'completed' AND sold_at >= %s::date", (since,)
    )
    assert sale["eligible"] == own_recent
    assert own_recent < scalar(day, OWN_ELIGIBLE["sale"]) - 100
    # the business day (2024 sales, requisitions and payments of today) is counted by date too
    assert rule_of(doc, "requisition")["eligible"] == scalar(day, OWN_ELIGIBLE["requisition"])

    code, full = run_verify(dsn)
    sale = rule_of(full, "sale")
    assert sale["missing"] == 5
    assert keys_of(sale, "missing") == sorted((str(k) for (k,) in old + recent), key=_key_order)
    assert keys_of(sale, "orphaned") == [str(old_posted), str(recent_posted)]

    code, none_recent = run_verify(dsn, "--since", "2030-01-01")
    assert code == 0, none_recent
    assert rule_of(none_recent, "sale")["eligible"] == 0


def test_rule_option_limits_the_rules(day, dsn):
    write_untracked(day, "public.sales", "INSERT INTO public.sales (customer, total) VALUES ('x', 3)")
    code, doc = run_verify(dsn, "--rule", "requisition", "--rule", "payment")
    assert code == 0, doc
    assert [r["rule"] for r in doc["rules"]] == ["requisition", "payment"]
    assert doc["total"] == scalar(day, OWN_ELIGIBLE["requisition"]) + scalar(day, OWN_ELIGIBLE["payment"])
    code, doc = run_verify(dsn, "--rule", "sale")
    assert code == 1
    assert [r["rule"] for r in doc["rules"]] == ["sale"]
    assert rule_of(doc, "sale")["missing"] == 1


def test_unknown_rule_exits_2(shop, dsn):
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--rule", "nope")
    assert result.exit_code == 2
    assert "nope" in result.stderr
    assert result.stdout == ""


@pytest.mark.parametrize(
    "bad",
    ["host=/nonexistent/socket/dir dbname=x connect_timeout=2", "this is not a conninfo", "postgresql://%zz"],
)
def test_bad_dsn_exits_2(bad):
    result = cli("verify", "--dsn", bad, "--config", str(SHOP_CONFIG))
    assert result.exit_code == 2, result.output
    assert result.stderr.startswith("Error:")
    assert "Traceback" not in result.output


def test_missing_config_exits_2(dsn, tmp_path):
    result = cli("verify", "--dsn", dsn, "--config", str(tmp_path / "absent.toml"))
    assert result.exit_code == 2


def test_source_table_gone_is_reported_not_crashed(day, dsn):
    day.execute("DROP TABLE public.manufacturing_orders")
    result = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--json")
    assert result.exit_code == 1, result.output
    doc = json.loads(result.stdout)
    mo = rule_of(doc, "manufacturing")
    assert mo["error"] and "manufacturing_orders" in mo["error"]
    assert mo["trigger"] != "ok"
    assert_clean_except(doc, "manufacturing")


@pytest.mark.parametrize("query", ["verify_rule.sql", "verify_keys.sql", "verify_orphaned.sql"])
def test_a_rule_pass_scans_its_table_in_parallel_computing_each_expression_once(shop, shop_config, query):
    """verify's queries read the desired postings as a subquery kept apart by a volatile
    column: PostgreSQL then computes each expression of the rule once per row, and may
    still scan the table in parallel (in a CTE, the same subquery would be materialized by
    one process). With parallel plans made cheap, the plan must be a parallel one, and
    the rule's amounts be computed in the scan, below everything that reads them."""
    from ledgeradmin import catalog
    from ledgeradmin import verify as verify_module
    from ledgeradmin.compiler import fill, template

    rule = shop_config.select(["sale"])[0]
    parts = verify_module._parts(rule, catalog.resolve(shop, rule), None)
    text = fill(template(f"queries/{query}"), **parts, closed=verify_module._closed(None),
                condition=verify_module.CONDITIONS["drifted"], limit="20")
    with shop.transaction(force_rollback=True):
        for setting in ("parallel_setup_cost", "parallel_tuple_cost", "min_parallel_table_scan_size"):
            shop.execute(f"SET LOCAL {setting} = 0")
        shop.execute("SET LOCAL max_parallel_workers_per_gather = 2")
        plan = "\n".join(r[0] for r in shop.execute(f"EXPLAIN (VERBOSE, COSTS OFF) {text}"))
    lines = plan.splitlines()
    scan = next(i for i, line in enumerate(lines) if "Parallel Seq Scan on public.sales" in line)
    assert "CTE" not in plan, plan
    if query != "verify_orphaned.sql":  # which needs no amount, only whether a row posts
        # the rule's expressions are computed in the scan, each once, not wherever the query uses them
        assert "round((r.total)::numeric, 4)" in lines[scan + 1] and "Output:" in lines[scan + 1], plan

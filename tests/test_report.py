"""report trial-balance and report account: totals from the journal, traceable lines."""

import csv
import io
import json
from decimal import Decimal

from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.report import account_ledger, trial_balance


def write_day(conn):
    conn.execute(
        "INSERT INTO public.sales (customer, sold_at, total, tax, payment_method, currency) VALUES"
        " ('a', '2026-01-10 10:00+00', 119, 19, 'invoice', 'USD'),"
        " ('b', '2026-01-11 23:30+00', 59.5, 9.5, 'cash', 'USD'),"
        " ('c', '2026-02-01 08:00+00', 238, 38, 'invoice', 'EUR')"
    )
    conn.execute("UPDATE public.sales SET total = 238, tax = 38 WHERE customer = 'a'")  # reversal + repost


def test_trial_balance_nets_to_zero_per_currency_and_matches_the_sources(shop):
    write_day(shop)
    rows = trial_balance(shop)
    by_key = {(r["account"], r["currency"]): r for r in rows}
    assert by_key[("1100", "USD")]["balance"] == Decimal("238")  # 119 posted, reversed, 238 posted
    assert by_key[("1100", "USD")]["debit"] == Decimal("357")
    assert by_key[("1100", "USD")]["credit"] == Decimal("119")
    assert by_key[("1000", "USD")]["balance"] == Decimal("59.5")
    assert by_key[("4000", "EUR")]["balance"] == Decimal("-200")
    for currency in ("USD", "EUR"):
        assert sum(r["balance"] for r in rows if r["currency"] == currency) == 0


def test_trial_balance_as_of_a_date_leaves_later_entries_out(shop):
    write_day(shop)
    import datetime as dt

    rows = trial_balance(shop, dt.date(2026, 1, 31))
    assert {r["currency"] for r in rows} == {"USD"}
    # sale a: the original (119) and its repost (238) keep the sale's date; the reversal of
    # the original is dated when it happened (today), after the as-of date
    assert {(r["account"], r["balance"]) for r in rows if r["account"] == "1100"} == {("1100", Decimal("357"))}


def test_account_report_has_running_balance_and_traces_to_the_source(shop):
    write_day(shop)
    lines = list(account_ledger(shop, "1100"))
    usd = [line for line in lines if line["currency"] == "USD"]
    # original (Jan 10), repost (dated as the sale, Jan 10), reversal of the original (today)
    assert [line["balance"] for line in usd] == [Decimal("119"), Decimal("357"), Decimal("238")]
    assert all(line["rule"] == "sale" and line["source_key"] == "1" for line in usd)
    assert usd[2]["reverses"] == usd[0]["entry"]
    assert usd[0]["reverses"] is None and usd[1]["reverses"] is None


def test_report_cli_formats(shop, dsn):
    write_day(shop)
    runner = CliRunner()
    table = runner.invoke(main, ["report", "trial-balance", "--dsn", dsn])
    assert table.exit_code == 0, table.output
    assert "TOTAL" in table.stdout and "1100" in table.stdout
    as_json = runner.invoke(main, ["report", "trial-balance", "--json", "--dsn", dsn])
    data = json.loads(as_json.stdout)
    assert {"account", "currency", "debit", "credit", "balance"} <= set(data[0])
    as_csv = runner.invoke(main, ["report", "account", "1100", "--csv", "--from", "2026-01-01", "--to", "2026-01-31",
                                  "--dsn", dsn])
    rows = list(csv.DictReader(io.StringIO(as_csv.stdout)))
    assert [r["source_key"] for r in rows] == ["1", "1"]
    unknown = runner.invoke(main, ["report", "account", "9999", "--dsn", dsn])
    assert unknown.exit_code == 2 and "unknown account" in unknown.stderr

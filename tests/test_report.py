"""report trial-balance, account and journal: totals from the journal, traceable lines."""

import contextlib
import csv
import datetime as dt
import io
import json
import subprocess
import sys
from decimal import Decimal

import pytest
from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.output import emit_json, emit_rows, table_blocks
from ledgeradmin.report import account_ledger, journal, trial_balance


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


def test_journal_lists_every_line_in_date_order_and_one_row_s_history(shop):
    write_day(shop)
    lines = list(journal(shop))
    entries = shop.execute("SELECT count(*), (SELECT count(*) FROM ledger.line) FROM ledger.entry").fetchone()
    assert (len({line["entry"] for line in lines}), len(lines)) == entries
    assert [(line["effective_at"], line["entry"], line["line_no"]) for line in lines] == sorted(
        (line["effective_at"], line["entry"], line["line_no"]) for line in lines)
    # sale a: posted, reversed (dated today), reposted; every entry balances
    history = list(journal(shop, rule="sale", source_key="1"))
    by_entry: dict[int, list] = {}
    for line in history:
        by_entry.setdefault(line["entry"], []).append(line)
    original, repost, reversal = sorted(by_entry, key=lambda e: (by_entry[e][0]["effective_at"], e))
    assert by_entry[reversal][0]["reverses"] == original and by_entry[repost][0]["reverses"] is None
    assert all(sum(line["debit"] - line["credit"] for line in ls) == 0 for ls in by_entry.values())
    assert {line["debit"] for line in by_entry[repost] if line["account"] == "1100"} == {Decimal("238")}
    january = list(journal(shop, dt.date(2026, 1, 11), dt.date(2026, 1, 31)))
    assert {line["source_key"] for line in january} == {"2"}
    assert list(journal(shop, rule="payment")) == []


def test_journal_cli_streams_every_format(shop, dsn):
    write_day(shop)
    runner = CliRunner()
    args = ["report", "journal", "--rule", "sale", "--key", "1", "--dsn", dsn]
    as_json = json.loads(runner.invoke(main, [*args, "--json"]).stdout)
    as_csv = list(csv.DictReader(io.StringIO(runner.invoke(main, [*args, "--csv"]).stdout)))
    table = runner.invoke(main, args).stdout.splitlines()
    assert len(as_json) == len(as_csv) == len(table) - 1 == 9
    assert {r["memo"] for r in as_csv} == {"Sale 1 to a", f"Reversal of entry {as_json[0]['entry']}"}
    assert table[0].split() == ["effective_at", "entry", "posted_at", "rule", "source_key", "reverses", "memo",
                                "line_no", "account", "currency", "debit", "credit"]
    assert runner.invoke(main, ["report", "journal", "--rule", "nope", "--json", "--dsn", dsn]).stdout == "[]\n"


def test_listings_are_written_as_their_rows_come():
    """A long listing is never held whole: the table comes in blocks, JSON and CSV row by
    row; the JSON is the same text as the whole list's."""
    def rows(n, fail=False):
        for i in range(n):
            yield {"a": i, "b": "x" * (i % 7), "d": Decimal("1.5"), "t": dt.date(2026, 1, 1)}
        if fail:
            raise RuntimeError("read past the first block")

    first = next(table_blocks(rows(1500, fail=True), ["a", "b"], block=1000))
    assert len(first.splitlines()) == 1001
    for fmt, written in (("table", 1001), ("csv", 1501), ("json", 1500 * 6 + 1)):
        out = io.StringIO()
        with contextlib.redirect_stdout(out), pytest.raises(RuntimeError):
            emit_rows(rows(1500, fail=True), ["a", "b", "d", "t"] if fmt == "json" else ["a", "b"], fmt)
        assert len(out.getvalue().splitlines()) == written, fmt  # before the rows ran out
    out = io.StringIO()
    with contextlib.redirect_stdout(out):
        emit_rows(rows(3), ["a", "b", "d", "t"], "json")
    whole = io.StringIO()
    with contextlib.redirect_stdout(whole):
        emit_json([{c: r[c] for c in ("a", "b", "d", "t")} for r in rows(3)])
    assert out.getvalue() == whole.getvalue()


def test_a_report_cut_short_by_its_reader_ends_quietly(shop, dsn):
    """`ledgeradmin report journal | head`: the report stops at the closed pipe, its cursor
    and connection end cleanly, nothing is printed on stderr."""
    shop.execute("INSERT INTO public.sales (customer, total, tax) SELECT 'c' || g, g, 0 FROM generate_series(1, 3000) g")
    proc = subprocess.Popen([sys.executable, "-m", "ledgeradmin", "report", "journal", "--dsn", dsn],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout.readline().split()[:2] == [b"effective_at", b"entry"]
    proc.stdout.close()
    stderr = proc.stderr.read()
    assert proc.wait(timeout=60) == 1 and stderr == b""


def test_trial_balance_of_a_period_has_opening_balances_and_the_period_s_movements(shop, dsn):
    write_day(shop)
    rows = trial_balance(shop, date_from=dt.date(2026, 2, 1))
    by_key = {(r["account"], r["currency"]): r for r in rows}
    # sale a: posted twice in January (original and repost); its reversal is dated today
    assert [by_key[("1100", "USD")][k] for k in ("opening", "debit", "credit", "balance")] == [
        Decimal("357"), Decimal("0"), Decimal("119"), Decimal("238")]
    assert [by_key[("1100", "EUR")][k] for k in ("opening", "debit", "balance")] == [0, Decimal("238"), Decimal("238")]
    assert all(r["opening"] + r["debit"] - r["credit"] == r["balance"] for r in rows)
    for currency in ("USD", "EUR"):
        assert sum(r["opening"] for r in rows if r["currency"] == currency) == 0
    assert "opening" not in trial_balance(shop)[0]
    january = trial_balance(shop, dt.date(2026, 1, 31), dt.date(2026, 1, 11))
    assert {(r["account"], r["opening"], r["debit"], r["credit"]) for r in january if r["account"] == "1000"} == {
        ("1000", 0, Decimal("59.5"), 0)}
    text = CliRunner().invoke(main, ["report", "trial-balance", "--from", "2026-02-01", "--dsn", dsn]).stdout
    assert text.splitlines()[0].split() == ["account", "name", "type", "currency", "opening", "debit", "credit",
                                            "balance"]
    assert [line.split()[-4:] for line in text.splitlines() if line.startswith("TOTAL")] == [
        ["0.0000", "119.0000", "119.0000", "0.0000"],  # USD: the reversal dated today
        ["0.0000", "238.0000", "238.0000", "0.0000"]]  # EUR: sale c, February


def test_reports_count_entries_of_any_date_and_take_the_last_day_as_a_bound(shop, dsn):
    """An entry dated beyond year 9999 or before year 1 (a source row's date column can
    hold these, and they post) is in every report by default, as in the trial balance;
    --to 9999-12-31 is a bound like any other."""
    write_day(shop)
    shop.execute("INSERT INTO public.sales (customer, sold_at, total, tax) VALUES"
                 " ('far', '20260-03-01 00:00+00', 10, 0), ('old', '0044-03-15 00:00+00 BC', 7, 0)")
    balances = {r["currency"]: r["balance"] for r in trial_balance(shop) if r["account"] == "1100"}
    lines = list(account_ledger(shop, "1100"))
    assert {c: [line["balance"] for line in lines if line["currency"] == c][-1] for c in balances} == balances
    assert balances["USD"] == Decimal("255")  # 238 (sale a) + 10 + 7
    assert [line["effective_at"] for line in lines][0] == "0044-03-15 00:00:00+00 BC"  # the server's text
    assert [line["effective_at"] for line in lines][-1] == "20260-03-01 00:00:00+00"
    entries = shop.execute("SELECT count(*) FROM ledger.entry").fetchone()[0]
    assert len({line["entry"] for line in journal(shop)}) == entries
    assert {line["source_key"] for line in journal(shop, rule="sale", source_key="4")} == {"4"}
    assert {line["memo"] for line in journal(shop, date_to=dt.date(9999, 12, 31))} >= {"Sale 5 to old"}
    assert "Sale 4 to far" not in {line["memo"] for line in journal(shop, date_to=dt.date(9999, 12, 31))}
    assert list(journal(shop, dt.date(9999, 12, 31), dt.date(9999, 12, 31))) == []
    runner = CliRunner()
    for args in (["journal"], ["account", "1100"]):
        result = runner.invoke(main, ["report", *args, "--to", "9999-12-31", "--json", "--dsn", dsn])
        assert result.exit_code == 0, result.output
        assert {r["source_key"] for r in json.loads(result.stdout)} >= {"1", "5"}
        whole = runner.invoke(main, ["report", *args, "--csv", "--dsn", dsn])
        assert whole.exit_code == 0, whole.output
        assert "20260-03-01 00:00:00+00" in whole.stdout and "0044-03-15 00:00:00+00 BC" in whole.stdout


def test_a_row_s_history_goes_on_across_a_rename(shop, tmp_path, dsn):
    """`report journal --rule NEW --key K` after `rename OLD NEW`: the entries OLD wrote
    for the row (which keep its name) are part of the row's history, with the NEW
    reversal of OLD's entry."""
    from ledgeradmin.config import load_config
    from ledgeradmin.rename import rename

    from conftest import SHOP_CONFIG

    write_day(shop)  # sale 1: posted, reversed, reposted, all as "sale"
    renamed = tmp_path / "ledger.toml"
    renamed.write_text(SHOP_CONFIG.read_text().replace("[rules.sale]", "[rules.sales]"))
    rename(shop, load_config(renamed), "sale", "sales")
    shop.execute("UPDATE public.sales SET total = 300, tax = 48 WHERE id = 1")  # reversed and reposted as "sales"

    def entries(**kwargs) -> dict[int, tuple]:
        return {line["entry"]: (line["rule"], line["reverses"]) for line in journal(shop, **kwargs)}

    every = entries(source_key="1")
    history = entries(rule="sales", source_key="1")
    assert history == every and len(history) == 5
    assert sorted(rule for rule, _ in history.values()) == ["sale", "sale", "sale", "sales", "sales"]
    assert all(reversed_entry in history for _, reversed_entry in history.values() if reversed_entry)
    assert sorted(entries(rule="sale", source_key="1").values(), key=str) == sorted(
        (v for v in every.values() if v[0] == "sale"), key=str)  # an earlier name: its own entries only
    result = CliRunner().invoke(main, ["report", "journal", "--rule", "sales", "--key", "1", "--json", "--dsn", dsn])
    assert result.exit_code == 0, result.output
    assert {r["entry"] for r in json.loads(result.stdout)} == set(every)

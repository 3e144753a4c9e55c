"""Closed periods: `ledgeradmin period close DATE` refuses every entry dated on or before
DATE, whoever writes it (the triggers under block and defer, backfill), and nothing else:
edits that post nothing, reversals and later entries go on. Dates are relative to the
server's today (UTC), which a close must precede."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import psycopg
import pytest
from click.testing import CliRunner

from invariants import LIVE_ENTRIES
from ledgeradmin.backfill import backfill
from ledgeradmin.cli import main
from ledgeradmin.errors import LedgerError
from ledgeradmin.period import close, closed_through, history, reopen
from ledgeradmin.verify import verify

SHOP_CONFIG = Path(__file__).resolve().parents[1] / "examples" / "shop" / "ledger.toml"

LIVE = f"SELECT e.id, e.effective_at FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = %s AND e.source_key = %s"


def cli(*args: str):
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


@pytest.fixture
def today(shop) -> dt.date:
    return shop.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()[0]


@pytest.fixture
def through(today) -> dt.date:
    """The close date of these tests: ten days ago."""
    return today - dt.timedelta(days=10)


def utc(day: dt.date, clock: str = "12:00:00") -> str:
    return f"{day} {clock}+00"


def sale(conn, id_: int, sold_at: str, total: str = "100.00") -> None:
    conn.execute("INSERT INTO public.sales (id, customer, sold_at, total, tax) VALUES (%s, 'c', %s, %s, 0)",
                 (id_, sold_at, total))


def voucher(conn, id_: int, paid_at: str, amount: str = "50.00") -> None:
    conn.execute("INSERT INTO public.payment_vouchers (id, payee, amount, status, paid_at) "
                 "VALUES (%s, 'p', %s, 'paid', %s)", (id_, amount, paid_at))


def live(conn, rule: str, key: str) -> list[tuple]:
    return conn.execute(LIVE, (rule, key)).fetchall()


def open_failures(conn, rule: str) -> dict[str, tuple[str, str]]:
    return {k: (state, message) for k, state, message in conn.execute(
        "SELECT source_key, sqlstate, message FROM ledger.failure WHERE rule = %s AND resolved_at IS NULL", (rule,))}


# -- the triggers ----------------------------------------------------------------------


def test_a_sale_dated_in_the_closed_period_is_refused_naming_rule_row_and_date(shop, through):
    close(shop, through)
    with pytest.raises(psycopg.errors.CheckViolation) as info:
        sale(shop, 1, f"{through} 23:59:59.999999+00")
    message = info.value.diag.message_primary
    assert "rule sale" in message and "(id)=(1)" in message, message
    assert f"closed through {through}" in message and f"{through} 23:59:59 UTC" in message, message
    assert "ledgeradmin period reopen" in info.value.diag.message_hint
    assert shop.execute("SELECT count(*) FROM public.sales").fetchone()[0] == 0
    # the first instant after the closed day posts, in UTC whatever the writer's zone
    shop.execute("SET TimeZone = 'America/Sao_Paulo'")
    sale(shop, 2, f"{through + dt.timedelta(days=1)} 00:00:00+00")
    sale(shop, 3, f"{through} 22:30:00-02")  # 00:30 UTC the next day
    assert [len(live(shop, "sale", k)) for k in ("2", "3")] == [1, 1]


def test_one_old_row_in_a_statement_refuses_it_under_block_and_is_recorded_under_defer(shop, through):
    close(shop, through)
    old, new = utc(through), utc(through + dt.timedelta(days=3))
    with pytest.raises(psycopg.errors.CheckViolation, match=r"rule sale cannot post public\.sales row \(id\)=\(3\)"):
        shop.execute("INSERT INTO public.sales (id, customer, sold_at, total) VALUES "
                     "(1, 'c', %s, 10), (2, 'c', %s, 20), (3, 'c', %s, 30), (4, 'c', %s, 40)", (new, new, old, new))
    assert shop.execute("SELECT count(*) FROM ledger.entry").fetchone()[0] == 0

    shop.execute("INSERT INTO public.payment_vouchers (id, payee, amount, status, paid_at) VALUES "
                 "(1, 'p', 10, 'paid', %s), (2, 'p', 20, 'paid', %s), (3, 'p', 30, 'paid', %s)", (new, old, new))
    assert [len(live(shop, "payment", k)) for k in ("1", "2", "3")] == [1, 0, 1]
    failures = open_failures(shop, "payment")
    assert list(failures) == ["2"]
    assert failures["2"][0] == "23514" and f"closed through {through}" in failures["2"][1]


def test_a_large_insert_finds_its_rows_of_the_closed_period_without_a_replay(shop, through):
    """3,000 vouchers (defer) with three dated in the closed period: those three are
    recorded, the others post, and no row is replayed on its own. A replay would run each
    row in a subtransaction of its own, each with a transaction id: the statement uses a
    handful."""
    close(shop, through)
    xid = "SELECT pg_current_xact_id()::text::bigint"
    before = shop.execute(xid).fetchone()[0]
    shop.execute("INSERT INTO public.payment_vouchers (id, payee, amount, status, paid_at) "
                 "SELECT g, 'p', g, 'paid', CASE WHEN g %% 1000 = 7 THEN %s::timestamptz ELSE now() END "
                 "FROM generate_series(1, 3000) AS g", (utc(through, "23:00:00"),))
    assert shop.execute(xid).fetchone()[0] - before < 10
    assert sorted(open_failures(shop, "payment"), key=int) == ["7", "1007", "2007"]
    assert shop.execute("SELECT count(*) FROM ledger.posting WHERE rule = 'payment'").fetchone()[0] == 2997
    # under block the first such row is named, the statement refused
    with pytest.raises(psycopg.errors.CheckViolation, match=r"row \(id\)=\(1007\)"):
        shop.execute("INSERT INTO public.sales (id, customer, sold_at, total) "
                     "SELECT g, 'c', CASE WHEN g >= 1007 THEN %s::timestamptz ELSE now() END, g "
                     "FROM generate_series(1, 3000) AS g", (utc(through, "23:00:00"),))
    assert shop.execute("SELECT count(*) FROM public.sales").fetchone()[0] == 0


def test_edits_of_an_old_row_post_only_what_the_open_period_may_hold(shop, shop_config, through, today):
    sale(shop, 1, utc(through - dt.timedelta(days=5)), "100.00")
    sale(shop, 2, utc(through - dt.timedelta(days=5)), "200.00")
    voucher(shop, 1, utc(through - dt.timedelta(days=5)))
    [(entry, _)] = live(shop, "sale", "1")
    [(voucher_entry, _)] = live(shop, "payment", "1")
    close(shop, through)

    shop.execute("UPDATE public.sales SET note = 'called the customer' WHERE id = 1")  # posts nothing
    assert live(shop, "sale", "1") == [(entry, live(shop, "sale", "1")[0][1])]
    with pytest.raises(psycopg.errors.CheckViolation, match=r"row \(id\)=\(1\).*closed period"):
        shop.execute("UPDATE public.sales SET total = 150 WHERE id = 1")  # the repost would be dated then
    assert shop.execute("SELECT total FROM public.sales WHERE id = 1").fetchone()[0] == 100
    # moving the row into the open period posts: the old entry reversed today, the new one then
    shop.execute("UPDATE public.sales SET total = 150, sold_at = %s WHERE id = 1", (utc(today),))
    [(new_entry, effective_at)] = live(shop, "sale", "1")
    assert new_entry != entry and effective_at.date() == today
    # a deleted old row is reversed today
    shop.execute("DELETE FROM public.sales WHERE id = 2")
    assert live(shop, "sale", "2") == []
    reversal = shop.execute("SELECT effective_at FROM ledger.entry WHERE rule = 'sale' AND source_key = '2' "
                            "AND reverses IS NOT NULL").fetchone()[0]
    assert reversal.date() >= today

    # defer: the edit commits, its posting waits as a failure and the old entry stays live
    shop.execute("UPDATE public.payment_vouchers SET amount = 75 WHERE id = 1")
    assert [e for e, _ in live(shop, "payment", "1")] == [voucher_entry]
    assert list(open_failures(shop, "payment")) == ["1"]
    payment = verify(shop, shop_config, ["payment"]).rules[0]
    assert (payment.drifted, payment.failed) == (1, 1)


# -- backfill, reopen ------------------------------------------------------------------


def test_backfill_records_rows_of_the_closed_period_and_posts_them_once_it_is_reopened(shop, shop_config, through):
    shop.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")  # an outage
    for i in range(1, 21):
        sale(shop, i, utc(through - dt.timedelta(days=10 - i)))  # 1-10 closed, 11-20 open
    shop.execute("ALTER TABLE public.sales ENABLE TRIGGER USER")
    close(shop, through)

    summary = backfill(shop, shop_config, ["sale"])
    sale_summary = summary.rules[0]
    assert (sale_summary.posted, sale_summary.failed) == (10, 10)
    assert sorted(open_failures(shop, "sale"), key=int) == [str(i) for i in range(1, 11)]
    assert all(state == "23514" for state, _ in open_failures(shop, "sale").values())
    assert verify(shop, shop_config, ["sale"]).rules[0].missing == 10

    reopen(shop, through - dt.timedelta(days=30))
    assert closed_through(shop) == through - dt.timedelta(days=31)
    assert backfill(shop, shop_config, ["sale"]).rules[0].posted == 10
    assert open_failures(shop, "sale") == {}
    assert verify(shop, shop_config).ok


def test_verify_and_a_dry_run_count_the_rows_the_closed_period_keeps_from_posting(shop, shop_config, dsn, through):
    """A missing and a drifted sale dated in the closed period, a missing one after it:
    verify counts the first two apart and says why; the dry run promises what the real run
    does (one posted), and names the other two."""
    sale(shop, 1, utc(through - dt.timedelta(days=3)))
    shop.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")
    sale(shop, 2, utc(through - dt.timedelta(days=2)))
    sale(shop, 3, utc(through + dt.timedelta(days=2)))
    shop.execute("UPDATE public.sales SET total = 5 WHERE id = 1")
    shop.execute("ALTER TABLE public.sales ENABLE TRIGGER USER")
    assert verify(shop, shop_config, ["sale"]).rules[0].missing_closed is None  # no period closed
    close(shop, through)

    report = verify(shop, shop_config, ["sale"])
    rule = report.rules[0]
    assert (rule.missing, rule.drifted, rule.missing_closed, rule.drifted_closed) == (2, 1, 1, 1)
    assert report.as_dict()["closed_through"] == str(through)
    text = cli("verify", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--rule", "sale").stdout
    assert (f"sale: 1 missing and 1 drifted are dated in the closed period (the books are closed through "
            f"{through})") in text
    assert "`ledgeradmin backfill` repairs them, but for the 2 in the closed period" in text

    dry = backfill(shop, shop_config, ["sale"], dry_run=True).rules[0]
    assert (dry.posted, dry.reposted, dry.closed) == (1, 0, 2)
    dry_text = cli("backfill", "--dsn", dsn, "--config", str(SHOP_CONFIG), "--rule", "sale", "--dry-run").stdout
    assert "sale: 2 more rows are dated in the closed period" in dry_text
    real = backfill(shop, shop_config, ["sale"]).rules[0]
    assert (real.posted, real.reposted, real.failed) == (1, 0, 2)
    assert "closed" not in real.as_dict()


def test_close_and_reopen_are_checked_and_logged(shop, through, today):
    assert closed_through(shop) is None
    for bad in (today, today + dt.timedelta(days=1)):
        with pytest.raises(LedgerError, match="only days before today"):
            close(shop, bad)
    with pytest.raises(LedgerError, match="no period is closed"):
        reopen(shop, through)
    assert close(shop, through, dry_run=True).closed_through == through
    assert closed_through(shop) is None
    sale(shop, 1, utc(through))  # the dry run left no constraint behind

    result = close(shop, through - dt.timedelta(days=5))
    assert (result.closed_through, result.previous) == (through - dt.timedelta(days=5), None)
    close(shop, through)
    with pytest.raises(LedgerError, match=f"closed through {through} already"):
        close(shop, through - dt.timedelta(days=1))
    with pytest.raises(LedgerError, match="is open already"):
        reopen(shop, through + dt.timedelta(days=1))
    reopen(shop, through)  # closed through the day before
    assert closed_through(shop) == through - dt.timedelta(days=1)
    reopen(shop, None)
    assert closed_through(shop) is None
    close(shop, dt.date.min)
    reopen(shop, dt.date.min)  # the first day there is: every period
    assert closed_through(shop) is None
    sale(shop, 2, utc(through - dt.timedelta(days=100)))
    assert [c.closed_through for c in history(shop)] == [
        None, dt.date.min, None, through - dt.timedelta(days=1), through, through - dt.timedelta(days=5)]
    assert {c.changed_by for c in history(shop)} == {shop.info.user}
    with pytest.raises(psycopg.errors.InsufficientPrivilege, match="append-only"):
        shop.execute("DELETE FROM ledger.period_close")


def test_the_close_waits_a_bounded_time_for_its_lock_and_names_who_holds_it(shop, connect, through):
    from ledgeradmin.locks import LockWait

    reader = connect(application_name="month-end report")
    reader.execute("BEGIN")
    reader.execute("SELECT count(*) FROM ledger.entry")
    with pytest.raises(LedgerError, match="month-end report") as info:
        close(shop, through, wait=LockWait(timeout_ms=100, retries=1))
    assert "nothing was changed" in info.value.message
    reader.execute("ROLLBACK")
    assert closed_through(shop) is None
    close(shop, through)
    assert closed_through(shop) == through


# -- the command line ------------------------------------------------------------------


def test_period_commands(shop, dsn, through, today):
    shown = cli("period", "--dsn", dsn)
    assert (shown.exit_code, shown.stdout) == (0, "every period is open\n")
    done = cli("period", "close", str(through), "--dsn", dsn)
    assert done.exit_code == 0, done.stderr
    assert done.stdout == f"closed: the books are closed through {through} (were open)\n"
    refused = cli("period", "close", str(today), "--dsn", dsn)
    assert refused.exit_code == 2 and "only days before today" in refused.stderr
    assert cli("period", "reopen", "--dsn", dsn).exit_code == 2  # DATE or --all
    status = cli("status", "--dsn", dsn, "--config", str(SHOP_CONFIG))
    assert f"the books are closed through {through}" in status.stdout
    shown = cli("period", "--dsn", dsn, "--json")
    document = json.loads(shown.stdout)
    assert document["closed_through"] == str(through)
    assert [c["closed_through"] for c in document["changes"]] == [str(through)]
    again = cli("period", "reopen", "--all", "--dsn", dsn)
    assert again.stdout == f"reopened: the books are open in every period (were closed through {through})\n"

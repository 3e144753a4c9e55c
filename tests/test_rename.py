"""rename: a rule renamed in ledger.toml keeps its entries, against a real PostgreSQL.

Every expectation is written out by hand (entries, names, counts)."""

from __future__ import annotations

import threading
from decimal import Decimal

import psycopg
import pytest
from click.testing import CliRunner
from psycopg import sql
from psycopg.conninfo import make_conninfo

from ledgeradmin.backfill import backfill
from ledgeradmin.cli import main
from ledgeradmin.errors import ConfigError, LedgerError
from ledgeradmin.install import install, uninstall
from ledgeradmin.locks import LockWait
from ledgeradmin.migrate import migrate
from ledgeradmin.rename import rename
from ledgeradmin.verify import verify
from ledgeradmin.verify_report import render_text
from test_reliability import wait_for
from test_install import (  # noqa: F401 - make_role: a fixture
    count, dbname, drop_ledger_schema, entries, insert_sale, make_role, registry, rule_toml, sale_rule,
    shop_triggers, write_config,
)

DEFER = {"on_error": "defer", "lines": [
    {"account_sql": "CASE WHEN customer = 'bad' THEN '9999' ELSE '1100' END", "debit": "total"},
    {"account": "4000", "credit": "total - tax"},
    {"account": "2200", "credit": "tax"},
]}


def links(conn) -> list[tuple]:
    return conn.execute("SELECT rule, source_key, entry_id FROM ledger.posting ORDER BY source_key").fetchall()


def open_failures(conn) -> list[tuple]:
    return conn.execute("SELECT rule, source_key FROM ledger.failure WHERE resolved_at IS NULL "
                        "ORDER BY rule, source_key").fetchall()


def live_per_key(conn) -> dict[str, int]:
    return dict(conn.execute("""SELECT e.source_key, count(*) FROM ledger.entry AS e
                                WHERE e.reverses IS NULL
                                  AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
                                GROUP BY 1""").fetchall())


def revenue(conn) -> Decimal:
    return conn.execute("SELECT coalesce(sum(credit - debit), 0) FROM ledger.line WHERE account = '4000'").fetchone()[0]


def test_rename_hands_the_entries_over_and_the_new_name_goes_on_from_them(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 110, 10)
    insert_sale(conn, 2, 50)
    conn.execute("UPDATE public.sales SET total = 120 WHERE id = 2")  # reversal + repost under "sale"
    journal = entries(conn)
    before = links(conn)
    assert [r[0] for r in before] == ["sale", "sale"]

    result = rename(conn, new, "sale", "sales")

    assert (result.handed_over, result.reversed, result.failures, result.uninstalled) == (2, 0, 0, True)
    assert result.installed.installed == ["sales"]
    assert entries(conn) == journal  # nothing written, nothing changed
    assert links(conn) == [("sales", key, entry) for _, key, entry in before]
    assert set(registry(conn)) == {"sales"}
    assert {t[1] for t in shop_triggers(conn)} == {f"ledgeradmin_sales_{e}" for e in
                                                    ("insert", "update", "delete", "truncate")}
    report = verify(conn, new)
    assert report.ok and report.rules[0].posted == 2
    assert backfill(conn, new).rules[0].repaired == 0  # nothing posted a second time

    # an edit of a row posted under the old name reverses that entry once and reposts it
    conn.execute("UPDATE public.sales SET total = 130 WHERE id = 1")
    conn.execute("DELETE FROM public.sales WHERE id = 2")
    after = entries(conn)[len(journal):]
    assert [(e["rule"], e["key"], e["reverses"]) for e in after] == [
        ("sales", "1", before[0][2]), ("sales", "1", None), ("sales", "2", before[1][2])]
    assert live_per_key(conn) == {"1": 1}
    assert revenue(conn) == Decimal("120.0000")  # sale 1 only: 130 - 10 tax
    assert verify(conn, new).ok


def test_an_entry_posted_under_both_names_is_reversed_once(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    both = write_config(tmp_path, sale_rule("sale"), sale_rule("sales"), name="both.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    install(conn, both)  # the new name installed beside the old one: sale 2 posts twice
    insert_sale(conn, 2, 40)
    assert revenue(conn) == Decimal("180.0000")
    twice = conn.execute("SELECT entry_id FROM ledger.posting WHERE rule = 'sale' AND source_key = '2'").fetchone()[0]

    result = rename(conn, new, "sale", "sales")

    assert (result.handed_over, result.reversed) == (1, 1)
    assert revenue(conn) == Decimal("140.0000")
    reversal = entries(conn)[-1]
    assert (reversal["rule"], reversal["key"], reversal["reverses"]) == ("sale", "2", twice)
    assert live_per_key(conn) == {"1": 1, "2": 1}
    assert [(r[0], r[1]) for r in links(conn)] == [("sales", "1"), ("sales", "2")]
    assert verify(conn, new).ok


def test_open_failures_move_to_the_new_name_and_resolve_there(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale", **DEFER), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales", **DEFER), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100, customer="bad")  # account 9999 is unknown: recorded, not posted
    insert_sale(conn, 2, 10)
    assert open_failures(conn) == [("sale", "1")]

    result = rename(conn, new, "sale", "sales")

    assert (result.handed_over, result.failures, result.failures_closed) == (1, 1, 0)
    assert open_failures(conn) == [("sales", "1")]
    conn.execute("UPDATE public.sales SET customer = 'ann' WHERE id = 1")
    assert open_failures(conn) == []
    assert verify(conn, new).ok


def test_a_key_failing_under_both_names_keeps_one_open_failure(conn, tmp_path):
    both = write_config(tmp_path, sale_rule("sale", **DEFER), sale_rule("sales", **DEFER), name="both.toml")
    new = write_config(tmp_path, sale_rule("sales", **DEFER), name="new.toml")
    install(conn, both)
    insert_sale(conn, 1, 100, customer="bad")
    assert open_failures(conn) == [("sale", "1"), ("sales", "1")]

    result = rename(conn, new, "sale", "sales")

    assert (result.failures, result.failures_closed) == (0, 1)
    assert open_failures(conn) == [("sales", "1")]


def test_rename_after_the_old_name_was_uninstalled(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    uninstall(conn, ["sale"])

    result = rename(conn, new, "sale", "sales")

    assert (result.handed_over, result.uninstalled, result.installed.installed) == (1, False, ["sales"])
    assert verify(conn, new).ok


def test_a_writer_in_the_way_makes_rename_give_up_with_nothing_changed(conn, connect, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    writer = connect()
    insert_sale(writer, 2, 50)  # uncommitted: holds its lock on public.sales
    journal, before = entries(conn), links(conn)

    with pytest.raises(LedgerError, match="rename gave up after 1 attempt"):
        rename(conn, new, "sale", "sales", wait=LockWait(100, 0))
    assert (entries(conn), links(conn), set(registry(conn))) == (journal, before, {"sale"})

    # waiting without a limit, rename reads the links only once the writer is done: the
    # sale the writer posted under the old name is handed over with the others
    renamer, outcome = connect(autocommit=True), {}
    thread = threading.Thread(target=lambda: outcome.update(result=rename(renamer, new, "sale", "sales",
                                                                          wait=LockWait(0, 0))))
    thread.start()
    wait_for(conn, "SELECT wait_event_type = 'Lock' FROM pg_stat_activity WHERE pid = %s",
             (renamer.info.backend_pid,))
    writer.commit()
    thread.join(30)
    assert outcome["result"].handed_over == 2
    assert [r[:2] for r in links(conn)] == [("sales", "1"), ("sales", "2")]


def test_a_ledger_owner_with_select_and_trigger_on_the_table_can_rename(dsn, conn, make_role, tmp_path):
    owner = make_role("LOGIN", "NOSUPERUSER")
    drop_ledger_schema(conn)
    conn.execute(sql.SQL("GRANT CREATE ON DATABASE {} TO {}").format(sql.Identifier(dbname(dsn)),
                                                                      sql.Identifier(owner)))
    conn.execute(sql.SQL("GRANT SELECT, TRIGGER ON public.sales TO {}").format(sql.Identifier(owner)))
    owner_dsn = make_conninfo(dsn, user=owner)
    migrate(owner_dsn)
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    with psycopg.connect(owner_dsn, autocommit=True) as as_owner:
        install(as_owner, old)
        insert_sale(conn, 1, 100)  # written by the application's role
        result = rename(as_owner, new, "sale", "sales")
        assert (result.handed_over, result.uninstalled) == (1, True)
        assert verify(as_owner, new).ok
        uninstall(as_owner)  # its triggers on a table it does not own would outlive the role


def test_dry_run_changes_nothing(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    journal, before, rules = entries(conn), links(conn), registry(conn)

    result = rename(conn, new, "sale", "sales", dry_run=True)

    assert (result.dry_run, result.handed_over, result.uninstalled) == (True, 1, True)
    assert (entries(conn), links(conn), registry(conn)) == (journal, before, rules)


@pytest.mark.parametrize("case", ["not in config", "still in config", "unknown", "other table", "other keys",
                                  "rows gone"])
def test_a_rename_that_cannot_be_right_is_refused_with_nothing_changed(conn, tmp_path, case):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    old_name, config, error, words = "sale", new, LedgerError, "not the same rows"
    if case == "not in config":
        config, error, words = old, ConfigError, 'rule "sales" is not in the config'
    elif case == "still in config":
        config = write_config(tmp_path, sale_rule("sale"), sale_rule("sales"), name="both.toml")
        error, words = ConfigError, 'rule "sale" is still in the config'
    elif case == "unknown":
        old_name, words = "nosuchrule", 'rule "nosuchrule" is not installed and has no live entries'
    elif case == "other table":
        conn.execute("CREATE TABLE public.refunds (id bigint PRIMARY KEY, total numeric NOT NULL)")
        install(conn, write_config(tmp_path, sale_rule("sale"), rule_toml_refund(), name="refund.toml"), ["refund"])
        old_name, words = "refund", 'rule "refund" posts from public.refunds, rule "sales" from public.sales'
    elif case == "other keys":  # entries of a rule keyed by text, whose rule is gone
        uninstall(conn, ["sale"])
        conn.execute("UPDATE ledger.posting SET key_num = NULL")
        words = "1 live entries of rule \"sale\" are keyed in another form"
    else:  # the old name's rows were deleted while nothing was installed
        uninstall(conn, ["sale"])
        conn.execute("DELETE FROM public.sales")
        words = 'none of the 1 live entries of rule "sale" has its key in public.sales'
    journal, before, rules = entries(conn), links(conn), registry(conn)
    triggers = shop_triggers(conn)

    with pytest.raises(error, match=words):
        rename(conn, config, old_name, "sales")

    assert (entries(conn), links(conn), registry(conn), shop_triggers(conn)) == (journal, before, rules, triggers)


def rule_toml_refund() -> str:
    return ('[rules.refund]\nsource = "public.refunds"\n'
            'lines = [\n  { account = "4000", debit = "total" },\n  { account = "1100", credit = "total" },\n]\n')


def test_cli_rename_and_the_install_warning(dsn, conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 100)
    runner = CliRunner()

    # installing the renamed config alone leaves the old name posting beside it: said loudly
    installed = runner.invoke(main, ["install", "--dsn", dsn, "--config", str(tmp_path / "new.toml"), "--dry-run"])
    assert installed.exit_code == 0, installed.output
    assert ("Warning: rule sale is installed but not in the config: its triggers still post from public.sales. "
            "Removed from the config? `ledgeradmin uninstall --rule sale`. Renamed? `ledgeradmin rename sale NEW`"
            ) in installed.stderr

    out = runner.invoke(main, ["rename", "--dsn", dsn, "--config", str(tmp_path / "new.toml"), "sale", "sales"])
    assert out.exit_code == 0, out.output
    assert out.stdout.splitlines() == [
        "renamed rule sale to sales (public.sales): 1 live entries and 0 open failures handed over",
        "uninstalled rule sale",
        "installed rule sales (public.sales)",
    ]
    assert count(conn, "entry") == 1

    again = runner.invoke(main, ["rename", "--dsn", dsn, "--config", str(tmp_path / "new.toml"), "sale", "sales"])
    assert again.exit_code == 2
    assert 'Error: rename refused, nothing was changed: rule "sale" is not installed' in again.stderr


def test_backfill_refuses_to_book_a_second_time_the_entries_of_a_rule_renamed_without_rename(conn, tmp_path):
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    for i in (1, 2, 3):
        insert_sale(conn, i, 10 * i)
    uninstall(conn, ["sale"])
    conn.execute("UPDATE public.sales SET total = 25 WHERE id = 2")  # its entry drifted: not identical
    install(conn, new)
    journal = entries(conn)

    with pytest.raises(LedgerError, match='rule "sales" would post 2 rows whose identical entries are live under '
                                          'rule "sale", which is not in the config') as refused:
        backfill(conn, new)
    assert "`ledgeradmin rename sale sales`" in refused.value.hint
    assert entries(conn) == journal
    report = verify(conn, new)
    assert (report.rules[0].missing, report.ledger.rules_not_in_config) == (3, ["sale"])
    assert report.as_dict()["ledger"]["rules_not_in_config"] == ["sale"]
    text = render_text(report)
    assert "live entries of rules not in the config: sale" in text
    assert "if one was renamed, `ledgeradmin rename OLD NEW` first (backfill would book its rows again)" in text
    dry = backfill(conn, new, dry_run=True)
    assert dry.rules[0].refused.startswith('would post 2 rows whose identical entries are live under rule "sale"')
    assert dry.rules[0].posted == 3 and not dry.ok

    assert backfill(conn, new, allow_identical=True).rules[0].posted == 3  # booked under both names
    assert revenue(conn) == Decimal("60.0000") + Decimal("65.0000")  # 10 + 20 + 30, then 10 + 25 + 30


def test_backfill_of_a_rule_whose_keys_a_removed_rule_of_another_table_booked_is_not_refused(conn, tmp_path):
    conn.execute("CREATE TABLE public.refunds (id bigint PRIMARY KEY, total numeric NOT NULL)")
    both = write_config(tmp_path, sale_rule("sale"), rule_toml_refund(), name="both.toml")
    sales = write_config(tmp_path, sale_rule("sale"), name="sales.toml")
    install(conn, both)
    conn.execute("INSERT INTO public.refunds VALUES (1, 100), (2, 100)")
    uninstall(conn, ["refund"])
    conn.execute("ALTER TABLE public.sales DISABLE TRIGGER USER")
    insert_sale(conn, 1, 100)  # key 1, like refund 1, but another posting
    conn.execute("ALTER TABLE public.sales ENABLE TRIGGER USER")

    assert backfill(conn, sales).rules[0].posted == 1
    report = verify(conn, sales)
    assert report.ok and report.ledger.rules_not_in_config == ["refund"]
    assert "if one was renamed" not in render_text(report)  # no row is missing


def test_rename_of_a_rule_on_a_partitioned_table_keyed_by_id_and_date(conn, tmp_path):
    conn.execute(
        """CREATE TABLE public.orders (id bigint NOT NULL, placed_on date NOT NULL, amount numeric(12, 2) NOT NULL,
                                       PRIMARY KEY (id, placed_on)) PARTITION BY RANGE (placed_on);
           CREATE TABLE public.orders_2024 PARTITION OF public.orders FOR VALUES FROM ('2024-01-01') TO ('2025-01-01');
           CREATE TABLE public.orders_2025 PARTITION OF public.orders FOR VALUES FROM ('2025-01-01') TO ('2026-01-01')"""
    )
    lines = [{"account": "1100", "debit": "amount"}, {"account": "4000", "credit": "amount"}]
    old = write_config(tmp_path, rule_toml("orders", "public.orders", lines, key=["id", "placed_on"],
                                           date="placed_on"), name="old.toml")
    new = write_config(tmp_path, rule_toml("purchase_orders", "public.orders", lines, key=["id", "placed_on"],
                                           date="placed_on"), name="new.toml")
    install(conn, old)
    conn.execute("INSERT INTO public.orders VALUES (1, '2024-03-01', 50), (2, '2025-06-30', 7.5)")
    conn.execute("SET DateStyle = 'SQL, DMY'")  # keys are compared as the triggers wrote them, whatever the session's
    uninstall(conn, ["orders"])
    install(conn, new)

    with pytest.raises(LedgerError, match='rule "purchase_orders" would post 2 rows whose identical entries are live '
                                          'under rule "orders"'):
        backfill(conn, new)
    result = rename(conn, new, "orders", "purchase_orders")

    assert (result.handed_over, result.uninstalled) == (2, False)
    assert [r[:2] for r in links(conn)] == [("purchase_orders", "(1,2024-03-01)"),
                                             ("purchase_orders", "(2,2025-06-30)")]
    conn.execute("UPDATE public.orders SET placed_on = '2025-02-01' WHERE id = 1")  # moves partitions: a new key
    assert live_per_key(conn) == {"(1,2025-02-01)": 1, "(2,2025-06-30)": 1}
    assert verify(conn, new).ok


def test_a_writer_whose_snapshot_predates_a_rename_retries_instead_of_keeping_the_entry(conn, connect, tmp_path):
    """A REPEATABLE READ writer does not see the links rename handed to the new name after
    its snapshot was taken: its DELETE fails with a serialization failure (40001), and the
    retry reverses the entry under the new name."""
    old = write_config(tmp_path, sale_rule("sale"), name="old.toml")
    new = write_config(tmp_path, sale_rule("sales"), name="new.toml")
    install(conn, old)
    insert_sale(conn, 1, 110, 10)
    insert_sale(conn, 2, 50)
    writer = connect(autocommit=True)
    writer.execute("BEGIN ISOLATION LEVEL REPEATABLE READ")
    writer.execute("SELECT 1")  # the snapshot is taken (no lock on public.sales: rename needs one)
    rename(conn, new, "sale", "sales")
    with pytest.raises(psycopg.errors.SerializationFailure, match="another transaction linked an entry"):
        writer.execute("DELETE FROM public.sales WHERE id = 1")
    writer.execute("ROLLBACK")
    writer.execute("DELETE FROM public.sales WHERE id = 1")  # the retry, autocommitted
    assert live_per_key(conn) == {"2": 1}
    assert verify(conn, new).ok

"""Property: for random rules over random rows, the trigger, backfill and verify agree.

Hypothesis draws a rule — 1-3 lines of random expressions (columns, negations, multiples,
rounded thirds, differences, constants) on random accounts and sides, balanced by a last
line, a random `when` threshold, `block` or `defer` — and a random history of one table:
a multi-row insert, single-row updates and deletes (under `defer` some rows with NULLs,
whose postings fail). The history runs on table A through the rule's trigger; its final
rows are copied to table B behind the triggers' back and an identical rule on B is
backfilled. Then:

- A's live entries equal B's, key by key (date, memo, lines), and the failed keys agree
  (a failed row of A keeps the entry it had before, by design, until it is fixed);
- both equal what the independent check (tests/invariants.py) computes from the rows;
- verify finds nothing missing, orphaned or drifted on either, only the failed rows;
- backfill on A repairs nothing (the trigger's result is backfill's fixed point).
"""

from __future__ import annotations

import datetime as dt
import itertools
from decimal import Decimal

import psycopg
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from invariants import Spec, assert_holds, live_entries
from ledgeradmin.backfill import backfill
from ledgeradmin.config import parse_config
from ledgeradmin.install import install, uninstall
from ledgeradmin.verify import verify

ACCOUNTS = {
    "1100": {"name": "Accounts Receivable", "type": "asset"},
    "2200": {"name": "Tax Payable", "type": "liability"},
    "4000": {"name": "Revenue", "type": "income"},
    "5100": {"name": "Purchases", "type": "expense"},
}
#: Amount terms over the row; {r} is the column prefix ('' in ledger.toml, 's.' in the check).
TERMS = ["{r}a", "{r}b", "{r}q", "-{r}a", "{r}a * 2", "{r}b * 0.5", "{r}q * {r}b", "round({r}a / 3, 2)",
         "{r}a - {r}b", "abs({r}b)", "greatest({r}a, {r}b)", "0", "1.25", "CASE WHEN {r}q > 5 THEN {r}a ELSE 0 END"]
WHENS = [None, "{r}a > {t}", "{r}status = 'open'", "{r}q % 2 = 0", "{r}a + {r}b > {t}",
         "{r}status = 'open' AND {r}b < {t}"]
EPOCH = dt.datetime(2000, 1, 1, tzinfo=dt.timezone.utc)
counter = itertools.count(1)

money = st.one_of(st.integers(-500_000, 500_000).map(lambda cents: Decimal(cents) / 100),
                  st.sampled_from([Decimal("0.01"), Decimal("-0.01"), Decimal("0.005").quantize(Decimal("0.01")),
                                   Decimal("4999.99"), Decimal("0")]))


@st.composite
def rules(draw):
    lines = []
    for _ in range(draw(st.integers(1, 3))):
        lines.append((draw(st.sampled_from(list(ACCOUNTS))), draw(st.sampled_from(["debit", "credit"])),
                      draw(st.sampled_from(TERMS))))
    # the last line balances the others: debits - credits of the first lines, credited
    signed = " + ".join(f"({t})" if side == "debit" else f"-({t})" for _, side, t in lines)
    lines.append((draw(st.sampled_from(list(ACCOUNTS))), "credit", f"({signed})"))
    when = draw(st.sampled_from(WHENS))
    threshold = draw(st.integers(-100, 100))
    return {
        "lines": lines,
        "when": when.replace("{t}", str(threshold)) if when else None,
        "on_error": draw(st.sampled_from(["block", "defer"])),
    }


@st.composite
def histories(draw, nulls: bool):
    value = st.one_of(st.none(), money) if nulls else money

    def row():
        return {"a": draw(value), "b": draw(value), "q": draw(st.integers(0, 12)),
                "status": draw(st.sampled_from(["open", "closed"])),
                "at": EPOCH + dt.timedelta(minutes=draw(st.integers(0, 20_000_000)))}

    ids = draw(st.lists(st.integers(1, 60), min_size=1, max_size=25, unique=True))
    rows = {i: row() for i in ids}
    changes = []
    for _ in range(draw(st.integers(0, 12))):
        kind = draw(st.sampled_from(["update", "update", "delete", "insert"]))
        key = draw(st.sampled_from(ids)) if kind != "insert" else draw(st.integers(61, 90))
        changes.append((kind, key, row()))
    return rows, changes


def rule_toml(name: str, table: str, drawn: dict) -> dict:
    rule = {"source": f"public.{table}", "date": "at", "memo": "'p ' || id || ' ' || status",
            "on_error": drawn["on_error"],
            "lines": [{"account": a, side: t.replace("{r}", "")} for a, side, t in drawn["lines"]]}
    if drawn["when"]:
        rule["when"] = drawn["when"].replace("{r}", "")
    return rule


def rule_spec(name: str, table: str, drawn: dict) -> Spec:
    return Spec(
        rule=name, table=f"public.{table}", key="s.id::text",
        eligible=drawn["when"].replace("{r}", "s.") if drawn["when"] else "true",
        date="s.at", memo="'p ' || s.id || ' ' || s.status",
        lines=tuple((f"'{a}'", (t if side == "debit" else f"-({t})").replace("{r}", "s."))
                    for a, side, t in drawn["lines"]),
    )


INSERT = "INSERT INTO public.{t} (id, a, b, q, status, at) VALUES (%(id)s, %(a)s, %(b)s, %(q)s, %(status)s, %(at)s)"


def failed_keys(conn: psycopg.Connection, rule: str) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT source_key FROM ledger.failure WHERE rule = %s AND resolved_at IS NULL", (rule,))}


@settings(max_examples=60, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_trigger_backfill_and_verify_agree(conn, data):
    drawn = data.draw(rules(), label="rule")
    rows, changes = data.draw(histories(nulls=drawn["on_error"] == "defer"), label="history")
    n = next(counter)
    by_trigger, by_backfill = f"prop_t{n}", f"prop_b{n}"
    for table in (by_trigger, by_backfill):
        conn.execute(f"""CREATE TABLE public.{table} (id int PRIMARY KEY, a numeric(12, 2), b numeric(12, 2),
                                                      q int NOT NULL, status text NOT NULL, at timestamptz NOT NULL)""")
    config = parse_config({"accounts": ACCOUNTS, "rules": {
        by_trigger: rule_toml(by_trigger, by_trigger, drawn), by_backfill: rule_toml(by_backfill, by_backfill, drawn)}})
    install(conn, config)
    try:
        refused = 0

        def write(statement: str, params: dict) -> None:
            nonlocal refused
            try:
                conn.execute(statement, params)
            except psycopg.Error as exc:  # under block a bad row is refused: nothing changes
                assert drawn["on_error"] == "block" and exc.sqlstate in ("22004", "23514", "22003"), exc
                refused += 1

        # the history, through the trigger of A: one multi-row insert, then row by row
        with conn.cursor() as cur:
            try:
                with conn.transaction():
                    cur.executemany(INSERT.format(t=by_trigger), [{"id": i, **r} for i, r in rows.items()])
            except psycopg.Error:
                for i, r in rows.items():
                    write(INSERT.format(t=by_trigger), {"id": i, **r})
        for kind, key, r in changes:
            if kind == "delete":
                write(f"DELETE FROM public.{by_trigger} WHERE id = %(id)s", {"id": key})
            elif kind == "update":
                write(f"UPDATE public.{by_trigger} SET a = %(a)s, b = %(b)s, q = %(q)s, status = %(status)s,"
                      f" at = %(at)s WHERE id = %(id)s", {"id": key, **r})
            else:
                write(INSERT.format(t=by_trigger) + " ON CONFLICT (id) DO NOTHING", {"id": key, **r})
        # the same final rows in B, behind the triggers' back, then backfilled
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(f"INSERT INTO public.{by_backfill} SELECT * FROM public.{by_trigger}")
        # allow_identical: the rules of earlier examples, on tables since dropped, keep live
        # entries of the same keys, and the same drawn rows make them identical entries
        result = backfill(conn, config, [by_backfill], batch_size=7, allow_identical=True)
        assert result.rules[0].failed == len(failed_keys(conn, by_backfill))

        failed = failed_keys(conn, by_trigger)
        assert failed == failed_keys(conn, by_backfill)
        # a failed row keeps the entry it had before (if any) until it is fixed: only A has
        # such stale entries; every other key agrees
        a, b = live_entries(conn, by_trigger), live_entries(conn, by_backfill)
        assert {k: v for k, v in a.items() if k not in failed} == {k: v for k, v in b.items() if k not in failed}
        assert not set(b) & failed
        assert not failed or drawn["on_error"] == "defer"
        live = len(live_entries(conn, by_trigger))
        event(f"on_error={drawn['on_error']}, failed rows: {'some' if failed else 'none'}")
        event(f"live entries: {'none' if not live else 'few' if live < 5 else 'many'}")
        assert_holds(conn, [rule_spec(by_trigger, by_trigger, drawn), rule_spec(by_backfill, by_backfill, drawn)],
                     skip_keys={by_trigger: failed, by_backfill: failed})
        report = verify(conn, config)
        for r in report.rules:
            assert (r.orphaned, r.failed, r.trigger) == (0, len(failed), "ok"), r
            assert r.missing + r.drifted == len(failed), r
        assert report.ledger.problems == 0
        again = backfill(conn, config, [by_trigger], allow_identical=True)
        assert again.rules[0].repaired == 0, again.as_dict()
    finally:
        uninstall(conn, [by_trigger, by_backfill])
        conn.execute(f"DROP TABLE public.{by_trigger}, public.{by_backfill}")


@settings(max_examples=40, deadline=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow,
                                 HealthCheck.data_too_large])
@given(data=st.data())
def test_backfill_since_repairs_its_window_and_nothing_else(conn, data):
    """After an outage (random inserts, updates — dates too — and deletes behind the
    trigger's back), `backfill --since D` leaves every key it concerns as a full backfill
    would, and every other key as it was: the keys concerned are those whose row is dated
    on or after D and those whose live entry is."""
    drawn = data.draw(rules(), label="rule")
    rows, changes = data.draw(histories(nulls=False), label="outage")
    since = (EPOCH + dt.timedelta(minutes=data.draw(st.integers(0, 20_000_000), label="since"))).date()
    table = f"prop_s{next(counter)}"
    conn.execute(f"""CREATE TABLE public.{table} (id int PRIMARY KEY, a numeric(12, 2), b numeric(12, 2),
                                                  q int NOT NULL, status text NOT NULL, at timestamptz NOT NULL)""")
    config = parse_config({"accounts": ACCOUNTS, "rules": {table: rule_toml(table, table, drawn)}})
    install(conn, config)
    try:
        for i, r in rows.items():
            try:
                conn.execute(INSERT.format(t=table), {"id": i, **r})
            except psycopg.Error as exc:  # under block a row that cannot post is refused
                assert exc.sqlstate in ("22003", "23514"), exc
        with conn.transaction():  # the outage
            conn.execute("SET LOCAL session_replication_role = replica")
            for kind, key, r in changes:
                if kind == "delete":
                    conn.execute(f"DELETE FROM public.{table} WHERE id = %(id)s", {"id": key})
                elif kind == "update":
                    conn.execute(f"UPDATE public.{table} SET a = %(a)s, b = %(b)s, q = %(q)s, status = %(status)s,"
                                 f" at = %(at)s WHERE id = %(id)s", {"id": key, **r})
                else:
                    conn.execute(INSERT.format(t=table) + " ON CONFLICT (id) DO NOTHING", {"id": key, **r})
        before = live_entries(conn, table)
        start = dt.datetime.combine(since, dt.time(), dt.timezone.utc)  # the day starts at 00:00 UTC
        concerned = {str(r[0]) for r in conn.execute(f"SELECT id FROM public.{table} WHERE at >= %s", (start,))}
        concerned |= {k for k, (effective_at, _, _) in before.items() if effective_at >= start}

        result = backfill(conn, config, since=since, batch_size=3, allow_identical=True)
        failed = failed_keys(conn, table)
        assert result.rules[0].failed == len(failed)
        windowed = verify(conn, config, since=since).rules[0]
        assert windowed.missing + windowed.drifted == len(failed) and windowed.orphaned == 0, windowed
        after = live_entries(conn, table)
        backfill(conn, config, batch_size=3, allow_identical=True)
        synced = live_entries(conn, table)
        event(f"keys in the window: {'none' if not concerned else 'some'}")
        for key in (set(before) | set(after) | set(synced)) - failed:
            expected = synced.get(key) if key in concerned else before.get(key)
            assert after.get(key) == expected, (key, key in concerned, before.get(key), after.get(key))
    finally:
        uninstall(conn, [table])
        conn.execute(f"DROP TABLE public.{table}")

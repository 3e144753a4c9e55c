"""The independent check: is the ledger exactly what the source tables say?

Every expectation here is computed by this module's own SQL from the source tables and
``ledger.entry`` / ``ledger.line`` (the documented read contract) — never by ledgeradmin's
functions, its desired-posting query, ``ledger.posting`` or its fingerprints. A rule is
written out by hand as a ``Spec``: which rows are eligible, their date, memo, currency
and the signed amount (debit positive) of each line.

    from invariants import SHOP, assert_holds
    assert_holds(conn, SHOP, forbidden_memo="RB-%", forbidden_keys={"sale": {"9000000000001"}})

Checked (``problems`` lists every violation, with a few samples each):

1. every eligible source row has exactly one live entry, dated, described and in the
   currency the row says, whose lines equal the amounts computed from the row (zero lines
   left out, amounts rounded to the ledger's 4 decimals);
2. no live entry exists for a deleted or ineligible row (nor for an eligible row whose
   amounts are all zero);
3. every entry balances per currency, each line has exactly one positive side, every entry
   has lines and every line an entry, every reversal mirrors the entry it reverses (same
   rule and key, lines swapped) and no entry is reversed twice;
4. per account and currency, the live lines add up to the totals computed directly from
   the sources, and all lines together (reversals included) add up to the same totals;
5. no entry — live or reversed — and no recorded failure belongs to a write that was rolled
   back: such writes carry a marker in a memo column (``forbidden_memo``, a LIKE pattern)
   or keys no committed write uses (``forbidden_keys``).

"Live" is judged from ledger.entry alone: reverses IS NULL and reversed by no entry.
Dates are compared in UTC (the documented interpretation of `timestamp without time
zone` and `date` columns).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass

import psycopg

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""

SAMPLES = 5


@dataclass(frozen=True)
class Spec:
    """A posting rule written out by hand, as SQL over the source row ``s``."""

    rule: str
    table: str  # quoted, qualified name of the source table
    key: str  # the source key as text, e.g. "s.id::text"
    eligible: str  # boolean: the rule's `when`
    lines: tuple[tuple[str, str], ...]  # (account, signed amount: debit > 0, credit < 0)
    date: str | None = None  # timestamptz of the entry; None: posted at now() (not compared)
    memo: str | None = None
    currency: str = "'USD'"

    def expected_lines(self) -> str:
        """(rule, k, line_no, account, currency, amount) of every non-zero line the sources call for.

        ('%' doubled: the query is run with parameters.)"""
        values = ", ".join(f"({n}, ({account})::text, ({amount})::numeric)"
                           for n, (account, amount) in enumerate(self.lines, start=1))
        return f"""
            SELECT '{self.rule}'::text AS rule, x.k, x.line_no, x.account, x.currency, x.amount FROM (
                SELECT {self.key} AS k, v.n AS line_no, v.account, ({self.currency})::text AS currency,
                       round(v.amount, 4) AS amount
                FROM {self.table} AS s
                CROSS JOIN LATERAL (VALUES {values}) AS v (n, account, amount)
                WHERE ({self.eligible}) IS TRUE
            ) AS x
            WHERE x.amount <> 0
        """.replace("%", "%%")

    def expected_headers(self) -> str:
        """(rule, k, effective_at, memo, currency) of every row that calls for an entry."""
        any_line = " OR ".join(f"round(({amount})::numeric, 4) <> 0" for _, amount in self.lines)
        return f"""
            SELECT '{self.rule}'::text AS rule, {self.key} AS k,
                   {f'({self.date})::timestamptz' if self.date else 'NULL::timestamptz'} AS effective_at,
                   {f'({self.memo})::text' if self.memo else 'NULL::text'} AS memo,
                   ({self.currency})::text AS currency
            FROM {self.table} AS s
            WHERE ({self.eligible}) IS TRUE AND ({any_line}) IS TRUE
        """.replace("%", "%%")


# --------------------------------------------------------------------------- the example shop

SHOP = (
    Spec(
        rule="sale",
        table="public.sales",
        key="s.id::text",
        eligible="s.status = 'completed'",
        date="s.sold_at",
        memo="'Sale ' || s.id || ' to ' || s.customer",
        currency="s.currency",
        lines=(
            ("CASE s.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END", "s.total"),
            ("'4000'", "-(s.total - s.tax)"),
            ("'2200'", "-s.tax"),
        ),
    ),
    Spec(
        rule="requisition",
        table="public.purchase_requisitions",
        key="s.id::text",
        eligible="s.status = 'approved'",
        date="s.approved_at",
        memo="'Requisition ' || s.id || ' (' || s.department || '): ' || s.description",
        lines=(("'5100'", "s.amount"), ("'2100'", "-s.amount")),
    ),
    Spec(
        rule="payment",
        table="public.payment_vouchers",
        key="s.id::text",
        eligible="s.status = 'paid'",
        date="s.paid_at",
        memo="'Payment voucher ' || s.id || ' to ' || s.payee",
        lines=(("'2100'", "s.amount"), ("CASE s.method WHEN 'cash' THEN '1000' ELSE '1010' END", "-s.amount")),
    ),
    Spec(
        rule="manufacturing",
        table="public.manufacturing_orders",
        key="s.id::text",
        eligible="s.state = 'done'",
        date="s.finished_at",
        memo="'Manufacturing order ' || s.id || ': ' || s.quantity || ' x ' || s.product",
        lines=(("'1400'", "s.quantity * s.unit_cost"), ("'1300'", "-(s.quantity * s.unit_cost)")),
    ),
)


# --------------------------------------------------------------------------- the check


def _union(parts: Iterable[str]) -> str:
    return "\nUNION ALL\n".join(parts)


def _skip_filter(skip_keys: Mapping[str, Iterable[str]]) -> tuple[str, dict]:
    """SQL condition on (rule, k) excluding the keys of ``skip_keys``, and its parameters."""
    pairs = [(rule, key) for rule, keys in skip_keys.items() for key in keys]
    if not pairs:
        return "true", {}
    return ("(rule, k) NOT IN (SELECT * FROM unnest(%(skip_rules)s::text[], %(skip_keys)s::text[]))",
            {"skip_rules": [p[0] for p in pairs], "skip_keys": [p[1] for p in pairs]})


def _report(conn: psycopg.Connection, out: list[str], what: str, query: str, params=None) -> None:
    """Append "what: n (samples)" to ``out`` when ``query`` returns rows."""
    rows = conn.execute(query, params).fetchall()
    if rows:
        sample = "; ".join(repr(r) for r in rows[:SAMPLES])
        out.append(f"{what}: {len(rows)}{'+' if len(rows) >= 1000 else ''} ({sample})")


def problems(
    conn: psycopg.Connection,
    specs: Iterable[Spec] = SHOP,
    *,
    forbidden_memo: str | None = None,
    forbidden_keys: Mapping[str, Iterable[str]] | None = None,
    skip_keys: Mapping[str, Iterable[str]] | None = None,
) -> list[str]:
    """Every violation of the invariants (empty when the ledger is right).

    ``skip_keys`` ({rule: keys}) leaves rows out of checks 1, 2 and 4 (rows whose posting is
    known to have failed, say); checks 3 and 5 cover the whole ledger.
    """
    specs = list(specs)
    out: list[str] = []
    skip, params = _skip_filter(skip_keys or {})
    rules = [s.rule for s in specs]
    idle = conn.info.transaction_status == psycopg.pq.TransactionStatus.IDLE
    with conn.transaction():
        if idle:  # one snapshot for every check (else: the caller's transaction's)
            conn.execute("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ")
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        live_lines = f"""
            SELECT e.rule, e.source_key AS k, l.line_no::int AS line_no, l.account, l.currency,
                   l.debit - l.credit AS amount
            FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
            WHERE e.rule = ANY(%(rules)s)
        """
        expected = _union(s.expected_lines() for s in specs)
        params = {**params, "rules": rules}
        # 1, 2: lines of live entries = lines the sources call for (keys, accounts, amounts)
        _report(conn, out, "lines called for by the sources but not live (missing or different)", f"""
            SELECT * FROM (({expected}) EXCEPT ALL ({live_lines})) AS d WHERE {skip} ORDER BY 1, 2, 3 LIMIT 1000
        """, params)
        _report(conn, out, "live lines the sources do not call for (orphaned, duplicated or different)", f"""
            SELECT * FROM (({live_lines}) EXCEPT ALL ({expected})) AS d WHERE {skip} ORDER BY 1, 2, 3 LIMIT 1000
        """, params)
        # 1: exactly one live entry per (rule, key)
        _report(conn, out, "keys with more than one live entry", f"""
            SELECT rule, source_key, count(*) FROM ({LIVE_ENTRIES}) AS e
            WHERE rule = ANY(%(rules)s) GROUP BY 1, 2 HAVING count(*) > 1 ORDER BY 1, 2 LIMIT 1000
        """, params)
        # 1, 2: entry headers (which keys, date, memo, currency)
        headers = _union(s.expected_headers() for s in specs)
        dated = [s.rule for s in specs if s.date]
        live_headers = f"""
            SELECT e.rule, e.source_key AS k,
                   CASE WHEN e.rule = ANY(%(dated)s) THEN e.effective_at END AS effective_at,
                   e.memo,
                   (SELECT min(l.currency) FROM ledger.line AS l WHERE l.entry_id = e.id) AS currency
            FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = ANY(%(rules)s)
        """
        hparams = {**params, "dated": dated}
        _report(conn, out, "entries the sources call for but not live (missing, or other date/memo/currency)", f"""
            SELECT * FROM (({headers}) EXCEPT ALL ({live_headers})) AS d WHERE {skip} ORDER BY 1, 2 LIMIT 1000
        """, hparams)
        _report(conn, out, "live entries the sources do not call for (orphaned, or other date/memo/currency)", f"""
            SELECT * FROM (({live_headers}) EXCEPT ALL ({headers})) AS d WHERE {skip} ORDER BY 1, 2 LIMIT 1000
        """, hparams)
        # 3: the journal's own shape
        _report(conn, out, "unbalanced entries (entry, currency, debit, credit)", """
            SELECT entry_id, currency, sum(debit), sum(credit) FROM ledger.line
            GROUP BY entry_id, currency HAVING sum(debit) <> sum(credit) LIMIT 1000
        """)
        _report(conn, out, "lines without exactly one positive side", """
            SELECT entry_id, line_no, debit, credit FROM ledger.line
            WHERE NOT (debit >= 0 AND credit >= 0 AND (debit = 0) <> (credit = 0)) LIMIT 1000
        """)
        _report(conn, out, "entries without lines", """
            SELECT e.id, e.rule, e.source_key FROM ledger.entry AS e
            WHERE NOT EXISTS (SELECT FROM ledger.line AS l WHERE l.entry_id = e.id) LIMIT 1000
        """)
        _report(conn, out, "lines without an entry or with an unknown account", """
            SELECT l.entry_id, l.line_no, l.account FROM ledger.line AS l
            WHERE NOT EXISTS (SELECT FROM ledger.entry AS e WHERE e.id = l.entry_id)
               OR NOT EXISTS (SELECT FROM ledger.account AS a WHERE a.code = l.account) LIMIT 1000
        """)
        _report(conn, out, "reversals of a missing, foreign or reversal entry", """
            SELECT r.id, r.reverses FROM ledger.entry AS r
            LEFT JOIN ledger.entry AS o ON o.id = r.reverses
            WHERE r.reverses IS NOT NULL
              AND (o.id IS NULL OR (o.rule, o.source_key) <> (r.rule, r.source_key) OR o.reverses IS NOT NULL)
            LIMIT 1000
        """)
        _report(conn, out, "entries reversed more than once", """
            SELECT reverses, count(*) FROM ledger.entry WHERE reverses IS NOT NULL
            GROUP BY 1 HAVING count(*) > 1 LIMIT 1000
        """)
        _report(conn, out, "reversals whose lines are not the original's swapped", """
            SELECT r.id FROM ledger.entry AS r
            WHERE r.reverses IS NOT NULL AND
                  (SELECT array_agg((l.line_no, l.account, l.currency, l.debit, l.credit)::text ORDER BY l.line_no)
                   FROM ledger.line AS l WHERE l.entry_id = r.id)
                  IS DISTINCT FROM
                  (SELECT array_agg((l.line_no, l.account, l.currency, l.credit, l.debit)::text ORDER BY l.line_no)
                   FROM ledger.line AS l WHERE l.entry_id = r.reverses)
            LIMIT 1000
        """)
        # 4: totals per account and currency
        _report(conn, out, "account totals (live lines) differing from the sources' (account, currency, ledger, sources)", f"""
            WITH want AS (SELECT account, currency, sum(amount) AS total FROM ({expected}) AS x
                          WHERE {skip} GROUP BY 1, 2),
                 have AS (SELECT account, currency, sum(amount) AS total FROM ({live_lines}) AS x
                          WHERE {skip} GROUP BY 1, 2)
            SELECT coalesce(h.account, w.account), coalesce(h.currency, w.currency), h.total, w.total
            FROM have AS h FULL JOIN want AS w ON (h.account, h.currency) = (w.account, w.currency)
            WHERE coalesce(h.total, 0) <> coalesce(w.total, 0)
        """, params)
        _report(conn, out, "account totals over all lines differing from the live lines' (reversals do not cancel)", f"""
            WITH every AS (SELECT l.account, l.currency, sum(l.debit - l.credit) AS total
                           FROM ledger.entry AS e JOIN ledger.line AS l ON l.entry_id = e.id
                           WHERE e.rule = ANY(%(rules)s) GROUP BY 1, 2),
                 live AS (SELECT account, currency, sum(amount) AS total FROM ({live_lines}) AS x GROUP BY 1, 2)
            SELECT coalesce(a.account, v.account), coalesce(a.currency, v.currency), a.total, v.total
            FROM every AS a FULL JOIN live AS v ON (a.account, a.currency) = (v.account, v.currency)
            WHERE coalesce(a.total, 0) <> coalesce(v.total, 0)
        """, {"rules": rules})
        # 5: nothing of a rolled-back write
        if forbidden_memo:
            _report(conn, out, "entries carrying the marker of a rolled-back write", """
                SELECT id, rule, source_key, memo FROM ledger.entry WHERE memo LIKE %s LIMIT 1000
            """, (forbidden_memo,))
            _report(conn, out, "failures carrying the marker of a rolled-back write", """
                SELECT id, rule, source_key FROM ledger.failure
                WHERE message LIKE %s OR detail LIKE %s LIMIT 1000
            """, (forbidden_memo, forbidden_memo))
        pairs = [(rule, key) for rule, keys in (forbidden_keys or {}).items() for key in keys]
        if pairs:
            keys = {"r": [p[0] for p in pairs], "k": [p[1] for p in pairs]}
            _report(conn, out, "entries of keys only rolled-back writes used", """
                SELECT id, rule, source_key FROM ledger.entry
                WHERE (rule, source_key) IN (SELECT * FROM unnest(%(r)s::text[], %(k)s::text[])) LIMIT 1000
            """, keys)
            _report(conn, out, "failures of keys only rolled-back writes used", """
                SELECT id, rule, source_key FROM ledger.failure
                WHERE (rule, source_key) IN (SELECT * FROM unnest(%(r)s::text[], %(k)s::text[])) LIMIT 1000
            """, keys)
    return out


def assert_holds(conn: psycopg.Connection, specs: Iterable[Spec] = SHOP, **kwargs) -> None:
    """Raise AssertionError listing every violation of the invariants."""
    found = problems(conn, specs, **kwargs)
    assert not found, "ledger invariants violated:\n  " + "\n  ".join(found)


def live_count(conn: psycopg.Connection, rule: str | None = None) -> int:
    """Number of live entries (of one rule, or all)."""
    return conn.execute(
        f"SELECT count(*) FROM ({LIVE_ENTRIES}) AS e WHERE %(rule)s::text IS NULL OR e.rule = %(rule)s",
        {"rule": rule},
    ).fetchone()[0]


def live_entries(conn: psycopg.Connection, rule: str) -> dict[str, tuple]:
    """{source_key: (effective_at, memo, ((line_no, account, currency, debit, credit), …))} of a rule."""
    out: dict[str, tuple] = {}
    for key, effective_at, memo, lines in conn.execute(
        f"""
        SELECT e.source_key, e.effective_at, e.memo,
               (SELECT array_agg(ARRAY[l.line_no::text, l.account, l.currency, l.debit::text, l.credit::text]
                                 ORDER BY l.line_no)
                FROM ledger.line AS l WHERE l.entry_id = e.id)
        FROM ({LIVE_ENTRIES}) AS e WHERE e.rule = %s
        """,
        (rule,),
    ):
        assert key not in out, f"two live entries for {rule} {key}"
        out[key] = (effective_at, memo, tuple(tuple(line) for line in lines or ()))
    return out

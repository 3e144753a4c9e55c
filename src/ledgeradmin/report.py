"""Reports accountants expect: the trial balance, an account's ledger, the journal."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator

import psycopg
from psycopg.abc import AdaptContext, Buffer
from psycopg.adapt import Loader
from psycopg.pq import Format
from psycopg.rows import dict_row

from .compiler import fill, literal, template
from .errors import LedgerError


def _day_after(day: dt.date | None) -> str:
    if day is None:
        return "'infinity'::timestamptz"
    return f"({literal(day.isoformat())}::date + 1)::timestamptz"


def trial_balance(conn: psycopg.Connection, as_of: dt.date | None = None,
                  date_from: dt.date | None = None) -> list[dict]:
    """Per account and currency: debit, credit, balance of entries effective up to ``as_of``
    (inclusive, UTC). The totals per currency must net to zero. With ``date_from``: also
    ``opening``, the balance before that day, and debit and credit of the period only."""
    since = "'-infinity'::timestamptz" if date_from is None else f"{literal(date_from.isoformat())}::date"
    with conn.transaction(), conn.cursor(row_factory=dict_row) as cur:
        cur.execute("SET LOCAL TimeZone = 'UTC'")
        cur.execute(fill(template("queries/report_trial_balance.sql"), before=_day_after(as_of), since=since))
        rows = cur.fetchall()
    if date_from is None:
        for r in rows:
            del r["opening"]
    return rows


def with_totals(rows: list[dict]) -> list[dict]:
    """Trial balance rows followed by one TOTAL row per currency (for people)."""
    amounts = [k for k in ("opening", "debit", "credit", "balance") if rows and k in rows[0]]
    totals: dict[str, dict] = {}
    for r in rows:
        t = totals.setdefault(r["currency"], {"account": "TOTAL", "name": "", "type": "", "currency": r["currency"],
                                              **{k: 0 for k in amounts}})
        for k in amounts:
            t[k] += r[k]
    return [*rows, *totals.values()]


def account_ledger(
    conn: psycopg.Connection, account: str, date_from: dt.date | None = None, date_to: dt.date | None = None
) -> Iterator[dict]:
    """An account's lines with a running balance, streamed (server-side cursor)."""
    if conn.execute("SELECT 1 FROM ledger.account WHERE code = %s", (account,)).fetchone() is None:
        raise LedgerError(f"unknown account {account!r}", hint="accounts are listed in ledger.account")
    query = fill(template("queries/report_account.sql"), dates=_dates(date_from, date_to))
    return _stream(conn, "ledgeradmin_account", query, {"account": account, "from": date_from, "to": date_to})


def journal(conn: psycopg.Connection, date_from: dt.date | None = None, date_to: dt.date | None = None,
            rule: str | None = None, source_key: str | None = None) -> Iterator[dict]:
    """The journal's lines, entry by entry in date order, streamed (server-side cursor);
    of one rule or one source key when given. With both, a source row's history: the
    rule's entries of the key, the entries they reverse, and the entries of the names the
    rule had before a rename (report_journal_history.sql)."""
    if rule is not None and source_key is not None:
        query = fill(template("queries/report_journal_history.sql"), dates=_dates(date_from, date_to))
    else:
        filters = "".join(f"\n  AND e.{column} = %({column})s" for column, value
                          in (("rule", rule), ("source_key", source_key)) if value is not None)
        query = fill(template("queries/report_journal.sql"), filters=filters + _dates(date_from, date_to))
    return _stream(conn, "ledgeradmin_journal", query,
                   {"rule": rule, "source_key": source_key, "from": date_from, "to": date_to})


def _dates(date_from: dt.date | None, date_to: dt.date | None) -> str:
    """Conditions on ``e.effective_at`` for the days from ``date_from`` to ``date_to``,
    inclusive (UTC), bound as %(from)s and %(to)s; none without them: every entry, of
    any date PostgreSQL can hold (year 20260, 44 BC), as the trial balance counts them.
    The day after ``date_to`` is computed by the server (9999-12-31 has one)."""
    return (("" if date_from is None else "\n  AND e.effective_at >= %(from)s::date")
            + ("" if date_to is None else "\n  AND e.effective_at < %(to)s::date + 1"))


def _stream(conn: psycopg.Connection, name: str, query: str, params: dict) -> Iterator[dict]:
    """The rows of ``query`` through a server-side cursor, in UTC."""
    with conn.transaction():
        conn.execute("SET LOCAL TimeZone = 'UTC'")
        with conn.cursor(name=name, row_factory=dict_row) as cur:
            cur.adapters.register_loader("timestamptz", _TimestamptzLoader)
            cur.execute(query, params)
            yield from cur


class _TimestamptzLoader(Loader):
    """A timestamptz as a datetime when Python has one (years 1 to 9999), else as the
    server's text ('20260-03-01 00:00:00+00', '0044-03-15 00:00:00+00 BC'): an entry
    may be dated so, and a report shows it rather than failing."""

    def __init__(self, oid: int, context: AdaptContext | None = None) -> None:
        super().__init__(oid, context)
        self._load = psycopg.adapters.get_loader(oid, Format.TEXT)(oid, context).load

    def load(self, data: Buffer) -> dt.datetime | str:
        try:
            return self._load(data)
        except psycopg.DataError:
            return bytes(data).decode()

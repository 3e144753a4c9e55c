"""Closed periods: close the books through a date, reopen them, show what is in force.

The close date is held by the check constraint ``entry_in_open_period`` of ledger.entry,
which ``ledger.set_closed_through`` (db/migrations/0005) replaces; every change is logged
in ledger.period_close. Changing it takes ACCESS EXCLUSIVE on ledger.entry for a moment,
so it waits a bounded time for its lock and retries, as install does (locks.py).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import psycopg

from . import locks
from .errors import LedgerError, database_hint
from .migrate import require_schema


@dataclass(frozen=True)
class Change:
    closed_through: dt.date | None  # None: every period open
    changed_at: dt.datetime
    changed_by: str

    def as_dict(self) -> dict:
        return {"closed_through": self.closed_through and self.closed_through.isoformat(),
                "changed_at": self.changed_at.isoformat(), "changed_by": self.changed_by}


@dataclass(frozen=True)
class CloseResult:
    closed_through: dt.date | None
    previous: dt.date | None
    open_failures: int  # open failures when the books were closed: their rows may not post now
    dry_run: bool = False


def history(conn: psycopg.Connection, limit: int | None = None) -> list[Change]:
    """The closes and reopens, latest first. Needs only SELECT on ledger.period_close (an
    auditor in ledger_reader may look)."""
    if conn.execute("SELECT pg_catalog.to_regclass('ledger.period_close')").fetchone()[0] is None:
        raise LedgerError("the ledger schema has no closed periods yet (ledger.period_close)",
                          hint="run `ledgeradmin migrate` first")
    rows = conn.execute(
        "SELECT closed_through, changed_at, changed_by FROM ledger.period_close ORDER BY id DESC LIMIT %s",
        (limit,),
    ).fetchall()
    return [Change(*row) for row in rows]


def closed_through(conn: psycopg.Connection, *, required: bool = True) -> dt.date | None:
    """The date the books are closed through; None when every period is open. Not
    ``required``: None too for a role that may not read ledger.period_close (a monitoring
    role of verify or status granted only what they read besides)."""
    if not required and not conn.execute(
            "SELECT coalesce(pg_catalog.has_table_privilege(t, 'SELECT'), false)"
            " FROM pg_catalog.to_regclass('ledger.period_close') AS t").fetchone()[0]:
        return None
    latest = history(conn, limit=1)
    return latest[0].closed_through if latest else None


def close(conn: psycopg.Connection, through: dt.date, *, dry_run: bool = False,
          wait: locks.LockWait = locks.LockWait(), on_retry=None) -> CloseResult:
    """Close the books through ``through``: no entry dated on or before it can be written."""

    def check(current: dt.date | None, today: dt.date) -> None:
        if through >= today:
            raise LedgerError(
                f"cannot close the books through {through}: only days before today ({today}, UTC) can be closed",
                hint="reversals, and the entries of rules without a date, are dated when they are written")
        if current is not None and through <= current:
            raise LedgerError(f"the books are closed through {current} already",
                              hint=f"to open the days after {through} again: `ledgeradmin period reopen "
                                   f"{through + dt.timedelta(days=1)}`")

    return _change(conn, through, check, dry_run=dry_run, wait=wait, on_retry=on_retry)


def reopen(conn: psycopg.Connection, first_day: dt.date | None, *, dry_run: bool = False,
           wait: locks.LockWait = locks.LockWait(), on_retry=None) -> CloseResult:
    """Open the days from ``first_day`` on again (None, or the first day there is: every period)."""
    through = None if first_day in (None, dt.date.min) else first_day - dt.timedelta(days=1)

    def check(current: dt.date | None, today: dt.date) -> None:  # noqa: ARG001 - same shape as close's
        if current is None:
            raise LedgerError("no period is closed")
        if through is not None and through >= current:
            raise LedgerError(f"{first_day} is open already: the books are closed through {current}",
                              hint=f"`ledgeradmin period reopen {current}` opens {current} again")

    return _change(conn, through, check, dry_run=dry_run, wait=wait, on_retry=on_retry)


def _change(conn, through: dt.date | None, check, *, dry_run: bool, wait: locks.LockWait, on_retry) -> CloseResult:
    require_schema(conn)

    def attempt() -> CloseResult:
        with conn.transaction(force_rollback=dry_run), locks.bounded(conn, wait):
            current = closed_through(conn)
            (today,) = conn.execute("SELECT (now() AT TIME ZONE 'UTC')::date").fetchone()
            check(current, today)
            conn.execute("SELECT ledger.set_closed_through(%s)", (through,))
            (failures,) = conn.execute("SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL").fetchone()
            return CloseResult(through, current, failures, dry_run)

    try:
        return locks.retrying(conn, attempt, wait, action="period", mode="ACCESS EXCLUSIVE",
                              tables=lambda: ["ledger.entry"], on_retry=on_retry)
    except psycopg.Error as exc:
        raise LedgerError(f"changing the closed period failed, nothing was changed: {exc.diag.message_primary or exc}",
                          hint=database_hint(exc) or exc.diag.message_hint) from None

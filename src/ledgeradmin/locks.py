"""DDL on tables in use: install and uninstall wait a bounded time for their locks, retry,
and name the sessions in the way.

CREATE TRIGGER takes SHARE ROW EXCLUSIVE on the source table, DROP (uninstall) ACCESS
EXCLUSIVE. While a statement waits for such a lock, the table's writers (for ACCESS
EXCLUSIVE, its readers too) queue behind it: one transaction an application left open
would stop the table's traffic for as long as it stays open. So an attempt waits at most
``timeout_ms`` for any lock, rolls back (freeing the queue) when it runs out, and the next
attempt starts after a pause. One install or uninstall runs at a time per database (an
advisory lock), so two deployments never interleave their DDL.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import TypeVar

import psycopg

from .compiler import template
from .errors import LedgerError

#: the advisory lock of install and uninstall, one at a time per database ("LedgerDD" in ASCII)
DDL_LOCK = 0x4C65_6467_6572_4444

#: lock modes that conflict with the one a DDL statement takes on its table
CONFLICTS = {
    "SHARE ROW EXCLUSIVE": ["RowExclusiveLock", "ShareUpdateExclusiveLock", "ShareLock",
                            "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"],
    "ACCESS EXCLUSIVE": ["AccessShareLock", "RowShareLock", "RowExclusiveLock", "ShareUpdateExclusiveLock",
                         "ShareLock", "ShareRowExclusiveLock", "ExclusiveLock", "AccessExclusiveLock"],
}

T = TypeVar("T")


@dataclass(frozen=True)
class LockWait:
    """How long one attempt may wait for a lock (0: as long as it takes), and how many more
    attempts follow a timeout."""

    timeout_ms: int = 1000
    retries: int = 10

    def pause(self, attempt: int) -> float:
        """Seconds before attempt ``attempt`` (2, 3, …): 0.5, 1, 2, 4, then 5."""
        return min(0.5 * 2 ** (attempt - 2), 5.0)


def ddl_lock_statements() -> list[str]:
    """The install script's first statement: the advisory lock of install and uninstall,
    so that the SQL of `ledgeradmin sql`, applied by a pipeline, takes turns with them too
    (install holds it already; taking it again is free)."""
    return [f"SELECT pg_catalog.pg_advisory_xact_lock({DDL_LOCK})"]


@contextmanager
def bounded(conn: psycopg.Connection, wait: LockWait) -> Iterator[None]:
    """The body of an attempt's transaction: every lock wait bounded, the DDL lock taken
    first. Where the attempt is a savepoint of the caller's transaction, the caller's
    lock_timeout is set back at the end (on an error the rollback undoes it)."""
    (previous,) = conn.execute("SELECT pg_catalog.current_setting('lock_timeout')").fetchone()
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (f"{wait.timeout_ms}ms",))
    conn.execute("SELECT pg_catalog.pg_advisory_xact_lock(%s)", (DDL_LOCK,))
    yield
    conn.execute("SELECT pg_catalog.set_config('lock_timeout', %s, true)", (previous,))


def retrying(
    conn: psycopg.Connection,
    attempt: Callable[[], T],
    wait: LockWait,
    *,
    action: str,
    tables: Callable[[], list[str]],
    mode: str,
    on_retry: Callable[[str], None] | None = None,
) -> T:
    """Run ``attempt`` (one transaction, its body `bounded`) until it gets its locks."""
    tries, n = wait.retries + 1, 1
    while True:
        try:
            return attempt()
        except psycopg.errors.LockNotAvailable:
            with conn.transaction():  # a transaction of its own, as the attempt was
                holders = _holders(conn, tables(), mode)
            if n == tries:
                raise LedgerError(
                    f"{action} gave up after {tries} attempt{'s' if tries > 1 else ''}: a lock it needs was not "
                    f"free within {wait.timeout_ms} ms; nothing was changed. In the way: {holders}",
                    hint="While a DDL statement waits for a table lock, the table's queries queue behind it, so "
                         "an attempt gives up after --lock-timeout. Let those transactions finish or end them "
                         "(pg_terminate_backend(pid)), or run again with a larger --lock-timeout or --lock-retries.",
                ) from None
            pause = wait.pause(n + 1)
            if on_retry:
                on_retry(f"{action}: a lock was not free within {wait.timeout_ms} ms (in the way: {holders}); "
                         f"attempt {n + 1} of {tries} in {pause:g} s")
            time.sleep(pause)
            n += 1


def _holders(conn: psycopg.Connection, tables: list[str], mode: str) -> str:
    """Who holds what the DDL waited for, as one line for people."""
    rows = conn.execute(template("queries/lock_holders.sql"),
                        {"tables": tables, "modes": CONFLICTS[mode], "key": DDL_LOCK}).fetchall()
    if not rows:
        return "no session holds a conflicting lock now"
    parts = []
    for what, pid, user, app, state, seconds in rows:
        details = [f"user {user}", *([f"application {app!r}"] if app else []), state or "state unknown",
                   *([f"transaction open {seconds} s"] if seconds is not None else [])]
        parts.append(f"{what}: pid {pid} ({', '.join(details)})")
    return "; ".join(parts)

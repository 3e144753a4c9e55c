"""Creates and upgrades the ledger schema with the yoyo migrations of db/migrations/."""

from __future__ import annotations

import psycopg
from yoyo import read_migrations
from yoyo.backends.core.postgresql import PostgresqlBackend, PostgresqlPsycopgBackend
from yoyo.connections import parse_uri

from . import __version__
from .connection import connect, redact, resolve_dsn
from .errors import LedgerError, database_hint
from .resources import db_dir

SCHEMA = "ledger"


class _Backend(PostgresqlPsycopgBackend):
    """yoyo's psycopg 3 backend, connecting with a libpq conninfo instead of a URL and
    keeping its bookkeeping tables in the ledger schema.

    Those tables are named with their schema rather than found through a session-level
    `SET search_path`: behind a pooler in transaction mode the next transaction may run on
    another server connection, and the setting would stay behind on this one for other
    clients. The migrations name every object with its schema."""

    def __init__(self, conninfo: str) -> None:
        self._conninfo = conninfo
        super().__init__(parse_uri("postgresql+psycopg:///ledger"), "_yoyo_migration")

    def connect(self, dburi):  # noqa: ARG002 - the URL is a placeholder
        return connect(self._conninfo)

    def init_connection(self, connection) -> None:
        pass  # no session state (see the class)

    def quote_identifier(self, s: str) -> str:
        quoted = super().quote_identifier(s)
        bookkeeping = (self.migration_table, self.log_table, self.lock_table, self.version_table)
        return f"{super().quote_identifier(SCHEMA)}.{quoted}" if s in bookkeeping else quoted

    def list_tables(self, **kwargs):
        return super(PostgresqlBackend, self).list_tables(schema=SCHEMA, **kwargs)  # not current_schema

    def copy(self):
        return self.__class__(self._conninfo)


def migrations():
    return read_migrations(str(db_dir() / "migrations"))


def migrate(dsn: str | None = None, *, dry_run: bool = False) -> list[str]:
    """Apply the pending migrations under yoyo's lock; idempotent. Returns their ids."""
    conninfo = resolve_dsn(dsn)
    with connect(conninfo) as conn:
        refuse_newer_schema(conn)
        if dry_run:  # read only: what is not applied yet, without yoyo's lock and tables
            done = set(applied(conn))
            return [m.id for m in migrations() if m.id not in done]
        conn.execute("CREATE SCHEMA IF NOT EXISTS ledger")
    try:
        backend = _Backend(conninfo)
        try:
            backend.init_database()
            with backend.lock():
                pending = backend.to_apply(migrations())
                backend.apply_migrations(pending)
                return [m.id for m in pending]
        finally:
            backend.connection.close()
    except psycopg.Error as exc:
        raise LedgerError(f"migration failed: {redact(str(exc).strip(), conninfo)}", hint=database_hint(exc)) from None


#: What migrations 0002 and 0005 grant ledger_reader, for a DBA who creates the role later.
READER_GRANTS = ("GRANT USAGE ON SCHEMA ledger TO ledger_reader; GRANT SELECT ON ledger.account, ledger.entry, "
                 "ledger.line, ledger.failure, ledger.period_close TO ledger_reader;")


def reader_role_missing(dsn: str | None = None) -> bool:
    """Whether role ledger_reader is absent: migrate creates it only with CREATEROLE."""
    with connect(resolve_dsn(dsn)) as conn:
        return conn.execute("SELECT pg_catalog.to_regrole('ledger_reader') IS NULL").fetchone()[0]


def applied(conn: psycopg.Connection) -> list[str]:
    """Ids of the migrations applied to the database of ``conn``."""
    if conn.execute("SELECT to_regclass('ledger._yoyo_migration')").fetchone()[0] is None:
        return []
    return [r[0] for r in conn.execute("SELECT migration_id FROM ledger._yoyo_migration ORDER BY applied_at_utc")]


def refuse_newer_schema(conn: psycopg.Connection) -> None:
    """Fail when the database has migrations this ledgeradmin does not know: a newer
    version set up the ledger there, and this one's SQL (its posting functions, its
    queries) would not match it."""
    _refuse_unknown(set(applied(conn)) - {m.id for m in migrations()})


def _refuse_unknown(unknown: set[str]) -> None:
    if unknown:
        raise LedgerError(
            f"the ledger schema is newer than this ledgeradmin {__version__}: migration(s)"
            f" {', '.join(sorted(unknown))} were applied by a later version; nothing was changed",
            hint="upgrade ledgeradmin to the version that migrated this database (every machine that runs it)",
        )


def require_schema(conn: psycopg.Connection) -> None:
    """Fail with a hint when the ledger schema is missing, behind the migrations, or ahead of them."""
    done, known = set(applied(conn)), {m.id for m in migrations()}
    _refuse_unknown(done - known)
    pending = known - done
    if pending:
        raise LedgerError(
            f"the ledger schema is not up to date ({len(pending)} migration(s) pending)",
            hint="run `ledgeradmin migrate` first",
        )

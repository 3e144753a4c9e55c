"""Connecting the libpq way: --dsn, then LEDGERADMIN_DSN, then libpq's own PG* variables,
PGSERVICE and .pgpass. Passwords never reach output, logs or error messages."""

from __future__ import annotations

import os
import re

import psycopg
from psycopg.conninfo import conninfo_to_dict

from .errors import LedgerError

APPLICATION_NAME = "ledgeradmin"


def resolve_dsn(dsn: str | None = None) -> str:
    """The conninfo to use; an empty string lets libpq read PG* variables and service files."""
    return dsn if dsn is not None else os.environ.get("LEDGERADMIN_DSN", "")


def connect(dsn: str | None = None, **kwargs) -> psycopg.Connection:
    """An autocommit connection; callers open transactions with ``conn.transaction()``.

    No statement is prepared on the server (psycopg would after five runs of one query):
    behind a pooler in transaction mode (PgBouncer before 1.21, or with
    max_prepared_statements = 0) the next transaction may run on another server
    connection, which lacks the statement or has one of the same name. Every setting
    ledgeradmin makes is transaction-local, so nothing else depends on the session."""
    kwargs.setdefault("prepare_threshold", None)
    conninfo = resolve_dsn(dsn)
    try:
        params = conninfo_to_dict(conninfo)
    except psycopg.Error as exc:
        # libpq quotes the offending token, which may be the password: drop quoted parts.
        reason = re.sub(r'"[^"]*"', '"…"', str(exc).strip())
        raise LedgerError(f"invalid connection string: {redact(reason, conninfo)}") from None
    params.setdefault("application_name", APPLICATION_NAME)
    try:
        return psycopg.connect(**params, autocommit=True, **kwargs)
    except psycopg.Error as exc:
        raise LedgerError(
            f"cannot connect: {redact(str(exc).strip(), conninfo)}",
            hint="pass --dsn, set LEDGERADMIN_DSN, or the PG* variables (PGHOST, PGDATABASE, …)",
        ) from None


def redact(text: str, conninfo: str | None = None) -> str:
    """Remove any password (of ``conninfo`` or in URL/keyword form) from ``text``."""
    secrets = []
    if conninfo:
        try:
            pw = conninfo_to_dict(conninfo).get("password")
        except psycopg.Error:
            pw = None
        if pw:
            secrets.append(str(pw))
    for secret in secrets:
        text = text.replace(secret, "********")
    text = re.sub(r"(://[^:/@\s]*:)[^@\s]*@", r"\1********@", text)
    return re.sub(r"(password\s*=\s*)('(?:[^'\\]|\\.)*'|\S+)", r"\1********", text, flags=re.I)


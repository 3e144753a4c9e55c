"""The one user-facing error type of ledgeradmin and its config flavour."""

from __future__ import annotations


class LedgerError(Exception):
    """An error a user can act on: the CLI prints it as ``Error: …`` plus the hint, exit 2."""

    def __init__(self, message: str, hint: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.hint = hint

    def __str__(self) -> str:
        return self.message


class ConfigError(LedgerError):
    """ledger.toml is unreadable or invalid; the message names the rule and field."""


#: What to do when row-level security would show verify or backfill only part of a table.
EVERY_ROW_HINT = ("run verify and backfill as a role that sees every row: a superuser, a role with BYPASSRLS, "
                  "or the table's owner when its row-level security is not forced")


# Errors that a row's data causes, by SQLSTATE class: data exceptions, integrity
# violations (but unique_violation: a concurrent writer), PL/pgSQL raise, routine
# exceptions. backfill bisects them and records the rows at fault; verify reports the
# rule as not evaluable.
ROW_ERROR_CLASSES = ("22", "23", "P0", "2F", "38", "39")


def is_row_error(exc: Exception) -> bool:
    state = getattr(exc, "sqlstate", None) or ""
    return state[:2] in ROW_ERROR_CLASSES and state != "23505"


def database_hint(exc: Exception) -> str | None:
    """What to do about a database error PostgreSQL gives no useful hint for."""
    diag = getattr(exc, "diag", None)
    message = (diag.message_primary if diag else None) or ""
    sqlstate = getattr(exc, "sqlstate", None)
    if sqlstate == "57014" and "statement timeout" in message:
        return ("the session's statement_timeout (set for the role or the database, or in PGOPTIONS) stopped a "
                "statement: run the command with a larger one, e.g. PGOPTIONS='-c statement_timeout=0'; for "
                "backfill, a smaller --batch-size; for verify, --since checks only recent rows")
    if sqlstate == "25006":
        return ("this server takes no writes: it is a hot standby, or default_transaction_read_only is on for the "
                "role or database. Run migrate, install, uninstall and backfill against the primary; verify, "
                "status and report run on a standby")
    if sqlstate == "42501" and "row-level security" in message:
        return EVERY_ROW_HINT
    if sqlstate == "40001" and "conflict with recovery" in message:
        why = (diag.message_detail or "").rstrip(".")
        return (f"WAL replay on this hot standby cancelled the query{f' ({why})' if why else ''}. For verify on a "
                "standby, set max_standby_streaming_delay there above verify's run time (-1: no limit) and "
                "hot_standby_feedback = on, or check recent rows only (--since), or run it on the primary")
    return None

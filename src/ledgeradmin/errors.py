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

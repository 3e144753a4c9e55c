"""ledgeradmin: compile posting rules into PL/pgSQL triggers that keep a double-entry ledger."""

from importlib.metadata import PackageNotFoundError, version

try:
    __version__ = version("ledgeradmin")
except PackageNotFoundError:  # running from a source tree that is not installed
    __version__ = "0.0.0+unknown"

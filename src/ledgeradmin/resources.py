"""The SQL files of ledgeradmin (migrations, trigger routines), wherever they are installed.

A wheel ships the repository's `db/` folder as `ledgeradmin/db/`; an editable install
or a source checkout reads `db/` at the repository root.
"""

from pathlib import Path

_PACKAGE_DIR = Path(__file__).resolve().parent


def db_dir() -> Path:
    """The folder holding `migrations/` and `triggers/`."""
    installed = _PACKAGE_DIR / "db"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parents[1] / "db"  # src/ledgeradmin -> repository root


def read_sql(relative: str) -> str:
    """Text of the SQL file at `relative` (e.g. 'triggers/post_entry.sql') under db_dir()."""
    return (db_dir() / relative).read_text(encoding="utf-8")


def examples_dir() -> Path:
    """The folder of runnable examples (`shop/` …), installed or in the checkout."""
    installed = _PACKAGE_DIR / "examples"
    if installed.is_dir():
        return installed
    return _PACKAGE_DIR.parents[1] / "examples"

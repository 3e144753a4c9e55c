"""ledgeradmin: install the posting rules of ledger.toml (version 1).

The SQL under sql/0002_ledgeradmin_install/ was generated, not written:
    ledgeradmin sql --config ledger.toml --out alembic/sql/0002_ledgeradmin_install

Revision ID: 0002
Revises: 0001
"""

from pathlib import Path

from alembic import op

revision = "0002"
down_revision = "0001"

SQL_DIR = Path(__file__).resolve().parent.parent / "sql" / "0002_ledgeradmin_install"


def run_sql_dir(directory: Path) -> None:
    """Execute every generated file, in name order, as it is, on the driver's own cursor
    (inside the revision's transaction): no bind-parameter parsing of ':name' or '%'."""
    cursor = op.get_bind().connection.cursor()
    try:
        for path in sorted(directory.glob("*.sql")):
            cursor.execute(path.read_text(encoding="utf-8"))
    finally:
        cursor.close()


def upgrade() -> None:
    run_sql_dir(SQL_DIR)


def downgrade() -> None:
    # What `ledgeradmin uninstall --rule sale` runs: the posting function and its triggers
    # go; every journal entry, line and account stays.
    op.execute('DROP FUNCTION IF EXISTS "ledger"."post_sale"() CASCADE')
    op.execute("DELETE FROM ledger.rule WHERE name = 'sale'")

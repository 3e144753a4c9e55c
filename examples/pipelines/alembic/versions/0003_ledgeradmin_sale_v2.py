"""ledgeradmin: rule sale version 2 (sales tax to 2210 VAT Payable).

Generated against a database at revision 0002:
    ledgeradmin sql --config ledger.v2.toml --rule sale --out alembic/sql/0003_ledgeradmin_sale_v2

Entries posted before this revision stay as they are; `ledgeradmin verify` reports them
as drifted and `ledgeradmin backfill` restates them (docs/pipelines.md).

Revision ID: 0003
Revises: 0002
"""

from pathlib import Path

from alembic import op

revision = "0003"
down_revision = "0002"

SQL = Path(__file__).resolve().parent.parent / "sql"


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
    run_sql_dir(SQL / "0003_ledgeradmin_sale_v2")


def downgrade() -> None:
    run_sql_dir(SQL / "0002_ledgeradmin_install")  # version 1 of the rule, installed again

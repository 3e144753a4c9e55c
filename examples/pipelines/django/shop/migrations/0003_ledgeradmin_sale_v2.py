"""ledgeradmin: rule sale version 2 (sales tax to 2210 VAT Payable).

Generated against a database migrated to shop 0002:
    ledgeradmin sql --config ledger.v2.toml --rule sale --out shop/migrations/sql/0003_ledgeradmin_sale_v2

Entries posted before this migration stay as they are; `ledgeradmin verify` reports them
as drifted and `ledgeradmin backfill` restates them (docs/pipelines.md).
"""

from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"


def sql_files(name: str) -> list[str]:
    """The generated files of one directory, in apply order (see 0002)."""
    return [p.read_text(encoding="utf-8") for p in sorted((SQL / name).glob("*.sql"))]


class Migration(migrations.Migration):
    dependencies = [("shop", "0002_ledgeradmin_install")]

    operations = [
        migrations.RunSQL(
            sql=sql_files("0003_ledgeradmin_sale_v2"),
            reverse_sql=sql_files("0002_ledgeradmin_install"),  # version 1 of the rule again
        ),
    ]

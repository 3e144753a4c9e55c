"""ledgeradmin: install the posting rules of ledger.toml (version 1).

The SQL under sql/0002_ledgeradmin_install/ was generated against a database migrated to
shop 0001, not written by hand:
    ledgeradmin sql --config ledger.toml --out shop/migrations/sql/0002_ledgeradmin_install
Run `ledgeradmin migrate` before `manage.py migrate`: the SQL needs the ledger schema.
"""

from pathlib import Path

from django.db import migrations

SQL = Path(__file__).resolve().parent / "sql"


def sql_files(name: str) -> list[str]:
    """The generated files of one directory, in apply order. RunSQL executes each list
    item as it is (no statement splitting, no parameter parsing)."""
    return [p.read_text(encoding="utf-8") for p in sorted((SQL / name).glob("*.sql"))]


# What `ledgeradmin uninstall --rule sale` runs: the posting function and its triggers go;
# every journal entry, line and account stays.
UNINSTALL_SALE = [
    'DROP FUNCTION IF EXISTS "ledger"."post_sale"() CASCADE',
    "DELETE FROM ledger.rule WHERE name = 'sale'",
]


class Migration(migrations.Migration):
    dependencies = [("shop", "0001_initial")]

    operations = [
        migrations.RunSQL(sql=sql_files("0002_ledgeradmin_install"), reverse_sql=UNINSTALL_SALE),
    ]

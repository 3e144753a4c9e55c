#!/usr/bin/env bash
# Regenerates every generated SQL file of examples/pipelines with `ledgeradmin sql`.
#
#   LEDGERADMIN_DSN="host=localhost dbname=pipelines_scratch" examples/pipelines/regenerate.sh
#
# LEDGERADMIN_DSN must name an EMPTY scratch database: the script creates public.sales and
# the ledger schema in it, and drops public.sales again for the Django part.
# `ledgeradmin sql` reads the database (tables, keys, column types) and writes nothing.
set -euo pipefail
cd "$(dirname "$0")"
: "${LEDGERADMIN_DSN:?set LEDGERADMIN_DSN to an empty scratch database}"

psql -X -q -v ON_ERROR_STOP=1 -d "$LEDGERADMIN_DSN" -f schema.sql
ledgeradmin migrate

# yoyo: one file per migration; the depends line orders it after the table's migration.
{ echo "-- depends: 0001.shop-sales"; ledgeradmin sql --config ledger.toml; } \
    > yoyo/migrations/0002.ledgeradmin-install.sql
{ echo "-- depends: 0002.ledgeradmin-install"; ledgeradmin sql --config ledger.v2.toml --rule sale; } \
    > yoyo/migrations/0003.ledgeradmin-sale-v2.sql
ledgeradmin sql --config ledger.toml --rule sale > yoyo/migrations/0003.ledgeradmin-sale-v2.rollback.sql

# Flyway: one versioned script per migration.
ledgeradmin sql --config ledger.toml > flyway/sql/V2__ledgeradmin_install.sql
ledgeradmin sql --config ledger.v2.toml --rule sale > flyway/sql/V3__ledgeradmin_sale_v2.sql

# Alembic: one directory of files per revision (sql --out), executed in name order.
rm -rf alembic/sql && mkdir -p alembic/sql
ledgeradmin sql --config ledger.toml --out alembic/sql/0002_ledgeradmin_install
ledgeradmin sql --config ledger.v2.toml --rule sale --out alembic/sql/0003_ledgeradmin_sale_v2

# Django: generated against the table Django's own migration 0001 creates.
psql -X -q -v ON_ERROR_STOP=1 -d "$LEDGERADMIN_DSN" -c "DROP TABLE public.sales"
(
    cd django
    export PGDATABASE PGHOST PGPORT PGUSER
    eval "$(python3 -c 'import os, psycopg.conninfo as c; d = c.conninfo_to_dict(os.environ["LEDGERADMIN_DSN"]); print("\n".join(f"{e}={d[k]!r}" for k, e in (("dbname","PGDATABASE"),("host","PGHOST"),("port","PGPORT"),("user","PGUSER")) if k in d))')"
    python3 manage.py migrate shop 0001
    rm -rf shop/migrations/sql && mkdir -p shop/migrations/sql
    ledgeradmin sql --config ../ledger.toml --out shop/migrations/sql/0002_ledgeradmin_install
    ledgeradmin sql --config ../ledger.v2.toml --rule sale --out shop/migrations/sql/0003_ledgeradmin_sale_v2
)

"""Alembic environment of examples/pipelines: online migrations, one transaction per
revision (so the ledgeradmin install of a revision commits or rolls back as a whole)."""

import os

from alembic import context
from sqlalchemy import create_engine

url = os.environ.get("ALEMBIC_DATABASE_URL") or context.config.get_main_option("sqlalchemy.url")
if context.is_offline_mode():
    raise SystemExit("offline (--sql) mode: apply the files under sql/ with psql instead")

engine = create_engine(url)
with engine.connect() as connection:
    context.configure(connection=connection, transaction_per_migration=True)
    with context.begin_transaction():
        context.run_migrations()

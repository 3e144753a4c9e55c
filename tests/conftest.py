"""PostgreSQL for the test suite: one throwaway server per session, one database per test.

A session-scoped LocalPostgres (fsync off) is handed to pytest-postgresql as an
existing server (its noproc fixture, `depends_on` our endpoint, so host and port are
known only once the server runs). pytest-postgresql builds a template database by
running TEMPLATE_LOADERS once; every test that asks for `dsn` gets a fresh
`CREATE DATABASE … TEMPLATE` copy, dropped after the test.

Fixtures: pg_server (session), dsn, other_dsn, conn, connect, shop_config, shop.
"""

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from types import SimpleNamespace

import psycopg
import pytest
from psycopg.conninfo import make_conninfo
from pytest_postgresql import factories
from pytest_postgresql.janitor import DatabaseJanitor

from ledgeradmin.config import Config, load_config
from ledgeradmin.install import install
from ledgeradmin.localpg import LocalPostgres
from ledgeradmin.migrate import migrate

REPO = Path(__file__).resolve().parents[1]
SHOP_SCHEMA = REPO / "examples" / "shop" / "schema.sql"
SHOP_CONFIG = REPO / "examples" / "shop" / "ledger.toml"


def load_shop_schema(conninfo: str) -> None:
    """Create the example shop's operational tables."""
    with psycopg.connect(conninfo) as db:
        db.execute(SHOP_SCHEMA.read_text(encoding="utf-8"))


#: Steps that build the template database, in order; each gets a conninfo string.
TEMPLATE_LOADERS: list[Callable[[str], None]] = [load_shop_schema, migrate]


def _load_template(*, host: str, port: int, user: str, dbname: str, **_: object) -> None:
    """pytest-postgresql loader: run TEMPLATE_LOADERS against the template database."""
    conninfo = make_conninfo(host=host, port=str(port), user=user, dbname=dbname)
    for loader in TEMPLATE_LOADERS:
        loader(conninfo)


@pytest.fixture(scope="session")
def pg_server() -> Iterator[LocalPostgres]:
    """The session's local PostgreSQL server (unix socket only, fsync off)."""
    with LocalPostgres(fast=True) as server:
        yield server


@pytest.fixture(scope="session")
def pg_endpoint(pg_server: LocalPostgres) -> SimpleNamespace:
    """pg_server described the way pytest-postgresql's noproc `depends_on` reads a server."""
    return SimpleNamespace(
        host=pg_server.host,
        port=pg_server.port,
        user=pg_server.user,
        password=None,
        options="",
        maintenance_dbname="postgres",
        template_dbname=None,  # build our template from template1
    )


#: Session fixture: builds the template database `ledgeradmin_test_tmpl`.
pg_template = factories.postgresql_noproc(dbname="ledgeradmin_test", depends_on="pg_endpoint", load=[_load_template])


@contextmanager
def fresh_database(pg_template, name: str) -> Iterator[str]:
    """A database copied from the template, dropped afterwards; yields its conninfo."""
    janitor = DatabaseJanitor(
        user=pg_template.user,
        host=pg_template.host,
        port=pg_template.port,
        dbname=name,
        template_dbname=pg_template.template_dbname,
        maintenance_dbname=pg_template.maintenance_dbname,
    )
    with janitor:  # drop() terminates whatever connections a test left open
        yield make_conninfo(host=pg_template.host, port=str(pg_template.port), user=pg_template.user, dbname=name)


@pytest.fixture
def dsn(pg_template) -> Iterator[str]:
    """Conninfo of a fresh database copied from the template; dropped after the test."""
    with fresh_database(pg_template, pg_template.dbname) as conninfo:
        yield conninfo


@pytest.fixture
def other_dsn(pg_template) -> Iterator[str]:
    """A second fresh database (shop schema, ledger migrated), next to `dsn`."""
    with fresh_database(pg_template, f"{pg_template.dbname}_other") as conninfo:
        yield conninfo


@pytest.fixture
def connect(dsn: str) -> Iterator[Callable[..., psycopg.Connection]]:
    """Factory of extra connections to the test database: connect(**kwargs) -> Connection.

    Keyword arguments go to psycopg.connect (e.g. autocommit=True); all connections are
    closed after the test.
    """
    opened: list[psycopg.Connection] = []

    def _connect(**kwargs: object) -> psycopg.Connection:
        connection = psycopg.connect(dsn, **kwargs)
        opened.append(connection)
        return connection

    yield _connect
    for connection in opened:
        connection.close()


@pytest.fixture
def conn(dsn: str) -> Iterator[psycopg.Connection]:
    """An autocommit connection to the test database."""
    with psycopg.connect(dsn, autocommit=True) as connection:
        yield connection


@pytest.fixture
def shop_config() -> Config:
    """The example shop's ledger.toml, parsed."""
    return load_config(SHOP_CONFIG)


@pytest.fixture
def shop(conn: psycopg.Connection, shop_config: Config) -> psycopg.Connection:
    """`conn` to a test database with every rule of the example shop installed."""
    install(conn, shop_config)
    return conn

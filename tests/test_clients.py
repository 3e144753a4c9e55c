"""Any client: real client libraries write the example shop's tables, and the ledger ends
exactly right — Django's ORM, SQLAlchemy 2 (Core and ORM) and psql (`\\copy`, scripts).

Every expectation is computed here, from the source tables, by our own SQL — never by
ledgeradmin's functions: per rule, the live entries (reverses IS NULL and reversed by no
other entry) carry exactly the lines the rule, written out independently below, gives each
eligible row — one live entry per eligible row, none for any other row — and their totals
per account and currency equal the totals computed from the sources. A rolled-back business
write leaves no journal row, whatever the client.
"""

from __future__ import annotations

import csv
import datetime as dt
import os
import shutil
import subprocess
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import sqlalchemy as sa
from psycopg.conninfo import conninfo_to_dict
from sqlalchemy import orm as sa_orm

# --------------------------------------------------------------------------- expectations

LIVE_ENTRIES = """
    SELECT e.* FROM ledger.entry AS e
    WHERE e.reverses IS NULL
      AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
"""

#: The shop's rules written out by hand (examples/shop/ledger.toml):
#: rule -> SQL of (k, currency, account, signed amount, effective date) per line of every
#: row whose `when` holds, debit positive.
EXPECTED_LINES = {
    "sale": """
        SELECT s.id::text AS k, s.currency::text AS currency, v.account, v.amount, s.sold_at AS d
        FROM public.sales AS s
        CROSS JOIN LATERAL (VALUES
            (CASE s.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END,
             s.total::numeric),
            ('4000', -(s.total - s.tax)::numeric),
            ('2200', -s.tax::numeric)) AS v (account, amount)
        WHERE s.status = 'completed'
    """,
    "requisition": """
        SELECT r.id::text, 'USD', v.account, v.amount, r.approved_at
        FROM public.purchase_requisitions AS r
        CROSS JOIN LATERAL (VALUES ('5100', r.amount::numeric), ('2100', -r.amount::numeric)) AS v (account, amount)
        WHERE r.status = 'approved'
    """,
    "payment": """
        SELECT p.id::text, 'USD', v.account, v.amount, p.paid_at
        FROM public.payment_vouchers AS p
        CROSS JOIN LATERAL (VALUES
            ('2100', p.amount::numeric),
            (CASE p.method WHEN 'cash' THEN '1000' ELSE '1010' END, -p.amount::numeric)) AS v (account, amount)
        WHERE p.status = 'paid'
    """,
    "manufacturing": """
        SELECT m.id::text, 'USD', v.account, v.amount, m.finished_at
        FROM public.manufacturing_orders AS m
        CROSS JOIN LATERAL (VALUES
            ('1400', (m.quantity * m.unit_cost)::numeric),
            ('1300', -(m.quantity * m.unit_cost)::numeric)) AS v (account, amount)
        WHERE m.state = 'done'
    """,
}


def _expected(rule: str) -> str:
    """Non-zero expected lines of a rule as (k, currency, account, amount, d)."""
    return f"SELECT * FROM ({EXPECTED_LINES[rule]}) AS x (k, currency, account, amount, d) WHERE amount <> 0"


def _live(rule: str) -> str:
    """Lines of the live entries of a rule as (k, currency, account, amount, d, entry_id)."""
    return f"""
        SELECT e.source_key, l.currency, l.account, l.debit - l.credit, e.effective_at, e.id
        FROM ({LIVE_ENTRIES}) AS e JOIN ledger.line AS l ON l.entry_id = e.id
        WHERE e.rule = '{rule}'
    """


def _totals(conn: psycopg.Connection, query: str) -> dict[tuple[str, str], Decimal]:
    rows = conn.execute(
        f"SELECT account, currency, sum(amount) FROM ({query}) AS t (k, currency, account, amount, d) "
        "GROUP BY 1, 2 HAVING sum(amount) <> 0"
    ).fetchall()
    return {(a, c): v for a, c, v in rows}


def assert_ledger_right(conn: psycopg.Connection) -> None:
    """The journal is exactly what the source tables say, for every shop rule."""
    for rule in EXPECTED_LINES:
        expected, live = _expected(rule), _live(rule)
        live_lines = f"SELECT k, currency, account, amount, d FROM ({live}) AS t (k, currency, account, amount, d, id)"
        assert _totals(conn, live_lines) == _totals(conn, expected), f"rule {rule}: totals per account and currency"
        per_key = conn.execute(
            f"SELECT k, count(DISTINCT id) FROM ({live}) AS t (k, currency, account, amount, d, id) GROUP BY k"
        ).fetchall()
        eligible = {r[0] for r in conn.execute(f"SELECT DISTINCT k FROM ({expected}) AS x")}
        assert {k for k, n in per_key if n > 1} == set(), f"rule {rule}: more than one live entry for a row"
        assert {k for k, _ in per_key} == eligible, f"rule {rule}: live entries vs eligible rows"
        got = sorted(conn.execute(live_lines).fetchall())
        want = sorted(conn.execute(expected).fetchall())
        assert got == want, f"rule {rule}: live lines (key, currency, account, amount, date) differ"
    unbalanced = conn.execute(
        "SELECT entry_id, currency FROM ledger.line GROUP BY 1, 2 HAVING sum(debit) <> sum(credit)"
    ).fetchall()
    assert unbalanced == []


def entry_ids(conn: psycopg.Connection) -> set[int]:
    return {r[0] for r in conn.execute("SELECT id FROM ledger.entry")}


def sales_snapshot(conn: psycopg.Connection) -> list[tuple]:
    return conn.execute("SELECT * FROM public.sales ORDER BY id").fetchall()


def entries_of(conn: psycopg.Connection, rule: str, key: object) -> list[tuple]:
    """(id, reverses) of every entry of (rule, key), oldest first."""
    return conn.execute(
        "SELECT id, reverses FROM ledger.entry WHERE rule = %s AND source_key = %s ORDER BY id", (rule, str(key))
    ).fetchall()


def reversed_keys(conn: psycopg.Connection, rule: str) -> list[str]:
    """Source keys of the rule's reversal entries, one per reversal, sorted."""
    return sorted(
        r[0] for r in conn.execute("SELECT source_key FROM ledger.entry WHERE rule = %s AND reverses IS NOT NULL",
                                   (rule,))
    )


BASE = dt.datetime(2024, 3, 1, 9, 0, tzinfo=dt.timezone.utc)
METHODS = ("cash", "card", "invoice")
CURRENCIES = ("USD", "EUR", "JPY")


def sale_values(i: int, *, status: str | None = None) -> dict:
    """A varied sale: payment method, currency, status (1 in 7 draft), tax (1 in 5 zero)."""
    total = Decimal(i % 97 * 13 + 5) + Decimal(i % 100) / 100
    tax = Decimal(0) if i % 5 == 0 else (total / 11).quantize(Decimal("0.01"))
    return {
        "customer": f"customer {i}",
        "sold_at": BASE + dt.timedelta(minutes=i),
        "status": status or ("draft" if i % 7 == 0 else "completed"),
        "currency": CURRENCIES[i % 3],
        "payment_method": METHODS[i // 3 % 3],
        "total": total,
        "tax": tax,
    }


# --------------------------------------------------------------------------- Django

_DJANGO: dict = {}


def django_models() -> dict:
    """Configure Django once per process (settings can be configured only once) and define
    unmanaged models of two shop tables. Each test points the default database at its own
    test database (see the `django_shop` fixture)."""
    if _DJANGO:
        return _DJANGO
    import django
    from django.conf import settings

    if not settings.configured:
        settings.configure(
            DATABASES={"default": {"ENGINE": "django.db.backends.postgresql", "NAME": "postgres"}},
            INSTALLED_APPS=[],
            USE_TZ=True,
            TIME_ZONE="UTC",
            DEFAULT_AUTO_FIELD="django.db.models.BigAutoField",
        )
        django.setup()
    from django.db import models
    from django.utils import timezone

    class Sale(models.Model):
        id = models.BigAutoField(primary_key=True)
        customer = models.TextField()
        sold_at = models.DateTimeField(default=timezone.now)
        status = models.TextField(default="completed")
        currency = models.CharField(max_length=3, default="USD")
        payment_method = models.TextField(default="invoice")
        total = models.DecimalField(max_digits=14, decimal_places=2)
        tax = models.DecimalField(max_digits=14, decimal_places=2, default=0)
        note = models.TextField(null=True)

        class Meta:
            app_label = "ledgeradmin_clients"
            managed = False
            db_table = "sales"

    class Requisition(models.Model):
        id = models.BigAutoField(primary_key=True)
        requested_by = models.TextField()
        department = models.TextField()
        description = models.TextField()
        amount = models.DecimalField(max_digits=14, decimal_places=2)
        status = models.TextField(default="submitted")
        created_at = models.DateTimeField(default=timezone.now)
        approved_at = models.DateTimeField(null=True)

        class Meta:
            app_label = "ledgeradmin_clients"
            managed = False
            db_table = "purchase_requisitions"

    _DJANGO.update(Sale=Sale, Requisition=Requisition)
    return _DJANGO


@pytest.fixture
def django_shop(shop, dsn):
    """The Django models, with Django's default database set to this test's database."""
    models = django_models()
    from django.db import connections

    params = conninfo_to_dict(dsn)
    connections.close_all()
    connections.databases["default"].update(
        NAME=params["dbname"], HOST=params["host"], PORT=str(params["port"]), USER=params["user"]
    )
    try:
        del connections["default"]  # a fresh wrapper for the new database
    except AttributeError:
        pass
    yield models
    connections.close_all()


def test_django_save_posts_reposts_on_amount_change_and_ignores_unrelated_columns(shop, django_shop):
    Sale, Requisition = django_shop["Sale"], django_shop["Requisition"]
    sale = Sale(customer="alice", total=Decimal("110.00"), tax=Decimal("10.00"), payment_method="card",
                sold_at=BASE)
    sale.save()
    assert [r[1] for r in entries_of(shop, "sale", sale.id)] == [None]
    assert_ledger_right(shop)

    sale.total, sale.tax = Decimal("220.00"), Decimal("20.00")
    sale.save()  # an UPDATE of every column
    first, reversal, repost = entries_of(shop, "sale", sale.id)
    assert reversal[1] == first[0] and repost[1] is None
    assert_ledger_right(shop)

    sale.note = "gift wrapped"
    sale.save()  # nothing the rule reads changed
    assert len(entries_of(shop, "sale", sale.id)) == 3

    draft = Sale.objects.create(customer="bob", total=Decimal("40.00"), status="draft")
    assert entries_of(shop, "sale", draft.id) == []
    draft.status = "completed"
    draft.save(update_fields=["status"])
    assert len(entries_of(shop, "sale", draft.id)) == 1

    req = Requisition(requested_by="carol", department="ops", description="chairs", amount=Decimal("300.00"))
    req.save()
    assert entries_of(shop, "requisition", req.id) == []
    req.status, req.approved_at = "approved", BASE
    req.save()
    assert len(entries_of(shop, "requisition", req.id)) == 1
    assert_ledger_right(shop)


def test_django_bulk_create_queryset_update_and_delete(shop, django_shop):
    Sale, Requisition = django_shop["Sale"], django_shop["Requisition"]
    created = Sale.objects.bulk_create([Sale(**sale_values(i)) for i in range(1, 501)])
    assert len(created) == 500 and all(s.id is not None for s in created)
    assert Sale.objects.count() == 500
    assert_ledger_right(shop)
    posted = set(Sale.objects.filter(status="completed").values_list("id", flat=True))
    assert len(posted) == 500 - 500 // 7

    cash = set(Sale.objects.filter(payment_method="cash").values_list("id", flat=True))
    assert Sale.objects.filter(payment_method="cash").update(status="cancelled") == len(cash)
    assert_ledger_right(shop)
    assert Sale.objects.filter(status="draft").update(status="completed") > 0
    assert_ledger_right(shop)

    single = Sale.objects.filter(status="completed").order_by("id").first()
    single_id = single.id
    single.delete()  # Django sets single.id to None
    eur = set(Sale.objects.filter(currency="EUR").values_list("id", flat=True))
    eur_posted = set(Sale.objects.filter(currency="EUR", status="completed").values_list("id", flat=True))
    deleted, _ = Sale.objects.filter(currency="EUR").delete()
    assert deleted == len(eur) > 0
    assert_ledger_right(shop)
    # Each row that was posted and then cancelled or deleted was reversed exactly once.
    gone = (cash & posted) | eur_posted | {single_id}
    assert reversed_keys(shop, "sale") == sorted(str(k) for k in gone)

    Requisition.objects.bulk_create(
        [Requisition(requested_by=f"r{i}", department="ops", description="stuff", amount=Decimal(i)) for i in
         range(1, 51)]
    )
    Requisition.objects.filter(id__lte=30).update(status="approved", approved_at=BASE)
    assert_ledger_right(shop)
    assert shop.execute(f"SELECT count(*) FROM ({LIVE_ENTRIES}) e WHERE rule = 'requisition'").fetchone()[0] == 30


def test_django_atomic_block_that_raises_leaves_no_journal_row(shop, django_shop):
    from django.db import connection, transaction

    Sale, Requisition = django_shop["Sale"], django_shop["Requisition"]
    kept = Sale.objects.create(customer="kept", total=Decimal("10.00"), sold_at=BASE)
    before, sales_before = entry_ids(shop), sales_snapshot(shop)

    with pytest.raises(RuntimeError, match="boom"):
        with transaction.atomic():
            Sale.objects.create(customer="new", total=Decimal("99.00"), tax=Decimal("9.00"))
            Sale.objects.bulk_create([Sale(**sale_values(i)) for i in range(1, 21)])
            kept.total = Decimal("12.00")
            kept.save()
            Requisition.objects.create(requested_by="x", department="ops", description="d",
                                       amount=Decimal("5.00"), status="approved", approved_at=BASE)
            Sale.objects.filter(customer="kept").delete()
            with connection.cursor() as cur:  # the postings exist inside the transaction…
                cur.execute("SELECT count(*) FROM ledger.entry")
                assert cur.fetchone()[0] > len(before)
            raise RuntimeError("boom")

    assert entry_ids(shop) == before  # …and none of them outlived it
    assert sales_snapshot(shop) == sales_before
    assert_ledger_right(shop)


def test_django_bad_posting_fails_the_write(shop, django_shop):
    from django.db import DatabaseError

    Sale = django_shop["Sale"]
    before = entry_ids(shop)
    with pytest.raises(DatabaseError, match="ledgeradmin rule sale"):
        Sale.objects.create(customer="bad", total=Decimal("10.00"), currency="usd")  # not three capitals
    assert Sale.objects.count() == 0
    assert entry_ids(shop) == before


# --------------------------------------------------------------------------- SQLAlchemy


def sa_engine(dsn: str) -> sa.Engine:
    params = conninfo_to_dict(dsn)
    url = sa.URL.create(
        "postgresql+psycopg", username=params["user"], database=params["dbname"],
        query={"host": params["host"], "port": str(params["port"])},
    )
    return sa.create_engine(url, poolclass=sa.pool.NullPool)


@pytest.fixture
def engine(shop, dsn):
    eng = sa_engine(dsn)
    yield eng
    eng.dispose()


META = sa.MetaData()
SALES = sa.Table(
    "sales", META,
    sa.Column("id", sa.BigInteger, sa.Identity(), primary_key=True),
    sa.Column("customer", sa.Text, nullable=False),
    sa.Column("sold_at", sa.DateTime(timezone=True)),
    sa.Column("status", sa.Text),
    sa.Column("currency", sa.CHAR(3)),
    sa.Column("payment_method", sa.Text),
    sa.Column("total", sa.Numeric(14, 2), nullable=False),
    sa.Column("tax", sa.Numeric(14, 2)),
    sa.Column("note", sa.Text),
    schema="public",
)


class Base(sa_orm.DeclarativeBase):
    pass


class OrmSale(Base):
    __tablename__ = "sales"
    __table_args__ = {"schema": "public"}
    id: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    customer: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text)
    sold_at: sa_orm.Mapped[dt.datetime] = sa_orm.mapped_column(sa.DateTime(timezone=True), default=lambda: BASE)
    status: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text, default="completed")
    currency: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.CHAR(3), default="USD")
    payment_method: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text, default="invoice")
    total: sa_orm.Mapped[Decimal] = sa_orm.mapped_column(sa.Numeric(14, 2))
    tax: sa_orm.Mapped[Decimal] = sa_orm.mapped_column(sa.Numeric(14, 2), default=Decimal(0))
    note: sa_orm.Mapped[str | None] = sa_orm.mapped_column(sa.Text)


class OrmOrder(Base):
    __tablename__ = "manufacturing_orders"
    __table_args__ = {"schema": "public"}
    id: sa_orm.Mapped[int] = sa_orm.mapped_column(sa.BigInteger, sa.Identity(), primary_key=True)
    product: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text)
    quantity: sa_orm.Mapped[int]
    unit_cost: sa_orm.Mapped[Decimal] = sa_orm.mapped_column(sa.Numeric(14, 4))
    state: sa_orm.Mapped[str] = sa_orm.mapped_column(sa.Text, default="planned")
    started_at: sa_orm.Mapped[dt.datetime | None] = sa_orm.mapped_column(sa.DateTime(timezone=True))
    finished_at: sa_orm.Mapped[dt.datetime | None] = sa_orm.mapped_column(sa.DateTime(timezone=True))


def test_sqlalchemy_core_executemany_update_and_delete(shop, engine):
    with engine.begin() as c:
        c.execute(sa.insert(SALES), [sale_values(i) for i in range(1, 301)])
    assert_ledger_right(shop)

    with engine.begin() as c:
        changed = c.execute(
            sa.update(SALES).where(SALES.c.payment_method == "card").values(total=SALES.c.total + 1)
        ).rowcount
        c.execute(sa.update(SALES).where(SALES.c.id <= 40).values(note="noted"))  # posts nothing
    assert changed > 0
    assert len(reversed_keys(shop, "sale")) == shop.execute(
        "SELECT count(*) FROM public.sales WHERE payment_method = 'card' AND status = 'completed'").fetchone()[0]
    assert_ledger_right(shop)

    with engine.begin() as c:
        c.execute(sa.delete(SALES).where(SALES.c.currency == "JPY"))
        c.execute(sa.update(SALES).where(SALES.c.status == "draft").values(status="completed"))
    assert_ledger_right(shop)


def test_sqlalchemy_core_rolled_back_writes_leave_no_journal_row(shop, engine):
    with engine.begin() as c:
        c.execute(sa.insert(SALES), [sale_values(i) for i in range(1, 21)])
    before, sales_before = entry_ids(shop), sales_snapshot(shop)

    with pytest.raises(RuntimeError):
        with engine.begin() as c:
            c.execute(sa.insert(SALES), [sale_values(i) for i in range(100, 150)])
            c.execute(sa.update(SALES).values(total=SALES.c.total * 2))
            raise RuntimeError("rolled back")
    with engine.connect() as c:
        c.execute(sa.delete(SALES).where(SALES.c.id <= 10))
        c.execute(sa.insert(SALES).values(customer="x", total=5))
        c.rollback()

    assert entry_ids(shop) == before
    assert sales_snapshot(shop) == sales_before
    assert_ledger_right(shop)


def test_sqlalchemy_orm_session_add_change_delete_and_rollback(shop, engine):
    with sa_orm.Session(engine) as session:
        sales = [OrmSale(customer=f"c{i}", total=Decimal(10 * i), tax=Decimal(i), payment_method=METHODS[i % 3])
                 for i in range(1, 11)]
        order = OrmOrder(product="widget", quantity=4, unit_cost=Decimal("2.5000"))
        session.add_all([*sales, order])
        session.commit()
        assert_ledger_right(shop)
        assert entries_of(shop, "manufacturing", order.id) == []

        sales[0].total = Decimal("999.00")  # an UPDATE of the changed column only
        order.state, order.finished_at = "done", BASE
        session.commit()
        assert len(entries_of(shop, "sale", sales[0].id)) == 3
        assert len(entries_of(shop, "manufacturing", order.id)) == 1
        assert_ledger_right(shop)

        session.delete(sales[1])
        session.commit()
        assert [r[1] is not None for r in entries_of(shop, "sale", sales[1].id)] == [False, True]
        assert_ledger_right(shop)

        before, sales_before = entry_ids(shop), sales_snapshot(shop)
        session.add(OrmSale(customer="never", total=Decimal("7.00")))
        sales[2].total = Decimal("1.00")
        session.delete(sales[3])
        order.quantity = 40
        session.flush()  # the writes reach the database and post inside the transaction…
        assert session.execute(sa.text("SELECT count(*) FROM ledger.entry")).scalar_one() > len(before)
        session.rollback()  # …and roll back with it

    assert entry_ids(shop) == before
    assert sales_snapshot(shop) == sales_before
    assert_ledger_right(shop)


# --------------------------------------------------------------------------- psql


def psql_bin(pg_server) -> str:
    candidate = Path(pg_server.bindir) / "psql"
    return str(candidate) if candidate.exists() else (shutil.which("psql") or "/usr/bin/psql")


def run_psql(pg_server, dsn: str, *args: str, cwd: Path) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PG")}
    return subprocess.run(
        [psql_bin(pg_server), "-X", "-q", "-v", "ON_ERROR_STOP=1", "-d", dsn, *args],
        cwd=cwd, env=env, capture_output=True, text=True, timeout=60,
    )


COPY = r"\copy sales (customer, sold_at, total, tax, payment_method, currency) FROM 'sales.csv' CSV"


def write_sales_csv(path: Path, n: int, start: int = 1) -> None:
    with path.open("w", newline="", encoding="utf-8") as f:
        out = csv.writer(f)
        for i in range(start, start + n):
            v = sale_values(i)
            out.writerow([f'{v["customer"]}, "VIP"', v["sold_at"].isoformat(), v["total"], v["tax"],
                          v["payment_method"], v["currency"]])


def test_psql_copy_of_2000_rows_posts_every_row(shop, dsn, pg_server, tmp_path):
    write_sales_csv(tmp_path / "sales.csv", 2000)
    done = run_psql(pg_server, dsn, "-c", COPY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert shop.execute("SELECT count(*), count(DISTINCT customer) FROM public.sales").fetchone() == (2000, 2000)
    live = shop.execute(f"SELECT count(*) FROM ({LIVE_ENTRIES}) e WHERE rule = 'sale'").fetchone()[0]
    assert live == 2000  # every copied row is completed (the default status)
    assert_ledger_right(shop)


def test_psql_script_rolled_back_leaves_no_journal_row(shop, dsn, pg_server, tmp_path):
    write_sales_csv(tmp_path / "sales.csv", 30)
    done = run_psql(pg_server, dsn, "-c", COPY, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    before, sales_before = entry_ids(shop), sales_snapshot(shop)
    write_sales_csv(tmp_path / "sales.csv", 200, start=1000)
    (tmp_path / "script.sql").write_text(
        "BEGIN;\n"
        f"{COPY}\n"
        "INSERT INTO sales (customer, total, tax) VALUES ('walk-in', 12.50, 1.25);\n"
        "UPDATE sales SET total = total + 1 WHERE id <= 10;\n"
        "DELETE FROM sales WHERE id BETWEEN 11 AND 20;\n"
        "INSERT INTO payment_vouchers (payee, amount, status, paid_at) VALUES ('acme', 80, 'paid', now());\n"
        "SELECT count(*) AS entries_inside FROM ledger.entry;\n"
        "ROLLBACK;\n",
        encoding="utf-8",
    )
    done = run_psql(pg_server, dsn, "-At", "-f", "script.sql", cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert int(done.stdout.split()[-1]) > len(before)  # the script's writes posted inside its transaction
    assert entry_ids(shop) == before
    assert sales_snapshot(shop) == sales_before
    assert shop.execute("SELECT count(*) FROM ledger.failure").fetchone()[0] == 0
    assert_ledger_right(shop)

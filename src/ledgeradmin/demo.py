"""`ledgeradmin demo`: the whole product on a throwaway PostgreSQL, in a minute.

A business day of the example shop written through a real client (psycopg): sales, a
bulk COPY, approved requisitions, a paid voucher, a finished manufacturing order, a
cancellation and a correction; then status and verify; then an outage (a trigger
disabled while sales are written), verify showing the gap, backfill repairing it,
verify clean, and the trial balance.
"""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Callable

import psycopg

from .backfill import backfill
from .backfill_report import render_text as backfill_text
from .config import load_config
from .connection import connect
from .install import install
from .localpg import LocalPostgres
from .migrate import migrate
from .output import table
from .report import trial_balance, with_totals
from .resources import examples_dir
from .status import status
from .verify import verify
from .verify_report import render_text as verify_text


def run(dsn: str | None = None, keep: bool = False, echo: Callable[[str], None] = print) -> None:
    server = None
    if dsn is None:
        server = LocalPostgres()
        echo("Starting a throwaway PostgreSQL server …")
        server.start()
        dsn = server.conninfo()
        echo(f"  PostgreSQL {server.version} in {server.host} (port {server.port})")
    try:
        _tour(dsn, echo)
    finally:
        if server is not None:
            if keep:
                stop = f"{server.bindir}/pg_ctl stop -D {server.datadir}"
                if server.os_user:
                    stop = f"runuser -u {server.os_user} -- {stop}"
                echo(f"\nThe server keeps running. Explore with:\n  psql \"{dsn}\"\nStop it with:\n  {stop}")
                server.detach()
            else:
                server.stop()
                echo("\nThrowaway server stopped and removed.")


def _section(echo, title: str) -> None:
    echo(f"\n== {title} " + "=" * max(0, 70 - len(title)))


def _tour(dsn: str, echo) -> None:
    shop = examples_dir() / "shop"
    config = load_config(shop / "ledger.toml")
    _section(echo, "1. Load examples/shop, migrate the ledger schema, install the rules")
    with connect(dsn) as conn:
        conn.execute((shop / "schema.sql").read_text(encoding="utf-8"))
    echo("$ ledgeradmin migrate")
    for m in migrate(dsn):
        echo(f"applied {m}")
    echo("$ ledgeradmin install")
    with connect(dsn) as conn:
        result = install(conn, config)
    for name in result.installed:
        echo(f"installed rule {name} ({config.rules[name].source})")

    with connect(dsn) as conn:
        _section(echo, "2. A business day, written by an ordinary client (no ledger code)")
        _business_day(conn, echo)
        _section(echo, "3. ledgeradmin status")
        rows = [{"rule": s.rule, "source": s.source, "on_error": s.on_error, "trigger": s.state}
                for s in status(conn, config)]
        echo(table(rows, ["rule", "source", "on_error", "trigger"]))
        _section(echo, "4. ledgeradmin verify")
        echo(verify_text(verify(conn, config)))

        _section(echo, "5. An outage: the sale trigger is disabled while 25 sales are written")
        echo("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_insert;")
        conn.execute("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_insert")
        conn.execute(
            "INSERT INTO public.sales (customer, sold_at, total, tax, payment_method)"
            " SELECT 'Walk-in ' || g, now() - interval '1 hour', 10 + g, 1, 'cash' FROM generate_series(1, 25) AS g"
        )
        conn.execute("ALTER TABLE public.sales ENABLE TRIGGER ledgeradmin_sale_insert")
        echo("ALTER TABLE public.sales ENABLE TRIGGER ledgeradmin_sale_insert;")
        _section(echo, "6. ledgeradmin verify --detailed --max-keys 5   (exit 1: the gap is found)")
        echo(verify_text(verify(conn, config, detailed=True, max_keys=5)))
        _section(echo, "7. ledgeradmin backfill   (posts what is missing, dated as the sales were)")
        echo(backfill_text(backfill(conn, config)))
        _section(echo, "8. ledgeradmin verify   (exit 0)")
        result = verify(conn, config)
        echo(verify_text(result))
        _section(echo, "9. ledgeradmin report trial-balance")
        cols = ["account", "name", "currency", "debit", "credit", "balance"]
        echo(table(with_totals(trial_balance(conn)), cols, right=cols[3:]))
        if not result.ok:
            raise RuntimeError("the demo ended out of sync")


def _business_day(conn: psycopg.Connection, echo) -> None:
    rng = random.Random(7)
    today = dt.datetime.now(dt.timezone.utc).replace(hour=9, minute=0, second=0, microsecond=0)
    echo("INSERT INTO sales … (5 sales over the counter and on account, one in EUR)")
    for i, (customer, total, method, currency) in enumerate(
        [("Acme Ltd", "1190.00", "invoice", "USD"), ("Bistro Lena", "59.50", "cash", "USD"),
         ("Jon Doe", "23.80", "card", "USD"), ("Müller GmbH", "476.00", "invoice", "EUR"),
         ("Ana Silva", "11.90", "card", "USD")]
    ):
        conn.execute(
            "INSERT INTO public.sales (customer, sold_at, total, tax, payment_method, currency)"
            " VALUES (%s, %s, %s, round(%s::numeric / 1.19 * 0.19, 2), %s, %s)",
            (customer, today + dt.timedelta(minutes=17 * i), total, total, method, currency),
        )
    echo("COPY sales FROM STDIN … (1,000 web-shop sales in one COPY)")
    with conn.cursor() as cur, cur.copy(
        "COPY public.sales (customer, sold_at, total, tax, payment_method) FROM STDIN"
    ) as copy:
        for i in range(1000):
            total = rng.randint(500, 20000) / 100
            copy.write_row((f"web order {i + 1}", today + dt.timedelta(seconds=30 * i), total,
                            round(total / 1.19 * 0.19, 2), rng.choice(["card", "invoice"])))
    echo("INSERT INTO purchase_requisitions … ; UPDATE … SET status = 'approved' (2 of 3 approved)")
    conn.execute(
        "INSERT INTO public.purchase_requisitions (requested_by, department, description, amount) VALUES"
        " ('kim', 'kitchen', 'Olive oil, 20 l', 180.00), ('lee', 'office', 'Printer paper', 45.00),"
        " ('max', 'workshop', 'Steel sheets', 1250.00)"
    )
    conn.execute(
        "UPDATE public.purchase_requisitions SET status = 'approved', approved_at = now()"
        " WHERE department IN ('kitchen', 'workshop')"
    )
    echo("INSERT INTO payment_vouchers … ; UPDATE … SET status = 'paid' (the supplier is paid by bank)")
    conn.execute("INSERT INTO public.payment_vouchers (payee, amount, method) VALUES ('Steel & Co', 1250.00, 'bank')")
    conn.execute("UPDATE public.payment_vouchers SET status = 'paid', paid_at = now() WHERE payee = 'Steel & Co'")
    echo("INSERT INTO manufacturing_orders … ; UPDATE … SET state = 'done' (40 chairs finished)")
    conn.execute(
        "INSERT INTO public.manufacturing_orders (product, quantity, unit_cost, state, started_at)"
        " VALUES ('Chair', 40, 31.25, 'in_progress', now() - interval '3 hours')"
    )
    conn.execute("UPDATE public.manufacturing_orders SET state = 'done', finished_at = now() WHERE product = 'Chair'")
    echo("UPDATE sales SET status = 'cancelled' WHERE customer = 'Jon Doe'   (→ a reversal)")
    conn.execute("UPDATE public.sales SET status = 'cancelled' WHERE customer = 'Jon Doe'")
    echo("UPDATE sales SET total = 1309.00, tax = 209.00 WHERE customer = 'Acme Ltd'   (→ reversal + new entry)")
    conn.execute("UPDATE public.sales SET total = 1309.00, tax = 209.00 WHERE customer = 'Acme Ltd'")
    echo("UPDATE sales SET note = 'gift wrap' WHERE customer = 'Ana Silva'   (→ nothing: unrelated column)")
    conn.execute("UPDATE public.sales SET note = 'gift wrap' WHERE customer = 'Ana Silva'")
    entries, lines = conn.execute(
        "SELECT (SELECT count(*) FROM ledger.entry), (SELECT count(*) FROM ledger.line)"
    ).fetchone()
    echo(f"→ the ledger now holds {entries:,} entries with {lines:,} lines, all written by the triggers")
    echo("  latest entries:")
    rows = conn.execute(
        "SELECT e.id, e.rule, e.source_key, coalesce(e.reverses::text, '') AS reverses, e.memo,"
        " string_agg(l.account || CASE WHEN l.debit > 0 THEN ' Dr ' || l.debit ELSE ' Cr ' || l.credit END, ', '"
        " ORDER BY l.line_no) AS lines"
        " FROM ledger.entry e JOIN ledger.line l ON l.entry_id = e.id"
        " GROUP BY e.id ORDER BY e.id DESC LIMIT 6"
    ).fetchall()
    cols = ["id", "rule", "source_key", "reverses", "memo", "lines"]
    echo("  " + table([dict(zip(cols, map(str, r))) for r in reversed(rows)], cols).replace("\n", "\n  "))

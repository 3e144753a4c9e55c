"""Reliability: the example shop under load and faults — nothing lost, nothing extra.

Several client sessions (threads, one connection each) write all four shop tables at
random — single-row and bulk inserts, updates of amounts, of statuses into and out of
`when` and of unrelated columns, deletes, COPY — some in transactions that roll back,
some unseen by the triggers (session_replication_role = replica), a few deferred posting
failures; meanwhile `backfill` (small batches, its own connection) and `verify` run in a
loop and one session disables and re-enables a trigger now and then. Faults: a backfill
and a client transaction killed (pg_terminate_backend), the server crashed
(`pg_ctl stop -m immediate`) and restarted, rows of one multi-row statement failing under
`defer`. After each: backfill, then verify is ok and the independent check of
tests/invariants.py (its own SQL) holds.

Rolled-back (and killed) writes are marked: they write rows with keys from a reserved
range no committed write uses and a marker ("RB-…") in the column each rule copies into
its memo; inside the transaction the test first sees their entries posted, after the
rollback no entry or failure may carry the marker or the keys.

LEDGERADMIN_LOAD_SECONDS sets the length of the main load (default 40 s).
"""

from __future__ import annotations

import datetime as dt
import os
import random
import threading
import time
from collections import Counter, defaultdict
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
from psycopg import errors

from invariants import SHOP, assert_holds, problems
from ledgeradmin.backfill import backfill
from ledgeradmin.config import load_config
from ledgeradmin.install import install
from ledgeradmin.localpg import LocalPgError, LocalPostgres
from ledgeradmin.migrate import migrate
from ledgeradmin.verify import verify

REPO = Path(__file__).resolve().parents[1]
SHOP_CONFIG = REPO / "examples" / "shop" / "ledger.toml"
SHOP_SCHEMA = REPO / "examples" / "shop" / "schema.sql"

LOAD_SECONDS = float(os.environ.get("LEDGERADMIN_LOAD_SECONDS", "40"))
RESERVED = 9_000_000_000_000  # ids from here on: only writes that never commit use them
MARKER = "RB-"  # text of writes that never commit; no committed write contains it
TABLES = {
    "sale": "public.sales",
    "requisition": "public.purchase_requisitions",
    "payment": "public.payment_vouchers",
    "manufacturing": "public.manufacturing_orders",
}
#: SQLSTATEs an application must expect under concurrency: deadlock, lock timeout.
EXPECTED_ERRORS = {"40P01", "55P03"}
UTC = dt.timezone.utc


# --------------------------------------------------------------------------- random writes


def money(rng: random.Random, high: int = 1000) -> Decimal:
    return Decimal(rng.randint(0, high * 100)) / 100


def when(rng: random.Random) -> dt.datetime:
    return dt.datetime(2020, 1, 1, tzinfo=UTC) + dt.timedelta(seconds=rng.randint(0, 5 * 365 * 86400))


def insert_one(rng: random.Random, rule: str, text: str, key: int | None = None,
               eligible: bool | None = None, bad: bool = False) -> tuple[str, tuple]:
    """One INSERT … RETURNING id of a random row (``key``: explicit id; ``text``: the memo
    column's value; ``eligible``: force the rule's `when`; ``bad``: a deferred failure)."""
    id_col, id_val = ("id, ", (key,)) if key is not None else ("", ())
    ok = rng.random() < 0.6 if eligible is None else eligible
    if rule == "sale":
        total = money(rng) if rng.random() < 0.9 else -money(rng, 50)  # refunds move sides
        if rng.random() < 0.03:
            total = Decimal(0)  # all lines zero: no entry
        if eligible:  # forced eligible: something to post
            total = abs(total) + 1
        tax = (total * Decimal(rng.choice(["0", "0.1", "0.2"]))).quantize(Decimal("0.01"))
        status = "completed" if ok else rng.choice(["draft", "cancelled"])
        return (f"INSERT INTO public.sales ({id_col}customer, sold_at, status, currency, payment_method, total, tax,"
                f" note) VALUES ({'%s, ' if key is not None else ''}%s, %s, %s, %s, %s, %s, %s, %s) RETURNING id",
                (*id_val, text, when(rng), status, rng.choice(["USD", "USD", "EUR"]),
                 rng.choice(["cash", "card", "invoice"]), total, tax, "n"))
    if rule == "requisition":
        status = "approved" if ok else rng.choice(["draft", "submitted", "rejected"])
        approved_at = when(rng) if ok or rng.random() < 0.3 else None
        return (f"INSERT INTO public.purchase_requisitions ({id_col}requested_by, department, description, amount,"
                f" status, approved_at) VALUES ({'%s, ' if key is not None else ''}%s, %s, %s, %s, %s, %s) RETURNING id",
                (*id_val, "req", text, rng.choice(["chairs", "paper", "it's \"quoted\""]), money(rng), status,
                 approved_at))
    if rule == "payment":
        status = "paid" if ok or bad else rng.choice(["draft", "void"])
        paid_at = None if bad else (when(rng) if status == "paid" or rng.random() < 0.3 else None)
        return (f"INSERT INTO public.payment_vouchers ({id_col}payee, amount, method, status, paid_at)"
                f" VALUES ({'%s, ' if key is not None else ''}%s, %s, %s, %s, %s) RETURNING id",
                (*id_val, text, money(rng), rng.choice(["bank", "cash"]), status, paid_at))
    state = "done" if ok else rng.choice(["planned", "in_progress", "cancelled"])
    finished_at = when(rng) if ok else None
    return (f"INSERT INTO public.manufacturing_orders ({id_col}product, quantity, unit_cost, state, started_at,"
            f" finished_at) VALUES ({'%s, ' if key is not None else ''}%s, %s, %s, %s, %s, %s) RETURNING id",
            (*id_val, text, rng.randint(1, 50), Decimal(rng.randint(1, 999999)) / 10000, state, when(rng),
             finished_at))


BULK_INSERT = {
    "sale": """INSERT INTO public.sales (customer, sold_at, status, currency, payment_method, total, tax)
               SELECT 'bulk ' || g, now() - g * interval '1 day',
                      (ARRAY['completed', 'completed', 'draft', 'cancelled'])[1 + g %% 4],
                      (ARRAY['USD', 'EUR'])[1 + g %% 2], (ARRAY['cash', 'card', 'invoice'])[1 + g %% 3],
                      round((random() * 500)::numeric, 2), round((random() * 20)::numeric, 2)
               FROM generate_series(1, %s) AS g RETURNING id""",
    "requisition": """INSERT INTO public.purchase_requisitions (requested_by, department, description, amount, status,
                                                                approved_at)
                      SELECT 'bulk', 'ops', 'item ' || g, round((random() * 900)::numeric, 2),
                             CASE WHEN g %% 2 = 0 THEN 'approved' ELSE 'submitted' END,
                             CASE WHEN g %% 2 = 0 THEN now() END
                      FROM generate_series(1, %s) AS g RETURNING id""",
    "payment": """INSERT INTO public.payment_vouchers (payee, amount, method, status, paid_at)
                  SELECT 'bulk ' || g, round((random() * 900)::numeric, 2), (ARRAY['bank', 'cash'])[1 + g %% 2],
                         CASE WHEN g %% 3 = 0 THEN 'draft' ELSE 'paid' END, now() - g * interval '1 hour'
                  FROM generate_series(1, %s) AS g RETURNING id""",
    "manufacturing": """INSERT INTO public.manufacturing_orders (product, quantity, unit_cost, state, finished_at)
                        SELECT 'bulk ' || g, 1 + g %% 9, round((random() * 90)::numeric, 4),
                               CASE WHEN g %% 3 = 0 THEN 'planned' ELSE 'done' END, now()
                        FROM generate_series(1, %s) AS g RETURNING id""",
}

#: rule -> (amount change, status into `when`, status out of `when`, unrelated column, memo column)
UPDATES = {
    "sale": ("total = total + %(d)s, tax = round(tax * 0.5, 2)",
             "status = 'completed'",
             "status = (ARRAY['draft', 'cancelled'])[1 + (id %% 2)::int]",
             "note = 'touched ' || %(d)s",
             "customer = %(text)s"),
    "requisition": ("amount = amount + %(d)s",
                    "status = 'approved', approved_at = coalesce(approved_at, now())",
                    "status = 'rejected'",
                    "requested_by = 'someone ' || %(d)s",
                    "department = %(text)s"),
    "payment": ("amount = amount + %(d)s, method = (ARRAY['bank', 'cash'])[1 + (id %% 2)::int]",
                "status = 'paid', paid_at = coalesce(paid_at, now())",
                "status = 'void'",
                "amount = amount",  # no unrelated column: an update that changes nothing
                "payee = %(text)s"),
    "manufacturing": ("quantity = quantity + 1, unit_cost = unit_cost + %(d)s",
                      "state = 'done', finished_at = coalesce(finished_at, now())",
                      "state = 'cancelled'",
                      "started_at = now() - %(d)s * interval '1 minute'",
                      "product = %(text)s"),
}


class Tally:
    """What the load did, shared by its threads."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.progress = threading.Condition(self.lock)
        self.commits = 0
        self.statements: Counter = Counter()
        self.rolled_back = 0
        self.rolled_back_entries_seen = 0  # entries seen inside transactions later rolled back
        self.expected_errors: Counter = Counter()
        self.disconnects = 0
        self.unexpected: list[str] = []
        self.inserted: dict[str, set[int]] = defaultdict(set)  # committed
        self.deleted: dict[str, set[int]] = defaultdict(set)  # committed, or maybe (lost at commit)
        self.forbidden_keys: dict[str, set[str]] = defaultdict(set)
        self.top = {rule: 1 for rule in TABLES}
        self.disables = 0
        self.backfills: list = []
        self.verifies = 0

    def error(self, where: str, exc: BaseException) -> None:
        with self.lock:
            self.unexpected.append(f"{where}: {type(exc).__name__}: {str(exc).strip()[:300]}")
            self.progress.notify_all()

    def committed(self, inserted: dict, deleted: dict, statements: Counter) -> None:
        with self.lock:
            self.commits += 1
            self.statements.update(statements)
            for rule, ids in inserted.items():
                self.inserted[rule] |= ids
                self.top[rule] = max(self.top[rule], max(ids, default=0))
            for rule, ids in deleted.items():
                self.deleted[rule] |= ids
            self.progress.notify_all()

    def wait_commits(self, n: int, timeout: float) -> bool:
        with self.progress:
            return self.progress.wait_for(lambda: self.commits >= n or self.unexpected, timeout)

    def summary(self) -> dict:
        with self.lock:
            return {
                "commits": self.commits,
                "statements": sum(n for kind, n in self.statements.items() if kind != "untracked transaction"),
                "by_kind": dict(sorted(self.statements.items())),
                "rolled_back": self.rolled_back,
                "rolled_back_entries_seen": self.rolled_back_entries_seen,
                "expected_errors": dict(self.expected_errors),
                "disconnects": self.disconnects,
                "trigger_disables": self.disables,
                "backfill_runs": len(self.backfills),
                "backfill_repaired": sum(b for b in self.backfills),
                "verify_runs": self.verifies,
            }


class Load:
    """Random writers, a backfill loop, a verify loop and a trigger switcher on one database."""

    def __init__(self, conninfo: str, config, *, seconds: float, writers: int = 4, seed: int = 1,
                 backfills: bool = True, verifies: bool = True, switcher: bool = True, untracked: bool = True,
                 bad_rows: bool = True, reconnect: bool = False) -> None:
        self.conninfo, self.config, self.seconds, self.seed = conninfo, config, seconds, seed
        self.untracked, self.bad_rows, self.reconnect = untracked, bad_rows, reconnect
        self.tally = Tally()
        self.stop_event = threading.Event()
        self.threads = [threading.Thread(target=self._writer, args=(i,), name=f"writer-{i}", daemon=True)
                        for i in range(writers)]
        if backfills:
            self.threads.append(threading.Thread(target=self._backfiller, name="backfill", daemon=True))
        if verifies:
            self.threads.append(threading.Thread(target=self._verifier, name="verify", daemon=True))
        if switcher:
            self.threads.append(threading.Thread(target=self._switcher, name="switcher", daemon=True))
        self.started = 0.0
        self.elapsed = 0.0

    # -- running ---------------------------------------------------------------------

    def start(self) -> Load:
        self.started = time.monotonic()
        self.deadline = self.started + self.seconds
        for t in self.threads:
            t.start()
        return self

    def running(self) -> bool:
        return not self.stop_event.is_set() and time.monotonic() < self.deadline

    def stop(self) -> dict:
        self.stop_event.set()
        for t in self.threads:
            t.join(120)
        assert not [t.name for t in self.threads if t.is_alive()], "load threads did not stop"
        self.elapsed = time.monotonic() - self.started
        return self.tally.summary()

    def run(self) -> dict:
        self.start()
        while self.running() and not self.tally.unexpected:
            self.stop_event.wait(min(1.0, max(0.0, self.deadline - time.monotonic())))
        return self.stop()

    def _connect(self, lock_timeout: str | None = "5s") -> psycopg.Connection | None:
        """A new autocommit connection; with ``reconnect`` keeps trying while the load runs."""
        while True:
            try:
                conn = psycopg.connect(self.conninfo, autocommit=True, connect_timeout=5)
                if lock_timeout:
                    conn.execute(f"SET lock_timeout = '{lock_timeout}'")
                return conn
            except psycopg.OperationalError:
                if not self.reconnect or not self.running():
                    raise
                self.stop_event.wait(0.1)  # the server is restarting: retry shortly

    def _lost(self, conn: psycopg.Connection, where: str, exc: BaseException) -> psycopg.Connection | None:
        """A connection failed: reconnect when that is expected (crash), else record an error."""
        if self.reconnect and conn.broken:
            with self.tally.lock:
                self.tally.disconnects += 1
            conn.close()
            try:
                return self._connect()
            except psycopg.OperationalError as again:
                if self.running():
                    self.tally.error(where, again)
                return None
        self.tally.error(where, exc)
        return None

    # -- the threads -------------------------------------------------------------------

    def _writer(self, n: int) -> None:
        rng = random.Random(self.seed * 1000 + n)
        reserved = RESERVED + (self.seed * 100 + n) * 10_000_000
        try:
            conn = self._connect()
        except psycopg.Error as exc:
            self.tally.error(f"writer {n}", exc)
            return
        for i in range(1_000_000):
            if not self.running() or conn is None:
                break
            roll = rng.random()
            try:
                if roll < 0.12:
                    reserved += 10
                    self._rolled_back(conn, rng, f"{MARKER}{self.seed}-{n}-{i}", reserved)
                else:
                    self._committed(conn, rng, untracked=self.untracked and roll > 0.97)
            except psycopg.Error as exc:
                if exc.sqlstate in EXPECTED_ERRORS:
                    with self.tally.lock:
                        self.tally.expected_errors[exc.sqlstate] += 1
                elif isinstance(exc, psycopg.OperationalError) or conn.broken:
                    conn = self._lost(conn, f"writer {n}", exc)
                else:
                    self.tally.error(f"writer {n}", exc)
            except Exception as exc:  # noqa: BLE001 - a bug in the test itself is an error too
                self.tally.error(f"writer {n}", exc)
        if conn is not None:
            conn.close()

    def _pick(self, rng: random.Random, rule: str) -> int:
        return rng.randint(1, self.tally.top[rule] + 3)

    def _committed(self, conn: psycopg.Connection, rng: random.Random, untracked: bool) -> None:
        """A transaction of 1-4 random statements that commits."""
        inserted: dict[str, set[int]] = defaultdict(set)
        deleted: dict[str, set[int]] = defaultdict(set)
        kinds: Counter = Counter()
        try:
            with conn.transaction():
                if untracked:
                    conn.execute("SET LOCAL session_replication_role = replica")
                    kinds["untracked transaction"] += 1
                for _ in range(rng.randint(1, 4)):
                    rule = rng.choice(list(TABLES))
                    kind, rows = self._statement(conn, rng, rule)
                    kinds[kind] += 1
                    if kind.startswith("insert") or kind == "copy":
                        inserted[rule] |= {r for r in rows}
                    elif kind.startswith("delete"):
                        deleted[rule] |= {r for r in rows}
        except psycopg.OperationalError:
            with self.tally.lock:  # lost at commit, maybe committed: its deletes may have happened
                for rule, ids in deleted.items():
                    self.tally.deleted[rule] |= ids
            raise
        self.tally.committed(inserted, deleted, kinds)

    def _statement(self, conn: psycopg.Connection, rng: random.Random, rule: str) -> tuple[str, list[int]]:
        table = TABLES[rule]
        roll = rng.random()
        d = rng.randint(1, 500)
        if roll < 0.25:
            bad = self.bad_rows and rule == "payment" and rng.random() < 0.05
            sql, params = insert_one(rng, rule, f"c{rng.randint(1, 999)}", bad=bad)
            return ("insert (deferred failure)" if bad else "insert"), [r[0] for r in conn.execute(sql, params)]
        if roll < 0.31:
            return "insert bulk", [r[0] for r in conn.execute(BULK_INSERT[rule], (rng.randint(2, 30),))]
        if roll < 0.33 and rule == "sale":
            with conn.cursor().copy("COPY public.sales (customer, sold_at, status, payment_method, total, tax)"
                                    " FROM STDIN") as copy:
                for _ in range(rng.randint(2, 20)):
                    copy.write_row((f"copy {d}", when(rng), rng.choice(["completed", "draft"]),
                                    rng.choice(["cash", "card"]), money(rng), Decimal("1.50")))
            return "copy", []
        amount, into, out, unrelated, _ = UPDATES[rule]
        params = {"d": d, "id": self._pick(rng, rule)}
        if roll < 0.80:
            which, change = rng.choice([("update amount", amount), ("update into when", into),
                                        ("update out of when", out), ("update unrelated", unrelated)])
            bulk = rng.random() < 0.2
            where = "id BETWEEN %(id)s AND %(id)s + 20" if bulk else "id = %(id)s"
            conn.execute(f"UPDATE {table} SET {change} WHERE {where}", params)
            return which + (" bulk" if bulk else ""), []
        if roll < 0.95:
            return "delete", [r[0] for r in conn.execute(f"DELETE FROM {table} WHERE id = %(id)s RETURNING id",
                                                         params)]
        return "delete bulk", [r[0] for r in conn.execute(
            f"DELETE FROM {table} WHERE id BETWEEN %(id)s AND %(id)s + 6 RETURNING id", params)]

    def _rolled_back(self, conn: psycopg.Connection, rng: random.Random, marker: str, reserved: int) -> None:
        """Marked writes — inserts with reserved keys, updates carrying the marker into the
        memo, a delete — that are seen posted inside the transaction, then rolled back."""
        rules = sorted(rng.sample(list(TABLES), rng.randint(1, 3)))
        with self.tally.lock:
            for i, rule in enumerate(rules):
                self.tally.forbidden_keys[rule].add(str(reserved + i))
        with conn.transaction(force_rollback=True):
            # Holding ROW EXCLUSIVE on the tables, no trigger of theirs can be switched off or
            # on until the rollback: the entries the triggers must post here are known.
            for rule in rules:
                conn.execute(f"LOCK TABLE {TABLES[rule]} IN ROW EXCLUSIVE MODE")
            tracked = conn.execute(
                "SELECT count(*) FROM pg_trigger WHERE tgname = ANY(%s) AND tgenabled <> 'D'",
                ([f"ledgeradmin_{rule}_insert" for rule in rules],),
            ).fetchone()[0]
            floor = conn.execute("SELECT coalesce(max(id), 0) FROM ledger.entry").fetchone()[0]
            for i, rule in enumerate(rules):
                conn.execute(*insert_one(rng, rule, marker, key=reserved + i, eligible=True))
                _, into, _, _, memo_column = UPDATES[rule]
                conn.execute(f"UPDATE {TABLES[rule]} SET {memo_column}, {into} WHERE id = %(id)s",
                             {"text": marker, "id": self._pick(rng, rule)})
                conn.execute(f"DELETE FROM {TABLES[rule]} WHERE id = %s", (self._pick(rng, rule),))
            seen = conn.execute(
                "SELECT count(*) FROM ledger.entry WHERE id > %s AND memo LIKE %s", (floor, f"%{marker}%")
            ).fetchone()[0]
        if seen < tracked:
            raise AssertionError(f"{seen} entries posted inside the transaction of {marker}, expected {tracked}+")
        with self.tally.lock:
            self.tally.rolled_back += 1
            self.tally.rolled_back_entries_seen += seen

    def _backfiller(self) -> None:
        rng = random.Random(self.seed)
        conn = None
        while self.running():
            try:
                conn = conn if conn is not None and not conn.closed else self._connect(lock_timeout=None)
                result = backfill(conn, self.config, batch_size=rng.choice([20, 50, 100]))
                with self.tally.lock:
                    self.tally.backfills.append(sum(r.repaired for r in result.rules))
            except Exception as exc:  # noqa: BLE001
                if self.reconnect and (conn is None or conn.broken):
                    conn = None
                    if self.running():
                        self.stop_event.wait(0.1)
                    continue
                self.tally.error("backfill", exc)
                return

    def _verifier(self) -> None:
        conn = None
        while self.running():
            try:
                conn = conn if conn is not None and not conn.closed else self._connect()
                verify(conn, self.config)
                with self.tally.lock:
                    self.tally.verifies += 1
            except Exception as exc:  # noqa: BLE001
                if self.reconnect and (conn is None or conn.broken):
                    conn = None
                    if self.running():
                        self.stop_event.wait(0.1)
                    continue
                self.tally.error("verify", exc)
                return

    def _switcher(self) -> None:
        """Now and then disables one trigger of one rule for a moment, then enables it again."""
        rng = random.Random(self.seed + 7)
        # A short lock timeout: ALTER TABLE queues every writer of the table behind it.
        conn = self._connect(lock_timeout="200ms")
        try:
            while self.running():
                self.stop_event.wait(rng.uniform(0.3, 1.5))  # pacing, not synchronisation
                rule = rng.choice(list(TABLES))
                trigger = f"ledgeradmin_{rule}_{rng.choice(['insert', 'update', 'delete'])}"
                try:
                    conn.execute(f"ALTER TABLE {TABLES[rule]} DISABLE TRIGGER {trigger}")
                except errors.LockNotAvailable:
                    with self.tally.lock:
                        self.tally.expected_errors["55P03 (switcher)"] += 1
                    continue
                with self.tally.lock:
                    self.tally.disables += 1
                self.stop_event.wait(rng.uniform(0.1, 0.5))
                for _ in range(1000):
                    try:
                        conn.execute(f"ALTER TABLE {TABLES[rule]} ENABLE TRIGGER {trigger}")
                        break
                    except errors.LockNotAvailable:
                        with self.tally.lock:
                            self.tally.expected_errors["55P03 (switcher)"] += 1
                else:
                    raise AssertionError(f"could not enable {trigger} again")
        except Exception as exc:  # noqa: BLE001
            self.tally.error("switcher", exc)
        finally:
            conn.close()

    # -- checking ----------------------------------------------------------------------

    def check_committed_rows_kept(self, conn: psycopg.Connection) -> None:
        """Every row a committed transaction inserted is there, unless a delete (committed or
        lost at commit) may have removed it."""
        for rule, table in TABLES.items():
            kept = self.tally.inserted[rule] - self.tally.deleted[rule]
            present = {r[0] for r in conn.execute(f"SELECT id FROM {table} WHERE id = ANY(%s)", (list(kept),))}
            assert kept <= present, f"{rule}: committed rows lost: {sorted(kept - present)[:10]}"

    def forbidden(self) -> dict:
        return {"forbidden_memo": f"%{MARKER}%",
                "forbidden_keys": {rule: set(keys) for rule, keys in self.tally.forbidden_keys.items()}}


# --------------------------------------------------------------------------- shared steps


def seed_shop(conn: psycopg.Connection, tracked: int = 150, untracked: int = 150) -> None:
    """Rows posted by the triggers, and rows written behind their back (for backfill to find)."""
    for rule in TABLES:
        conn.execute(BULK_INSERT[rule], (tracked,))
        with conn.transaction():
            conn.execute("SET LOCAL session_replication_role = replica")
            conn.execute(BULK_INSERT[rule], (untracked,))


def repair_and_check(conn: psycopg.Connection, config, load: Load | None = None) -> dict:
    """The end of every scenario: fix the deferred failures' data behind the triggers' back,
    backfill, then verify is ok and the independent check holds. Returns counts."""
    with conn.transaction():
        conn.execute("SET LOCAL session_replication_role = replica")
        fixed = conn.execute(
            "UPDATE public.payment_vouchers SET paid_at = now() WHERE status = 'paid' AND paid_at IS NULL"
        ).rowcount
    result = backfill(conn, config, batch_size=200)
    assert result.ok, result.as_dict()
    report = verify(conn, config)
    assert report.ok, report.as_dict()
    assert conn.execute("SELECT count(*) FROM ledger.failure WHERE resolved_at IS NULL").fetchone()[0] == 0
    assert_holds(conn, SHOP, **(load.forbidden() if load else {}))
    if load:
        load.check_committed_rows_kept(conn)
    disabled = conn.execute("SELECT tgname FROM pg_trigger WHERE NOT tgisinternal AND tgenabled = 'D'").fetchall()
    assert disabled == []
    return {
        "fixed_deferred_rows": fixed,
        "final_backfill_repaired": sum(r.repaired for r in result.rules),
        "entries": conn.execute("SELECT count(*) FROM ledger.entry").fetchone()[0],
        "live": report.in_sync,
        "rows": sum(conn.execute(f"SELECT count(*) FROM {t}").fetchone()[0] for t in TABLES.values()),
    }


def report(name: str, **facts) -> None:
    """One line per scenario, for docs/reliability.md (shown with pytest -s or -rP)."""
    print(f"\nRELIABILITY {name}: " + ", ".join(f"{k}={v}" for k, v in facts.items()))


@pytest.fixture
def config():
    return load_config(SHOP_CONFIG)


# --------------------------------------------------------------------------- the check itself


def test_the_independent_check_notices_what_it_must(shop, config):
    """The check is only worth something if it fails: plant each kind of problem."""
    seed_shop(shop, tracked=20, untracked=0)
    assert problems(shop) == []
    cases = {
        "missing": "UPDATE public.sales SET status = 'completed' WHERE id = (SELECT min(id) FROM public.sales"
                   " WHERE status <> 'completed')",
        "orphaned": "DELETE FROM public.purchase_requisitions WHERE id = (SELECT min(id) FROM"
                    " public.purchase_requisitions WHERE status = 'approved')",
        "different amount": "UPDATE public.manufacturing_orders SET unit_cost = unit_cost + 1 WHERE id = (SELECT"
                             " min(id) FROM public.manufacturing_orders WHERE state = 'done')",
        "different memo": "UPDATE public.payment_vouchers SET payee = 'someone else' WHERE id = (SELECT min(id) FROM"
                          " public.payment_vouchers WHERE status = 'paid')",
        "different date": "UPDATE public.sales SET sold_at = sold_at + interval '1 second' WHERE id = (SELECT min(id)"
                          " FROM public.sales WHERE status = 'completed')",
    }
    for name, statement in cases.items():
        with shop.transaction(force_rollback=True):
            shop.execute("SET LOCAL session_replication_role = replica")
            shop.execute(statement)
            assert problems(shop), name
    with shop.transaction(force_rollback=True):
        shop.execute("SET LOCAL session_replication_role = replica")
        shop.execute("ALTER TABLE ledger.line DISABLE TRIGGER line_immutable")
        shop.execute("UPDATE ledger.line SET debit = debit + 1 WHERE debit > 0 AND entry_id = (SELECT min(entry_id)"
                     " FROM ledger.line)")
        found = problems(shop)
        assert any("unbalanced" in p for p in found), found
        assert any("account totals" in p for p in found), found
    marker_key = shop.execute("SELECT min(id)::text FROM public.sales").fetchone()[0]
    memo = shop.execute("SELECT min(memo) FROM ledger.entry WHERE rule = 'sale'").fetchone()[0]
    assert problems(shop, forbidden_memo=memo)
    assert problems(shop, forbidden_keys={"sale": {marker_key}})
    assert problems(shop, skip_keys={"sale": {marker_key}}) == []


# --------------------------------------------------------------------------- load


def test_load_with_invariants(shop, dsn, config):
    seed_shop(shop)
    load = Load(dsn, config, seconds=LOAD_SECONDS, writers=4)
    summary = load.run()
    assert load.tally.unexpected == [], "\n".join(load.tally.unexpected[:20])
    # the load did what it claims: every kind of write, rollbacks seen posted first, the
    # trigger switched off and on, backfill and verify running beside it
    assert summary["commits"] >= 50, summary
    kinds = summary["by_kind"]
    for kind in ("insert", "insert bulk", "update amount", "update into when", "update out of when",
                 "update unrelated", "delete", "copy", "untracked transaction"):
        assert kinds.get(kind, 0) + kinds.get(kind + " bulk", 0) > 0, (kind, kinds)
    assert summary["rolled_back"] >= 5 and summary["rolled_back_entries_seen"] >= summary["rolled_back"], summary
    assert summary["trigger_disables"] >= 2, summary
    assert summary["backfill_runs"] >= 1 and summary["verify_runs"] >= 1, summary
    final = repair_and_check(shop, config, load)
    report("load", seconds=round(load.elapsed, 1), writers=4, **summary, **final)


# --------------------------------------------------------------------------- faults


def wait_for(observer: psycopg.Connection, query: str, params, timeout: float = 30) -> None:
    """Poll pg_stat_activity (or any query) until it returns true."""
    deadline = time.monotonic() + timeout
    while not observer.execute(query, params).fetchone()[0]:
        assert time.monotonic() < deadline, f"timed out waiting for: {query} {params}"
        time.sleep(0.01)


def test_terminated_backfill_and_client_transaction_under_load(shop, dsn, config, connect):
    seed_shop(shop, tracked=100, untracked=600)  # every batch of the victim has work
    load = Load(dsn, config, seconds=120, writers=3, backfills=False, switcher=False, seed=2).start()
    observer = connect(autocommit=True)
    try:
        assert load.tally.wait_commits(400, 60), "the load did not start"
        # 1. a backfill killed inside a batch: its next batch, its rows locked and entries
        #    written, waits to link postings of keys another transaction is linking; killed there
        victim = connect(autocommit=True)
        locker = connect()
        batches = [0]
        outcome: dict = {}

        def progress(summary, estimate):
            batches[0] += 1
            if batches[0] == 2:
                locker.execute("""INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
                                  SELECT 'sale', s.id, s.id::text, -s.id, 0
                                  FROM (SELECT id FROM public.sales ORDER BY id OFFSET 100 LIMIT 150) AS s
                                  WHERE NOT EXISTS (SELECT FROM ledger.posting AS p
                                                    WHERE p.rule = 'sale' AND p.key_num = s.id)""")

        def run_backfill():
            try:
                outcome["result"] = backfill(victim, config, batch_size=50, progress=progress)
            except BaseException as exc:  # noqa: BLE001
                outcome["error"] = exc

        thread = threading.Thread(target=run_backfill)
        thread.start()
        try:
            wait_for(observer, "SELECT wait_event_type = 'Lock' AND backend_xid IS NOT NULL FROM pg_stat_activity"
                               " WHERE pid = %s", (victim.info.backend_pid,))
            observer.execute("SELECT pg_terminate_backend(%s)", (victim.info.backend_pid,))
        finally:
            thread.join(60)
            locker.rollback()
        assert "error" in outcome and "57P01" in str(outcome["error"]), outcome  # LedgerError naming it
        assert observer.execute("SELECT count(*) FROM ledger.failure WHERE sqlstate = '57P01'").fetchone()[0] == 0

        # 2. a client killed in the middle of its transaction, after its writes were posted
        client = connect(autocommit=True)
        marker = f"{MARKER}killed"
        keys = {rule: RESERVED + 1 + i for i, rule in enumerate(TABLES)}
        rng = random.Random(5)
        client_outcome: dict = {}

        def run_client():
            try:
                with client.transaction():
                    # reserved keys only: no row lock another session could wait for (a
                    # deadlock here would end the transaction before the kill)
                    for rule, key in keys.items():
                        client.execute(*insert_one(rng, rule, marker, key=key, eligible=True))
                    client_outcome["posted"] = client.execute(
                        "SELECT count(*) FROM ledger.entry WHERE memo LIKE %s", (f"%{marker}%",)).fetchone()[0]
                    client.execute("SELECT pg_sleep(60)")
            except BaseException as exc:  # noqa: BLE001
                client_outcome["error"] = exc

        thread = threading.Thread(target=run_client)
        thread.start()
        wait_for(observer, "SELECT wait_event = 'PgSleep' FROM pg_stat_activity WHERE pid = %s",
                 (client.info.backend_pid,))
        observer.execute("SELECT pg_terminate_backend(%s)", (client.info.backend_pid,))
        thread.join(60)
        assert isinstance(client_outcome.get("error"), psycopg.OperationalError), client_outcome
        assert client_outcome["posted"] == len(keys), client_outcome  # its entries existed
        with load.tally.lock:
            for rule, key in keys.items():
                load.tally.forbidden_keys[rule].add(str(key))
        assert load.tally.wait_commits(load.tally.commits + 400, 60), "the load stalled after the kills"
    finally:
        summary = load.stop()
    assert load.tally.unexpected == [], "\n".join(load.tally.unexpected[:20])
    final = repair_and_check(shop, config, load)
    report("terminate", seconds=round(load.elapsed, 1), writers=3, victim_batches=batches[0],
           client_entries_posted_then_killed=client_outcome["posted"], **summary, **final)


def test_defer_statement_with_failing_rows_commits_the_good_ones(shop, config):
    """Rows of one multi-row INSERT, UPDATE and COPY fail to post under `defer` (NULL date,
    NaN amount): the statements commit, the good rows post, the bad ones are recorded; a
    failing update keeps the row's previous entry until fixed."""
    shop.execute("""INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)
                    SELECT g, 'p' || g, 10 * g, 'bank', 'paid', '2024-01-01'::timestamptz + g * interval '1 day'
                    FROM generate_series(1, 20) AS g""")
    shop.execute("""INSERT INTO public.payment_vouchers (id, payee, amount, method, status, paid_at)
                    SELECT g, 'p' || g, CASE WHEN g % 5 = 0 THEN 'NaN'::numeric ELSE 10 * g END, 'cash', 'paid',
                           CASE WHEN g % 7 = 0 THEN NULL ELSE now() END
                    FROM generate_series(21, 60) AS g""")
    shop.execute("UPDATE public.payment_vouchers SET paid_at = NULL, amount = amount + 1 WHERE id BETWEEN 1 AND 20"
                 " AND id % 3 = 0")
    with shop.cursor().copy("COPY public.payment_vouchers (id, payee, amount, status, paid_at) FROM STDIN") as copy:
        for i in range(61, 71):
            copy.write_row((i, f"p{i}", "NaN" if i % 2 else "5.00", "paid", "2024-02-01 10:00+00"))
    bad = {str(r[0]) for r in shop.execute(
        "SELECT id FROM public.payment_vouchers WHERE status = 'paid' AND (paid_at IS NULL OR amount = 'NaN')")}
    failed = {r[0] for r in shop.execute("SELECT source_key FROM ledger.failure WHERE resolved_at IS NULL")}
    assert failed == bad and len(bad) == 13 + 6 + 5  # insert (8 NaN, 6 NULL, one both), update, COPY
    assert shop.execute("SELECT count(*) FROM public.payment_vouchers").fetchone()[0] == 70
    # the good rows are exactly right; an updated-to-bad row keeps its previous entry
    assert_holds(shop, SHOP, skip_keys={"payment": bad})
    stale = {r[0] for r in shop.execute("SELECT source_key FROM ledger.entry WHERE rule = 'payment'"
                                        " AND source_key = ANY(%s) AND reverses IS NULL", (list(bad),))}
    assert stale == {str(i) for i in range(3, 21, 3)}
    result = backfill(shop, config, batch_size=7)  # still bad: recorded again, nothing posted
    assert not result.ok and result.rules[2].failed == len(bad)
    assert {r[0] for r in shop.execute("SELECT source_key FROM ledger.failure WHERE resolved_at IS NULL")} == bad
    with shop.transaction():
        shop.execute("SET LOCAL session_replication_role = replica")
        shop.execute("UPDATE public.payment_vouchers SET amount = 1 WHERE amount = 'NaN'")
    final = repair_and_check(shop, config)
    report("defer", statements=4, bad_rows=len(bad), **final)


# --------------------------------------------------------------------------- crash


def test_localpostgres_restart_keeps_the_data():
    with LocalPostgres(settings={"fsync": "off"}) as server:
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            db.execute("CREATE TABLE kept (x int)")
            db.execute("INSERT INTO kept VALUES (1)")
            pid = db.execute("SELECT pg_backend_pid()").fetchone()[0]
        server.restart(mode="immediate")
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            assert db.execute("SELECT x FROM kept").fetchall() == [(1,)]
            assert db.execute("SELECT pg_backend_pid()").fetchone()[0] != pid
        server.restart()
        with psycopg.connect(server.conninfo(), autocommit=True) as db:
            assert db.execute("SELECT x FROM kept").fetchall() == [(1,)]
        with pytest.raises(ValueError):
            server.restart(mode="gentle")
        log = server.logfile.read_text()
        assert "database system was interrupted" in log or "was not properly shut down" in log
    with pytest.raises(LocalPgError):
        server.restart()


@pytest.fixture
def crash_server():
    """A server of its own (the test crashes it): synchronous commit, so a commit that
    returned is in the WAL handed to the kernel; fsync off is safe against a process crash."""
    with LocalPostgres(settings={"fsync": "off"}) as server:
        conninfo = server.conninfo()
        with psycopg.connect(conninfo, autocommit=True) as db:
            db.execute(SHOP_SCHEMA.read_text(encoding="utf-8"))
        migrate(conninfo)
        yield server


def test_crash_while_load_runs_then_recovery(crash_server, config):
    conninfo = crash_server.conninfo()
    with psycopg.connect(conninfo, autocommit=True) as db:
        install(db, config)
        seed_shop(db, tracked=100, untracked=100)
        backfill(db, config)
    load = Load(conninfo, config, seconds=120, writers=3, switcher=False, untracked=False, bad_rows=False,
                reconnect=True, seed=3).start()
    try:
        assert load.tally.wait_commits(400, 60), "the load did not start"
        before = load.tally.commits
        crash_server.restart(mode="immediate")  # the crash: no checkpoint, WAL replayed at start
        assert load.tally.wait_commits(before + 400, 60), "the load did not resume after the restart"
    finally:
        summary = load.stop()
    assert load.tally.unexpected == [], "\n".join(load.tally.unexpected[:20])
    assert summary["disconnects"] >= 1, summary
    log = crash_server.logfile.read_text()
    assert "redo starts" in log or "database system was interrupted" in log
    with psycopg.connect(conninfo, autocommit=True) as db:
        # atomicity survived the crash: no backfill needed, nothing lost, nothing extra
        assert_holds(db, SHOP, **load.forbidden())
        load.check_committed_rows_kept(db)
        assert verify(db, config).ok
        result = backfill(db, config, batch_size=100)
        assert result.ok and sum(r.repaired for r in result.rules) == 0, result.as_dict()
        final = repair_and_check(db, config, load)
    report("crash", seconds=round(load.elapsed, 1), writers=3, commits_before_crash=before, **summary, **final)

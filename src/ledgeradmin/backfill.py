"""backfill: make the ledger match the source tables, through the same reconcile the
trigger runs — posting what is missing, reversing orphans, reversing and reposting drift,
retrying deferred failures.

Per rule, batches in key order (keyset pagination); each batch locks the source rows it
repairs (SKIP LOCKED: never waits for a writer; rows in sync are only read), reconciles
them in one set-based statement, reverses the live postings of rows that are gone within
its key range, and commits on its own. A batch that fails is bisected until the failing
rows are isolated; those are recorded in ledger.failure and the run goes on. Killed at any
moment, a re-run converges.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field

import psycopg

from . import catalog, compiler
from .compiler import fill, literal, template
from .config import Config, Rule
from .errors import ConfigError, LedgerError, database_hint, is_row_error
from .migrate import require_schema

DEFAULT_BATCH_SIZE = 10_000
#: More live entries than this to reverse in one rule make backfill refuse (--max-reversals)
DEFAULT_MAX_REVERSALS = 1_000


@dataclass
class RuleSummary:
    rule: str
    source: str
    scanned: int = 0
    posted: int = 0
    reversed: int = 0
    reposted: int = 0
    failed: int = 0  # rows that still fail (recorded in ledger.failure)
    failed_keys: list[str] = field(default_factory=list)
    keys: dict[str, list[str]] = field(default_factory=dict)  # dry run with detailed
    error: str | None = None  # dry run: why the rule could not be checked (its counts are unknown)
    refused: str | None = None  # dry run: why a real run would refuse the rule (--max-reversals)
    closed: int = 0  # dry run: rows to post or repost that are dated in the closed period (they cannot)

    @property
    def repaired(self) -> int:
        return self.posted + self.reversed + self.reposted

    def as_dict(self) -> dict:
        d = asdict(self)
        for name in ("keys", "error", "refused", "closed"):
            if not d[name]:
                d.pop(name)
        return d


@dataclass
class BackfillResult:
    rules: list[RuleSummary]
    dry_run: bool = False
    limit_reached: bool = False
    duration_seconds: float = 0.0
    since: dt.date | None = None

    @property
    def ok(self) -> bool:
        """No row still fails; a dry run, which repairs nothing, is ok when it could check
        every rule and a real run would refuse none."""
        if self.dry_run:
            return all(r.error is None and r.refused is None for r in self.rules)
        return all(r.failed == 0 for r in self.rules)

    def as_dict(self) -> dict:
        return {
            "ok": self.ok,
            "dry_run": self.dry_run,
            "limit_reached": self.limit_reached,
            "since": self.since.isoformat() if self.since else None,
            "duration_seconds": round(self.duration_seconds, 3),
            "rules": [r.as_dict() for r in self.rules],
        }


Progress = Callable[[RuleSummary, int], None]  # (summary so far, estimated rows of the table)


class _Batch:
    """The SQL of one rule's batch reconcile, with the batch's keys as array parameters.
    With ``since`` (and a rule `date`), the rows dated on or after that day and the live
    postings dated so."""

    def __init__(self, rule: Rule, target: catalog.Target, since: dt.date | None = None) -> None:
        self.rule, self.target = rule, target
        self.window = compiler.since_window(rule, since)
        self.since = since if self.window else None
        cols = [compiler.sql.Identifier(k).as_string(None) for k in target.key]
        self.key_columns = ", ".join(f"r.{c}" for c in cols)
        unnest = ", ".join(f"__ARRAY{i}__::{t}[]" for i, t in enumerate(target.key_types))
        self.relation = (
            f"(SELECT * FROM {target.ident} AS r WHERE ({self.key_columns}) IN (SELECT * FROM unnest({unnest})))"
        )
        self.none = f"(SELECT * FROM {target.ident} AS r WHERE false)"

    def statement(self, with_rows: bool, limit: int | None, with_gone: bool = False) -> str:
        """Reconcile the rows of the key arrays and the gone keys. A gone key whose row
        exists again (inserted by a writer that committed after the key was found gone) is
        left out: that writer's trigger posted it, and the rows were read in this statement."""
        gone = "SELECT g.source_key, g.key_num FROM unnest(__GONE__::text[], __GONE_NUM__::bigint[]) AS g (source_key, key_num)"
        if with_gone:
            match = compiler.row_match(self.target, "g.source_key", "g.key_num")
            gone += f"\nWHERE NOT EXISTS (SELECT FROM {self.target.ident} AS r WHERE {match})"
        keys = [gone]
        if with_rows:
            keys.insert(0, compiler.keys_sql(self.target, self.relation))
        text = compiler.reconcile_sql(
            self.rule, self.target, self.relation if with_rows else self.none, "\nUNION ALL\n".join(keys),
            result=compiler.COUNTS_RESULT, limit=limit,
        )
        text = text.replace("%", "%%")  # expressions may hold '%'; parameters are named below
        for i in range(len(self.target.key)):
            text = text.replace(f"__ARRAY{i}__", f"%(k{i})s")
        return text.replace("__GONE__", "%(gone)s").replace("__GONE_NUM__", "%(gone_num)s")

    def locked_statement(self, batch_size: int, after: bool, limit: int | None, stale_only: bool = False) -> str:
        """The fast path of one batch, in one statement: lock the next rows in key order
        (queries/backfill_next_rows.sql) and reconcile them; returns the counts, the rows
        read and the last key read (one column each). ``stale_only``: read the next rows
        without a lock and lock only those whose posting is not what it should be
        (queries/backfill_stale_rows.sql)."""
        key_cols = [compiler.sql.Identifier(k).as_string(None) for k in self.target.key]
        after_sql = (f"({self.key_columns}) > ({', '.join(f'__AFTER{i}__' for i in range(len(key_cols)))})"
                     if after else "true")
        values = dict(source=self.target.ident, after=after_sql, window=self.window or "true",
                      key_columns=self.key_columns, batch_size=str(int(batch_size)))
        next_rows = template("queries/backfill_next_rows.sql")
        if stale_only:
            read = "candidates"
            prelude = fill(
                template("queries/backfill_stale_rows.sql"),
                candidates=fill(next_rows, **values, lock="").rstrip(),
                key_columns=self.key_columns,
                source=self.target.ident,
                candidate_keys=compiler.keys_sql(self.target, "candidates"),
                desired=compiler.desired_sql(self.rule, self.target, "candidates", fenced=False),
                rule=literal(self.rule.name),
                link_match=compiler.link_match(self.target, "ck", exact=False),  # a range of keys
                join_on="p.key_num = d.key_num" if self.target.integer_key else "p.source_key = d.source_key",
                candidate_columns=", ".join(f"c.{c}" for c in key_cols),
                candidate_key=compiler.key_text(self.target, "c"),
            ).rstrip()
        else:
            read = "locked"
            locked = fill(next_rows, **values, lock="FOR NO KEY UPDATE OF r SKIP LOCKED").rstrip()
            prelude = f"locked AS MATERIALIZED (\n{locked}\n)"
        last_order = ", ".join(f"l.{c} DESC" for c in key_cols)
        last = ", ".join(f"(SELECT l.{c} FROM {read} AS l ORDER BY {last_order} LIMIT 1)" for c in key_cols)
        text = compiler.reconcile_sql(
            self.rule, self.target, "locked", compiler.keys_sql(self.target, "locked"),
            result=f"{compiler.COUNTS_RESULT}, (SELECT count(*) FROM {read}), {last}", limit=limit,
            prelude=f"{prelude}, ",
        )
        text = text.replace("%", "%%")
        for i in range(len(key_cols)):
            text = text.replace(f"__AFTER{i}__", f"%(a{i})s")
        return text

    def lock_sql(self, condition: str, batch_size: int, *, in_window: bool = True) -> str:
        """Lock and fetch (key columns…, source_key) of the rows meeting ``condition`` (SQL
        whose parameters are named) — and the window, unless not ``in_window`` — first
        ``batch_size`` in key order, skipping rows a writer holds
        (queries/backfill_lock_batch.sql)."""
        return fill(
            template("queries/backfill_lock_batch.sql"),
            key_columns=self.key_columns,
            key_text=compiler.key_text(self.target),
            source=self.target.ident,
            after="__CONDITION__",
            window=self.window if self.window and in_window else "true",
            batch_size=str(int(batch_size)),
        ).replace("%", "%%").replace("__CONDITION__", condition)

    def gone_sql(self, bounds: str, order: str, limit: str) -> str:
        """Live postings whose row is gone (with ``since``: or outside the window), within
        ``bounds`` (SQL whose parameters are named; queries/backfill_gone.sql)."""
        recent = f"\n  AND p.entry_id = ANY ({compiler.recent_entries(self.since)})" if self.since else ""
        match = compiler.row_match(self.target, "p.source_key")
        return fill(
            template("queries/backfill_gone.sql"),
            rule=literal(self.rule.name),
            source=self.target.ident,
            row_match=match,
            range="__BOUNDS__",
            recent=recent,
            window=self.window or "true",
            outside=self.outside(match),
            order=order,
            limit=limit,
        ).replace("%", "%%").replace("__BOUNDS__", bounds)

    def outside(self, row_match: str) -> str:
        """SQL telling whether the row of a key without a row in the window exists, i.e. lies
        outside it; without a window such a key's row is gone: false."""
        return f"EXISTS (SELECT FROM {self.target.ident} AS r WHERE {row_match})" if self.window else "false"

    def params(self, rows: list[tuple], gone: list[tuple[str, int | None]]) -> dict:
        """Rows are (key columns…, source_key text) as fetched by the batch lock query."""
        out: dict = {f"k{i}": [r[i] for r in rows] for i in range(len(self.target.key))}
        out["gone"] = [g[0] for g in gone]
        out["gone_num"] = [g[1] for g in gone]
        return out


def backfill(
    conn: psycopg.Connection,
    config: Config,
    names=None,
    *,
    limit: int | None = None,
    batch_size: int = DEFAULT_BATCH_SIZE,
    dry_run: bool = False,
    detailed: bool = False,
    max_keys: int = 20,
    max_reversals: int | None = DEFAULT_MAX_REVERSALS,
    allow_identical: bool = False,
    since: dt.date | None = None,
    keys: Sequence[str] = (),
    progress: Progress | None = None,
) -> BackfillResult:
    """Repair the selected rules. Commits once per batch (``conn`` must be idle, autocommit).

    ``since``: only the rows whose rule `date` is on or after that day, and the live
    postings dated so (rules without a `date` are repaired whole), as `verify --since`
    checks them; open failures are retried whatever their date.

    ``keys``: only the rows of these source keys of the one rule selected (as verify and
    the reports show them), reconciled in one transaction whether they look in sync or
    not; with ``dry_run`` the same, rolled back (exact counts).

    ``dry_run`` changes nothing: it reports what verify finds, i.e. what would be repaired.
    ``max_reversals``: refuse, before any change, when a rule has more live entries to
    reverse (None: no limit). Unless ``allow_identical``, refuse as well a rule that would
    post rows whose identical entries are live under a name the config does not have (a
    rule renamed without `ledgeradmin rename`).
    """
    require_schema(conn)
    started = time.monotonic()
    _require_every_row(conn, config, names)
    if keys:
        if since is not None:
            raise LedgerError("backfill --key and --since exclude each other: the keys name their rows")
        return _backfill_keys(conn, config, names, list(keys), dry_run, allow_identical, started)
    if dry_run:
        return _dry_run(conn, config, names, limit, detailed, max_keys, max_reversals, allow_identical, since,
                        started)
    _require_installed(conn, config, names)
    if max_reversals is not None:
        _require_few_reversals(conn, config, names, max_reversals, since)
    if not allow_identical:
        _require_no_identical(conn, config, names)
    budget = [limit]
    summaries = []
    for rule in config.select(names):
        target = catalog.resolve(conn, rule)
        summary = RuleSummary(rule.name, rule.source)
        summaries.append(summary)
        try:
            _backfill_rule(conn, _Batch(rule, target, since), summary, budget, batch_size, progress)
        except psycopg.Error as exc:
            done = ", ".join(f"{s.rule}: {s.repaired} repaired" for s in summaries)
            raise LedgerError(
                f'backfill stopped in rule "{rule.name}": {exc.diag.message_primary or str(exc).strip()}'
                f" (SQLSTATE {exc.sqlstate or 'none'}); committed so far: {done}",
                hint=database_hint(exc) or "every committed batch is kept: run backfill again to continue",
            ) from None
        if budget[0] == 0:
            break
    return BackfillResult(summaries, False, budget[0] == 0, time.monotonic() - started, since)


def _require_installed(conn, config: Config, names) -> None:
    """Backfill posts through the installed SQL's shared pieces and the accounts of the
    config: it refuses rules that are not installed as the config says (a disabled
    trigger is fine: repairing an outage is what backfill is for)."""
    from .status import INVALID, status

    bad = [s for s in status(conn, config, names) if s.state not in ("ok", "DISABLED", "NOT IN CONFIG")]
    if bad:
        raise LedgerError(
            "backfill needs the rules installed as configured: "
            + "; ".join(f"{s.rule} is {s.state}" + (f" ({s.detail})" if s.state == INVALID else "") for s in bad),
            hint="run `ledgeradmin install` first (`ledgeradmin status` shows why)",
        )


def _require_every_row(conn, config: Config, names) -> None:
    """Refuse before any change when row-level security would show backfill only some rows
    of a table: it would reverse the postings of the others as orphaned."""
    for rule in config.select(names):
        try:
            target = catalog.resolve(conn, rule)
        except ConfigError:
            continue  # a missing table: reported as the rule's state
        catalog.require_every_row(conn, rule, target)


def _require_few_reversals(conn, config: Config, names, max_reversals: int, since: dt.date | None) -> None:
    """Refuse before any change when a rule would reverse more than ``max_reversals`` live
    entries: so many orphans at once usually mean the rule no longer sees its rows (a
    dropped partition, a replaced table, a wrong `source` or `when`), and their reversals,
    dated today, would take that history out of the books."""
    over = []
    for rule in config.select(names):
        count = _orphaned(conn, _Batch(rule, catalog.resolve(conn, rule), since))
        if count > max_reversals:
            over.append((rule.name, count))
    if over:
        raise LedgerError(
            "backfill refused, nothing was changed: "
            + "; ".join(f'rule "{name}" {_too_many(count, max_reversals)}' for name, count in over),
            hint=_REVERSALS_HINT.format(count=max(count for _, count in over)),
        )


def _identical(conn, config: Config, names, elsewhere: list[str]) -> dict[str, dict[str, int]]:
    """By rule, the rows it would book a second time, by the name of ``elsewhere`` (names
    with live entries the config lacks) they are booked under (rename.identical_elsewhere)."""
    from .rename import identical_elsewhere

    found = {}
    for rule in config.select(names) if elsewhere else []:
        counts = identical_elsewhere(conn, rule, catalog.resolve(conn, rule), elsewhere)
        if counts:
            found[rule.name] = counts
    return found


def _require_no_identical(conn, config: Config, names) -> None:
    """Refuse before any change when a rule would post rows that are booked already, under
    the name the rule had before a rename that skipped `ledgeradmin rename`."""
    from .rename import identical_refusal, names_not_in_config

    found = _identical(conn, config, names, names_not_in_config(conn, config))
    if found:
        new, counts = next(iter(found.items()))
        raise LedgerError(
            "backfill refused, nothing was changed: "
            + "; ".join(f'rule "{name}" {identical_refusal(name, c)}' for name, c in found.items()),
            hint=f"`ledgeradmin rename {next(iter(counts))} {new}` hands those entries over to the new name. "
                 "If they are another rule's entries after all, run again with --allow-identical: those rows are "
                 "then booked under both names",
        )


def _too_many(count: int, max_reversals: int) -> str:
    return (f"would reverse {count:,} live entries whose rows are gone or no longer post,"
            f" more than --max-reversals {max_reversals:,}")


_REVERSALS_HINT = ("that many at once usually means the rule no longer sees its rows: a dropped or detached "
                   "partition, a restored or replaced table, a changed `source` or `when`. "
                   "`ledgeradmin backfill --dry-run --detailed` lists them; if reversing them (dated today) is "
                   "right, run again with --max-reversals {count}")


def _orphaned(conn, batch: _Batch) -> int:
    """verify's orphaned count of one rule; when a row's expressions cannot be evaluated,
    the live postings of rows that are gone (which needs no expression)."""
    from .verify import orphaned

    with conn.transaction():
        catalog.pin_settings(conn, every_row=True)
        try:
            with conn.transaction():
                return orphaned(conn, batch.rule, batch.target, batch.since)
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            gone = batch.gone_sql("true", "1", "ALL")
            return conn.execute(f"SELECT count(*) FROM (\n{gone}\n) AS g WHERE NOT g.outside", {}).fetchone()[0]


def _estimate_rows(conn, batch: _Batch) -> int:
    """The planner's estimate of the rows the rule's batches will read (for progress)."""
    target = batch.target
    if batch.window:
        explain = f"EXPLAIN (FORMAT JSON) SELECT FROM {target.ident} AS r WHERE {batch.window}"
        return int(conn.execute(explain).fetchone()[0][0]["Plan"]["Plan Rows"])
    row = conn.execute(
        """
        SELECT sum(greatest(c.reltuples, 0))::bigint
        FROM pg_catalog.pg_class AS c
        WHERE c.oid = %s OR c.oid IN (SELECT inhrelid FROM pg_catalog.pg_inherits WHERE inhparent = %s)
        """,
        (target.oid, target.oid),
    ).fetchone()
    return int(row[0] or 0)


def _backfill_rule(conn, batch: _Batch, summary: RuleSummary, budget, batch_size: int, progress) -> None:
    target = batch.target
    estimate = _estimate_rows(conn, batch)
    width = len(target.key)
    last = None
    after_sql = f"({batch.key_columns.replace('%', '%%')}) > ({', '.join(f'%(a{i})s' for i in range(width))})"
    # live postings of deleted rows: walked with the batches' key ranges when they can be,
    # else (text keys; --since, whose postings are found by date) in one pass at the end
    per_batch = target.integer_key and batch.since is None
    # Lock only the rows to repair while at most half of a batch's rows need repair (a table
    # mostly in sync is then only read); lock every row read, in the same pass, otherwise.
    stale_only = [True]

    def one_batch() -> tuple[int, tuple | None]:
        """Lock and reconcile the next batch: (rows read, last key read)."""
        with conn.transaction():
            catalog.pin_settings(conn, every_row=True)
            try:
                with conn.transaction():
                    query = batch.locked_statement(batch_size, last is not None, budget[0], stale_only[0])
                    posted, reversed_, reposted, scanned, *last_key = conn.execute(
                        query, _after_params(last)).fetchone()
                _count(summary, budget, posted, reversed_, reposted)
                stale_only[0] = 2 * (posted + reversed_ + reposted) <= scanned
                return scanned, (tuple(last_key) if scanned else None)
            except psycopg.Error as exc:
                if not is_row_error(exc):
                    raise
            # some row cannot post: lock the rows again, reconcile them bisecting, record the bad ones
            query = batch.lock_sql(after_sql if last is not None else "true", batch_size)
            rows = conn.execute(query, _after_params(last)).fetchall()
            _reconcile(conn, batch, rows, [], summary, budget)
        return len(rows), (rows[-1][:width] if rows else None)

    while budget[0] != 0:
        scanned, last_key = _retrying(one_batch)
        final = scanned < batch_size
        if per_batch:  # live postings of deleted rows in this batch's key range
            _reverse_gone(conn, batch, last[0] if last else None, None if final else last_key[0], batch_size,
                          summary, budget)
        summary.scanned += scanned
        if progress:
            progress(summary, estimate)
        if final:
            break
        last = last_key
    if budget[0] != 0 and not per_batch:
        _reverse_gone(conn, batch, None, None, batch_size, summary, budget)
    if budget[0] != 0:
        _retrying(lambda: _resolve_stale_failures(conn, batch, summary, budget))


def _after_params(last: tuple | None) -> dict:
    """Parameters of the keyset cursor; a dict even for the first batch, so that the query
    text is always read with parameters ('%%' stands for '%')."""
    return {f"a{i}": v for i, v in enumerate(last or ())}


def _reverse_gone(conn, batch: _Batch, lo, hi, batch_size: int, summary, budget) -> None:
    """Reverse the live postings whose source row is gone, with keys in (lo, hi], chunk by
    chunk. Integer keys walk key_num; other keys walk the text key (one anti-join per chunk).
    With --since, a posting whose row is outside the window has its row reconciled."""
    order = "p.key_num" if batch.target.integer_key else "p.source_key"

    def query(lower: bool) -> str:
        # Only the bounds there are, never `x > $1 OR $1 IS NULL`: a prepared statement's
        # generic plan could not use the index for that.
        bounds = [f"{order} > %(lo)s"] * lower + [f"{order} <= %(hi)s"] * (hi is not None)
        return batch.gone_sql(" AND ".join(bounds) or "true", order, str(batch_size))

    cursor = lo
    while budget[0] != 0:
        def chunk() -> list[tuple]:
            with conn.transaction():
                catalog.pin_settings(conn, every_row=True)
                gone = conn.execute(query(cursor is not None), {"lo": cursor, "hi": hi}).fetchall()
                rows = _outside_rows(conn, batch, [g for g in gone if g[2]])
                _reconcile(conn, batch, rows, [g for g in gone if not g[2]], summary, budget)
            return gone

        gone = _retrying(chunk)
        if len(gone) < batch_size:
            return
        cursor = gone[-1][1] if batch.target.integer_key else gone[-1][0]


def _outside_rows(conn, batch: _Batch, keys: list[tuple]) -> list[tuple]:
    """Lock and fetch the rows of ``keys`` (postings dated in the --since window whose rows
    are dated before it), skipping rows a writer holds, as the batches do."""
    if not keys:
        return []
    match, values = _key_match(batch, keys)
    return conn.execute(batch.lock_sql(match, len(keys), in_window=False), {"keys": values}).fetchall()


def _key_match(batch: _Batch, keys: list[tuple]) -> tuple[str, list]:
    """Condition on source row r matching ``keys`` ((source_key, key_num) pairs), with its
    parameter %(keys)s: by the key column itself (its index) for an integer key."""
    if batch.target.integer_key:
        column = compiler.qualified("r", batch.target.key)[0]
        return f"{column.replace('%', '%%')} = ANY (%(keys)s::bigint[])", [k[1] for k in keys]
    key = compiler.key_text(batch.target).replace("%", "%%")
    return f"{key} = ANY (%(keys)s::text[])", [k[0] for k in keys]


def _backfill_keys(conn, config: Config, names, keys: list[str], dry_run: bool, allow_identical: bool,
                   started: float) -> BackfillResult:
    """Reconcile the rows of the given source keys of one rule in one transaction (their rows
    locked, skipping any a writer holds; a key without a row: its entry reversed); a dry run
    does it all and rolls it back."""
    rules = config.select(names)
    if len(rules) != 1:
        raise LedgerError("backfill --key needs exactly one --rule: keys are a rule's",
                          hint=f"rules: {', '.join(r.name for r in rules)}")
    (rule,) = rules
    _require_installed(conn, config, [rule.name])
    if not allow_identical:
        _require_no_identical(conn, config, [rule.name])
    batch = _Batch(rule, catalog.resolve(conn, rule))
    pairs = _parse_keys(batch, keys)
    match, values = _key_match(batch, pairs)
    found_sql = f"SELECT {compiler.key_text(batch.target)} FROM {batch.target.ident} AS r".replace("%", "%%")

    def step() -> RuleSummary:
        summary = RuleSummary(rule.name, rule.source)
        with conn.transaction(force_rollback=dry_run):
            catalog.pin_settings(conn, every_row=True)
            found = {r[0] for r in conn.execute(f"{found_sql} WHERE {match}", {"keys": values})}
            rows = conn.execute(batch.lock_sql(match, len(pairs), in_window=False), {"keys": values}).fetchall()
            _reconcile(conn, batch, rows, [k for k in pairs if k[0] not in found], summary, [None])
            summary.scanned = len(rows)
        return summary

    return BackfillResult([_retrying(step)], dry_run, False, time.monotonic() - started)


def _parse_keys(batch: _Batch, keys: list[str]) -> list[tuple[str, int | None]]:
    """(source_key, key_num) of keys given as text, as verify and the reports show them."""
    if not batch.target.integer_key:
        return [(k, None) for k in dict.fromkeys(keys)]
    numbers = []
    for k in keys:
        try:
            if not re.fullmatch(r"\s*[+-]?[0-9]+\s*", k):  # ASCII digits: int() takes any script's
                raise ValueError(k)
            numbers.append(int(k))
        except ValueError:
            raise LedgerError(f'rule "{batch.rule.name}" is keyed by one integer column ({batch.target.key[0]}): '
                              f"key {k!r} is not an integer") from None
    return [(str(n), n) for n in dict.fromkeys(numbers)]


# Errors worth retrying the batch for: serialization failure, deadlock, lock not available,
# unique violation (a concurrent writer posted the same key first).
_TRANSIENT = ("40001", "40P01", "55P03", "23505")
RETRIES = 3


def _retrying(step):
    """Run one batch step (its own transaction); retry transient conflicts a few times."""
    for attempt in range(RETRIES + 1):
        try:
            return step()
        except psycopg.Error as exc:
            if (exc.sqlstate or "") not in _TRANSIENT or attempt == RETRIES:
                raise
            time.sleep(0.05 * 2**attempt)


def _resolve_stale_failures(conn, batch: _Batch, summary, budget) -> None:
    """Reconcile the keys of open failures the batches did not reach: rows gone (their
    failures are resolved) and, with --since, rows dated before the window (retried)."""
    match = compiler.row_match(batch.target, "f.source_key")
    query = fill(
        template("queries/backfill_stale_failures.sql"),
        rule=literal(batch.rule.name),
        source=batch.target.ident,
        row_match=match,
        window=batch.window or "true",
        outside=batch.outside(match),
        key_num="f.source_key::bigint" if batch.target.integer_key else "NULL::bigint",
    )
    with conn.transaction():
        catalog.pin_settings(conn, every_row=True)
        stale = conn.execute(query).fetchall()
        rows = _outside_rows(conn, batch, [s for s in stale if s[2]])
        _reconcile(conn, batch, rows, [s for s in stale if not s[2]], summary, budget)


def _reconcile(conn, batch: _Batch, rows: list[tuple], gone: list[tuple], summary: RuleSummary, budget) -> None:
    """Reconcile rows + gone keys in one statement (a savepoint); when a row's data makes
    it fail, bisect to isolate the bad rows and record them. Other errors propagate."""
    if not rows and not gone:
        return
    try:
        with conn.transaction():
            posted, reversed_, reposted = conn.execute(
                batch.statement(bool(rows), budget[0], bool(gone)), batch.params(rows, gone)
            ).fetchone()
    except psycopg.Error as exc:
        if not rows or not is_row_error(exc):
            raise
        if gone:  # reversals of gone rows do not depend on row data: do them on their own
            _reconcile(conn, batch, [], gone, summary, budget)
        if len(rows) > 1:
            mid = len(rows) // 2
            _reconcile(conn, batch, rows[:mid], [], summary, budget)
            _reconcile(conn, batch, rows[mid:], [], summary, budget)
        else:
            _record_failure(conn, batch, rows[0], exc, summary)
        return
    _count(summary, budget, posted, reversed_, reposted)


def _count(summary: RuleSummary, budget, posted: int, reversed_: int, reposted: int) -> None:
    summary.posted += posted
    summary.reversed += reversed_
    summary.reposted += reposted
    if budget[0] is not None:
        budget[0] = max(0, budget[0] - posted - reversed_ - reposted)


def _record_failure(conn, batch: _Batch, row: tuple, exc: psycopg.Error, summary: RuleSummary) -> None:
    key = row[-1]
    diag = exc.diag
    conn.execute(
        "SELECT ledger.record_failure(%s, %s, %s, %s, %s, %s)",
        (batch.rule.name, key, diag.sqlstate or "XX000", diag.message_primary or str(exc), diag.message_detail,
         diag.message_hint),
    )
    summary.failed += 1
    if len(summary.failed_keys) < 100:
        summary.failed_keys.append(key)


def _dry_run(conn, config: Config, names, limit, detailed: bool, max_keys: int, max_reversals: int | None,
             allow_identical: bool, since: dt.date | None, started: float) -> BackfillResult:
    from .rename import identical_refusal
    from .verify import verify

    result = verify(conn, config, names, since=since, detailed=detailed, max_keys=max_keys)
    # verify has looked up the names the config lacks already
    identical = {} if allow_identical else _identical(conn, config, names, result.ledger.rules_not_in_config)
    summaries = []
    remaining = limit
    for r in result.rules:
        s = RuleSummary(r.rule, r.source, scanned=r.eligible or 0, failed=r.failed or 0, error=r.error)
        refused = [identical_refusal(r.rule, identical[r.rule])] if r.rule in identical else []
        if max_reversals is not None and (r.orphaned or 0) > max_reversals:
            refused.append(_too_many(r.orphaned, max_reversals))
        s.refused = "; ".join(refused) or None
        s.closed = (r.missing_closed or 0) + (r.drifted_closed or 0)
        for attr, count in (("posted", (r.missing or 0) - (r.missing_closed or 0)), ("reversed", r.orphaned),
                            ("reposted", (r.drifted or 0) - (r.drifted_closed or 0))):
            n = count or 0
            if remaining is not None:
                n, remaining = min(n, remaining), remaining - min(n, remaining)
            setattr(s, attr, n)
        if detailed:
            s.keys = {k: v for k, v in r.keys.items()}
        summaries.append(s)
    return BackfillResult(summaries, True, remaining == 0, time.monotonic() - started, since)

"""verify: the reconcile of DESIGN.md computed and reported, never acted on.

Per rule one set-based pass over the source table (the rule's desired postings, the same
SQL the trigger runs) left-joined with the rule's live postings (in parallel); plus whole-ledger
checks. Everything in one REPEATABLE READ, READ ONLY snapshot: no lock stronger than
ACCESS SHARE, writers never wait, and it runs on a hot standby.
"""

from __future__ import annotations

import datetime as dt
import secrets
import time
from dataclasses import asdict, dataclass, field
from decimal import Decimal

import psycopg
from psycopg import IsolationLevel

from . import catalog, compiler
from .compiler import fill, literal, template
from .config import Config, Rule
from .errors import ConfigError, is_row_error
from .status import INVALID, OK, RuleStatus, status

CATEGORIES = ("missing", "orphaned", "drifted")
CURRENCY_SAMPLE_PAGES = 2000  # pages of ledger.line read for candidate currencies (all of a smaller table)
CONDITIONS = {
    "missing": "d.source_key IS NOT NULL AND p.source_key IS NULL",
    "orphaned": "d.source_key IS NULL",
    "drifted": "d.source_key IS NOT NULL AND p.source_key IS NOT NULL AND d.fingerprint IS DISTINCT FROM p.fingerprint",
}


@dataclass
class RuleReport:
    rule: str
    source: str
    eligible: int | None = None
    posted: int | None = None
    missing: int | None = None
    orphaned: int | None = None
    drifted: int | None = None
    failed: int | None = None
    # of the missing and drifted rows, those dated in the closed period (None: no period closed)
    missing_closed: int | None = None
    drifted_closed: int | None = None
    trigger: str = OK
    error: str | None = None
    seconds: float = 0.0  # time spent on this rule's checks
    keys: dict[str, list[str]] = field(default_factory=dict)

    @property
    def problems(self) -> int:
        return sum(getattr(self, c) or 0 for c in (*CATEGORIES, "failed"))

    @property
    def in_sync(self) -> int:
        return (self.posted or 0) - (self.drifted or 0)

    @property
    def ok(self) -> bool:
        return self.error is None and self.problems == 0 and self.trigger == OK


@dataclass
class LedgerReport:
    entries: int = 0
    unbalanced: int = 0
    duplicate_live_keys: int = 0
    unlinked_live_entries: int = 0
    trial_balance: dict[str, Decimal] = field(default_factory=dict)  # currency -> debit - credit
    seconds: float = 0.0  # time spent on the whole-ledger checks
    keys: dict[str, list[str]] = field(default_factory=dict)
    rules_not_in_config: list[str] = field(default_factory=list)  # names with live entries the config lacks

    @property
    def problems(self) -> int:
        off = sum(1 for v in self.trial_balance.values() if v != 0)
        return self.unbalanced + self.duplicate_live_keys + self.unlinked_live_entries + off


@dataclass
class VerifyResult:
    rules: list[RuleReport]
    ledger: LedgerReport
    since: dt.date | None
    duration_seconds: float = 0.0
    closed_through: dt.date | None = None  # the books are closed through it (ledgeradmin period)

    @property
    def ok(self) -> bool:
        return all(r.ok for r in self.rules) and self.ledger.problems == 0

    @property
    def problems(self) -> int:
        return sum(r.problems for r in self.rules) + self.ledger.problems

    @property
    def in_sync(self) -> int:
        return sum(r.in_sync for r in self.rules)

    @property
    def total(self) -> int:
        return sum((r.eligible or 0) + (r.orphaned or 0) for r in self.rules)

    def as_dict(self) -> dict:
        """The documented JSON shape of `ledgeradmin verify --json` (docs/verify.md)."""
        return {
            "ok": self.ok,
            "since": self.since.isoformat() if self.since else None,
            "closed_through": self.closed_through.isoformat() if self.closed_through else None,
            "duration_seconds": round(self.duration_seconds, 3),
            "rules": [
                {k: round(v, 3) if k == "seconds" else v for k, v in asdict(r).items() if k != "keys" or v}
                for r in self.rules
            ],
            "ledger": {
                "entries": self.ledger.entries,
                "unbalanced": self.ledger.unbalanced,
                "duplicate_live_keys": self.ledger.duplicate_live_keys,
                "unlinked_live_entries": self.ledger.unlinked_live_entries,
                "trial_balance": {c: str(v) for c, v in self.ledger.trial_balance.items()},
                "seconds": round(self.ledger.seconds, 3),
                "rules_not_in_config": self.ledger.rules_not_in_config,
                **({"keys": self.ledger.keys} if self.ledger.keys else {}),
            },
            "in_sync": self.in_sync,
            "total": self.total,
            "problems": self.problems,
        }


def verify(
    conn: psycopg.Connection,
    config: Config,
    names=None,
    *,
    since: dt.date | None = None,
    detailed: bool = False,
    max_keys: int = 20,
) -> VerifyResult:
    """Compare the ledger with the source tables; report, change nothing."""
    from .period import closed_through
    from .rename import names_not_in_config

    rules = config.select(names)
    started = time.monotonic()
    saved = conn.isolation_level, conn.read_only
    conn.isolation_level, conn.read_only = IsolationLevel.REPEATABLE_READ, True
    try:
        with conn.transaction(force_rollback=True):
            catalog.pin_settings(conn)
            states = {s.rule: s for s in status(conn, config, names)}
            catalog.pin_settings(conn, every_row=True)  # after status: its probes plan what verify may not read
            closed = closed_through(conn, required=False)
            reports = [_timed(_verify_rule_safely, conn, rule, states[rule.name], since, detailed, max_keys, closed)
                       for rule in rules]
            ledger = _timed(_verify_ledger, conn, since, detailed, max_keys)
            ledger.rules_not_in_config = names_not_in_config(conn, config)
    finally:
        if not conn.closed:  # a connection the server ended: keep its error, not "the connection is lost"
            conn.isolation_level, conn.read_only = saved
    return VerifyResult(reports, ledger, since, time.monotonic() - started, closed)


def _timed(check, *args):
    """Run one check and record its run time in the report it returns (its ``seconds``)."""
    started = time.monotonic()
    report = check(*args)
    report.seconds = time.monotonic() - started
    return report


def _postings(rule: Rule, since: dt.date | None) -> str:
    recent = f"\n  AND p.entry_id = ANY ({compiler.recent_entries(since)})" if since is not None else ""
    return fill(template("queries/verify_postings.sql"), recent=recent, rule=literal(rule.name)).rstrip()


def _source(rule: Rule, target: catalog.Target, since: dt.date | None) -> str:
    window = compiler.since_window(rule, since)
    return target.ident if window is None else f"(SELECT * FROM {target.ident} AS r WHERE {window})"


def _verify_rule_safely(conn, rule: Rule, state: RuleStatus, since, detailed: bool, max_keys: int,
                        closed: dt.date | None) -> RuleReport:
    """One rule in a savepoint: a row whose expressions cannot even be evaluated (say a
    date beyond the timestamp range) makes this rule's report an error, not verify's."""
    try:
        with conn.transaction():
            return _verify_rule(conn, rule, state, since, detailed, max_keys, closed)
    except psycopg.Error as exc:
        if not is_row_error(exc):
            raise
        report = RuleReport(rule.name, rule.source, trigger=state.state,
                            error=f"could not evaluate the rule on every row: {exc.diag.message_primary}"
                                  f" (SQLSTATE {exc.sqlstate}); `ledgeradmin backfill` records the rows at fault")
        report.failed = _failed(conn, rule)
        return report


def _failed(conn, rule: Rule) -> int:
    return conn.execute(
        "SELECT count(*) FROM ledger.failure WHERE rule = %s AND resolved_at IS NULL", (rule.name,)
    ).fetchone()[0]


def _verify_rule(conn, rule: Rule, state: RuleStatus, since, detailed: bool, max_keys: int,
                 closed: dt.date | None = None) -> RuleReport:
    report = RuleReport(rule.name, rule.source, trigger=state.state)
    if state.state == INVALID:  # its queries would fail as its postings do
        report.error = state.detail
        report.failed = _failed(conn, rule)
        return report
    try:
        target = catalog.resolve(conn, rule)
    except ConfigError as exc:
        report.error = exc.message
        return report
    try:
        catalog.require_every_row(conn, rule, target)
    except ConfigError as exc:
        report.error = f"{exc.message}; {exc.hint}"
        return report
    if not rule.date:
        since = None  # no date to select recent rows by: such a rule is always checked whole
    parts = _parts(rule, target, since)
    row = conn.execute(fill(template("queries/verify_rule.sql"), **parts, closed=_closed(closed))).fetchone()
    report.eligible, report.posted, report.missing, report.drifted, report.missing_closed, report.drifted_closed = row
    live = conn.execute(fill(template("queries/verify_postings_count.sql"), postings=parts["postings"])).fetchone()[0]
    report.orphaned = live - report.posted
    report.failed = _failed(conn, rule)
    if detailed:
        for category in CATEGORIES:
            if getattr(report, category):
                query = fill(template("queries/verify_keys.sql"), **parts, condition=CONDITIONS[category],
                             limit=str(int(max_keys)))
                report.keys[category] = [r[0] for r in conn.execute(query)]
        if report.failed:
            report.keys["failed"] = [
                r[0]
                for r in conn.execute(
                    "SELECT source_key FROM ledger.failure WHERE rule = %s AND resolved_at IS NULL"
                    " ORDER BY source_key LIMIT %s",
                    (rule.name, max_keys),
                )
            ]
    return report


def _closed(closed: dt.date | None) -> str:
    """verify_rule.sql's counts of missing and drifted rows dated in the closed period."""
    if closed is None:
        return "NULL::bigint AS missing_closed, NULL::bigint AS drifted_closed"
    before = f"d.effective_at < {literal((closed + dt.timedelta(days=1)).isoformat() + ' 00:00:00+00')}::timestamptz"
    return (f"count(*) FILTER (WHERE p.fingerprint IS NULL AND {before}) AS missing_closed,\n"
            f"       count(*) FILTER (WHERE p.fingerprint IS NOT NULL AND d.fingerprint IS DISTINCT FROM p.fingerprint"
            f" AND {before}) AS drifted_closed")


def _parts(rule: Rule, target: catalog.Target, since: dt.date | None) -> dict[str, str]:
    """The pieces of the rule queries: desired postings, live postings, how the two join."""
    return dict(
        desired=compiler.desired_sql(rule, target, _source(rule, target, since), fenced=False),
        postings=_postings(rule, since),
        join_on="p.key_num = d.key_num" if target.integer_key else "p.source_key = d.source_key",
    )


def orphaned(conn, rule: Rule, target: catalog.Target, since: dt.date | None = None) -> int:
    """The rule's live postings without a desired posting (verify's orphaned: what backfill
    reverses), counted in the current transaction; with ``since``, as `verify --since`
    counts them. Raises what evaluating the rule raises."""
    parts = _parts(rule, target, since if rule.date else None)
    return conn.execute(fill(template("queries/verify_orphaned.sql"), **parts)).fetchone()[0]


def _verify_ledger(conn, since: dt.date | None, detailed: bool, max_keys: int) -> LedgerReport:
    filters = {"entries": "", "lines": "ledger.line"}
    if since is not None:
        day = f"{literal(since.isoformat())}::date"
        filters = {
            "entries": f"AND e.effective_at >= {day}",
            "lines": f"(SELECT l.* FROM ledger.line AS l WHERE l.entry_id = ANY ({compiler.recent_entries(since)}))",
        }
    exact = fill(template("queries/verify_ledger.sql"), **filters)
    if since is None:
        entries, checksum = conn.execute(template("queries/verify_links.sql"), {"seed": secrets.randbits(63)}).fetchone()
        unlinked = conn.execute(exact).fetchone()[1] if checksum != 0 else 0
    else:  # recent entries only: the exact check reads them by index
        entries, unlinked = conn.execute(exact).fetchone()
    dup = conn.execute(fill(template("queries/verify_duplicates.sql"), **filters)).fetchone()[0] if unlinked else 0
    report = LedgerReport(entries, 0, dup, unlinked)
    suspect = False
    balanced = _balanced_currencies(conn) if since is None else None
    if balanced is not None:
        report.trial_balance = {currency: Decimal("0.0000") for currency in balanced}
    else:
        lines = fill(template("queries/verify_lines.sql"), **filters)
        for currency, balance, checksum in conn.execute(lines, {"seed": secrets.randbits(63)}):
            report.trial_balance[currency] = balance
            suspect = suspect or checksum != 0
    if suspect:
        report.unbalanced = conn.execute(fill(template("queries/verify_unbalanced.sql"), **filters)).fetchone()[0]
    if detailed and (report.unbalanced or dup):
        query = fill(template("queries/verify_ledger_details.sql"), limit=str(int(max_keys)), **filters)
        for problem, item in conn.execute(query):
            report.keys.setdefault(problem, []).append(item)
    return report


def _balanced_currencies(conn) -> list[str] | None:
    """The currencies of ledger.line when every entry balances in each (then each trial
    balance is 0), by one pass without grouping; None when that pass cannot tell, and the
    exact per-currency query must run. The candidates come from a sample of the table's
    pages; the pass confirms that no line has another currency."""
    (pages,) = conn.execute("SELECT pg_catalog.pg_relation_size('ledger.line')"
                            " / pg_catalog.current_setting('block_size')::bigint").fetchone()
    percent = min(100.0, 100.0 * CURRENCY_SAMPLE_PAGES / max(pages, 1))
    currencies = [r[0] for r in conn.execute(template("queries/verify_lines_currencies.sql"), {"percent": percent})]
    stray, checksum = conn.execute(template("queries/verify_lines_checksum.sql"),
                                   {"currencies": currencies, "seed": secrets.randbits(63)}).fetchone()
    return currencies if stray == 0 and checksum == 0 else None


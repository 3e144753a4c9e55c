"""The ledgeradmin command line: thin Click wrappers over the core functions.

Exit codes: 0 ok; 1 a check found problems; 2 usage, config or connection error.
"""

from __future__ import annotations

import contextlib
import functools
import re
import sys
import traceback
from pathlib import Path

import click
import psycopg

from . import __version__
from .config import load_config
from .connection import connect, redact, resolve_dsn
from .errors import LedgerError, database_hint
from .locks import LockWait
from .output import emit_json, emit_rows, format_option, table, writing

EXIT_OK, EXIT_PROBLEMS, EXIT_ERROR = 0, 1, 2


def dsn_option(f):
    return click.option(
        "--dsn",
        metavar="CONNINFO",
        help="libpq connection string or URI; default $LEDGERADMIN_DSN, then PG* variables / PGSERVICE / .pgpass.",
    )(f)


def config_option(f):
    return click.option(
        "--config",
        "config_path",
        metavar="FILE",
        type=click.Path(dir_okay=False, path_type=Path),
        help="ledger.toml to use; default $LEDGERADMIN_CONFIG, then ./ledger.toml.",
    )(f)


def rule_option(f):
    return click.option("--rule", "rules", multiple=True, metavar="NAME", help="Only this rule (repeatable).")(f)


def _milliseconds(text: str) -> int:
    """A duration as PostgreSQL writes lock_timeout: 500ms, 2s, 1min (a bare number is ms)."""
    m = re.fullmatch(r"\s*(\d+)\s*(ms|s|min)?\s*", text)
    if not m:
        raise click.BadParameter(f"{text!r} is not a duration such as 500ms, 2s or 1min")
    return int(m.group(1)) * {"ms": 1, None: 1, "s": 1000, "min": 60_000}[m.group(2)]


def lock_options(f):
    f = click.option("--lock-retries", type=click.IntRange(min=0), default=LockWait.retries, show_default=True,
                     metavar="N",
                     help="Attempts after the first when a lock was not free in time.")(f)
    return click.option(
        "--lock-timeout", default="1s", show_default=True, metavar="DURATION",
        callback=lambda ctx, param, value: _milliseconds(value),
        help="Longest wait of one attempt for a table lock (500ms, 2s, 1min; 0: no limit). Queries of the "
             "table queue behind it meanwhile, so an attempt that runs out rolls back and tries again later.",
    )(f)


def json_option(f):
    return click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")(f)


def show(result, as_json: bool, render_text) -> None:
    """Print a check's result: JSON or text."""
    if as_json:
        emit_json(result.as_dict())
    else:
        click.echo(render_text(result))


def finish(result, as_json: bool, render_text) -> None:
    """Print a check's result (JSON or text) and exit 1 when it found problems."""
    show(result, as_json, render_text)
    if not result.ok:
        sys.exit(EXIT_PROBLEMS)


def handle_errors(f):
    """Turn LedgerError and database errors into `Error: …` (+ hint) on stderr, exit 2."""

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        ctx = click.get_current_context()
        try:
            return f(*args, **kwargs)
        except LedgerError as exc:
            if ctx.find_root().params.get("show_traceback"):
                traceback.print_exc()
            click.echo(f"Error: {redact(exc.message, resolve_dsn(kwargs.get('dsn')))}", err=True)
            if exc.hint:
                click.echo(f"Hint: {exc.hint}", err=True)
            ctx.exit(EXIT_ERROR)
        except psycopg.Error as exc:
            if ctx.find_root().params.get("show_traceback"):
                traceback.print_exc()
            message = exc.diag.message_primary or str(exc).strip()
            click.echo(f"Error: database error: {redact(message, resolve_dsn(kwargs.get('dsn')))}", err=True)
            hint = database_hint(exc) or exc.diag.message_hint
            if hint:
                click.echo(f"Hint: {hint}", err=True)
            ctx.exit(EXIT_ERROR)

    return wrapper


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(__version__, prog_name="ledgeradmin")
@click.option("--traceback", "show_traceback", is_flag=True, help="Show the full traceback of an error.")
def main(show_traceback: bool) -> None:
    """Accounting sync inside PostgreSQL: posting rules compiled into triggers.

    \b
    Example:
      ledgeradmin --version
      ledgeradmin migrate --dsn "dbname=shop"
      ledgeradmin install --config ledger.toml --dsn "dbname=shop"
    """


@main.command()
@dsn_option
@click.option("--dry-run", is_flag=True, help="List the pending migrations; apply nothing.")
@handle_errors
def migrate(dsn: str | None, dry_run: bool) -> None:
    """Create or upgrade the ledger schema (idempotent, under a lock).

    \b
    Example:
      ledgeradmin migrate --dsn "host=db.internal dbname=shop user=ledger_owner"
    """
    from .migrate import READER_GRANTS, reader_role_missing
    from .migrate import migrate as run

    applied = run(dsn, dry_run=dry_run)
    verb = "would apply" if dry_run else "applied"
    if applied:
        for m in applied:
            click.echo(f"{verb} {m}")
    else:
        click.echo("ledger schema is up to date")
    if not dry_run and reader_role_missing(dsn):
        click.echo("Warning: role ledger_reader does not exist (creating it needs CREATEROLE): auditors and "
                   f"monitoring roles read the journal through it. Create it, then: {READER_GRANTS}", err=True)


@main.command()
@dsn_option
@config_option
@rule_option
@click.option("--dry-run", is_flag=True, help="Run the whole install, then roll it back.")
@lock_options
@handle_errors
def install(dsn, config_path, rules, dry_run, lock_timeout, lock_retries) -> None:
    """Compile the rules into triggers and install them, in one transaction.

    Idempotent: run it again after changing ledger.toml; triggers are replaced in place.

    \b
    Example:
      ledgeradmin install --config ledger.toml
      ledgeradmin install --rule sale --dry-run
    """
    from .install import install as run

    config = load_config(config_path)
    with connect(dsn) as conn:
        conn.add_notice_handler(_echo_warning)
        result = run(conn, config, rules, dry_run=dry_run, wait=LockWait(lock_timeout, lock_retries),
                     on_retry=lambda message: click.echo(message, err=True))
    _echo_install(result, config, "dry run, rolled back: " if dry_run else "")


def _echo_warning(diag) -> None:
    """A WARNING the install script raised (a stray trigger it may not drop), on stderr."""
    if diag.severity_nonlocalized == "WARNING":
        click.echo(f"Warning: {diag.message_primary}", err=True)


def _echo_install(result, config, prefix: str) -> None:
    for label, names in (("installed", result.installed), ("updated", result.updated),
                         ("repaired triggers of", result.repaired), ("unchanged", result.unchanged)):
        for name in names:
            click.echo(f"{prefix}{label} rule {name} ({config.rules[name].source})")
    if result.accounts_changed:
        click.echo(f"{prefix}{result.accounts_changed} account(s) added or changed in ledger.account")
    for name, count in result.relinked.items():
        click.echo(f"{prefix}rule {name}: its key changed type; the links of {count:,} live entries now key them "
                   "in the new form")
    for name, source in result.not_in_config:
        click.echo(f"Warning: rule {name} is installed but not in the config: its triggers still post from "
                   f"{source}. Removed from the config? `ledgeradmin uninstall --rule {name}`. Renamed? "
                   f"`ledgeradmin rename {name} NEW`, which keeps its entries.", err=True)


@main.command()
@dsn_option
@rule_option
@lock_options
@handle_errors
def uninstall(dsn, rules, lock_timeout, lock_retries) -> None:
    """Remove the triggers and functions of installed rules; every journal row stays.

    \b
    Example:
      ledgeradmin uninstall --rule manufacturing
    """
    from .install import uninstall as run

    with connect(dsn) as conn:
        removed = run(conn, rules, wait=LockWait(lock_timeout, lock_retries),
                      on_retry=lambda message: click.echo(message, err=True))
    for name in removed:
        click.echo(f"uninstalled rule {name}")
    if not removed:
        click.echo("no rule installed")


@main.command()
@dsn_option
@config_option
@click.argument("old")
@click.argument("new")
@click.option("--dry-run", is_flag=True, help="Run the whole rename, then roll it back.")
@lock_options
@handle_errors
def rename(dsn, config_path, old, new, dry_run, lock_timeout, lock_retries) -> None:
    """Rename rule OLD to NEW (the name now in the config), keeping its entries.

    In one transaction: OLD's live entries and open failures are handed over to NEW,
    OLD's triggers are removed and NEW's installed. Without it, NEW would find none of
    its rows posted, and backfill would post them all a second time. Entries keep the
    name of the rule that wrote them. An entry of OLD whose row NEW has posted already
    is reversed. Refused, with nothing changed, when OLD's entries are not NEW's rows.

    \b
    Example:
      ledgeradmin rename sale sales --dry-run
    """
    from .rename import rename as run

    config = load_config(config_path)
    with connect(dsn) as conn:
        result = run(conn, config, old, new, dry_run=dry_run, wait=LockWait(lock_timeout, lock_retries),
                     on_retry=lambda message: click.echo(message, err=True))
    prefix = "dry run, rolled back: " if dry_run else ""
    click.echo(f"{prefix}renamed rule {old} to {new} ({result.source}): {result.handed_over:,} live entries and "
               f"{result.failures:,} open failures handed over")
    if result.reversed:
        click.echo(f"{prefix}reversed {result.reversed:,} entries of rule {old} whose rows rule {new} had "
                   "posted already")
    if result.failures_closed:
        click.echo(f"{prefix}closed {result.failures_closed:,} open failures of rule {old} whose keys rule "
                   f"{new} has open failures of")
    if result.uninstalled:
        click.echo(f"{prefix}uninstalled rule {old}")
    _echo_install(result.installed, config, prefix)


@main.group(invoke_without_command=True)
@dsn_option
@json_option
@click.pass_context
@handle_errors
def period(ctx, dsn, as_json) -> None:
    """Closed periods: the date the books are closed through, and its changes.

    No entry dated on or before that date (UTC) can be written: a posting that would
    be is refused (on_error = block) or recorded as a failure (defer). Reversals of
    older entries are dated when they are written, so deleting an old row still
    posts. Without a subcommand: what is in force, and the changes, latest first.

    \b
    Example:
      ledgeradmin period close 2026-10-31
      ledgeradmin period reopen 2026-10-01
      ledgeradmin period
    """
    if ctx.invoked_subcommand is not None:
        return
    from .period import history

    with connect(dsn) as conn:
        changes = history(conn)
    current = changes[0].closed_through if changes else None
    if as_json:
        emit_json({"closed_through": current and current.isoformat(), "changes": [c.as_dict() for c in changes]})
        return
    click.echo(f"the books are closed through {current}" if current else "every period is open")
    if changes:
        click.echo(table([{"closed_through": c.closed_through or "(all open)", "changed_at": c.changed_at,
                           "changed_by": c.changed_by} for c in changes],
                         ["closed_through", "changed_at", "changed_by"]))


def _echo_period(result, action: str) -> None:
    prefix = "dry run, rolled back: " if result.dry_run else ""
    now = f"closed through {result.closed_through}" if result.closed_through else "open in every period"
    was = f"closed through {result.previous}" if result.previous else "open"
    click.echo(f"{prefix}{action}: the books are {now} (were {was})")
    if result.open_failures and result.closed_through:
        click.echo(f"Warning: {result.open_failures:,} open failure(s) in ledger.failure: those of rows dated on or "
                   f"before {result.closed_through} cannot post now (`ledgeradmin verify --detailed`).", err=True)


@period.command("close")
@dsn_option
@click.argument("through", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE")
@click.option("--dry-run", is_flag=True, help="Check and make the change, then roll it back.")
@lock_options
@handle_errors
def period_close(dsn, through, dry_run, lock_timeout, lock_retries) -> None:
    """Close the books through DATE (UTC): no entry dated on or before it can be written.

    DATE must be before today and after the current close. Check the period first:
    `ledgeradmin verify --since FIRST-DAY` and `ledgeradmin backfill --since FIRST-DAY`.

    \b
    Example:
      ledgeradmin period close 2026-10-31
    """
    from .period import close

    with connect(dsn) as conn:
        result = close(conn, through.date(), dry_run=dry_run, wait=LockWait(lock_timeout, lock_retries),
                       on_retry=lambda message: click.echo(message, err=True))
    _echo_period(result, "closed")


@period.command("reopen")
@dsn_option
@click.argument("first_day", required=False, type=click.DateTime(formats=["%Y-%m-%d"]), metavar="[DATE]")
@click.option("--all", "every", is_flag=True, help="Open every period.")
@click.option("--dry-run", is_flag=True, help="Check and make the change, then roll it back.")
@lock_options
@handle_errors
def period_reopen(dsn, first_day, every, dry_run, lock_timeout, lock_retries) -> None:
    """Open the days from DATE on again (the books stay closed through the day before).

    \b
    Example:
      ledgeradmin period reopen 2026-10-01
      ledgeradmin period reopen --all
    """
    from .period import reopen

    if (first_day is None) == (not every):
        raise click.UsageError("give either DATE or --all")
    with connect(dsn) as conn:
        result = reopen(conn, first_day and first_day.date(), dry_run=dry_run,
                        wait=LockWait(lock_timeout, lock_retries),
                        on_retry=lambda message: click.echo(message, err=True))
    _echo_period(result, "reopened")


@main.command("sql")
@dsn_option
@config_option
@rule_option
@click.option("--out", "out_dir", type=click.Path(file_okay=False, path_type=Path),
              help="Write one file per rule (plus the shared part) into this directory.")
@handle_errors
def sql_command(dsn, config_path, rules, out_dir) -> None:
    """Print the SQL that `install` runs, for migration pipelines.

    The database is read (never written) to resolve tables and keys and to check the rules.

    \b
    Example:
      ledgeradmin sql > ledger_install.sql
      ledgeradmin sql --out migrations/ledgeradmin/
    """
    from .install import script

    config = load_config(config_path)
    with connect(dsn) as conn:
        with conn.transaction(force_rollback=True):
            s = script(conn, config, rules)
    if out_dir is None:
        click.echo(s.text(), nl=False)
        return
    hint = "--out a directory that exists or can be created, writable by this user"
    with writing(str(out_dir), hint):
        out_dir.mkdir(parents=True, exist_ok=True)
    for name, text in s.files().items():
        with writing(str(out_dir / name), hint):
            (out_dir / name).write_text(text, encoding="utf-8")
        click.echo(str(out_dir / name))


@main.command()
@dsn_option
@config_option
@rule_option
@json_option
@handle_errors
def status(dsn, config_path, rules, as_json) -> None:
    """Per rule: source table, trigger installed / enabled / up to date, on_error.

    Exits 1 when any rule is not ok.

    \b
    Example:
      ledgeradmin status
      ledgeradmin status --json
    """
    from .period import closed_through
    from .status import status as run

    config = load_config(config_path)
    with connect(dsn) as conn:
        result = run(conn, config, rules)
        closed = closed_through(conn, required=False)
    if as_json:
        emit_json({"rules": [r.as_dict() for r in result], "ok": all(r.ok for r in result),
                   "closed_through": closed and closed.isoformat()})
    else:
        rows = [
            {"rule": r.rule, "source": r.source, "on_error": r.on_error, "trigger": r.state, "detail": r.detail}
            for r in result
        ]
        click.echo(table(rows, ["rule", "source", "on_error", "trigger", "detail"]))
        if closed:
            click.echo(f"the books are closed through {closed} (`ledgeradmin period`)")
    if not all(r.ok for r in result):
        sys.exit(EXIT_PROBLEMS)


@main.command()
@dsn_option
@config_option
@rule_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE",
              help="Only rows whose rule date is on or after DATE (and entries dated so).")
@click.option("--detailed", is_flag=True, help="List the source keys behind each non-zero count.")
@click.option("--max-keys", default=20, show_default=True, type=click.IntRange(min=1),
              help="Keys listed per count with --detailed.")
@click.option("--prometheus", "prometheus_file", type=click.Path(dir_okay=False, path_type=Path), metavar="FILE",
              help="Also write a node_exporter textfile (atomically).")
@json_option
@handle_errors
def verify(dsn, config_path, rules, since, detailed, max_keys, prometheus_file, as_json) -> None:
    """Is the ledger in sync with the source tables, and if not, where?

    Reports per rule eligible / posted / missing / orphaned / drifted / failed rows and the
    trigger state, and for the whole ledger unbalanced entries, duplicate live entries and
    the trial balance. Read only, one snapshot; never blocks writers.
    Exits 0 in sync, 1 problems found, 2 could not run.

    \b
    Example:
      ledgeradmin verify
      ledgeradmin verify --since 2026-11-01 --detailed --prometheus /var/lib/node_exporter/ledgeradmin.prom
    """
    from .metrics import check_writable, write_textfile
    from .verify import verify as run
    from .verify_report import render_text

    config = load_config(config_path)
    if prometheus_file:
        check_writable(prometheus_file)  # before a verify that may take long
    with connect(dsn) as conn:
        result = run(conn, config, rules, since=since.date() if since else None, detailed=detailed,
                     max_keys=max_keys)
    if prometheus_file:
        try:
            write_textfile(result, prometheus_file)
        except LedgerError:  # verify ran: its report first, then the error (exit 2)
            show(result, as_json, render_text)
            raise
    finish(result, as_json, render_text)


@main.command()
@dsn_option
@config_option
@rule_option
@click.option("--since", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE",
              help="Only rows whose rule date is on or after DATE (and entries dated so), as `verify --since`.")
@click.option("--key", "keys", multiple=True, metavar="KEY",
              help="Only this source key of the one --rule (repeatable), as verify --detailed and report journal "
                   "show it; the keys are reconciled in one transaction.")
@click.option("--limit", type=click.IntRange(min=1), metavar="N", help="Repair at most N rows in this run.")
@click.option("--batch-size", default=10_000, show_default=True, type=click.IntRange(min=1), metavar="N",
              help="Source rows per batch (one transaction each).")
@click.option("--max-reversals", default=1_000, show_default=True, type=click.IntRange(min=0), metavar="N",
              help="Refuse, before any change, a rule with more live entries to reverse (rows gone or no "
                   "longer posting).")
@click.option("--allow-identical", is_flag=True,
              help="Post rows even when identical entries of theirs are live under a rule name the config does "
                   "not have (refused by default: a rule renamed without `ledgeradmin rename`).")
@click.option("--dry-run", is_flag=True, help="Report what would be repaired; change nothing.")
@click.option("--detailed", is_flag=True, help="With --dry-run: list the keys that would change.")
@click.option("--max-keys", default=20, show_default=True, type=click.IntRange(min=1),
              help="Keys listed per count with --detailed.")
@json_option
@handle_errors
def backfill(dsn, config_path, rules, since, keys, limit, batch_size, max_reversals, allow_identical, dry_run,
             detailed, max_keys, as_json) -> None:
    """Post missing entries, reverse orphans, repost drift, retry deferred failures.

    Safe beside live traffic and beside another backfill: each batch locks its rows
    (skipping rows a writer holds), commits on its own, and a killed run resumes by
    running it again. History keeps the dates of the rules' `date` expressions.
    A rule with more entries to reverse than --max-reversals is refused before
    anything changes: so many usually mean the rule lost sight of its rows (a dropped
    partition, a replaced table). So is a rule whose rows are booked already under a
    name the config no longer has (renamed without `ledgeradmin rename`).
    Exits 0 when everything tried is repaired, 1 when rows still fail (with --dry-run:
    when a rule could not be checked or would be refused), 2 could not run.

    \b
    Example:
      ledgeradmin backfill --dry-run --detailed
      ledgeradmin backfill --rule sale --limit 100
      ledgeradmin backfill --since 2026-11-24
      ledgeradmin backfill --rule sale --key 42
    """
    from .backfill import backfill as run
    from .backfill_report import ProgressReporter, render_text

    config = load_config(config_path)
    reporter = None if dry_run or as_json and not sys.stderr.isatty() else ProgressReporter()
    with connect(dsn) as conn:
        result = run(conn, config, rules, limit=limit, batch_size=batch_size, dry_run=dry_run, detailed=detailed,
                     max_keys=max_keys, max_reversals=max_reversals, allow_identical=allow_identical,
                     since=since.date() if since else None, keys=keys, progress=reporter)
    if reporter:
        reporter.close()
    finish(result, as_json, render_text)


@main.group()
def report() -> None:
    """Reports on the journal: trial balance, account ledger, the journal itself.

    \b
    Example:
      ledgeradmin report trial-balance
      ledgeradmin report account 1100 --json
      ledgeradmin report journal --rule sale --key 42
    """


@report.command("trial-balance")
@dsn_option
@click.option("--as-of", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE",
              help="Entries effective up to and including DATE (UTC); default: all.")
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE",
              help="A period from DATE (UTC): the opening balance before it, and the period's debits and credits.")
@format_option
@handle_errors
def trial_balance(dsn, as_of, date_from, fmt) -> None:
    """Per account: debits, credits, balance; per currency the totals net to 0.

    \b
    Example:
      ledgeradmin report trial-balance --as-of 2026-12-31
      ledgeradmin report trial-balance --from 2026-11-01 --as-of 2026-11-30 --csv > tb.csv
    """
    from .report import trial_balance as run

    from .report import with_totals

    with connect(dsn) as conn:
        rows = run(conn, as_of.date() if as_of else None, date_from.date() if date_from else None)
    columns = ["account", "name", "type", "currency", *(["opening"] if date_from else []), "debit", "credit",
               "balance"]
    emit_rows(with_totals(rows) if fmt == "table" else rows, columns, fmt, right=columns[4:])


@report.command("account")
@dsn_option
@click.argument("code")
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE", help="First day (UTC).")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE", help="Last day (UTC).")
@format_option
@handle_errors
def account_report(dsn, code, date_from, date_to, fmt) -> None:
    """An account's entries with running balance, each traceable to its source row.

    \b
    Example:
      ledgeradmin report account 1100 --from 2026-11-01 --to 2026-11-30
    """
    from .report import account_ledger

    columns = ["effective_at", "entry", "rule", "source_key", "reverses", "memo", "currency", "debit", "credit",
               "balance"]
    with connect(dsn) as conn:
        rows = account_ledger(conn, code, date_from.date() if date_from else None, date_to.date() if date_to else None)
        with contextlib.closing(rows):  # ends its cursor first when the output stops early (`| head`)
            emit_rows(rows, columns, fmt, right=columns[7:])


@report.command("journal")
@dsn_option
@click.option("--from", "date_from", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE", help="First day (UTC).")
@click.option("--to", "date_to", type=click.DateTime(formats=["%Y-%m-%d"]), metavar="DATE", help="Last day (UTC).")
@click.option("--rule", metavar="NAME", help="Only the entries of this rule.")
@click.option("--key", "source_key", metavar="KEY",
              help="Only the entries of this source key (a row's history: its entries and their reversals).")
@format_option
@handle_errors
def journal_report(dsn, date_from, date_to, rule, source_key, fmt) -> None:
    """The journal: entries in date order with their lines, each traceable to its source row.

    \b
    Example:
      ledgeradmin report journal --from 2026-11-01 --to 2026-11-30 --csv > journal.csv
      ledgeradmin report journal --rule sale --key 42
    """
    from .report import journal

    columns = ["effective_at", "entry", "posted_at", "rule", "source_key", "reverses", "memo", "line_no", "account",
               "currency", "debit", "credit"]
    with connect(dsn) as conn:
        rows = journal(conn, date_from.date() if date_from else None, date_to.date() if date_to else None, rule,
                       source_key)
        with contextlib.closing(rows):  # ends its cursor first when the output stops early (`| head`)
            emit_rows(rows, columns, fmt, right=columns[10:])


@main.command()
@click.option("--dsn", metavar="CONNINFO", help="Use this (empty) database instead of a throwaway local server.")
@click.option("--keep", is_flag=True, help="Leave the throwaway server running and print its DSN.")
@handle_errors
def demo(dsn, keep) -> None:
    """Show the whole product on a throwaway PostgreSQL: a business day, an outage, a repair.

    Starts a local server (as an unprivileged user when run as root), loads examples/shop,
    migrates, installs the rules, writes through a real client, and shows status, verify,
    backfill and the trial balance.

    \b
    Example:
      ledgeradmin demo
      ledgeradmin demo --keep
    """
    from .demo import run

    run(dsn=dsn, keep=keep, echo=click.echo)


@main.command()
@click.option("--out", "out_path", default="ledger.toml", show_default=True, type=click.Path(dir_okay=False, path_type=Path),
              help="Where to write the starter config ('-' for stdout).")
@click.option("--from-table", "table", metavar="SCHEMA.TABLE", help="Draft the rule from this table's columns.")
@click.option("--force", is_flag=True, help="Overwrite an existing file.")
@dsn_option
@handle_errors
def init(out_path, table, force, dsn) -> None:
    """Write a commented starter ledger.toml.

    \b
    Example:
      ledgeradmin init
      ledgeradmin init --from-table public.invoices --out - --dsn "dbname=shop"
    """
    from .starter import starter

    if table:
        with connect(dsn) as conn:
            text = starter(conn, table)
    else:
        text = starter()
    if str(out_path) == "-":
        click.echo(text, nl=False)
        return
    if out_path.exists() and not force:
        raise LedgerError(f"{out_path} exists", hint="pass --force to overwrite, or --out another file")
    with writing(str(out_path), "--out a file in an existing directory writable by this user, or '-' for stdout"):
        out_path.write_text(text, encoding="utf-8")
    click.echo(f"wrote {out_path}: review it, then `ledgeradmin install --dry-run --config {out_path}`")


if __name__ == "__main__":  # pragma: no cover
    main()

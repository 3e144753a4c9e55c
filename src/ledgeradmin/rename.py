"""rename: a rule keeps its entries under a new name.

A rule's name is in every posting link and failure it writes, so a rule renamed in
ledger.toml and installed under the new name would find none of its rows posted: backfill
would post them all a second time, and an edit of an old row would post it again beside
its old entry. ``rename`` hands the old name's live postings and open failures over to
the new one, reverses an old entry whose row the new name has posted already, removes the
old name's triggers and installs the new name's, all in one transaction. Entries are
immutable: those written before keep the old name.
"""

from __future__ import annotations

from dataclasses import dataclass

import psycopg

from . import catalog, compiler, install, locks
from .compiler import fill, literal, template
from .config import Config, Rule
from .errors import ConfigError, LedgerError, database_hint, is_row_error
from .migrate import require_schema


@dataclass
class RenameResult:
    old: str
    new: str
    source: str
    handed_over: int = 0  # live entries now linked to the new name
    reversed: int = 0  # old entries of rows the new name had posted already
    failures: int = 0  # open failures moved
    failures_closed: int = 0  # open failures of keys the new name had an open failure of
    uninstalled: bool = False  # the old name's triggers were removed
    installed: install.InstallResult | None = None  # what installing the new name did
    dry_run: bool = False


def rename(conn: psycopg.Connection, config: Config, old: str, new: str, *, dry_run: bool = False,
           wait: locks.LockWait = locks.LockWait(), on_retry=None) -> RenameResult:
    """Hand rule ``old``'s live entries and open failures over to rule ``new`` of the
    config, uninstall ``old`` and install ``new``, in one transaction (rolled back with
    ``dry_run``). Refused, with nothing changed, when ``new`` could not be ``old``."""
    require_schema(conn)
    rule = config.rules.get(new)
    if rule is None:
        raise ConfigError(f'rule "{new}" is not in the config', hint="add it to ledger.toml first: rename hands "
                          f'rule "{old}"\'s entries over to a rule of the config')
    if old in config.rules:
        raise ConfigError(f'rule "{old}" is still in the config',
                          hint=f'a renamed rule has its new name only: remove [rules.{old}] from ledger.toml')

    def attempt() -> RenameResult:
        with conn.transaction(force_rollback=dry_run), locks.bounded(conn, wait):
            target = catalog.resolve(conn, rule)
            catalog.require_every_row(conn, rule, target)  # else rows it cannot see would look gone
            registered = conn.execute("SELECT source_table::oid, source FROM ledger.rule WHERE name = %s",
                                      (old,)).fetchone()
            if registered and registered[0] != target.oid:
                raise LedgerError(f'rename refused, nothing was changed: rule "{old}" posts from {registered[1]}, '
                                  f'rule "{new}" from {target.label}: not the same rows',
                                  hint=f'to stop rule "{old}", `ledgeradmin uninstall --rule {old}`')
            # First, as its triggers lock the table (the TRIGGER privilege suffices, where LOCK
            # TABLE would need UPDATE): the table's writers wait from here to the commit, so
            # none posts under either name while the links are read and handed over.
            installed = install.apply(conn, config, [new], dry_run=dry_run)
            catalog.pin_settings(conn, every_row=True)
            values = {"old": literal(old), "new": literal(new)}
            live, found, misfit, failures = conn.execute(fill(
                template("queries/rename_check.sql"), **values, source=target.ident,
                row_match=compiler.row_match(target, "p.source_key", "p.key_num"),
                integer_key="true" if target.integer_key else "false",
            )).fetchone()
            _require_same_rows(old, new, target, registered, live, found, misfit, failures)
            result = RenameResult(old, new, target.label, dry_run=dry_run)
            result.reversed = conn.execute(fill(template("queries/rename_reverse.sql"), **values)).fetchone()[0]
            result.handed_over, result.failures, result.failures_closed = conn.execute(
                fill(template("queries/rename_handover.sql"), **values)).fetchone()
            if registered:
                for statement in compiler.uninstall_statements(old):
                    conn.execute(statement)
                result.uninstalled = True
            installed.not_in_config = install.not_in_config(conn, config)
            result.installed = installed
            return result

    try:
        return locks.retrying(conn, attempt, wait, action="rename", mode="ACCESS EXCLUSIVE",
                              tables=lambda: [rule.source], on_retry=on_retry)
    except psycopg.Error as exc:
        raise LedgerError(f"rename failed, nothing was changed: {exc.diag.message_primary or exc}",
                          hint=database_hint(exc) or exc.diag.message_hint) from None


def _require_same_rows(old: str, new: str, target: catalog.Target, registered, live: int, found: int,
                       misfit: int, failures: int) -> None:
    """Refuse a rename that would link rule ``old``'s entries to rows they were not posted for."""
    refused = "rename refused, nothing was changed: "
    if not registered and not live and not failures:
        raise LedgerError(refused + f'rule "{old}" is not installed and has no live entries or open failures',
                          hint="installed rules: `ledgeradmin status`; every rule with entries: "
                               "SELECT DISTINCT rule FROM ledger.posting")
    if misfit:
        form = "one integer column" if target.integer_key else "not one integer column"
        raise LedgerError(refused + f'{misfit:,} live entries of rule "{old}" are keyed in another form than '
                          f'rule "{new}" keys the rows of {target.label} ({form}): not the same rows',
                          hint="a rename keeps `source` and `key`; change them afterwards, as for any rule. If the "
                               "key column changed type since the rule was installed, run `ledgeradmin install` "
                               "with the config before the rename first (it relinks the entries), then rename")
    if live and not found:
        raise LedgerError(refused + f'none of the {live:,} live entries of rule "{old}" has its key in '
                          f'{target.label}: not the same rows',
                          hint=f'check `source` and `key` of rule "{new}"')


def names_not_in_config(conn: psycopg.Connection, config: Config) -> list[str]:
    """Names with live entries that no rule of the config has (removed or renamed rules)."""
    return [r[0] for r in conn.execute(template("queries/rename_names.sql"), {"names": list(config.rules)})]


def identical_elsewhere(conn: psycopg.Connection, rule: Rule, target: catalog.Target,
                        names: list[str]) -> dict[str, int]:
    """By name of ``names``: the rows ``rule`` has not posted whose identical entry is live
    under that name — a rule renamed without `rename`, whose rows backfill would book a
    second time. Empty when a row of those keys cannot be evaluated (nothing is known)."""
    if not names:
        return {}
    match = compiler.row_match(target, "f.source_key", "f.key_num")
    rows = f"(SELECT r.* FROM {target.ident} AS r WHERE EXISTS (SELECT FROM f WHERE {match}))"
    query = fill(template("queries/rename_identical.sql"), rule=literal(rule.name),
                 names=f"ARRAY[{', '.join(literal(n) for n in names)}]::text[]",
                 desired=compiler.desired_sql(rule, target, rows, fenced=False))
    with conn.transaction():
        catalog.pin_settings(conn, every_row=True)
        try:
            with conn.transaction():
                return dict(conn.execute(query).fetchall())
        except psycopg.Error as exc:
            if not is_row_error(exc):
                raise
            return {}


def identical_refusal(rule: str, counts: dict[str, int]) -> str:
    """What backfill says of a rule that would post rows identical to another name's entries."""
    return "; ".join(f"would post {n:,} rows whose identical entries are live under rule \"{name}\", which is not "
                     f"in the config (renamed to \"{rule}\"?)" for name, n in counts.items())

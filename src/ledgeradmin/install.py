"""install / uninstall / sql: the compiled rules, put into the database in one transaction.

``script`` is the single source of the SQL: ``install`` executes exactly its statements and
``ledgeradmin sql`` prints them, so a migration pipeline applying the printed SQL reaches
the same installed state.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import psycopg

from . import catalog, compiler, locks
from .config import Config
from .errors import ConfigError, LedgerError, database_hint
from .migrate import require_schema
from .status import status

HEADER = "-- ledgeradmin install script. Apply in one transaction; re-applying is harmless."


@dataclass
class Script:
    """The install SQL, in parts: shared (core functions, accounts) and one part per rule."""

    shared: list[str]
    rules: list[compiler.CompiledRule]

    def statements(self) -> list[str]:
        return [*self.shared, *(s for r in self.rules for s in r.statements)]

    def text(self) -> str:
        return render(HEADER, self.statements())

    def files(self) -> dict[str, str]:
        """One file per rule plus the shared part, named so that they sort in apply order."""
        out = {"00_ledgeradmin_shared.sql": render(HEADER, self.shared)}
        for i, r in enumerate(self.rules, start=1):
            out[f"{i:02d}_rule_{r.rule.name}.sql"] = render(
                f"-- ledgeradmin rule {r.rule.name} on {r.target.label} (checksum {r.checksum}).", list(r.statements)
            )
        return out


def render(header: str, statements: list[str]) -> str:
    return header + "\n\n" + "".join(f"{s};\n\n" for s in statements)


def compile_rules(conn: psycopg.Connection, config: Config, names=None) -> list[compiler.CompiledRule]:
    """Resolve, check and compile the selected rules; all problems reported at once."""
    compiled, problems = [], []
    for rule in config.select(names):
        try:
            target = catalog.resolve(conn, rule)
            catalog.check_source(conn, rule, target)
            catalog.check_key_types(conn, rule, target)
            catalog.check_expressions(conn, rule, target)
            catalog.check_determinism(conn, rule)
            c = compiler.compile_rule(rule, target, catalog.input_columns(conn, rule, target))
            catalog.check_query(
                conn,
                compiler.desired_sql(rule, target, f"(SELECT * FROM {target.ident} LIMIT 0)"),
                f'rule "{rule.name}"',
            )
            compiled.append(c)
        except ConfigError as exc:
            problems.append(exc)
    if len(problems) == 1:
        raise problems[0]
    if problems:
        raise ConfigError("\n".join(p.message for p in problems), hint=problems[0].hint)
    return compiled


def script(conn: psycopg.Connection, config: Config, names=None) -> Script:
    """The install SQL of the selected rules (checked against the database of ``conn``)."""
    rules = compile_rules(conn, config, names)
    return Script(locks.ddl_lock_statements() + compiler.core_statements() + compiler.accounts_statement(config),
                  rules)


@dataclass
class InstallResult:
    installed: list[str] = field(default_factory=list)  # new rules
    updated: list[str] = field(default_factory=list)  # checksum changed
    unchanged: list[str] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)  # same SQL, but triggers were missing or disabled
    accounts_changed: int = 0  # accounts added or renamed/retyped
    relinked: dict[str, int] = field(default_factory=dict)  # rule -> links rewritten in its key's new form
    not_in_config: list[tuple[str, str]] = field(default_factory=list)  # (name, source) installed, not in config
    dry_run: bool = False


def install(conn: psycopg.Connection, config: Config, names=None, *, dry_run: bool = False,
            wait: locks.LockWait = locks.LockWait(), on_retry=None) -> InstallResult:
    """Install the selected rules (all by default) in one transaction; idempotent.

    Writers never see a moment without triggers: functions and triggers are replaced in
    place (CREATE OR REPLACE) and become visible at commit. With ``dry_run`` everything is
    executed and then rolled back. A lock not free within ``wait.timeout_ms`` rolls the
    attempt back, so that the table's writers do not queue behind it; ``wait.retries``
    more attempts follow (locks.py).
    """
    require_schema(conn)

    def attempt() -> InstallResult:
        with conn.transaction(force_rollback=dry_run), locks.bounded(conn, wait):
            result = apply(conn, config, names, dry_run=dry_run)
            result.not_in_config = not_in_config(conn, config)
            return result

    try:
        return locks.retrying(conn, attempt, wait, action="install", mode="SHARE ROW EXCLUSIVE",
                              tables=lambda: [rule.source for rule in config.select(names)], on_retry=on_retry)
    except psycopg.Error as exc:
        raise LedgerError(f"install failed, nothing was changed: {exc.diag.message_primary or exc}",
                          hint=database_hint(exc) or exc.diag.message_hint) from None


def apply(conn: psycopg.Connection, config: Config, names=None, *, dry_run: bool = False) -> InstallResult:
    """install's work, in the caller's transaction: run the script, say what it changed."""
    result = InstallResult(dry_run=dry_run)
    before = {st.rule: st for st in status(conn, config, names)}
    s = script(conn, config, names)
    with conn.cursor() as cur:
        for statement in s.shared:
            cur.execute(statement)
            if statement.startswith("INSERT INTO ledger.account"):
                result.accounts_changed = cur.rowcount
        for r in s.rules:
            for statement in r.statements:
                cur.execute(statement)
                if statement.startswith("UPDATE ledger.posting") and cur.rowcount:
                    result.relinked[r.rule.name] = cur.rowcount
    for r in s.rules:
        name, was = r.rule.name, before.get(r.rule.name)
        if was is None or was.state in ("MISSING", "NO SOURCE") and not was.registered:
            result.installed.append(name)
        elif was.state == "OUTDATED" or was.checksum != r.checksum:
            result.updated.append(name)
        elif was.state != "ok":
            result.repaired.append(name)
        else:
            result.unchanged.append(name)
    return result


def not_in_config(conn: psycopg.Connection, config: Config) -> list[tuple[str, str]]:
    """(name, source) of every installed rule the config does not have: its triggers still post."""
    return conn.execute("SELECT name, source FROM ledger.rule WHERE name <> ALL (%s) ORDER BY name",
                        (list(config.rules),)).fetchall()


def uninstall(conn: psycopg.Connection, names=None, *, wait: locks.LockWait = locks.LockWait(),
              on_retry=None) -> list[str]:
    """Remove the posting functions and triggers of the named installed rules (all when
    none are named). Every journal entry stays. Returns the rules removed. Dropping a
    trigger locks its table against readers too: lock waits are bounded as for install."""
    require_schema(conn)

    def attempt() -> list[str]:
        with conn.transaction(), locks.bounded(conn, wait):
            removed = _installed(conn, names)
            with conn.cursor() as cur:
                for name in removed:
                    for statement in compiler.uninstall_statements(name):
                        cur.execute(statement)
        return removed

    def tables() -> list[str]:
        wanted = list(names) if names else None
        return [r[0] for r in conn.execute(
            "SELECT source FROM ledger.rule WHERE %(names)s::text[] IS NULL OR name = ANY (%(names)s)",
            {"names": wanted})]

    return locks.retrying(conn, attempt, wait, action="uninstall", mode="ACCESS EXCLUSIVE", tables=tables,
                          on_retry=on_retry)


def _installed(conn: psycopg.Connection, names) -> list[str]:
    """The installed rules among ``names`` (all when none are named); an unknown name is an error."""
    installed = [r[0] for r in conn.execute("SELECT name FROM ledger.rule ORDER BY name")]
    if names:
        unknown = [n for n in names if n not in installed]
        if unknown:
            raise LedgerError(f"rule {', '.join(unknown)} is not installed",
                              hint=f"installed: {', '.join(installed) or '(none)'}")
        installed = [n for n in installed if n in names]
    return installed

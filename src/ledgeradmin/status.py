"""Per rule: is its trigger installed, enabled and up to date with the config?"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import psycopg

from . import catalog, compiler
from .config import Config
from .errors import ConfigError, LedgerError
from .migrate import require_schema

OK = "ok"
INVALID = "INVALID"  # the rule no longer fits its table (install would refuse it)
EVENTS = ("insert", "update", "delete", "truncate")


@dataclass
class RuleStatus:
    rule: str
    source: str
    on_error: str
    installed: bool  # posting function and all four triggers exist
    enabled: bool  # no trigger disabled (session_replication_role = replica skips them too)
    up_to_date: bool  # installed SQL equals what the config compiles to today
    state: str  # ok | MISSING | INVALID | DISABLED | OUTDATED | NO SOURCE | NOT IN CONFIG
    detail: str = ""
    checksum: str | None = None  # recorded at the last install (None: never installed)

    @property
    def registered(self) -> bool:
        return self.checksum is not None

    @property
    def ok(self) -> bool:
        return self.state == OK

    def as_dict(self) -> dict:
        return asdict(self)


def status(conn: psycopg.Connection, config: Config, names=None) -> list[RuleStatus]:
    """The status of the selected rules (all, plus installed rules missing from the config)."""
    require_schema(conn)
    registry = {
        name: (source, checksum)
        for name, source, checksum in conn.execute("SELECT name, source, checksum FROM ledger.rule")
    }
    out = []
    for rule in config.select(names):
        out.append(_rule_status(conn, rule, registry.get(rule.name)))
    if not names:
        for name in sorted(set(registry) - set(config.rules)):
            out.append(
                RuleStatus(name, registry[name][0], "?", True, True, False, "NOT IN CONFIG",
                           f"installed, but not in the config: `ledgeradmin uninstall --rule {name}`, or if it was "
                           f"renamed `ledgeradmin rename {name} NEW`",
                           registry[name][1])
            )
    return out


def _rule_status(conn: psycopg.Connection, rule, registered) -> RuleStatus:
    base = dict(rule=rule.name, source=rule.source, on_error=rule.on_error,
                checksum=registered[1] if registered else None)
    try:
        target = catalog.resolve(conn, rule)
    except ConfigError as exc:
        return RuleStatus(**base, installed=False, enabled=False, up_to_date=False, state="NO SOURCE",
                          detail=exc.message + _moved(conn, rule.name))
    _require_select(conn, target)
    compiled = compiler.compile_rule(rule, target, catalog.input_columns(conn, rule, target))
    prefix = compiler.trigger_prefix(rule.name)
    names = [f"{prefix}_{e}" for e in EVENTS]
    # the source and each partition (oid, name as a DBA writes it)
    relations = [(target.oid, target.label), *conn.execute(
        "SELECT c.oid, pg_catalog.format('%%I.%%I', n.nspname, c.relname)"
        " FROM pg_catalog.pg_class AS c JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE c.oid = ANY (%s::regclass[]) ORDER BY 2", (list(target.partitions),)).fetchall()]
    oids = [oid for oid, _ in relations]
    label = dict(relations)
    # (table, trigger) -> tgenabled on those tables; and the other tables that still have
    # the rule's triggers (a partition since detached, say)
    found = {(label[oid], name): enabled for oid, name, enabled in conn.execute(
        "SELECT t.tgrelid, t.tgname::text, t.tgenabled::text FROM pg_catalog.pg_trigger AS t"
        " WHERE t.tgname::text = ANY (%s) AND t.tgrelid = ANY (%s::oid[])", (names, oids))}
    stray = [r for (r,) in conn.execute(
        "SELECT DISTINCT pg_catalog.format('%%I.%%I', n.nspname, c.relname) FROM pg_catalog.pg_trigger AS t"
        " JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace"
        " WHERE t.tgfoid = pg_catalog.to_regprocedure(%s) AND t.tgrelid <> ALL (%s::oid[]) ORDER BY 1",
        (compiled.function + "()", oids))]
    row = conn.execute(
        "SELECT p.prosrc FROM pg_catalog.pg_proc AS p WHERE p.oid = to_regprocedure(%s)",
        (compiled.function + "()",),
    ).fetchone()

    def where(rel: str) -> str:
        return "" if rel == target.label else f" on {rel}"

    missing = [f"{name.removeprefix(prefix + '_')}" for name in names if (target.label, name) not in found]
    # a partition created (or attached) since the last install has none of them yet
    new_partitions = [rel for _, rel in relations[1:] if not any((rel, name) in found for name in names)]
    missing += [f"{name.removeprefix(prefix + '_')}{where(rel)}" for _, rel in relations[1:] for name in names
                if (rel, name) not in found and rel not in new_partitions]
    installed = row is not None and not missing
    invalid = _invalid(conn, rule, target) if installed else None
    # D: disabled; R: fires only under session_replication_role = replica, never for the application
    disabled = [f"{name}{where(rel)}{' (replica only)' if enabled == 'R' else ''}"
                for (rel, name), enabled in sorted(found.items()) if enabled in ("D", "R")]
    enabled = installed and not disabled
    up_to_date = (installed and not stray and not new_partitions and registered is not None
                  and registered[1] == compiled.checksum and row[0] == compiled.body)
    if not installed:
        state, detail = "MISSING", ("posting function missing" if row is None else f"trigger(s) missing: {', '.join(missing)}")
    elif invalid:
        state, detail = INVALID, invalid
    elif disabled:
        state, detail = "DISABLED", f"disabled: {', '.join(disabled)}"
    elif new_partitions:
        state, detail = "OUTDATED", (f"no triggers yet on partition {', '.join(new_partitions)}: run "
                                     "`ledgeradmin install`")
    elif stray:
        state, detail = "OUTDATED", (f"its triggers are also on {', '.join(stray)}, no longer part of {target.label}: "
                                     "run `ledgeradmin install` (as the owner of that table)")
    elif not up_to_date:
        state, detail = "OUTDATED", "installed SQL differs from the config: run `ledgeradmin install`"
    else:
        state, detail = OK, ""
    return RuleStatus(**base, installed=installed, enabled=enabled, up_to_date=up_to_date, state=state, detail=detail)


def _require_select(conn: psycopg.Connection, target: catalog.Target) -> None:
    """status compiles each rule against its table as install does, planning its
    expressions: a role that may not read the table would see every rule differ."""
    if not conn.execute("SELECT pg_catalog.has_table_privilege(%s::oid, 'SELECT')", (target.oid,)).fetchone()[0]:
        raise LedgerError(
            f"permission denied for table {target.label}: status and verify plan the rules against their tables",
            hint=f"GRANT SELECT ON {target.label} TO the role that runs them (docs/verify.md, \"Privileges\")",
        )


def _invalid(conn: psycopg.Connection, rule, target: catalog.Target) -> str | None:
    """Why the rule no longer fits its table, which install would refuse (a column or a
    function an expression names is gone, a column's type changed, an inheritance child
    added, the key's constraint made DEFERRABLE), or None. The installed function is
    unchanged, so nothing else shows it while the writes it posts fail or go unposted."""
    try:
        catalog.check_source(conn, rule, target)
        catalog.check_key_types(conn, rule, target)
        catalog.check_still_plans(conn, rule, target)
    except ConfigError as exc:
        reason = exc.message.removeprefix(f'rule "{rule.name}", ')
        return (f"{reason}; install refuses the rule as it is, and its writes may fail or go unposted: fix "
                "ledger.toml (or the table), then `ledgeradmin install`")
    return None


def _moved(conn: psycopg.Connection, rule: str) -> str:
    """Where the rule's triggers are when its table is not where the config says: the table
    was renamed or moved to another schema. Its posting function names the old table, so
    writes to it fail until the config follows and the rule is installed again."""
    row = conn.execute(
        """SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname)
           FROM pg_catalog.pg_trigger AS t
           JOIN pg_catalog.pg_class AS c ON c.oid = t.tgrelid
           JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
           WHERE t.tgname = %s AND t.tgparentid = 0
           ORDER BY 1 LIMIT 1""",
        (f"{compiler.trigger_prefix(rule)}_insert",),
    ).fetchone()
    if row is None:
        return ""
    return (f"; its triggers are on {row[0]} (renamed or moved?), where writes fail until `source` names it "
            "and `ledgeradmin install` runs")

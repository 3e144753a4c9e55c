"""ledger.toml → validated, immutable dataclasses.

Only the shape and the identifiers are checked here; whether expressions make sense for
their source table is checked against the database at install (see ``catalog``).
"""

from __future__ import annotations

import os
import re
import tomllib
from dataclasses import dataclass
from pathlib import Path

from .errors import ConfigError

ACCOUNT_TYPES = ("asset", "liability", "equity", "income", "expense")
ON_ERROR_MODES = ("block", "defer")
RULE_NAME = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
ACCOUNT_CODE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$")
CURRENCY = re.compile(r"^[A-Z]{3}$")
DOLLAR_TAG = "$ledgeradmin$"


#: Lines per rule: the fingerprint sums one hash difference below 2**55 per line in a bigint.
MAX_LINES = 255


@dataclass(frozen=True)
class Account:
    code: str
    name: str
    type: str


@dataclass(frozen=True)
class Line:
    """One journal line of a rule: an amount expression on the debit or credit side."""

    side: str  # "debit" | "credit"
    amount: str  # SQL numeric expression over the source row
    account: str | None = None  # a code of [accounts] …
    account_sql: str | None = None  # … or an SQL expression yielding one


@dataclass(frozen=True)
class Rule:
    name: str
    source: str  # as written in ledger.toml
    schema: str  # parsed, unquoted identifiers
    table: str
    key: tuple[str, ...] | None
    when: str | None
    date: str | None
    memo: str | None
    currency: str  # SQL expression (a quoted literal when defaulted)
    on_error: str
    lines: tuple[Line, ...]
    chart: tuple[str, ...] = ()  # the account codes of ledger.toml, for rules with account_sql


@dataclass(frozen=True)
class Config:
    path: Path | None
    schema: str
    currency: str
    accounts: dict[str, Account]
    rules: dict[str, Rule]

    def select(self, names: list[str] | tuple[str, ...] | None) -> list[Rule]:
        """The rules named (all when none are), in config order; unknown names fail."""
        if not names:
            return list(self.rules.values())
        unknown = [n for n in names if n not in self.rules]
        if unknown:
            raise ConfigError(
                f"unknown rule {', '.join(unknown)}",
                hint=f"rules in the config: {', '.join(self.rules) or '(none)'}",
            )
        return [self.rules[n] for n in self.rules if n in names]


def find_config(path: str | os.PathLike | None) -> Path:
    """--config, then LEDGERADMIN_CONFIG, then ./ledger.toml."""
    candidate = path or os.environ.get("LEDGERADMIN_CONFIG") or "ledger.toml"
    p = Path(candidate)
    if not p.is_file():
        raise ConfigError(
            f"config file {p} not found",
            hint="pass --config FILE, set LEDGERADMIN_CONFIG, or create ./ledger.toml (`ledgeradmin init`)",
        )
    return p


def load_config(path: str | os.PathLike | None = None) -> Config:
    """Read and validate a ledger.toml (located by ``find_config``)."""
    p = find_config(path)
    try:
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{p}: invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(f"{p}: cannot read: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{p}: not UTF-8 text (byte {exc.start}): {exc.reason}",
                          hint="save the file as UTF-8 (TOML files are UTF-8)") from None
    return parse_config(data, p)


def parse_config(data: dict, path: Path | None = None) -> Config:
    """Validate an already parsed TOML document."""
    where = str(path) if path else "config"
    _only(data, {"ledger", "accounts", "rules"}, where)
    ledger = _table(data.get("ledger", {}), f"{where}: [ledger]")
    _only(ledger, {"schema", "currency"}, f"{where}: [ledger]")
    schema = ledger.get("schema", "ledger")
    if schema != "ledger":
        raise ConfigError(
            f'{where}: [ledger] schema = "{schema}": only "ledger" is supported in this version',
            hint="remove the schema setting or set it to \"ledger\"",
        )
    currency = ledger.get("currency", "USD")
    if not isinstance(currency, str) or not CURRENCY.match(currency):
        raise ConfigError(f"{where}: [ledger] currency = {currency!r} is not a three-letter ISO 4217 code")

    accounts: dict[str, Account] = {}
    for code, spec in _table(data.get("accounts", {}), f"{where}: [accounts]").items():
        ctx = f"{where}: account {code}"
        if not ACCOUNT_CODE.match(code):
            raise ConfigError(f"{ctx}: code must be 1-40 letters, digits, '.', '_' or '-'")
        spec = _table(spec, ctx)
        _only(spec, {"name", "type"}, ctx)
        name, typ = spec.get("name"), spec.get("type")
        if not isinstance(name, str) or not name.strip():
            raise ConfigError(f"{ctx}: field name is required")
        if typ not in ACCOUNT_TYPES:
            raise ConfigError(f"{ctx}: field type must be one of {', '.join(ACCOUNT_TYPES)}, not {typ!r}")
        accounts[code] = Account(code, name, typ)

    rules: dict[str, Rule] = {}
    for name, spec in _table(data.get("rules", {}), f"{where}: [rules]").items():
        rules[name] = _parse_rule(name, spec, accounts, currency, where)
    return Config(path, schema, currency, accounts, rules)


def _parse_rule(name: str, spec: object, accounts: dict[str, Account], currency: str, where: str) -> Rule:
    ctx = f'{where}: rule "{name}"'
    if not RULE_NAME.match(name):
        raise ConfigError(f"{ctx}: a rule name is 1-40 lowercase letters, digits or '_', starting with a letter")
    spec = _table(spec, ctx)
    _only(spec, {"source", "key", "when", "date", "memo", "currency", "on_error", "lines"}, ctx)
    source = spec.get("source")
    if not isinstance(source, str):
        raise ConfigError(f"{ctx}: field source is required (a schema-qualified table, e.g. public.sales)")
    try:
        schema, table = parse_qualified_name(source)
    except ValueError as exc:
        raise ConfigError(f"{ctx}: field source {source!r}: {exc}") from None
    key = spec.get("key")
    if key is not None:
        if isinstance(key, str):
            key = [key]
        if not isinstance(key, list) or not key or not all(isinstance(k, str) and k for k in key):
            raise ConfigError(f"{ctx}: field key must be a list of column names")
        if len(set(key)) != len(key):
            raise ConfigError(f"{ctx}: field key names a column twice")
        key = tuple(key)
    on_error = spec.get("on_error", "block")
    if on_error not in ON_ERROR_MODES:
        raise ConfigError(f"{ctx}: field on_error must be \"block\" or \"defer\", not {on_error!r}")
    exprs = {f: _expr(spec, f, ctx) for f in ("when", "date", "memo", "currency")}
    raw_lines = spec.get("lines")
    if not isinstance(raw_lines, list) or not raw_lines:
        raise ConfigError(f"{ctx}: field lines is required: a rule without lines posts nothing")
    if len(raw_lines) > MAX_LINES:
        raise ConfigError(f"{ctx}: {len(raw_lines)} lines; a rule has at most {MAX_LINES}")
    lines = tuple(_parse_line(i, l, accounts, ctx) for i, l in enumerate(raw_lines, start=1))
    return Rule(
        name=name,
        source=source,
        schema=schema,
        table=table,
        key=key,
        when=exprs["when"],
        date=exprs["date"],
        memo=exprs["memo"],
        currency=exprs["currency"] or f"'{currency}'",
        on_error=on_error,
        lines=lines,
        chart=tuple(accounts) if any(line.account_sql is not None for line in lines) else (),
    )


def _parse_line(i: int, spec: object, accounts: dict[str, Account], ctx: str) -> Line:
    lctx = f"{ctx}, lines[{i}]"
    spec = _table(spec, lctx)
    _only(spec, {"account", "account_sql", "debit", "credit"}, lctx)
    sides = [s for s in ("debit", "credit") if s in spec]
    if len(sides) != 1:
        raise ConfigError(f"{lctx}: a line has exactly one of debit / credit")
    side = sides[0]
    amount = _expr(spec, side, lctx)
    if amount is None:
        raise ConfigError(f"{lctx}: field {side} is empty")
    if ("account" in spec) == ("account_sql" in spec):
        raise ConfigError(f"{lctx}: a line has exactly one of account / account_sql")
    if "account" in spec:
        code = spec["account"]
        if not isinstance(code, str):
            raise ConfigError(f"{lctx}: field account must be a string (an account code)")
        if code not in accounts:
            raise ConfigError(
                f"{lctx}: unknown account {code!r}",
                hint=f"declare it under [accounts.{code}] or use one of {', '.join(accounts) or '(none)'}",
            )
        return Line(side, amount, account=code)
    account_sql = _expr(spec, "account_sql", lctx)
    if account_sql is None:
        raise ConfigError(f"{lctx}: field account_sql is empty")
    return Line(side, amount, account_sql=account_sql)


def _expr(spec: dict, field: str, ctx: str) -> str | None:
    value = spec.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int, float)):
        raise ConfigError(f"{ctx}: field {field} must be an SQL expression (a string)")
    text = str(value).strip()
    if not text:
        return None
    if DOLLAR_TAG in text or "\x00" in text:
        raise ConfigError(f"{ctx}: field {field} contains a forbidden sequence")
    return text


def _table(value: object, ctx: str) -> dict:
    if not isinstance(value, dict):
        raise ConfigError(f"{ctx}: expected a table")
    return value


def _only(spec: dict, allowed: set[str], ctx: str) -> None:
    extra = sorted(set(spec) - allowed)
    if extra:
        raise ConfigError(f"{ctx}: unknown field {', '.join(extra)}", hint=f"allowed: {', '.join(sorted(allowed))}")


_IDENT = re.compile(r'\s*(?:"((?:[^"]|"")+)"|([A-Za-z_][A-Za-z0-9_$]*))\s*')


def parse_qualified_name(text: str) -> tuple[str, str]:
    """'public.sales' → ('public', 'sales'); '"Shop"."Sales"' → ('Shop', 'Sales').

    Unquoted parts fold to lower case, as PostgreSQL does.
    """
    parts: list[str] = []
    pos = 0
    while True:
        m = _IDENT.match(text, pos)
        if not m:
            raise ValueError("not an identifier")
        parts.append(m.group(1).replace('""', '"') if m.group(1) is not None else m.group(2).lower())
        pos = m.end()
        if pos == len(text):
            break
        if text[pos] != ".":
            raise ValueError(f"unexpected {text[pos]!r}")
        pos += 1
    if len(parts) != 2:
        raise ValueError("must be schema-qualified: schema.table")
    return parts[0], parts[1]

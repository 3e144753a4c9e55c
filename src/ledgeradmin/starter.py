"""`ledgeradmin init`: a commented starter ledger.toml, optionally drafted from a table."""

from __future__ import annotations

import json
import re
import unicodedata

import psycopg

from .compiler import literal
from .config import parse_qualified_name
from .errors import LedgerError

HEADER = '''# ledger.toml — posting rules compiled by ledgeradmin into PostgreSQL triggers.
# Reference: docs/configuration.md. Check it with `ledgeradmin install --dry-run`.

[ledger]
currency = "USD"                 # default currency of the rules (ISO 4217)

# The chart of accounts: code → name and type (asset | liability | equity | income | expense).
[accounts.1100]
name = "Accounts Receivable"
type = "asset"
[accounts.4000]
name = "Sales Revenue"
type = "income"
[accounts.2200]
name = "Sales Tax Payable"
type = "liability"
'''

EXAMPLE_RULE = '''
# One rule per kind of business event. Expressions are SQL over the source row's columns;
# they run with search_path = pg_catalog, so schema-qualify your own functions.
[rules.sale]
source = "public.sales"          # schema-qualified table; '"Shop"."Sales"' for mixed case
# key = ["id"]                   # default: the primary key
when = "status = 'completed'"    # rows that post (default: every row)
date = "sold_at"                 # effective date of the entry (default: now())
memo = "'Sale ' || id"
# currency = "currency"          # default: [ledger].currency
on_error = "block"               # block: a bad posting fails the write; defer: record it, keep the write
lines = [
  { account = "1100", debit = "total" },
  { account = "4000", credit = "total - tax" },
  { account = "2200", credit = "tax" },
]
'''


def starter(conn: psycopg.Connection | None = None, table: str | None = None) -> str:
    """The text of a starter ledger.toml; with ``table``, its rule is drafted from the columns."""
    if table is None:
        return HEADER + EXAMPLE_RULE
    assert conn is not None
    try:
        schema, name = parse_qualified_name(table)
    except ValueError as exc:
        raise LedgerError(f"--from-table {table!r}: {exc}") from None
    rows = conn.execute(
        """
        SELECT a.attname, t.typcategory, pg_catalog.format_type(a.atttypid, a.atttypmod),
               coalesce(a.attnum = ANY (i.indkey::int2[]), false) AS in_pk, pg_catalog.quote_ident(a.attname)
        FROM pg_catalog.pg_attribute AS a
        JOIN pg_catalog.pg_class AS c ON c.oid = a.attrelid
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
        LEFT JOIN pg_catalog.pg_index AS i ON i.indrelid = c.oid AND i.indisprimary
        WHERE n.nspname = %s AND c.relname = %s AND a.attnum > 0 AND NOT a.attisdropped
        ORDER BY a.attnum
        """,
        (schema, name),
    ).fetchall()
    if not rows:
        raise LedgerError(f"table {table} not found")
    rule = _rule_name(name)
    ident = {r[0]: r[4] for r in rows}  # as SQL writes the column: quoted when it must be
    key = [r[0] for r in rows if r[3]]
    amounts = [r[0] for r in rows if r[1] == "N" and not r[3]]
    dates = [r[0] for r in rows if r[1] == "D"]
    statuses = [r[0] for r in rows if r[1] == "S" and r[0] in ("status", "state")]
    amount = ident[amounts[0]] if amounts else "amount"
    described = "\n".join(_comment(f"#   {r[0]}: {r[2]}{' (primary key)' if r[3] else ''}") for r in rows)
    key_line = ("key = [" + ", ".join(_toml(k) for k in key) + "]") if key else (
        '# key = ["..."]   # no primary key found: name unique NOT NULL columns')
    when_line = ("when = " + _toml(ident[statuses[0]] + " = 'completed'")) if statuses else (
        "# when = \"status = 'completed'\"")
    date_line = ("date = " + _toml(ident[dates[0]])) if dates else '# date = "created_at"'
    memo = _toml(f"{literal(name + ' ')} || {ident[key[0]]}" if key else literal(name))
    body = [
        "",
        _comment(f"# Drafted from {table}. Its columns:"),
        described,
        "# Review every expression below, then `ledgeradmin install --dry-run`.",
        f"[rules.{rule}]",
        f"source = {_toml(table)}",
        key_line,
        when_line,
        date_line,
        f"memo = {memo}",
        'on_error = "block"',
        "lines = [",
        f'  {{ account = "1100", debit = {_toml(amount)} }},',
        f'  {{ account = "4000", credit = {_toml(amount)} }},',
        "]",
        "",
    ]
    return HEADER + "\n".join(body)


def _rule_name(table: str) -> str:
    """A rule name (config.RULE_NAME) from a table's name: accents dropped ('Café' →
    'cafe'), every run of characters other than ASCII letters, digits and '_' one '_',
    a plural 's' dropped, 'r_' before a leading digit, at most 40 characters; 'rule'
    when nothing is left."""
    ascii_name = unicodedata.normalize("NFKD", table).encode("ascii", "ignore").decode().lower()
    rule = re.sub(r"[^a-z0-9_]+", "_", ascii_name).strip("_").rstrip("s").rstrip("_")
    if rule[:1].isdigit():
        rule = "r_" + rule
    return rule[:40].rstrip("_") or "rule"


def _toml(text: str) -> str:
    """A TOML basic string: JSON's escapes are TOML's; TOML escapes DEL too."""
    return json.dumps(text, ensure_ascii=False).replace("\x7f", "\\u007f")


def _comment(line: str) -> str:
    """A TOML comment line: control characters (a name may hold any) shown as '?'."""
    return re.sub(r"[\x00-\x08\x0a-\x1f\x7f]", "?", line)

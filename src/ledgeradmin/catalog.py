"""What PostgreSQL knows about a rule's source table, and install-time checks.

``resolve`` finds the source table and its key, ``input_columns`` the columns a rule
reads; ``check_expressions`` runs every SQL expression of a rule against the table
(LIMIT 0, nothing read) so that a typo, an unknown column or a wrongly typed expression
fails at install with the rule and field named, not at the first sale.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import psycopg
from psycopg import sql

from .config import DOLLAR_TAG, Rule
from .errors import EVERY_ROW_HINT, ConfigError

# Session settings under which desired postings are computed, everywhere: the posting
# functions pin the same ones, so keys, dates and fingerprints never depend on a client's
# TimeZone or DateStyle.
PINNED_SETTINGS = {
    "search_path": "pg_catalog, pg_temp",
    "TimeZone": "UTC",
    "DateStyle": "ISO, YMD",
    "IntervalStyle": "postgres",
    "extra_float_digits": "1",
    "jit": "off",  # compiling costs more than it saves on these statements
    # Pinned by a posting function only where they matter (compiler.rule_settings):
    "standard_conforming_strings": "on",  # how a backslash in a string literal is read
    "bytea_output": "hex",  # the text of a bytea key
    "transform_null_equals": "off",  # whether `x = NULL` is read as `x IS NULL`
}


@dataclass(frozen=True)
class Target:
    """A rule's source table as found in the catalog."""

    oid: int
    schema: str
    table: str
    relkind: str  # 'r' table, 'p' partitioned table
    key: tuple[str, ...]
    key_types: tuple[str, ...]  # format_type() of each key column
    columns: tuple[str, ...] = ()  # every column, in the table's order
    partitions: tuple[str, ...] = ()  # quoted names of all partitions, at any depth
    neutral_columns: frozenset[str] = frozenset()  # columns of NEUTRAL_TYPES (session_independent)
    instant_columns: frozenset[str] = frozenset()  # timestamptz columns

    @property
    def integer_key(self) -> bool:
        """One key column of an integer type: postings carry it as key_num (ordered, bigint)."""
        return len(self.key) == 1 and self.key_types[0] in ("smallint", "integer", "bigint")

    @property
    def ident(self) -> str:
        return sql.Identifier(self.schema, self.table).as_string(None)

    @property
    def label(self) -> str:
        """The table's name as a DBA types it: quoted only where needed."""
        parts = [n if _plain(n) else sql.Identifier(n).as_string(None) for n in (self.schema, self.table)]
        return ".".join(parts)


def _plain(name: str) -> bool:
    return name.isidentifier() and name.isascii() and name == name.lower()


def pin_settings(conn: psycopg.Connection, *, every_row: bool = False) -> None:
    """SET LOCAL the pinned settings in the current transaction (one round trip). With
    ``every_row`` also `row_security = off`, for verify and backfill, which compare whole
    tables: a query that row-level security would filter then fails instead, since a
    table seen in part would make the postings of the rows not seen look orphaned."""
    settings = {**PINNED_SETTINGS, **({"row_security": "off"} if every_row else {})}
    query = "SELECT " + ", ".join(["pg_catalog.set_config(%s, %s, true)"] * len(settings))
    conn.execute(query, [v for item in settings.items() for v in item])


def require_every_row(conn: psycopg.Connection, rule: Rule, target: Target) -> None:
    """Refuse, naming the rule, when row-level security shows the current role only some
    rows of the rule's table."""
    active, role = conn.execute("SELECT pg_catalog.row_security_active(%s), current_user",
                                (target.oid,)).fetchone()
    if active:
        raise ConfigError(
            f'rule "{rule.name}": row-level security on {target.label} applies to role {role}, which would see '
            "only the rows its policies allow: the postings of the others would count as orphaned (and backfill "
            "would reverse them)",
            hint=EVERY_ROW_HINT,
        )


def resolve(conn: psycopg.Connection, rule: Rule) -> Target:
    """Find the rule's source table and key columns; fail with the rule and field named."""
    ctx = f'rule "{rule.name}"'
    row = conn.execute(
        """
        SELECT c.oid, c.relkind
        FROM pg_catalog.pg_class AS c
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
        WHERE n.nspname = %s AND c.relname = %s
        """,
        (rule.schema, rule.table),
    ).fetchone()
    if row is None:
        raise ConfigError(f"{ctx}, field source: table {rule.source} does not exist")
    oid, relkind = row
    if relkind not in ("r", "p"):
        raise ConfigError(f"{ctx}, field source: {rule.source} is not a table")
    rows = conn.execute(
            """
            SELECT a.attname, a.attnotnull, pg_catalog.format_type(a.atttypid, a.atttypmod),
                   coalesce(b.oid, t.oid) = ANY (%(neutral)s::regtype[])
                   OR coalesce(b.typtype, t.typtype) = 'e'
                   OR (t.typcategory = 'A' AND t.typelem = ANY (%(neutral)s::regtype[])),
                   a.atttypid = 'timestamptz'::regtype
            FROM pg_catalog.pg_attribute AS a
            JOIN pg_catalog.pg_type AS t ON t.oid = a.atttypid
            LEFT JOIN pg_catalog.pg_type AS b ON b.oid = t.typbasetype AND t.typtype = 'd'
            WHERE a.attrelid = %(table)s AND a.attnum > 0 AND NOT a.attisdropped
            ORDER BY a.attnum
            """,
            {"table": oid, "neutral": list(NEUTRAL_TYPES)},
        ).fetchall()
    odd = [n for n in (rule.schema, rule.table, *(r[0] for r in rows)) if DOLLAR_TAG in n or "\x00" in n]
    if odd:
        raise ConfigError(f"{ctx}, field source: the name {odd[0]!r} of {rule.source} or of a column contains "
                          f"{DOLLAR_TAG}, which would end the posting function's body",
                          hint="rename the table or column")
    columns = {name: notnull for name, notnull, *_ in rows}
    types = {name: typ for name, _, typ, *_ in rows}
    uniques = conn.execute(
        """
        SELECT i.indisprimary,
               array_agg(a.attname::text ORDER BY k.ord)
        FROM pg_catalog.pg_index AS i
        CROSS JOIN LATERAL unnest(i.indkey::int2[]) WITH ORDINALITY AS k (attnum, ord)
        JOIN pg_catalog.pg_attribute AS a ON a.attrelid = i.indrelid AND a.attnum = k.attnum
        WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
        GROUP BY i.indexrelid, i.indisprimary
        ORDER BY i.indisprimary DESC
        """,
        (oid,),
    ).fetchall()
    if rule.key is None:
        primary = [cols for is_pk, cols in uniques if is_pk]
        if not primary:
            raise ConfigError(
                f"{ctx}, field key: {rule.source} has no primary key",
                hint="add a primary key, or name unique NOT NULL columns with key = [...]",
            )
        key = tuple(primary[0])
    else:
        key = rule.key
        missing = [k for k in key if k not in columns]
        if missing:
            raise ConfigError(f"{ctx}, field key: column {', '.join(missing)} does not exist in {rule.source}")
        if not any(set(cols) <= set(key) for _, cols in uniques):
            raise ConfigError(
                f"{ctx}, field key: ({', '.join(key)}) is not unique in {rule.source}",
                hint="the key must cover a primary key or a unique index without predicate",
            )
    nullable = [k for k in key if not columns[k]]
    if nullable:
        raise ConfigError(f"{ctx}, field key: column {', '.join(nullable)} of {rule.source} allows NULL")
    partitions = [
        sql.Identifier(nsp, rel).as_string(None)
        for nsp, rel in conn.execute(
            """
            SELECT n.nspname, c.relname
            FROM pg_catalog.pg_partition_tree(%s) AS t
            JOIN pg_catalog.pg_class AS c ON c.oid = t.relid
            JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
            WHERE t.relid <> %s
            ORDER BY t.level, n.nspname, c.relname
            """,
            (oid, oid),
        )
    ] if relkind == "p" else []
    return Target(oid=oid, schema=rule.schema, table=rule.table, relkind=relkind, key=key,
                  key_types=tuple(types[k] for k in key), columns=tuple(types), partitions=tuple(partitions),
                  neutral_columns=frozenset(r[0] for r in rows if r[3]),
                  instant_columns=frozenset(r[0] for r in rows if r[4]))


def check_source(conn: psycopg.Connection, rule: Rule, target: Target) -> None:
    """Refuse a table whose writes the rule's statement-level triggers would not all see,
    and a key that may hold a value twice within a transaction:
    - a partition, or a child table of inheritance: a statement on the parent fires only
      the parent's statement triggers, though the rows are the child's;
    - a parent of inheritance children: a statement on a child fires none of the
      parent's triggers (a partitioned table is fine: install puts the triggers on every
      partition);
    - a key whose unique constraints are all DEFERRABLE: two rows can share it until
      commit (swapping keys in two statements), which the posting functions read as one
      row gone."""
    ctx = f'rule "{rule.name}", field source'
    parent, children = conn.execute(
        """
        SELECT (SELECT pg_catalog.format('%%I.%%I', n.nspname, c.relname)
                FROM pg_catalog.pg_inherits AS i
                JOIN pg_catalog.pg_class AS c ON c.oid = i.inhparent
                JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                WHERE i.inhrelid = %(oid)s ORDER BY i.inhseqno LIMIT 1),
               (SELECT pg_catalog.string_agg(pg_catalog.format('%%I.%%I', n.nspname, c.relname), ', '
                                             ORDER BY n.nspname, c.relname)
                FROM pg_catalog.pg_inherits AS i
                JOIN pg_catalog.pg_class AS c ON c.oid = i.inhrelid
                JOIN pg_catalog.pg_namespace AS n ON n.oid = c.relnamespace
                WHERE i.inhparent = %(oid)s AND NOT c.relispartition)
        """,
        {"oid": target.oid},
    ).fetchone()
    if parent is not None:
        raise ConfigError(
            f"{ctx}: {target.label} is a partition or an inheritance child of {parent}: a statement on {parent} "
            f"fires only {parent}'s statement triggers, so writes through it would not post",
            hint=f"set source to {parent} (a `when` can select the rows of {target.label})",
        )
    if children is not None:
        raise ConfigError(
            f"{ctx}: {target.label} has inheritance children ({children}): a statement on a child fires none "
            f"of {target.label}'s triggers, so rows written there would not post",
            hint="turn the tables into a partitioned table, whose rule install puts on every partition",
        )
    (immediate,) = conn.execute(
        """
        SELECT pg_catalog.bool_or(i.indimmediate)
        FROM pg_catalog.pg_index AS i
        WHERE i.indrelid = %s AND i.indisunique AND i.indpred IS NULL AND i.indexprs IS NULL
          AND (SELECT pg_catalog.array_agg(a.attname::text) FROM pg_catalog.pg_attribute AS a
               WHERE a.attrelid = i.indrelid AND a.attnum = ANY (i.indkey::int2[])) <@ %s::text[]
        """,
        (target.oid, list(target.key)),
    ).fetchone()
    if immediate is False:
        raise ConfigError(
            f'rule "{rule.name}", field key: every unique constraint on ({", ".join(target.key)}) of {target.label} '
            "is DEFERRABLE: two rows may share a key until commit (keys swapped in two statements), which the "
            "posting functions would take for a row deleted",
            hint="make the constraint NOT DEFERRABLE, or key the rule by columns with an immediate unique index",
        )


def check_key_types(conn: psycopg.Connection, rule: Rule, target: Target) -> None:
    """Refuse key columns of a type whose comparisons are not built in (citext, isbn13,
    ltree, a composite type …), or of a nondeterministic collation. The posting functions, verify and backfill compare and
    order keys under search_path = pg_catalog: there, such a type has no `=` (every
    UPDATE would fail), or it is compared as text while its index orders it otherwise
    (backfill would skip rows). A domain counts as its base type; an enum's comparisons
    are built in."""
    rows = conn.execute(
        """
        WITH RECURSIVE t (attname, oid, depth) AS (
            SELECT a.attname::text, a.atttypid, 0
            FROM pg_catalog.pg_attribute AS a
            WHERE a.attrelid = %s AND a.attname = ANY (%s)
            UNION ALL
            SELECT t.attname, ty.typbasetype, t.depth + 1
            FROM t JOIN pg_catalog.pg_type AS ty ON ty.oid = t.oid
            WHERE ty.typtype = 'd'
        )
        SELECT DISTINCT ON (t.attname) t.attname, pg_catalog.format_type(ty.oid, NULL)
        FROM t JOIN pg_catalog.pg_type AS ty ON ty.oid = t.oid
        WHERE ty.typtype <> 'd' AND ty.typtype <> 'e' AND ty.typnamespace <> 'pg_catalog'::regnamespace
        ORDER BY t.attname, t.depth DESC
        """,
        (target.oid, list(target.key)),
    ).fetchall()
    if rows:
        what = ", ".join(f"{name} ({typ})" for name, typ in rows)
        raise ConfigError(
            f'rule "{rule.name}", field key: key column {what} is of a type whose comparisons are not built in: '
            "keys are compared with PostgreSQL's built-in operators",
            hint="key the rule by columns of built-in types (integer, text, uuid, date …), e.g. a generated column "
                 "`isbn_key text GENERATED ALWAYS AS (isbn::text) STORED` with a unique index",
        )
    rows = conn.execute(
        """
        SELECT a.attname::text, pg_catalog.format('%%I.%%I', n.nspname, c.collname)
        FROM pg_catalog.pg_attribute AS a
        JOIN pg_catalog.pg_collation AS c ON c.oid = a.attcollation
        JOIN pg_catalog.pg_namespace AS n ON n.oid = c.collnamespace
        WHERE a.attrelid = %s AND a.attname = ANY (%s) AND NOT c.collisdeterministic
        ORDER BY a.attnum
        """,
        (target.oid, list(target.key)),
    ).fetchall()
    if rows:
        what = ", ".join(f"{name} (COLLATE {coll})" for name, coll in rows)
        raise ConfigError(
            f'rule "{rule.name}", field key: key column {what} has a nondeterministic collation: values that differ '
            "('abc', 'ABC') compare equal, so the journal would keep a row's old spelling of its key",
            hint="key the rule by columns with a deterministic collation, e.g. a generated column "
                 '`code_key text COLLATE "C" GENERATED ALWAYS AS (code) STORED` with a unique index',
        )


# Type categories of pg_type.typcategory accepted for each kind of expression.
_CATEGORIES = {
    "when": ("B",),  # boolean
    "date": ("D",),  # date/time
    "amount": ("N",),  # numeric
    "text": ("S",),  # string
    "any": None,
}
_CATEGORY_NAMES = {"B": "boolean", "D": "a date or timestamp", "N": "numeric", "S": "text"}


def expressions(rule: Rule) -> list[tuple[str, str, str]]:
    """(field label, expression, kind) for every SQL expression of a rule."""
    out = []
    if rule.when:
        out.append(("when", rule.when, "when"))
    if rule.date:
        out.append(("date", rule.date, "date"))
    if rule.memo:
        out.append(("memo", rule.memo, "any"))
    out.append(("currency", rule.currency, "text"))
    for i, line in enumerate(rule.lines, start=1):
        out.append((f"lines[{i}].{line.side}", line.amount, "amount"))
        if line.account_sql:
            out.append((f"lines[{i}].account_sql", line.account_sql, "text"))
    return out


# Functions of time: stable within a transaction, yet a desired posting that uses them
# changes by itself later (verify would report drift forever). Allowed in memo only.
TIME_FUNCTIONS = ("now", "transaction_timestamp", "statement_timestamp", "clock_timestamp", "timeofday",
                  "current_timestamp", "current_date", "current_time", "localtimestamp", "localtime")
# String literals that PostgreSQL reads as the current time when cast to a date or time.
TIME_LITERALS = ("now", "today", "tomorrow", "yesterday")
_LITERAL = re.compile(r"'((?:[^']|'')*)'")
_AGE_CALL = re.compile(r"\bage\s*\(", re.I)
_QUOTED = re.compile(r"'(?:[^']|'')*'|\"(?:[^\"]|\"\")*\"|\$([A-Za-z_]*)\$.*?\$\1\$", re.S)
_CALL = re.compile(r"([A-Za-z_][A-Za-z0-9_$]*)\s*(\()?")


def called_names(expr: str) -> set[tuple[str, bool]]:
    """(lower-case name, followed by '(') of every word outside literals and quoted names."""
    bare = _QUOTED.sub(" ", expr)
    return {(m.group(1).lower(), m.group(2) is not None) for m in _CALL.finditer(bare)}


def check_determinism(conn: psycopg.Connection, rule: Rule) -> None:
    """Refuse expressions whose value is not a function of the row: volatile functions
    anywhere, functions of time in everything but memo. Trigger, backfill and verify
    evaluate the expressions at different times and must agree."""
    volatile = {r[0] for r in conn.execute("SELECT DISTINCT proname::text FROM pg_catalog.pg_proc WHERE provolatile = 'v'")}
    ctx = f'rule "{rule.name}"'
    for field, expr, _kind in expressions(rule):
        for name, call in sorted(called_names(expr)):
            if call and name in volatile:
                raise ConfigError(
                    f"{ctx}, field {field}: calls {name}(), which is volatile: a posting must depend on the row"
                    " alone, or verify and backfill would disagree with the trigger",
                    hint="declare your own function STABLE or IMMUTABLE if it is, or store the value in a column",
                )
            if field != "memo" and name in TIME_FUNCTIONS and (call or name.startswith(("current_", "local"))):
                _changes_with_time(ctx, field, name)
        if field == "memo":
            continue
        for text in _LITERAL.findall(expr):
            if text.strip().lower() in TIME_LITERALS:
                _changes_with_time(ctx, field, f"'{text}'")
        bare = _QUOTED.sub(" ", expr)
        if any(_arguments(bare, m.end()) == 1 for m in _AGE_CALL.finditer(bare)):
            _changes_with_time(ctx, field, "age() with one argument (the age at today's date)")


def _changes_with_time(ctx: str, field: str, what: str) -> None:
    raise ConfigError(
        f"{ctx}, field {field}: uses {what}, which changes with time: the posting of a row would drift by itself",
        hint="use a column of the row (e.g. created_at); a rule without `date` is dated when it posts",
    )


def _arguments(text: str, start: int) -> int:
    """The number of arguments of the call whose '(' ends at ``start`` (literals blanked)."""
    depth, count, empty = 1, 1, True
    for ch in text[start:]:
        if ch == "(":
            depth += 1
        elif ch == ")":
            depth -= 1
            if depth == 0:
                break
        elif ch == "," and depth == 1:
            count += 1
        if not ch.isspace() and depth >= 1 and ch != ")":
            empty = False
    return 0 if empty else count


# The tokens of an SQL expression: comments and string literals (skipped), quoted names,
# words, numbers and single characters.
_TOKEN = re.compile(
    r"(?P<skip>--[^\n]*|/\*.*?\*/|'(?:[^']|'')*'|\$(?P<tag>(?:[^\W\d]\w*)?)\$.*?\$(?P=tag)\$)"
    r'|(?P<quoted>"(?:[^"]|"")*")'
    r"|(?P<word>[^\W\d][\w$]*)"
    r"|(?P<number>\d[\w.]*)"
    r"|(?P<char>\S)",
    re.S,
)
# Words that bring in something besides the row: a subquery, a named operator, the
# built-in functions that read a table by its name.
_NOT_THE_ROW = {"select", "table", "values", "operator"}
_READS_A_TABLE = re.compile(r"(table|schema|database)_to_xml")


def input_columns(conn: psycopg.Connection, rule: Rule, target: Target) -> tuple[str, ...] | None:
    """The columns a row's desired posting is computed from: the key and every column that
    the rule's expressions other than memo name, in the table's order. None when the
    expressions may read more than those columns: a subquery, a schema-qualified name (a
    function, type or operator of another schema), a named operator, table_to_xml() and its
    kin, a reference to the whole row (``r``), a Unicode-escaped name, a backslash. An
    UPDATE that changes none of these columns leaves every desired posting as it was
    (update_guard.sql).

    The names are found by scanning the expressions, which may list more columns than they
    read (a word in a comment, say: compared needlessly, never wrongly); then the
    expressions are planned over a subquery of only those columns, so a column they read
    but the scan missed makes the plan fail, and the answer None.
    """
    names: set[str] = set()
    exprs = [expr for field, expr, _ in expressions(rule) if field != "memo"]
    if any("\\" in expr for expr in exprs):  # where a string ends would depend on standard_conforming_strings
        return None
    for expr in exprs:
        tokens = _tokens(expr)
        for i, (kind, text) in enumerate(tokens):
            after = tokens[i + 1][1] if i + 1 < len(tokens) else ""
            if kind not in ("word", "quoted"):
                continue
            name = _name(kind, text)
            if kind == "word" and (name in _NOT_THE_ROW or _READS_A_TABLE.match(name)
                                   or (name == "u" and after == "&")):
                return None
            if (after == ".") != (name == "r"):  # a qualified name other than r.<column>, or the row r
                return None
            if name == "r" and i + 2 < len(tokens) and tokens[i + 2][1] == "*":  # r.*, the row again
                return None
            names.add(name)
    columns = tuple(c for c in target.columns if c in names or c in target.key)
    listed = ", ".join(sql.Identifier(c).as_string(None) for c in columns)
    probe = (f"SELECT {', '.join(f'({e})' for e in exprs)}"
             f" FROM (SELECT {listed} FROM {target.ident}) AS r LIMIT 0")
    try:
        _probe(conn, probe, f'rule "{rule.name}"')
    except ConfigError:
        return None
    return columns


# The session settings a posting function pins only for a rule that may depend on them
# (session_independent): the time zone, how dates, times and intervals are read and
# written as text, and the digits of a float written as text.
SESSION_SETTINGS = ("TimeZone", "DateStyle", "IntervalStyle", "extra_float_digits")
# Words an expression may use and still not depend on those settings, given that every
# column it reads is of a type whose text does not either (NEUTRAL_TYPES): SQL keywords,
# built-in functions of text and the names of those types (in casts).
_NEUTRAL_WORDS = frozenset("""
    and or not is null true false in like ilike between distinct from case when then else end
    any all some cast as symmetric escape coalesce nullif greatest least
    upper lower initcap length char_length character_length btrim ltrim rtrim trim both leading trailing
    substr substring for left right replace overlay placing similar to concat concat_ws lpad rpad split_part
    strpos position
    md5 reverse repeat translate
    text varchar character varying char bpchar numeric decimal int integer smallint bigint int2 int4 int8
    boolean bool
""".split())
# Functions of numbers, allowed in amounts and `when` only: given an integer, round() and
# its kin return a float, whose text depends on extra_float_digits (its value does not).
_NUMBER_WORDS = frozenset("abs round trunc floor ceil ceiling sign mod div".split())
NEUTRAL_TYPES = ("int2", "int4", "int8", "numeric", "text", "varchar", "bpchar", "bool", "uuid", "json", "jsonb",
                 "name", '"char"')


def session_independent(rule: Rule, target: Target) -> bool:
    """Whether the rule's expressions (memo included) and its key's text cannot depend on
    the session's SESSION_SETTINGS: the key and every column they read are of NEUTRAL_TYPES
    (or enums, or domains or arrays of those), every other word is in _NEUTRAL_WORDS, and
    the date, if any, is a timestamptz column. The posting function then need not pin
    those settings, which costs each call. Anything else answers False and they are
    pinned: a date, time or float column, a cast to such a type or a literal of one, a
    function of another kind (now(), to_char(), your own), a subquery, a backslash."""
    neutral, instants = target.neutral_columns, target.instant_columns
    columns = set(target.columns)
    if not all(k in neutral for k in target.key):
        return False
    for field, expr, kind in expressions(rule):
        if "\\" in expr:
            return False
        tokens = _tokens(expr)
        column = tokens[2:] if [t for _, t in tokens[:2]] in (["r", "."], ["R", "."]) else tokens
        if field == "date" and len(column) == 1 and _name(*column[0]) in instants:
            continue  # a timestamptz column: cast to timestamptz, the value itself
        words = _NEUTRAL_WORDS | _NUMBER_WORDS if kind in ("amount", "when") else _NEUTRAL_WORDS
        for i, (token, text) in enumerate(tokens):
            if token not in ("word", "quoted"):
                continue
            name = _name(token, text)
            if name == "r" and token == "word" and i + 1 < len(tokens) and tokens[i + 1][1] == ".":
                continue  # the row's alias, before one of its columns
            if name in columns:
                if name not in neutral:
                    return False
            elif token == "quoted" or name not in words:
                return False
    return True


def _tokens(expr: str) -> list[tuple[str, str]]:
    """(kind, text) of each token of an SQL expression, comments and string literals left out."""
    return [(m.lastgroup, m.group()) for m in _TOKEN.finditer(expr) if m.lastgroup != "skip"]


def _name(token: str, text: str) -> str:
    """The name a word or quoted identifier stands for (a bare word is folded to lower case)."""
    return text[1:-1].replace('""', '"') if token == "quoted" else text.lower()


def check_expressions(conn: psycopg.Connection, rule: Rule, target: Target) -> None:
    """Plan every expression of the rule against its table; raise ConfigError naming the field.

    Runs inside a savepoint with the pinned settings; reads no row (LIMIT 0). Each probe uses
    the extended query protocol, so an expression cannot smuggle in a second statement.
    """
    ctx = f'rule "{rule.name}"'
    for field, expr, kind in expressions(rule):
        probe = f"SELECT ({expr}) AS value FROM {target.ident} AS r LIMIT 0"
        oid = _probe(conn, probe, f"{ctx}, field {field}")
        if kind == "amount":
            _check_constant_amount(conn, expr, f"{ctx}, field {field}")
        allowed = _CATEGORIES[kind]
        if allowed is None:
            continue
        category = conn.execute("SELECT typcategory FROM pg_catalog.pg_type WHERE oid = %s", (oid,)).fetchone()
        if category is None or category[0] not in allowed:
            typname = conn.execute("SELECT pg_catalog.format_type(%s, NULL)", (oid,)).fetchone()[0]
            raise ConfigError(
                f"{ctx}, field {field}: {expr!r} is of type {typname}, expected {_CATEGORY_NAMES[allowed[0]]}"
            )


def check_still_plans(conn: psycopg.Connection, rule: Rule, target: Target) -> None:
    """check_expressions for status, which runs it on every call: all the rule's expressions
    planned in one probe and their types read in one query. A column only `memo` reads,
    renamed or dropped, or a function the rule calls, dropped, leaves the installed function
    as it was while every posting fails. When anything is off, check_expressions names
    the field."""
    exprs = expressions(rule)
    query = f"SELECT {', '.join(f'({e})' for _, e, _ in exprs)} FROM {target.ident} AS r LIMIT 0"
    try:
        types = _probe(conn, query, f'rule "{rule.name}"', every_column=True)
    except ConfigError:
        check_expressions(conn, rule, target)
        raise
    categories = dict(conn.execute("SELECT oid, typcategory FROM pg_catalog.pg_type WHERE oid = ANY (%s::oid[])",
                                   (list(types),)).fetchall())
    if any(_CATEGORIES[kind] is not None and categories.get(oid) not in _CATEGORIES[kind]
           for (_, _, kind), oid in zip(exprs, types)):
        check_expressions(conn, rule, target)


def _check_constant_amount(conn: psycopg.Connection, expr: str, ctx: str) -> None:
    """An amount that needs no row (a literal, say) is evaluated now: beyond numeric(20, 4)
    it could never post."""
    try:
        with conn.transaction():
            pin_settings(conn)
            conn.cursor().execute(f"SELECT ({expr})::numeric(20, 4)", binary=True)
    except psycopg.DataError as exc:
        raise ConfigError(f"{ctx}: {exc.diag.message_primary}") from None
    except psycopg.Error as exc:
        if not _about_the_query(exc):
            raise
        # it refers to the row: checked per row when posting


def check_query(conn: psycopg.Connection, query: str, ctx: str) -> None:
    """Plan a compiled query (LIMIT 0 is the caller's business) and report failures as config errors."""
    _probe(conn, query, ctx)


def _probe(conn: psycopg.Connection, query: str, ctx: str, *, every_column: bool = False):
    """Plan ``query``: the type of its first column (of each, with ``every_column``)."""
    try:
        with conn.transaction():
            pin_settings(conn)
            cur = conn.cursor()
            # Binary results force the extended query protocol: one statement, never two.
            # (Not prepare=True: a statement cached on the caller's connection would outlive
            # a later change of the table.)
            cur.execute(query, binary=True)
            assert cur.description is not None
            if every_column:
                return [column.type_code for column in cur.description]
            return cur.description[0].type_code
    except psycopg.Error as exc:
        if not _about_the_query(exc):
            raise
        reason = exc.diag.message_primary or str(exc).strip()
        raise ConfigError(f"{ctx}: {reason}", hint=exc.diag.message_hint) from None


#: SQLSTATE classes of errors about the session or the server, not the query probed: a lost
#: connection (08), a serialization failure or recovery conflict (40), a lock not free in
#: time (55), a cancel or shutdown (57), resources (53), I/O (58), internal (XX).
_NOT_ABOUT_THE_QUERY = ("08", "40", "53", "55", "57", "58", "XX")


def _about_the_query(exc: psycopg.Error) -> bool:
    """Whether a probe's error is the expression's fault (a config error) rather than the
    session's, which passes through as it is (a lock wait to retry, a lost connection)."""
    return exc.sqlstate is not None and not exc.sqlstate.startswith(_NOT_ABOUT_THE_QUERY)

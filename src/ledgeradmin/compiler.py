"""Rule → SQL: fills the templates of db/triggers/ for one rule and its source table.

The one piece every other module builds on is ``desired_sql``: the desired posting of the
rows of any relation under a rule. The trigger function, backfill and verify all embed it,
so they cannot disagree about what a row should post.
"""

from __future__ import annotations

import datetime as dt
import functools
import hashlib
import re
from dataclasses import dataclass

from psycopg import sql

from .catalog import PINNED_SETTINGS, SESSION_SETTINGS, Target, expressions, session_independent
from .config import Config, Line, Rule
from .resources import read_sql

_PLACEHOLDER = re.compile(r"\{\{(\w+)\}\}")
# ledger.line amounts are numeric(20, 4): rounded to 4 decimals, below 10^16.
AMOUNT_SCALE, AMOUNT_LIMIT = 4, "1e16"
#: Up to this many accounts in ledger.toml, an `account_sql` value is first looked for in
#: a list compiled into the posting function (cheaper than a lookup per statement).
CHART_INLINE_MAX = 64
#: Line hashes are shifted right by this many bits: each line adds a difference of two
#: such hashes, less than 2**55 in size, so the sum of config.MAX_LINES (255) of them
#: fits a bigint (the fingerprint).
LINE_HASH_SHIFT = 9


@functools.lru_cache(maxsize=None)
def template(name: str) -> str:
    """A template of db/ (``triggers/x.sql`` by default folder) without its leading comment block."""
    lines = read_sql(name if "/" in name else f"triggers/{name}").splitlines()
    while lines and (lines[0].startswith("--") or not lines[0].strip()):
        lines.pop(0)
    return "\n".join(lines).rstrip() + "\n"


def fill(text: str, **values: str) -> str:
    """Replace every {{name}}; a placeholder without a value is a bug, not a silent blank."""

    def sub(m: re.Match) -> str:
        return values[m.group(1)]

    return _PLACEHOLDER.sub(sub, text)


def literal(value: str) -> str:
    return sql.Literal(value).as_string(None)


def statements(name: str, **values: str) -> list[str]:
    """The statements of a multi-statement template, each filled. The template is split
    before filling, so values (names, literals) can never split a statement."""
    return [fill(statement, **values) for statement in split_statements(template(name))]


def split_statements(text: str) -> list[str]:
    """Split a script at semicolons that end a line outside dollar quotes."""
    statements, current, tag = [], [], None
    for line in text.splitlines():
        current.append(line)
        for m in re.finditer(r"\$[A-Za-z_]*\$", line):
            if tag is None:
                tag = m.group(0)
            elif m.group(0) == tag:
                tag = None
        if tag is None and line.rstrip().endswith(";"):
            statement = "\n".join(current).strip()
            statements.append(statement[:-1].rstrip())
            current = []
    rest = "\n".join(current).strip()
    if rest:
        statements.append(rest)
    return [s for s in statements if s]


@dataclass(frozen=True)
class CompiledRule:
    rule: Rule
    target: Target
    function: str  # qualified, quoted name
    trigger: str  # trigger name prefix
    body: str  # the function body as stored in pg_proc.prosrc
    statements: tuple[str, ...]  # install statements, registry row last
    checksum: str


def function_name(rule_name: str) -> str:
    return sql.Identifier("ledger", f"post_{rule_name}").as_string(None)


def trigger_prefix(rule_name: str) -> str:
    return f"ledgeradmin_{rule_name}"


def qualified(alias: str, columns) -> list[str]:
    """alias."column" for each column, quoted."""
    return [f"{alias}.{sql.Identifier(c).as_string(None)}" for c in columns]


def key_text(target: Target, alias: str = "r") -> str:
    """The source key of a row as text: '42' for one column, '(1,x)' for several."""
    cols = qualified(alias, target.key)
    if len(cols) == 1:
        return f"({cols[0]})::text"
    return f"ROW({', '.join(cols)})::text"


def key_num(target: Target, alias: str = "r") -> str:
    """The key as bigint for rules keyed by one integer column, else NULL."""
    if target.integer_key:
        return f"({alias}.{sql.Identifier(target.key[0]).as_string(None)})::bigint"
    return "NULL::bigint"


def row_match(target: Target, text_col: str, num_col: str | None = None) -> str:
    """Condition matching source row r to the text key in ``text_col``, or for an integer
    key to the bigint in ``num_col`` when there is one (indexable when it can be)."""
    if target.integer_key:
        return f"r.{sql.Identifier(target.key[0]).as_string(None)} = {num_col or f'({text_col})::bigint'}"
    return f"{key_text(target)} = {text_col}"


def since_window(rule: Rule, since: dt.date | None) -> str | None:
    """Condition on source row r: the rule's `date` on or after the day ``since`` (UTC, as
    the settings are pinned). None without a day, or for a rule without a `date`, which has
    nothing to select its recent rows by."""
    if since is None or rule.date is None:
        return None
    return f"({rule.date}) >= {literal(since.isoformat())}::date"


def recent_entries(since: dt.date) -> str:
    """An array of the ids of the entries dated on or after ``since``, for `x = ANY (…)`:
    rows keyed by entry are then fetched by index, never by a scan of the whole table,
    whatever the planner estimates."""
    return f"ARRAY(SELECT e.id FROM ledger.entry AS e WHERE e.effective_at >= {literal(since.isoformat())}::date)"


def keys_sql(target: Target, relation: str) -> str:
    """(source_key, key_num) of every row of ``relation``."""
    return f"SELECT {key_text(target)} AS source_key, {key_num(target)} AS key_num FROM {relation} AS r"


def one_key_sql(target: Target, text_expr: str) -> str:
    """(source_key, key_num) of one key given as an SQL text expression."""
    num = f"({text_expr})::bigint" if target.integer_key else "NULL::bigint"
    return f"SELECT {text_expr} AS source_key, {num} AS key_num"


def link_match(target: Target, keys: str = "k", *, exact: bool = True) -> str:
    """Condition on ledger.posting p selecting the links of the keys in CTE ``keys``, in the index
    on (rule, key_num, source_key): each key looked up (= ANY of an array), and the scan
    bounded by the least and greatest key. The bounds matter when the planner's statistics
    predate the rule's links (a rule installed or loaded since the last ANALYZE, or links
    written earlier in the transaction): it may then deem the rule alone selective enough
    and look no further than the index's first column, reading every link of the rule.
    Not ``exact``: every link in those bounds (one range read, for keys that fill most of
    their range: the caller matches the links to its keys)."""
    column = "p.key_num" if target.integer_key else "p.source_key"
    key = f"{keys}.key_num" if target.integer_key else f"{keys}.source_key"
    match = f"{column} BETWEEN (SELECT min({key}) FROM {keys}) AND (SELECT max({key}) FROM {keys})"
    if exact:
        match = f"{column} = ANY (ARRAY(SELECT {key} FROM {keys}))\n      AND {match}"
    return match if target.integer_key else f"p.key_num IS NULL\n      AND {match}"


def key_display(target: Target, value: str) -> str:
    """SQL text expression rendering a key value (an SQL text expression) as (col)=(value)."""
    names = ", ".join(target.key)
    if len(target.key) == 1:
        return f"{literal(f'({names})=(')} || {value} || ')'"
    return f"{literal(f'({names})=')} || {value}"


def _columns(rule: Rule, target: Target) -> str:
    """The rule's expressions over a row r (desired_columns.sql): the x layer of every reader."""
    lines = []
    for i, line in enumerate(rule.lines, start=1):
        value = f"({line.amount})::numeric"
        signed = value if line.side == "debit" else f"-({value})"
        lines.append(f"{_account(line)} AS a{i}, round({signed}, {AMOUNT_SCALE}) AS m{i}")
    return fill(
        template("desired_columns.sql"),
        key_text=key_text(target),
        key_num=key_num(target),
        date=rule.date or "now()",
        memo=rule.memo or "NULL",
        currency=rule.currency,
        lines=",\n           ".join(lines),
    ).rstrip()


def _account(line: Line) -> str:
    return literal(line.account) if line.account is not None else f"({line.account_sql})"


def line_hash(amount: str, account: str) -> str:
    """The hash of one line: of its amount's digits twice, first seeded by the account and
    the sign, then by that first hash. hash_numeric_extended hashes neither the sign nor
    the weight (it XORs the weight into the low bits), so one call would hash 7.5, -7.5 and
    75000 alike; the second call mixes the weight in through its seed."""
    seed = f"hashtext({account})" if amount == "0" else f"hashtext({account}) # ({amount} < 0)::int"
    return (f"hash_numeric_extended({amount}, hash_numeric_extended({amount}, {seed}))"
            f" >> {LINE_HASH_SHIFT}")


def _fingerprint(rule: Rule) -> str:
    """The fingerprint of a desired posting, over the columns of layer x."""
    hashes = []
    for i, line in enumerate(rule.lines, start=1):
        # the line's hash, less that of a zero amount on the same account (so that a zero
        # line adds 0, whatever its account, NULL included); for a constant account that
        # second hash is folded at planning
        account = _account(line) if line.account is not None else f"coalesce(x.a{i}, '')"
        hashes.append(f"(({line_hash(f'x.m{i}', account)}) - ({line_hash('0', account)}))")
    seed = "hashfloat8extended(date_part('epoch', x.effective_at), 0)" if rule.date else "0"
    return f"hashtextextended(x.currency, {seed}) # ({' + '.join(hashes)})"


def _all_zero(rule: Rule) -> str:
    return " AND ".join(f"x.m{i} = 0" for i in range(1, len(rule.lines) + 1))


def _balance(rule: Rule) -> str:
    return " + ".join(f"x.m{i}" for i in range(1, len(rule.lines) + 1))


def _account_lookup(i: int) -> str:
    return f"EXISTS (SELECT FROM ledger.account AS a WHERE a.code = x.a{i})"


def _chart(rule: Rule) -> str | None:
    """The codes of ledger.toml as an SQL array, when few enough to compile into a function."""
    if 0 < len(rule.chart) <= CHART_INLINE_MAX:
        return f"ARRAY[{', '.join(literal(c) for c in rule.chart)}]::text[]"
    return None


def desired_sql(rule: Rule, target: Target, relation: str, *, fenced: bool = True) -> str:
    """The desired posting of every row of ``relation`` (aliased r) under ``rule``.

    Fenced (the writers' form), each layer ends in OFFSET 0, so that each expression is
    computed once per row however often the layers above refer to it. Unfenced (verify's
    form), a volatile column (MARKER) does that instead, which lets the planner scan the
    source in parallel (PostgreSQL 15 plans no parallel scan under OFFSET); it still drops
    the columns the reader never reads. Use the unfenced form as a subquery in FROM, not in
    a CTE.
    """
    n = len(rule.lines)
    text = fill(
        template("desired.sql"),
        relation=relation,
        columns=_columns(rule, target),
        all_zero=_all_zero(rule),
        account_list=", ".join(f"x.a{i}" for i in range(1, n + 1)),
        amount_list=", ".join(f"CASE WHEN abs(x.m{i}) < {AMOUNT_LIMIT} THEN x.m{i} END" for i in range(1, n + 1)),
        fingerprint=_fingerprint(rule),
        problem=_problem(rule),
        when=rule.when or "true",
        marker="" if fenced else MARKER,
    ).rstrip()
    return text if fenced else FENCE.sub("", text)


def _problem(rule: Rule) -> str:
    """The problem column of desired.sql (desired_problem.sql), over the columns of layer x:
    the first check a row fails, named. Amounts beyond numeric(20, 4) are NULL in the
    amounts array, so that computing it never fails."""
    n = len(rule.lines)
    unknown = {}  # line -> condition: its account_sql value is not in ledger.account
    chart = _chart(rule)
    for i, line in enumerate(rule.lines, start=1):
        if line.account_sql is not None:
            # a code of ledger.toml is known without a lookup; any other must be in ledger.account
            unknown[i] = (f"x.m{i} <> 0 AND x.a{i} <> ALL ({chart}) AND NOT {_account_lookup(i)}" if chart
                          else f"x.m{i} <> 0 AND NOT {_account_lookup(i)}")
    # every line's checks, one kind after the other (the first problem found is named)
    checks = [f"           WHEN x.m{i} IS NULL\n               THEN '22004 the amount of line {i} is NULL'"
              for i in range(1, n + 1)]
    checks += [f"           WHEN x.m{i} = 'NaN'\n               THEN '22023 the amount of line {i} is NaN'"
               for i in range(1, n + 1)]
    checks += [f"           WHEN abs(x.m{i}) >= {AMOUNT_LIMIT}\n"
               f"               THEN '22003 the amount of line {i}, ' || abs(x.m{i}) || ', overflows numeric(20, 4)'"
               for i in range(1, n + 1)]
    checks += [f"           WHEN x.a{i} IS NULL AND x.m{i} <> 0\n               THEN '22004 the account of line {i} is NULL'"
               for i in unknown]
    checks += [f"           WHEN {c}\n"
               f"               THEN '23503 account ' || quote_literal(x.a{i}) || ' of line {i} is not in ledger.account'"
               for i, c in unknown.items()]
    return fill(template("desired_problem.sql"), balance=_balance(rule), line_checks="\n".join(checks)).rstrip()


def insert_sql(rule: Rule, target: Target) -> str:
    """The INSERT fast path of a posting function (post_new.sql): the rows of new_rows posted
    in one statement that fails when any row fails a check (the fallback then takes over)."""
    n = len(rule.lines)
    checks = ["isfinite(x.effective_at)", f"{_balance(rule)} = 0"]
    chart = _chart(rule)
    for i, line in enumerate(rule.lines, start=1):
        if line.account_sql is not None:
            known = f"ledger.known_account(x.a{i})"
            checks.append(f"(x.m{i} = 0 OR x.a{i} = ANY ({chart}) OR {known})" if chart else f"(x.m{i} = 0 OR {known})")
    return fill(
        template("post_new.sql"),
        columns=_columns(rule, target),
        when=rule.when or "true",
        rule=literal(rule.name),
        all_zero=_all_zero(rule),
        checks="\n            AND ".join(checks),
        line_values=", ".join(f"({i}, x.a{i}, x.m{i})" for i in range(1, n + 1)),
        fingerprint=_fingerprint(rule),
    ).rstrip()


#: An OFFSET 0 line of desired.sql: the end of one layer.
FENCE = re.compile(r"\n[ \t]*OFFSET 0\b[^\n]*")
#: Each layer's last column in the unfenced form: a volatile function in a subquery's
#: select list keeps PostgreSQL from merging the subquery into its reader, which would
#: compute each of its expressions again wherever the reader refers to it.
MARKER = ",\n           pg_catalog.clock_timestamp() AS evaluated_once"


TRIGGER_RESULT = "count(*) INTO v_count"
COUNTS_RESULT = (
    "count(*) FILTER (WHERE x.post AND x.old_entry_id IS NULL) AS posted, "
    "count(*) FILTER (WHERE NOT x.post) AS reversed, "
    "count(*) FILTER (WHERE x.post AND x.old_entry_id IS NOT NULL) AS reposted"
)


def reconcile_sql(
    rule: Rule, target: Target, relation: str, keys: str, result: str = TRIGGER_RESULT, limit: int | None = None,
    prelude: str = "",
) -> str:
    """One statement reconciling the rows keyed by ``keys`` (source_key, key_num) with their
    desired posting; with ``limit``, at most that many keys are changed (in key order).
    ``prelude``: CTEs (each followed by a comma) that ``relation`` and ``keys`` may read."""
    capped = limit is not None
    return fill(
        template("reconcile.sql"),
        prelude=prelude,
        desired=desired_sql(rule, target, relation),
        keys=keys,
        rule=literal(rule.name),
        link_match=link_match(target),
        diff="x_all" if capped else "x",
        limit_cte=(f", x AS MATERIALIZED (\n    SELECT * FROM x_all ORDER BY source_key LIMIT {int(limit)}\n)"
                   if capped else ""),
        unresolved=("\n      AND f.source_key NOT IN (SELECT source_key FROM x_all EXCEPT ALL SELECT source_key FROM x)"
                    if capped else ""),
        result=result,
    ).rstrip()


def update_guard(target: Target, inputs: tuple[str, ...] | None) -> str:
    """The posting function's early return for an UPDATE that changed none of the columns
    ``inputs`` (update_guard.sql); nothing when those are not known (None)."""
    if inputs is None:
        return ""
    key_match = " AND ".join(f"{o} = {n}" for o, n in zip(qualified("o", target.key), qualified("n", target.key)))
    return fill(template("update_guard.sql"), key_match=key_match, old_columns=", ".join(qualified("o", inputs)),
                new_columns=", ".join(qualified("n", inputs))).rstrip()


def compile_rule(rule: Rule, target: Target, inputs: tuple[str, ...] | None) -> CompiledRule:
    """The install statements of one rule: its posting function, triggers and registry row.
    ``inputs`` are the columns the rule reads (catalog.input_columns)."""
    function = function_name(rule.name)
    trigger = trigger_prefix(rule.name)
    none = "(SELECT * FROM old_rows WHERE false)"

    def keys(*relations: str) -> str:
        return "\nUNION\n".join(keys_sql(target, r) for r in relations)

    one_key = one_key_sql(target, "v_key")
    one_row = "(SELECT (v_row).*)"
    # A plain table's transition rows have its own row type: `*` keeps the function valid
    # when columns are added. Partitions may order their columns differently from the
    # parent: there the columns are named, in the parent's order.
    row_columns = "*"
    if target.partitions:
        row_columns = ", ".join(qualified("r", target.columns))
    if rule.on_error == "block":
        # with no row at fault, an INSERT's rows reconciled in full
        steps = {"reconcile_new": reconcile_sql(rule, target, "new_rows", keys("new_rows"))}
    else:
        def good(relation: str) -> str:
            """The rows of a transition table outside v_bad (the keys recorded as failures)."""
            return (f"(SELECT r.* FROM {relation} AS r WHERE NOT EXISTS"
                    f" (SELECT FROM unnest(v_bad) AS b (key) WHERE b.key = {key_text(target)}))")

        steps = {
            "reconcile_new_rest": reconcile_sql(rule, target, good("new_rows"), keys(good("new_rows"))),
            "reconcile_update_rest": reconcile_sql(rule, target, good("new_rows"),
                                                   keys(good("new_rows"), good("old_rows"))),
        }
    raise_row_error = fill(template("raise_row_error.sql"), rule=literal(rule.name), source_label=literal(target.label),
                           key_display=key_display(target, "v_key")).rstrip()
    record_failure = (f"                        PERFORM ledger.record_failure({literal(rule.name)}, v_key, v_state,"
                      " v_message, v_detail, v_hint);")
    # an error of the fast path: raised as it is when it is not the rows' fault; of a full
    # reconcile (it looks up its keys' links), also a link made meanwhile, as the 40001 it is
    not_the_rows = template("not_the_rows.sql").rstrip()
    not_the_rows_full = f"{fill(template('link_conflict.sql'), rule=literal(rule.name)).rstrip()}\n{not_the_rows}"
    # a replayed row's error: as above, else as on_error says
    row_error = f"{not_the_rows_full}\n{raise_row_error if rule.on_error == 'block' else record_failure}"
    fallback = fill(
        template(f"fallback_{rule.on_error}.sql"),
        **steps,
        raise_row_error=raise_row_error,
        desired_new=desired_sql(rule, target, "new_rows"),
        key_text=key_text(target),
        row_key_text=key_text(target, "v_row"),
        row_columns=row_columns,
        rule=literal(rule.name),
        source_label=literal(target.label),
        key_display=key_display(target, "v_key"),
        replay_row=replay_row(target, reconcile_sql(rule, target, one_row, one_key), row_error),
        reconcile_row=reconcile_sql(rule, target, one_row, one_key),
        reconcile_gone=reconcile_sql(rule, target, none, one_key),
        not_the_rows=not_the_rows_full,
    ).rstrip()
    create = fill(
        template("rule_function.sql"),
        nested_replay=nested_replay(rule, target, row_columns, row_error).rstrip(),
        function=function,
        rule=literal(rule.name),
        source=target.ident,
        source_label=literal(target.label),
        on_error=rule.on_error,
        settings=rule_settings(rule, target),
        update_guard=update_guard(target, inputs),
        reconcile_insert=insert_sql(rule, target),
        reconcile_update=reconcile_sql(rule, target, "new_rows", keys("new_rows", "old_rows")),
        reconcile_delete=reconcile_sql(rule, target, none, keys("old_rows")),
        fallback=fallback,
        not_the_rows=not_the_rows,
        unseen_links=fill(template("unseen_links.sql"), rule=literal(rule.name), keys=keys("old_rows")).rstrip(),
    ).rstrip()
    body = create.split("$ledgeradmin$", 2)[1]
    triggers = []
    for relation in (target.ident, *target.partitions):
        triggers += statements("rule_triggers.sql", function=function, trigger=trigger, source=relation)
    checksum = hashlib.sha256("\n;\n".join([create, *triggers]).encode()).hexdigest()[:16]
    triggers += statements("rule_key_form.sql", rule=literal(rule.name), **_key_form(target))
    if target.integer_key:
        triggers += statements("rule_key_check.sql", rule=literal(rule.name), key=literal(target.key[0]))
    triggers += statements("rule_stray_triggers.sql", function=function,
                           relations=", ".join(literal(r) for r in (target.ident, *target.partitions)))
    triggers += statements(
        "rule_register.sql",
        function=function,
        rule=literal(rule.name),
        source_label=literal(target.label),
        on_error=literal(rule.on_error),
        checksum=literal(checksum),
    )
    return CompiledRule(rule, target, function, trigger, body, (create, *triggers), checksum)


def _key_form(target: Target) -> dict[str, str]:
    """rule_key_form.sql: the links of the rule's key in the other form, and their new key_num."""
    if target.integer_key:
        # the text of an integer, a numeric one ('1.0') or a signed one ('+3'): the same row
        return {"key_num": "source_key::numeric::bigint",
                "other_form": ("key_num IS NULL\n"
                               "  AND CASE WHEN source_key ~ '^[[:space:]]*[+-]?[0-9]{1,19}([.]0*)?[[:space:]]*$'\n"
                               "           THEN source_key::numeric BETWEEN -9223372036854775808 AND 9223372036854775807"
                               "\n      END")}
    return {"key_num": "NULL", "other_form": "key_num IS NOT NULL"}


#: `= NULL` (or `NULL =`), which transform_null_equals = on would read as IS NULL
_EQUALS_NULL = re.compile(r"=\s*null\b|\bnull\s*=", re.I)


def rule_settings(rule: Rule, target: Target) -> str:
    """SET clauses a posting function needs beyond the ones every function has: the time
    zone and the text of dates, times, intervals and floats unless the rule cannot depend on
    them (catalog.session_independent); how its body reads a
    backslash in a string literal, and `= NULL`, when a rule's expression has them (PL/pgSQL
    parses the body under the caller's settings); and the text of a bytea key."""
    settings = [f"{sql.Identifier(name).as_string(None)} = {literal(PINNED_SETTINGS[name])}"
                for name in SESSION_SETTINGS] if not session_independent(rule, target) else []
    if any("\\" in expr for _field, expr, _kind in expressions(rule)):
        settings.append("standard_conforming_strings = on")
    if "bytea" in target.key_types:
        settings.append("bytea_output = 'hex'")
    if any(_EQUALS_NULL.search(expr) for _field, expr, _kind in expressions(rule)):
        settings.append("transform_null_equals = off")
    return "".join(f"\n    SET {s}" for s in settings)


def replay_row(target: Target, reconcile: str, row_error: str) -> str:
    """The body of a row-by-row loop over v_row (replay_row.sql): ``reconcile`` in a
    subtransaction, a failure handled by ``row_error``."""
    return fill(template("replay_row.sql"), row_key_text=key_text(target, "v_row"), reconcile=reconcile,
                row_error=row_error).rstrip()


def nested_replay(rule: Rule, target: Target, row_columns: str, row_error: str) -> str:
    """The posting function's path for a statement whose rows a statement nested in it
    wrote again (nested_replay.sql): each row reconciled from its current version."""
    match = (f"({', '.join(qualified('r', target.key))})"
             f" = ({', '.join(qualified('v_row', target.key))})")
    current = f"(SELECT * FROM {target.ident} AS r WHERE {match})"
    row = replay_row(target, reconcile_sql(rule, target, current, one_key_sql(target, "v_key")), row_error)
    return fill(template("nested_replay.sql"), setting=literal(f"ledgeradmin.nested_{rule.name}"),
                row_columns=row_columns, replay_row=row)


def core_statements() -> list[str]:
    """The shared functions every posting function calls (idempotent)."""
    out: list[str] = []
    for name in ("record_failure.sql", "posting_problem.sql", "known_account.sql", "linked_meanwhile.sql"):
        out += statements(name)
    return out


def accounts_statement(config: Config) -> list[str]:
    if not config.accounts:
        return []
    values = ",\n       ".join(
        f"({literal(a.code)}, {literal(a.name)}, {literal(a.type)})" for a in config.accounts.values()
    )
    return statements("accounts_sync.sql", values=values)


def uninstall_statements(rule_name: str) -> list[str]:
    return statements("rule_uninstall.sql", function=function_name(rule_name), rule=literal(rule_name))

"""The people-facing text of a verify result."""

from __future__ import annotations

from .backfill import DEFAULT_MAX_REVERSALS
from .output import table
from .verify import CATEGORIES, VerifyResult

COLUMNS = ["rule", "source", "eligible", "posted", "missing", "orphaned", "drifted", "failed", "trigger"]
NUMBERS = COLUMNS[2:8]


def _n(value: int | None) -> str:
    return "?" if value is None else str(value)


def render_text(result: VerifyResult) -> str:
    rows = []
    for r in result.rules:
        row = {c: getattr(r, c) for c in COLUMNS}
        row.update({c: _n(row[c]) for c in NUMBERS})
        rows.append(row)
    lines = [table(rows, COLUMNS, right=NUMBERS)]
    for r in result.rules:
        if r.error:
            lines.append(f"  {r.rule}: {r.error}")
        if _closed(r):
            lines.append(f"  {r.rule}: {r.missing_closed or 0:,} missing and {r.drifted_closed or 0:,} drifted are dated "
                         f"in the closed period (the books are closed through {result.closed_through}): they cannot "
                         "post until it is reopened (`ledgeradmin period reopen`)")
        for category in (*CATEGORIES, "failed"):
            keys = r.keys.get(category)
            if keys:
                more = (getattr(r, category) or 0) - len(keys)
                tail = f" (and {more:,} more)" if more > 0 else ""
                lines.append(f"  {r.rule} {category}: {', '.join(keys)}{tail}")
    lines.append(_ledger_line(result))
    for problem, items in result.ledger.keys.items():
        lines.append(f"  ledger {problem}: {', '.join(items)}")
    lines.append(_overall_line(result))
    return "\n".join(lines)


def _closed(r) -> int:
    return (r.missing_closed or 0) + (r.drifted_closed or 0)


def _ledger_line(result: VerifyResult) -> str:
    ledger = result.ledger
    parts = [f"{ledger.entries:,} entries"]
    parts.append("all balanced" if not ledger.unbalanced else f"{ledger.unbalanced:,} UNBALANCED")
    if ledger.duplicate_live_keys:
        parts.append(f"{ledger.duplicate_live_keys:,} keys with DUPLICATE live entries")
    if ledger.unlinked_live_entries:
        parts.append(f"{ledger.unlinked_live_entries:,} live entries UNLINKED from any source row")
    balances = ledger.trial_balance
    if all(v == 0 for v in balances.values()):
        parts.append("trial balance 0.00")
    else:
        parts.append("trial balance OFF: " + ", ".join(f"{c} {v:+,.2f}" for c, v in balances.items() if v != 0))
    if ledger.rules_not_in_config:
        parts.append(f"live entries of rules not in the config: {', '.join(ledger.rules_not_in_config)}")
    return "ledger: " + ", ".join(parts)


def _overall_line(result: VerifyResult) -> str:
    total, in_sync = result.total, result.in_sync
    pct = 100.0 * in_sync / total if total else 100.0
    head = f"overall: {in_sync:,}/{total:,} in sync ({pct:.1f}%)"
    if result.ok:
        return head + " — no problems"
    problems = result.problems
    triggers = [r.rule for r in result.rules if r.trigger != "ok"]
    tail = f"{problems:,} problem{'s' if problems != 1 else ''}"
    closed = sum(_closed(r) for r in result.rules)
    if problems:
        tail += "; `ledgeradmin backfill` repairs them" + (f", but for the {closed:,} in the closed period" if closed else "")
    for r in result.rules:
        if (r.orphaned or 0) > DEFAULT_MAX_REVERSALS:
            tail += (f"; {r.rule}: {r.orphaned:,} orphaned, more than backfill reverses unasked (--max-reversals):"
                     " has the rule lost sight of its rows (a dropped partition, a replaced table)?")
    if result.ledger.rules_not_in_config and any(r.missing for r in result.rules):
        tail += ("; missing rows while rules not in the config have live entries: if one was renamed, "
                 "`ledgeradmin rename OLD NEW` first (backfill would book its rows again)")
    if triggers:
        tail += f"; trigger not ok for {', '.join(triggers)}: `ledgeradmin status`"
    unchecked = [r.rule for r in result.rules if r.error]
    if unchecked:
        tail += f"; not checked: {', '.join(unchecked)} (the reason is above)"
    return f"{head} — {tail}"

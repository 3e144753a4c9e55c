"""Prometheus textfile (node_exporter textfile collector) for a verify result."""

from __future__ import annotations

import os
import tempfile
import time
from pathlib import Path

from .output import writing
from .verify import CATEGORIES, VerifyResult


def _label(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def render(result: VerifyResult) -> str:
    out = [
        "# HELP ledgeradmin_rows Source rows and live postings per rule and state at the last verify.",
        "# TYPE ledgeradmin_rows gauge",
    ]
    for r in result.rules:
        for state in ("eligible", "posted", *CATEGORIES, "failed"):
            value = getattr(r, state)
            if value is not None:
                out.append(f'ledgeradmin_rows{{rule="{_label(r.rule)}",state="{state}"}} {value}')
    out += [
        "# HELP ledgeradmin_trigger_ok 1 when the rule's trigger is installed, enabled and up to date.",
        "# TYPE ledgeradmin_trigger_ok gauge",
        *(f'ledgeradmin_trigger_ok{{rule="{_label(r.rule)}"}} {int(r.trigger == "ok")}' for r in result.rules),
        "# HELP ledgeradmin_ledger_problems Whole-ledger problems by kind.",
        "# TYPE ledgeradmin_ledger_problems gauge",
    ]
    ledger = result.ledger
    for kind in ("unbalanced", "duplicate_live_keys", "unlinked_live_entries"):
        out.append(f'ledgeradmin_ledger_problems{{kind="{kind}"}} {getattr(ledger, kind)}')
    out += [
        "# HELP ledgeradmin_ledger_entries Journal entries in the ledger.",
        "# TYPE ledgeradmin_ledger_entries gauge",
        f"ledgeradmin_ledger_entries {ledger.entries}",
        "# HELP ledgeradmin_trial_balance Total debits minus total credits per currency (must be 0).",
        "# TYPE ledgeradmin_trial_balance gauge",
        *(f'ledgeradmin_trial_balance{{currency="{_label(c)}"}} {v}' for c, v in ledger.trial_balance.items()),
        "# HELP ledgeradmin_verify_ok 1 when the last verify found the ledger in sync.",
        "# TYPE ledgeradmin_verify_ok gauge",
        f"ledgeradmin_verify_ok {int(result.ok)}",
        "# HELP ledgeradmin_verify_duration_seconds Duration of the last verify.",
        "# TYPE ledgeradmin_verify_duration_seconds gauge",
        f"ledgeradmin_verify_duration_seconds {result.duration_seconds:.6f}",
        "# HELP ledgeradmin_verify_rule_duration_seconds Time the last verify spent on each rule.",
        "# TYPE ledgeradmin_verify_rule_duration_seconds gauge",
        *(f'ledgeradmin_verify_rule_duration_seconds{{rule="{_label(r.rule)}"}} {r.seconds:.6f}'
          for r in result.rules),
        "# HELP ledgeradmin_verify_ledger_duration_seconds Time the last verify spent on the whole-ledger checks.",
        "# TYPE ledgeradmin_verify_ledger_duration_seconds gauge",
        f"ledgeradmin_verify_ledger_duration_seconds {ledger.seconds:.6f}",
        "# HELP ledgeradmin_verify_timestamp_seconds When the last verify finished (Unix time).",
        "# TYPE ledgeradmin_verify_timestamp_seconds gauge",
        f"ledgeradmin_verify_timestamp_seconds {time.time():.3f}",
    ]
    return "\n".join(out) + "\n"


#: What to do when the textfile cannot be written.
HINT = ("--prometheus FILE: its directory must exist and be writable by this user, e.g. node_exporter's "
        "--collector.textfile.directory (docs/operations.md)")


def check_writable(path: str | os.PathLike) -> None:
    """Refuse, before a verify that may run long, a FILE that could not be written: a
    temporary file is created beside it, as write_textfile does, and removed."""
    target = Path(path)
    with writing(f"the Prometheus file {target}", HINT):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
        os.close(fd)
        os.unlink(tmp)


def write_textfile(result: VerifyResult, path: str | os.PathLike) -> None:
    """Write atomically: a temporary file in the same directory, then rename. A file
    that cannot be written is a LedgerError naming it and the reason."""
    target = Path(path)
    with writing(f"the Prometheus file {target}", HINT):
        fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", dir=target.parent or ".")
        try:
            with os.fdopen(fd, "w", encoding="utf-8") as f:
                f.write(render(result))
            os.chmod(tmp, 0o644)
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise

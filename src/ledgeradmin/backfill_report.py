"""Backfill output: progress while it runs, a summary per rule at the end."""

from __future__ import annotations

import sys
import time

import click

from .backfill import BackfillResult, RuleSummary
from .output import table

COLUMNS = ["rule", "source", "scanned", "posted", "reversed", "reposted", "failed"]


class ProgressReporter:
    """A one-line progress bar on a terminal; a plain log line every 10 s otherwise (cron)."""

    def __init__(self, stream=None, interval: float = 10.0) -> None:
        self.stream = stream or sys.stderr
        self.tty = self.stream.isatty()
        self.interval = interval
        self.started = time.monotonic()
        self.last_log = self.started
        self.rule = None

    def __call__(self, summary: RuleSummary, estimate: int) -> None:
        now = time.monotonic()
        if summary.rule != self.rule:
            self.rule, self.started = summary.rule, now
        elapsed = max(now - self.started, 1e-6)
        rate = summary.scanned / elapsed
        total = max(estimate, summary.scanned)
        eta = (total - summary.scanned) / rate if rate > 0 else 0
        line = (f"backfill {summary.rule}: {summary.scanned:,}/{total:,} rows scanned, {summary.repaired:,} repaired,"
                f" {summary.failed:,} failed, {rate:,.0f} rows/s, ETA {eta:,.0f} s")
        if self.tty:
            width = 30
            filled = int(width * summary.scanned / total) if total else width
            click.echo(f"\r[{'#' * filled}{'.' * (width - filled)}] {line}\x1b[K", file=self.stream, nl=False)
        elif now - self.last_log >= self.interval:
            self.last_log = now
            click.echo(f"{time.strftime('%Y-%m-%dT%H:%M:%S')} {line}", file=self.stream)

    def close(self) -> None:
        if self.tty and self.rule is not None:
            click.echo("", file=self.stream)


def render_text(result: BackfillResult) -> str:
    rows = [{c: getattr(r, c) for c in COLUMNS} for r in result.rules]
    lines = []
    if result.dry_run:
        lines.append("dry run: nothing was changed; these rows would be repaired")
    if result.since:
        lines.append(f"rows dated on or after {result.since.isoformat()} and the entries dated so"
                     " (a rule without a `date`: every row)")
    lines.append(table(rows, COLUMNS, right=COLUMNS[2:]))
    for r in result.rules:
        if r.error:
            lines.append(f"  {r.rule}: not checked, what it would repair is unknown: {r.error}")
        if r.refused:
            lines.append(f"  {r.rule}: a real run refuses this rule: it {r.refused}")
        if r.closed:
            lines.append(f"  {r.rule}: {r.closed:,} more rows are dated in the closed period: they cannot be posted "
                         "until it is reopened (`ledgeradmin period reopen`)")
        for category, keys in r.keys.items():
            lines.append(f"  {r.rule} {category}: {', '.join(keys)}")
        if r.failed_keys:
            more = r.failed - len(r.failed_keys)
            lines.append(f"  {r.rule} still failing: {', '.join(r.failed_keys)}" + (f" (and {more:,} more)" if more > 0 else "")
                         + " — see ledger.failure")
    if result.limit_reached:
        lines.append("limit reached: run again to repair more")
    repaired = sum(r.repaired for r in result.rules)
    failed = sum(r.failed for r in result.rules)
    verb = "would repair" if result.dry_run else "repaired"
    lines.append(f"{verb} {repaired:,} rows" + (f", {failed:,} still failing" if failed else "")
                 + f" in {result.duration_seconds:.1f} s")
    return "\n".join(lines)

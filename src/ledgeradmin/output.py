"""One way to render listings: an aligned table for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click


def table(rows: Sequence[dict], columns: Sequence[str], right: Sequence[str] = ()) -> str:
    """Aligned plain-text table; ``right`` columns are right-aligned (numbers)."""
    cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(values, widths, columns)]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(columns), *(fmt(row) for row in cells)])


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def format_option(f):
    """--json / --csv for listing commands (default: a table for people)."""
    f = click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="Print JSON.")(f)
    return click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(f)


def emit_rows(rows: Sequence[dict], columns: Sequence[str], fmt: str, right: Sequence[str] = ()) -> None:
    """Render a listing in the chosen format."""
    if fmt == "json":
        emit_json([{c: r.get(c) for c in columns} for r in rows])
    elif fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    else:
        click.echo(table(rows, columns, right))

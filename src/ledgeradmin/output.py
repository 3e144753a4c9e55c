"""One way to render listings: an aligned table for people, JSON for machines."""

from __future__ import annotations

import json
from collections.abc import Sequence

import click


def table(rows: Sequence[dict], columns: Sequence[str], right: Sequence[str] = ()) -> str:
    """Aligned plain-text table; ``right`` columns are right-aligned (numbers)."""
    cells = [[str(r.get(c, "")) for c in columns] for r in rows]
    widths = [max([len(c), *(len(row[i]) for row in cells)]) for i, c in enumerate(columns)]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(values, widths, columns)]
        return "  ".join(parts).rstrip()

    return "\n".join([fmt(columns), *(fmt(row) for row in cells)])


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))

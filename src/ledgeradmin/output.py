"""One way to render listings: an aligned table for people, JSON for machines; and one
way to fail writing a file."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Iterable, Iterator, Sequence
from itertools import islice

import click

from .errors import LedgerError


def table(rows: Sequence[dict], columns: Sequence[str], right: Sequence[str] = ()) -> str:
    """Aligned plain-text table; ``right`` columns are right-aligned (numbers)."""
    return "\n".join(table_blocks(rows, columns, right, block=max(len(rows), 1)))


def table_blocks(rows: Iterable[dict], columns: Sequence[str], right: Sequence[str] = (),
                 block: int = 1000) -> Iterator[str]:
    """The table of ``rows`` in blocks of ``block`` rows, the header first, read as they
    come: columns are as wide as the widest value so far, so a later, wider value widens
    its column from its block on."""
    widths = [len(c) for c in columns]

    def fmt(values: Sequence[str]) -> str:
        parts = [v.rjust(w) if c in right else v.ljust(w) for v, w, c in zip(values, widths, columns)]
        return "  ".join(parts).rstrip()

    rows = iter(rows)
    first = True
    while True:
        cells = [["" if r.get(c) is None else str(r.get(c)) for c in columns] for r in islice(rows, block)]
        widths = [max([w, *(len(row[i]) for row in cells)]) for i, w in enumerate(widths)]
        if cells or first:
            yield "\n".join([fmt(columns)] * first + [fmt(row) for row in cells])
        if len(cells) < block:
            return
        first = False


def emit_json(document: object) -> None:
    click.echo(json.dumps(document, indent=2, default=str))


def format_option(f):
    """--json / --csv for listing commands (default: a table for people)."""
    f = click.option("--csv", "fmt", flag_value="csv", help="Print CSV.")(f)
    f = click.option("--json", "fmt", flag_value="json", help="Print JSON.")(f)
    return click.option("--table", "fmt", flag_value="table", default=True, hidden=True)(f)


def emit_rows(rows: Iterable[dict], columns: Sequence[str], fmt: str, right: Sequence[str] = ()) -> None:
    """Render a listing in the chosen format, row by row as ``rows`` yields them: memory
    stays flat however long the listing."""
    if fmt == "json":
        opened = False  # the same text as emit_json of the whole list
        for r in rows:
            item = json.dumps({c: r.get(c) for c in columns}, indent=2, default=str).replace("\n", "\n  ")
            click.echo(("," if opened else "[") + "\n  " + item, nl=False)
            opened = True
        click.echo("\n]" if opened else "[]")
    elif fmt == "csv":
        import csv
        import sys

        writer = csv.writer(sys.stdout, lineterminator="\n")
        writer.writerow(columns)
        for r in rows:
            writer.writerow(["" if r.get(c) is None else r.get(c) for c in columns])
    else:
        for text in table_blocks(rows, columns, right):
            click.echo(text)


@contextlib.contextmanager
def writing(what: str, hint: str) -> Iterator[None]:
    """Turn an OSError of the block (a missing directory, a path under a regular file, no
    permission, a full disk) into ``cannot write WHAT: REASON`` (exit 2), not a traceback."""
    try:
        yield
    except OSError as exc:
        raise LedgerError(f"cannot write {what}: {exc.strerror or exc}", hint=hint) from None

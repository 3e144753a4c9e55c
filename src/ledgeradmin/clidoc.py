"""docs/cli.md, generated from the commands' --help (a test fails when it is stale).

    python -m ledgeradmin.clidoc > docs/cli.md
"""

from __future__ import annotations

import click

from .cli import main


def _commands(group: click.Group, prefix: list[str]):
    ctx = click.Context(group, info_name=" ".join(prefix))
    for name in group.list_commands(ctx):
        cmd = group.get_command(ctx, name)
        path = [*prefix, name]
        yield path, cmd
        if isinstance(cmd, click.Group):
            yield from _commands(cmd, path)


def _help(path: list[str], cmd: click.Command) -> str:
    """The --help text of ``cmd``, as `ledgeradmin … --help` prints it at 100 columns."""
    ctx = main.make_context("ledgeradmin", [], resilient_parsing=True, max_content_width=100, terminal_width=100)
    for name in path[1:]:
        sub = ctx.command.get_command(ctx, name)
        ctx = sub.make_context(name, [], parent=ctx, resilient_parsing=True)
    return ctx.command.get_help(ctx)


def reference() -> str:
    out = [
        "# Command reference",
        "",
        "Generated from `--help` by `python -m ledgeradmin.clidoc > docs/cli.md`; do not edit.",
        "",
        "```",
        _help(["ledgeradmin"], main),
        "```",
    ]
    for path, cmd in _commands(main, ["ledgeradmin"]):
        out += ["", f"## {' '.join(path)}", "", "```", _help(path, cmd), "```"]
    return "\n".join(out) + "\n"


if __name__ == "__main__":  # pragma: no cover
    click.echo(reference(), nl=False)

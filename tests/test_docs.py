"""The generated CLI reference is current, and every command's help shows an example."""

from pathlib import Path

import pytest
from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.clidoc import _commands, reference

REPO = Path(__file__).resolve().parents[1]


def test_cli_reference_is_current():
    committed = (REPO / "docs" / "cli.md").read_text(encoding="utf-8")
    assert committed == reference(), "docs/cli.md is stale: python -m ledgeradmin.clidoc > docs/cli.md"


@pytest.mark.parametrize("path", [p for p, _ in _commands(main, [])], ids=lambda p: " ".join(p))
def test_every_command_help_has_an_example(path):
    result = CliRunner().invoke(main, [*path, "--help"])
    assert result.exit_code == 0, result.output
    assert "Example:" in result.output
    assert "ledgeradmin " + path[0] in result.output.split("Example:")[1]


def test_readme_names_the_two_setup_commands():
    readme = (REPO / "README.md").read_text(encoding="utf-8")
    assert "make demo" in readme and "make test" in readme

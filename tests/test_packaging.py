"""A non-editable `pip install` of the repository works on its own: the wheel carries the
SQL of db/, and the installed `ledgeradmin` migrates, installs and posts from a working
directory outside the checkout. Slow (builds a venv and fetches dependencies)."""

from __future__ import annotations

import os
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"

pytestmark = pytest.mark.slow


def clean_env() -> dict[str, str]:
    """The environment minus anything that could point back into the checkout or pick a database."""
    drop = ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV", "PYTHONSTARTUP", "PIP_REQUIRE_VIRTUALENV")
    return {k: v for k, v in os.environ.items()
            if k not in drop and not k.startswith("PG") and not k.startswith("LEDGERADMIN_")}


def run(*args: str | Path, cwd: Path, timeout: int = 120) -> subprocess.CompletedProcess:
    result = subprocess.run([str(a) for a in args], cwd=cwd, env=clean_env(), capture_output=True, text=True,
                            timeout=timeout)
    assert result.returncode == 0, f"{args}: exit {result.returncode}\n{result.stdout}\n{result.stderr}"
    return result


@pytest.fixture(scope="module")
def venv(tmp_path_factory) -> Path:
    """A fresh virtualenv with the repository pip-installed into it (not editable)."""
    base = tmp_path_factory.mktemp("packaging")
    venv = base / "venv"
    run(sys.executable, "-m", "venv", venv, cwd=base)
    run(venv / "bin" / "python", "-m", "pip", "install", "--quiet", "--disable-pip-version-check", REPO,
        cwd=base, timeout=900)
    return venv


def test_installed_package_is_self_contained(venv, tmp_path):
    python = venv / "bin" / "python"
    out = run(python, "-c",
              "import ledgeradmin, ledgeradmin.resources as r; print(ledgeradmin.__file__); print(r.db_dir())",
              cwd=tmp_path).stdout.splitlines()
    package_file, db_dir = Path(out[0]), Path(out[1])
    assert venv in package_file.parents, package_file
    assert REPO not in package_file.parents
    assert venv in db_dir.parents, db_dir
    shipped = {p.relative_to(db_dir).as_posix() for p in db_dir.rglob("*.sql")}
    in_repo = {p.relative_to(REPO / "db").as_posix() for p in (REPO / "db").rglob("*.sql")}
    assert shipped == in_repo

    version = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    assert version in run(venv / "bin" / "ledgeradmin", "--version", cwd=tmp_path).stdout


def test_installed_cli_migrates_installs_and_posts(venv, dsn, conn, tmp_path):
    ledgeradmin = venv / "bin" / "ledgeradmin"
    workdir = tmp_path / "elsewhere"
    workdir.mkdir()
    conn.execute("DROP SCHEMA ledger CASCADE")  # migrate from scratch, with the wheel's migrations

    migrated = run(ledgeradmin, "migrate", "--dsn", dsn, cwd=workdir)
    assert "applied 0001.ledger-schema" in migrated.stdout
    installed = run(ledgeradmin, "install", "--config", SHOP_TOML, "--dsn", dsn, cwd=workdir)
    assert "installed rule sale (public.sales)" in installed.stdout
    run(ledgeradmin, "status", "--config", SHOP_TOML, "--dsn", dsn, cwd=workdir)

    conn.execute("""INSERT INTO public.sales (id, customer, sold_at, payment_method, total, tax)
                    VALUES (1, 'ann', '2024-05-01 10:00+00', 'card', 110, 10)""")
    entry = conn.execute("SELECT id, rule, source_key, memo FROM ledger.entry").fetchall()
    assert [e[1:] for e in entry] == [("sale", "1", "Sale 1 to ann")]
    lines = conn.execute("SELECT account, debit, credit, currency FROM ledger.line WHERE entry_id = %s "
                         "ORDER BY account", (entry[0][0],)).fetchall()
    assert lines == [("1050", 110, 0, "USD"), ("2200", 0, 10, "USD"), ("4000", 0, 100, "USD")]

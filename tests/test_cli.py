"""The command line: exit codes (0 ok, 1 problems, 2 usage/config/connection error),
`Error: …` + `Hint: …` on stderr, DSN and config resolution, help and version."""

from __future__ import annotations

import json
import re
import subprocess
import sys
import tomllib
from pathlib import Path

import click
import pytest
from click.testing import CliRunner
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from ledgeradmin.cli import main

REPO = Path(__file__).resolve().parents[1]
SHOP_TOML = REPO / "examples" / "shop" / "ledger.toml"
SHOP_RULES = ["sale", "requisition", "payment", "manufacturing"]
SECRET = "s3cretPW"

# -- helpers ---------------------------------------------------------------------------


def run(*args: str, env: dict | None = None):
    """Invoke the CLI in-process; stdout and stderr stay apart."""
    return CliRunner(env=env).invoke(main, list(args), catch_exceptions=False)


def ok(*args: str, env: dict | None = None):
    result = run(*args, env=env)
    assert result.exit_code == 0, f"exit {result.exit_code}\n{result.stdout}\n{result.stderr}"
    return result


def cli(command: str, dsn: str, *args: str, config: Path | None = SHOP_TOML):
    """`ledgeradmin COMMAND --dsn DSN [--config FILE] ARGS`."""
    options = ["--dsn", dsn] + (["--config", str(config)] if config else [])
    return run(command, *options, *args)


def status_rows(output: str) -> dict[str, str]:
    """rule -> trigger state, from the status table."""
    lines = output.strip().splitlines()
    header = lines[0].split()
    assert header[:4] == ["rule", "source", "on_error", "trigger"], header
    start = lines[0].index("trigger")
    end = lines[0].index("detail")
    return {line.split()[0]: line[start:end].strip() for line in lines[1:]}


def posting_functions(conn) -> set[str]:
    return {r[0] for r in conn.execute(
        "SELECT proname::text FROM pg_proc WHERE pronamespace = 'ledger'::regnamespace AND proname LIKE 'post\\_%'")}


def entry_count(conn) -> int:
    return conn.execute("SELECT count(*) FROM ledger.entry").fetchone()[0]


def insert_sale(conn, total=10):
    conn.execute("INSERT INTO public.sales (customer, total) VALUES ('ann', %s)", (total,))


def bad_config(tmp_path: Path) -> Path:
    path = tmp_path / "bad.toml"
    path.write_text(SHOP_TOML.read_text().replace("when = \"status = 'completed'\"", "when = \"state = 'completed'\""))
    assert path.read_text() != SHOP_TOML.read_text()
    return path


@pytest.fixture
def no_env(monkeypatch):
    """No DSN or config from the environment of whoever runs the tests."""
    for name in ("LEDGERADMIN_DSN", "LEDGERADMIN_CONFIG", "PGHOST", "PGPORT", "PGUSER", "PGDATABASE",
                 "PGSERVICE", "PGPASSWORD", "PGOPTIONS"):
        monkeypatch.delenv(name, raising=False)


# -- happy paths -----------------------------------------------------------------------


def test_migrate_reports_applied_then_up_to_date(dsn, conn):
    conn.execute("DROP SCHEMA ledger CASCADE")
    first = ok("migrate", "--dsn", dsn)
    assert first.stdout.splitlines() == [
        "applied 0001.ledger-schema", "applied 0002.ledger-reader-role", "applied 0003.posting-fingerprint-bigint",
        "applied 0004.posting-replica-identity", "applied 0005.ledger-closed-periods",
        "applied 0006.posting-fingerprint-sign-weight", "applied 0007.closed-period-message-datestyle"]
    second = ok("migrate", "--dsn", dsn)
    assert "up to date" in second.stdout
    assert "applied" not in second.stdout


def test_migrate_dry_run_applies_nothing(dsn, conn):
    conn.execute("DROP SCHEMA ledger CASCADE")
    result = ok("migrate", "--dsn", dsn, "--dry-run")
    assert "0001.ledger-schema" in result.stdout
    assert conn.execute("SELECT to_regnamespace('ledger')").fetchone() == (None,)  # not even yoyo's tables


def test_a_config_that_is_not_utf8_is_a_config_error(dsn, tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_bytes("[rules]\n".encode("utf-16"))
    result = run("verify", "--dsn", dsn, "--config", str(path))
    assert result.exit_code == 2
    assert result.stderr.startswith(f"Error: {path}: not UTF-8 text"), result.stderr
    assert "Traceback" not in result.stderr


def test_install_then_status_then_reinstall(dsn, conn):
    result = cli("install", dsn)
    assert result.exit_code == 0, result.stderr
    assert sorted(result.stdout.splitlines()) == sorted([
        "installed rule sale (public.sales)",
        "installed rule requisition (public.purchase_requisitions)",
        "installed rule payment (public.payment_vouchers)",
        "installed rule manufacturing (public.manufacturing_orders)",
        "10 account(s) added or changed in ledger.account",
    ])
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}

    status = cli("status", dsn)
    assert status.exit_code == 0, status.stdout + status.stderr
    assert status_rows(status.stdout) == dict.fromkeys(SHOP_RULES, "ok")

    again = cli("install", dsn)
    assert again.exit_code == 0
    assert sorted(again.stdout.splitlines()) == sorted(f"unchanged rule {r} ({s})" for r, s in [
        ("sale", "public.sales"), ("requisition", "public.purchase_requisitions"),
        ("payment", "public.payment_vouchers"), ("manufacturing", "public.manufacturing_orders")])

    conn.execute("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_update")
    repaired = cli("install", dsn, "--rule", "sale")
    assert repaired.stdout.splitlines() == ["repaired triggers of rule sale (public.sales)"]
    assert cli("status", dsn).exit_code == 0

    insert_sale(conn)
    assert entry_count(conn) == 1


def test_install_one_rule_and_dry_run(dsn, conn):
    dry = cli("install", dsn, "--rule", "sale", "--dry-run")
    assert dry.exit_code == 0, dry.stderr
    assert "sale" in dry.stdout and "dry run" in dry.stdout
    assert "requisition" not in dry.stdout
    assert posting_functions(conn) == set()

    assert cli("install", dsn, "--rule", "sale", "--rule", "payment").exit_code == 0
    assert posting_functions(conn) == {"post_sale", "post_payment"}
    status = cli("status", dsn)
    assert status.exit_code == 1
    assert status_rows(status.stdout) == {"sale": "ok", "requisition": "MISSING", "payment": "ok",
                                          "manufacturing": "MISSING"}
    assert cli("status", dsn, "--rule", "sale", "--rule", "payment").exit_code == 0


def test_status_json(dsn, conn):
    assert cli("install", dsn, "--rule", "sale").exit_code == 0
    result = cli("status", dsn, "--json")
    assert result.exit_code == 1
    document = json.loads(result.stdout)
    assert document["ok"] is False
    states = {r["rule"]: r["state"] for r in document["rules"]}
    assert states == {"sale": "ok", "requisition": "MISSING", "payment": "MISSING", "manufacturing": "MISSING"}
    sale = next(r for r in document["rules"] if r["rule"] == "sale")
    assert sale["installed"] is True and sale["enabled"] is True and sale["up_to_date"] is True
    assert sale["source"] == "public.sales" and sale["on_error"] == "block"

    assert cli("install", dsn).exit_code == 0
    result = cli("status", dsn, "--json")
    assert result.exit_code == 0
    assert json.loads(result.stdout)["ok"] is True


def test_sql_prints_the_install_script_and_changes_nothing(dsn, conn):
    result = cli("sql", dsn)
    assert result.exit_code == 0, result.stderr
    assert result.stdout.startswith("--")
    for rule in SHOP_RULES:
        assert re.search(rf'CREATE OR REPLACE FUNCTION "?ledger"?\."?post_{rule}"?\(\)', result.stdout), rule
    assert "ledgeradmin_sale_insert" in result.stdout
    assert posting_functions(conn) == set()
    assert conn.execute("SELECT count(*) FROM ledger.rule").fetchone()[0] == 0
    assert conn.execute("SELECT count(*) FROM ledger.account").fetchone()[0] == 0

    one = cli("sql", dsn, "--rule", "payment")
    assert one.exit_code == 0
    assert "post_payment" in one.stdout and "post_sale" not in one.stdout


def test_sql_out_lists_the_files_written(dsn, tmp_path):
    out = tmp_path / "sql"
    result = cli("sql", dsn, "--out", str(out))
    assert result.exit_code == 0, result.stderr
    assert sorted(result.stdout.split()) == sorted(str(p) for p in out.iterdir())
    assert len(list(out.iterdir())) == len(SHOP_RULES) + 1


def test_sql_and_init_out_to_a_path_that_cannot_be_written_exit_2_naming_it(dsn, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for result, path, reason in (
        (cli("sql", dsn, "--out", str(blocker / "sql")), blocker / "sql", "Not a directory"),
        (run("init", "--out", str(blocker / "ledger.toml")), blocker / "ledger.toml", "Not a directory"),
        (run("init", "--out", str(tmp_path / "gone" / "ledger.toml")), tmp_path / "gone" / "ledger.toml",
         "No such file or directory"),
    ):
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[0] == f"Error: cannot write {path}: {reason}"
        assert "Hint: --out" in result.stderr
        assert "Traceback" not in result.stderr
    assert blocker.read_text() == "x" and not (tmp_path / "gone").exists()


def test_verify_prometheus_into_a_directory_that_cannot_be_written_exits_2_before_verifying(dsn, tmp_path):
    """Checked before verify runs (it may run long): nothing printed, nothing written."""
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    for target, reason in ((tmp_path / "missing" / "ledger.prom", "No such file or directory"),
                           (blocker / "ledger.prom", "Not a directory")):
        result = cli("verify", dsn, "--prometheus", str(target))
        assert result.exit_code == 2, result.output
        assert result.stderr.splitlines()[0] == f"Error: cannot write the Prometheus file {target}: {reason}"
        assert "Hint: --prometheus FILE: its directory must exist" in result.stderr
        assert result.stdout == ""
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a-file"]


def test_verify_prints_its_report_when_the_prometheus_file_fails_after_it(dsn, tmp_path, monkeypatch):
    """The directory went away while verify ran: the report still comes out (verify ran),
    then the error, exit 2 (the textfile is stale: an alert should say so)."""
    import shutil

    import ledgeradmin.verify

    real = ledgeradmin.verify.verify
    directory = tmp_path / "textfiles"
    directory.mkdir()

    def verify_then_lose_the_directory(*args, **kwargs):
        result = real(*args, **kwargs)
        shutil.rmtree(directory)
        return result

    monkeypatch.setattr(ledgeradmin.verify, "verify", verify_then_lose_the_directory)
    ok("install", "--dsn", dsn, "--config", str(SHOP_TOML))
    for args in ((), ("--json",)):
        directory.mkdir(exist_ok=True)
        result = cli("verify", dsn, "--prometheus", str(directory / "ledger.prom"), *args)
        assert result.exit_code == 2, result.output
        assert "sale" in result.stdout
        if args:
            assert json.loads(result.stdout)["ok"] is True
        assert result.stderr.startswith(f"Error: cannot write the Prometheus file {directory / 'ledger.prom'}: ")


def test_uninstall(dsn, conn):
    assert cli("install", dsn).exit_code == 0
    insert_sale(conn)
    one = run("uninstall", "--dsn", dsn, "--rule", "sale")
    assert one.exit_code == 0, one.stderr
    assert one.stdout.splitlines() == ["uninstalled rule sale"]
    status = cli("status", dsn)
    assert status.exit_code == 1
    assert status_rows(status.stdout)["sale"] == "MISSING"
    assert "MISSING" in status.stdout

    rest = run("uninstall", "--dsn", dsn)
    assert rest.exit_code == 0
    assert sorted(rest.stdout.splitlines()) == ["uninstalled rule manufacturing", "uninstalled rule payment",
                                                "uninstalled rule requisition"]
    assert posting_functions(conn) == set()
    assert entry_count(conn) == 1
    nothing = run("uninstall", "--dsn", dsn)
    assert nothing.exit_code == 0
    assert "no rule installed" in nothing.stdout

    unknown = run("uninstall", "--dsn", dsn, "--rule", "sale")
    assert unknown.exit_code == 2
    assert unknown.stderr.startswith("Error:") and "sale" in unknown.stderr


# -- status finds problems: exit 1 -----------------------------------------------------


def test_status_disabled_trigger(dsn, conn):
    assert cli("install", dsn).exit_code == 0
    conn.execute("ALTER TABLE public.sales DISABLE TRIGGER ledgeradmin_sale_update")
    result = cli("status", dsn)
    assert result.exit_code == 1
    assert status_rows(result.stdout) == {"sale": "DISABLED", "requisition": "ok", "payment": "ok",
                                          "manufacturing": "ok"}
    assert "ledgeradmin_sale_update" in result.stdout

    conn.execute("ALTER TABLE public.sales ENABLE TRIGGER ledgeradmin_sale_update")
    assert cli("status", dsn).exit_code == 0


def test_status_outdated_after_a_manual_edit_of_the_function(dsn, conn):
    assert cli("install", dsn).exit_code == 0
    definition = conn.execute("SELECT pg_get_functiondef('ledger.post_payment()'::regprocedure)").fetchone()[0]
    edited = definition.replace("BEGIN", "BEGIN\n    -- edited by hand", 1)
    assert edited != definition
    conn.execute(edited)
    result = cli("status", dsn)
    assert result.exit_code == 1
    assert status_rows(result.stdout) == {"sale": "ok", "requisition": "ok", "payment": "OUTDATED",
                                          "manufacturing": "ok"}

    reinstall = cli("install", dsn)
    assert reinstall.exit_code == 0
    assert cli("status", dsn).exit_code == 0


def test_status_of_an_installed_rule_not_in_the_config(dsn, tmp_path):
    assert cli("install", dsn).exit_code == 0
    fewer = tmp_path / "ledger.toml"
    text = SHOP_TOML.read_text()
    fewer.write_text(text[: text.index("# A finished manufacturing order")])
    result = cli("status", dsn, config=fewer)
    assert result.exit_code == 1
    assert status_rows(result.stdout)["manufacturing"] == "NOT IN CONFIG"


def test_status_of_a_rule_whose_table_is_gone(dsn, conn):
    assert cli("install", dsn).exit_code == 0
    conn.execute("DROP TABLE public.manufacturing_orders")
    result = cli("status", dsn)
    assert result.exit_code == 1
    assert status_rows(result.stdout)["manufacturing"] == "NO SOURCE"


# -- errors: exit 2 --------------------------------------------------------------------


@pytest.mark.parametrize("command", ["install", "sql"])
def test_bad_config_exits_2_naming_rule_and_field(dsn, conn, tmp_path, command):
    result = cli(command, dsn, config=bad_config(tmp_path))
    assert result.exit_code == 2
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error:")
    assert 'rule "sale"' in first and "when" in first and "state" in first
    assert posting_functions(conn) == set()


def test_invalid_toml_exits_2(dsn, tmp_path):
    path = tmp_path / "ledger.toml"
    path.write_text("[rules.sale\n")
    result = cli("install", dsn, config=path)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:") and "TOML" in result.stderr


@pytest.mark.parametrize("command", ["install", "sql", "status"])
def test_unknown_account_exits_2(dsn, tmp_path, command):
    path = tmp_path / "ledger.toml"
    path.write_text(SHOP_TOML.read_text().replace('{ account = "4000", credit = "total - tax" }',
                                                  '{ account = "4999", credit = "total - tax" }'))
    assert "4999" in path.read_text()
    result = cli(command, dsn, config=path)
    assert result.exit_code == 2
    assert result.stdout == ""
    first = result.stderr.splitlines()[0]
    assert first.startswith("Error:")
    assert 'rule "sale"' in first and "4999" in first and "lines[2]" in first


def test_missing_config_file_exits_2_with_hint(dsn, tmp_path, no_env, monkeypatch):
    monkeypatch.chdir(tmp_path)
    result = run("install", "--dsn", dsn)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:")
    assert "Hint:" in result.stderr


def test_unknown_rule_exits_2(dsn):
    result = cli("install", dsn, "--rule", "nosuchrule")
    assert result.exit_code == 2
    assert "nosuchrule" in result.stderr


def test_usage_error_exits_2():
    assert run("install", "--no-such-option").exit_code == 2
    assert run("no-such-command").exit_code == 2


def test_schema_not_migrated_exits_2_with_hint(dsn, conn):
    conn.execute("DROP SCHEMA ledger CASCADE")
    for command in ("install", "status"):
        result = cli(command, dsn)
        assert result.exit_code == 2, command
        assert result.stderr.startswith("Error:")
        assert "ledgeradmin migrate" in result.stderr


@pytest.mark.parametrize("command", ["migrate", "install", "status", "sql", "uninstall"])
def test_connection_failure_exits_2(pg_server, command):
    dsn = make_conninfo(host=pg_server.host, port=str(pg_server.port), user="postgres", dbname="nosuchdb")
    args = ["--config", str(SHOP_TOML)] if command in ("install", "status", "sql") else []
    result = run(command, "--dsn", dsn, *args)
    assert result.exit_code == 2
    assert result.stderr.startswith("Error:")
    assert "nosuchdb" in result.stderr
    assert "Hint:" in result.stderr
    assert "Traceback" not in result.stderr


def secret_dsns(pg_server) -> dict[str, str]:
    host, port = pg_server.host, pg_server.port
    return {
        "keyword": f"host={host} port={port} user=postgres password={SECRET} dbname=nosuchdb",
        "quoted keyword": f"host={host} port={port} user=postgres password='{SECRET} x' dbname=nosuchdb",
        "uri": f"postgresql://postgres:{SECRET}@/nosuchdb?host={host}&port={port}",
        "uri, bad option": f"postgresql://postgres:{SECRET}@/nosuchdb?host={host}&port={port}&bogus=1",
        "uri, bad percent-encoding": f"postgresql://postgres:{SECRET}%zz@/nosuchdb?host={host}&port={port}",
        "keyword, bad option": f"host={host} password={SECRET} bogus=1",
        "keyword, unterminated": f"host={host} dbname=nosuchdb password='{SECRET}",
    }


def all_commands(group: click.Group, path: tuple[str, ...] = ()):
    """(path, command) of every command and group below ``group``, recursively."""
    for name, command in sorted(group.commands.items()):
        yield (*path, name), command
        if isinstance(command, click.Group):
            yield from all_commands(command, (*path, name))


def dsn_invocations() -> dict[str, list[str]]:
    """Every command that takes --dsn, with its --config and required arguments filled in."""
    out = {}
    for path, command in all_commands(main):
        options = {opt for p in command.params for opt in getattr(p, "opts", [])}
        if "--dsn" not in options:
            continue
        args = list(path)
        if "--config" in options:
            args += ["--config", str(SHOP_TOML)]
        if "--from-table" in options:  # init connects only to draft a rule from a table
            args += ["--from-table", "public.sales", "--out", "-"]
        if "--all" in options:  # reopen: DATE or --all
            args += ["--all"]
        args += ["2020-01-31" if isinstance(p.type, click.DateTime) else "1000"
                 for p in command.params if isinstance(p, click.Argument) and p.required]
        out[" ".join(path)] = args
    return out


DSN_COMMANDS = dsn_invocations()


def test_the_main_commands_take_a_dsn():
    assert set(DSN_COMMANDS) >= {"migrate", "install", "status", "sql", "uninstall"}


@pytest.mark.parametrize("case", ["keyword", "quoted keyword", "uri", "uri, bad option",
                                  "uri, bad percent-encoding", "keyword, bad option", "keyword, unterminated"])
@pytest.mark.parametrize("command", DSN_COMMANDS)
def test_password_never_printed(pg_server, command, case, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    dsn = secret_dsns(pg_server)[case]
    args = DSN_COMMANDS[command]
    for prefix in ([], ["--traceback"]):
        result = CliRunner().invoke(main, [*prefix, *args, "--dsn", dsn])
        assert result.exit_code == 2, (result.stdout, result.stderr, result.exception)
        assert SECRET not in result.stdout
        assert SECRET not in result.stderr
        assert result.stderr.startswith("Error:") or prefix


def test_password_from_the_environment_never_printed(pg_server, no_env):
    dsn = f"postgresql://postgres:{SECRET}@/nosuchdb?host={pg_server.host}&port={pg_server.port}"
    result = run("status", "--config", str(SHOP_TOML), env={"LEDGERADMIN_DSN": dsn})
    assert result.exit_code == 2
    assert SECRET not in result.stdout + result.stderr


# -- DSN and config resolution ---------------------------------------------------------


def test_ledgeradmin_dsn_and_config_from_the_environment(dsn, conn, no_env):
    env = {"LEDGERADMIN_DSN": dsn, "LEDGERADMIN_CONFIG": str(SHOP_TOML)}
    assert run("install", env=env).exit_code == 0
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}
    result = run("status", env=env)
    assert result.exit_code == 0
    assert status_rows(result.stdout) == dict.fromkeys(SHOP_RULES, "ok")
    assert "ledger schema is up to date" in run("migrate", env=env).stdout


def test_command_line_wins_over_the_environment(dsn, conn, tmp_path, no_env):
    env = {
        "LEDGERADMIN_DSN": make_conninfo(dsn, dbname="nosuchdb"),
        "LEDGERADMIN_CONFIG": str(bad_config(tmp_path)),
    }
    assert run("install", env=env).exit_code == 2
    result = run("install", "--dsn", dsn, "--config", str(SHOP_TOML), env=env)
    assert result.exit_code == 0, result.stderr
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}


def test_libpq_variables_are_the_last_resort(dsn, conn, no_env):
    params = conninfo_to_dict(dsn)
    env = {"PGHOST": params["host"], "PGPORT": str(params["port"]), "PGUSER": params["user"],
           "PGDATABASE": params["dbname"]}
    result = run("install", "--config", str(SHOP_TOML), env=env)
    assert result.exit_code == 0, result.stderr
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}
    # LEDGERADMIN_DSN comes before the PG* variables.
    env["LEDGERADMIN_DSN"] = make_conninfo(dsn, dbname="nosuchdb")
    assert run("status", "--config", str(SHOP_TOML), env=env).exit_code == 2


def test_ledger_toml_in_the_working_directory(dsn, conn, tmp_path, monkeypatch, no_env):
    (tmp_path / "ledger.toml").write_text(SHOP_TOML.read_text())
    monkeypatch.chdir(tmp_path)
    assert run("install", "--dsn", dsn).exit_code == 0
    assert posting_functions(conn) == {f"post_{r}" for r in SHOP_RULES}


# -- help and version ------------------------------------------------------------------


def test_every_command_help_has_an_example():
    assert "Example" in ok("--help").stdout
    commands = dict(all_commands(main))
    assert set(commands) >= {("migrate",), ("install",), ("uninstall",), ("sql",), ("status",)}
    missing = []
    for path in commands:
        result = ok(*path, "--help")
        if "Example" not in result.stdout or "ledgeradmin " + " ".join(path) not in result.stdout:
            missing.append(" ".join(path))
    assert missing == []


def test_version():
    expected = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    result = ok("--version")
    assert expected in result.stdout
    assert "ledgeradmin" in result.stdout


def test_python_dash_m():
    result = subprocess.run([sys.executable, "-m", "ledgeradmin", "--help"], capture_output=True, text=True,
                            timeout=60)
    assert result.returncode == 0, result.stderr
    for command in ("migrate", "install", "uninstall", "sql", "status"):
        assert command in result.stdout

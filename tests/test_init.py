"""ledgeradmin init: starter configs that load, and drafts from a table that install."""

from click.testing import CliRunner

from ledgeradmin.cli import main
from ledgeradmin.config import load_config
from ledgeradmin.install import install


def test_starter_config_loads(tmp_path):
    out = tmp_path / "ledger.toml"
    result = CliRunner().invoke(main, ["init", "--out", str(out)])
    assert result.exit_code == 0, result.output
    config = load_config(out)
    assert list(config.rules) == ["sale"]
    assert config.rules["sale"].when == "status = 'completed'"


def test_existing_file_is_not_overwritten(tmp_path):
    out = tmp_path / "ledger.toml"
    out.write_text("# mine\n")
    result = CliRunner().invoke(main, ["init", "--out", str(out)])
    assert result.exit_code == 2
    assert "exists" in result.stderr
    assert out.read_text() == "# mine\n"


def test_draft_from_a_table_installs_and_posts(dsn, conn, tmp_path):
    out = tmp_path / "ledger.toml"
    result = CliRunner().invoke(main, ["init", "--from-table", "public.purchase_requisitions", "--out", str(out),
                                       "--dsn", dsn])
    assert result.exit_code == 0, result.output
    rule = load_config(out).rules["purchase_requisition"]
    assert rule.key == ("id",)
    assert rule.when == "status = 'completed'"
    assert rule.date == "created_at"
    # The drafted condition is a placeholder; a DBA adapts it to the table's statuses.
    out.write_text(out.read_text().replace("'completed'", "'approved'"))
    install(conn, load_config(out))
    conn.execute("INSERT INTO public.purchase_requisitions (requested_by, department, description, amount)"
                 " VALUES ('a', 'b', 'c', 12.5)")
    assert conn.execute("SELECT count(*) FROM ledger.line").fetchone()[0] == 0
    conn.execute("UPDATE public.purchase_requisitions SET status = 'approved'")
    assert conn.execute("SELECT sum(debit), sum(credit) FROM ledger.line").fetchone() == (12.5, 12.5)


def test_a_draft_from_a_table_of_any_name_loads_and_installs(dsn, conn, tmp_path):
    """A quote in the table's name is doubled in the memo's SQL literal; the rule name
    keeps only what a rule name may hold (accents dropped, the rest '_'); a column whose
    name is a keyword is quoted."""
    conn.execute('CREATE SCHEMA app')
    tables = {"app.\"O'Brien Ledger\"": "o_brien_ledger", 'app."Café"': "cafe", 'app."2024 Ärger"': "r_2024_arger",
              'app."日本"': "rule"}
    for n, (table, rule_name) in enumerate(tables.items()):
        conn.execute(f'CREATE TABLE {table} (id bigint PRIMARY KEY, status text NOT NULL,'
                     ' "order" timestamptz NOT NULL DEFAULT now(), amount numeric(12, 2) NOT NULL)')
        out = tmp_path / f"{n}.toml"
        result = CliRunner().invoke(main, ["init", "--from-table", table, "--out", str(out), "--dsn", dsn])
        assert result.exit_code == 0, result.output
        config = load_config(out)
        assert list(config.rules) == [rule_name]
        assert config.rules[rule_name].date == '"order"'
        install(conn, config)
        conn.execute(f"INSERT INTO {table} (id, status, amount) VALUES (7, 'completed', 12.5)")
        memo = conn.execute("SELECT memo FROM ledger.entry WHERE rule = %s", (rule_name,)).fetchone()[0]
        assert memo == f"{table.split('.')[1].strip(chr(34))} 7"

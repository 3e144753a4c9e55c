-- Template: the triggers of one rule on its source table, and the rule's registry row.
-- Statement-level triggers with transition tables: a 1M-row COPY posts in a few set-based
-- statements. TRUNCATE is refused while the rule is installed (it would leave live entries
-- for rows that no longer exist). One statement per line-group, separated by blank lines.
REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;

CREATE OR REPLACE TRIGGER {{trigger}}_insert
    AFTER INSERT ON {{source}}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_update
    AFTER UPDATE ON {{source}}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_delete
    AFTER DELETE ON {{source}}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_truncate
    BEFORE TRUNCATE ON {{source}}
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

INSERT INTO ledger.rule (name, source, source_table, on_error, checksum, installed_at)
VALUES ({{rule}}, {{source_label}}, {{source_label}}::regclass, {{on_error}}, {{checksum}}, now())
ON CONFLICT (name) DO UPDATE
SET source = EXCLUDED.source,
    source_table = EXCLUDED.source_table,
    on_error = EXCLUDED.on_error,
    checksum = EXCLUDED.checksum,
    installed_at = EXCLUDED.installed_at

-- Template: after a rule's function and triggers, its registry row with the checksum of
-- what was installed (status compares it with what the config compiles to today).
REVOKE ALL ON FUNCTION {{function}}() FROM PUBLIC;

INSERT INTO ledger.rule (name, source, source_table, on_error, checksum, installed_at)
VALUES ({{rule}}, {{source_label}}, {{source_label}}::regclass, {{on_error}}, {{checksum}}, now())
ON CONFLICT (name) DO UPDATE
SET source = EXCLUDED.source,
    source_table = EXCLUDED.source_table,
    on_error = EXCLUDED.on_error,
    checksum = EXCLUDED.checksum,
    installed_at = EXCLUDED.installed_at

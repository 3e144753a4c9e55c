-- rename (rename.py): reverse the live entries of rule {{old}} whose keys rule {{new}} has
-- posted already (a row posted under both names), dated now, and unlink them; rule
-- {{new}}'s entries, the later ones, stay. Returns the number reversed.
WITH x AS MATERIALIZED (
    SELECT p.entry_id AS old_entry_id, p.source_key,
           nextval('ledger.entry_id_seq'::regclass) AS rev_entry_id
    FROM ledger.posting AS p
    JOIN ledger.posting AS n ON n.rule = {{new}} AND n.source_key = p.source_key
    WHERE p.rule = {{old}}
), entries AS (
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo, reverses)
    OVERRIDING SYSTEM VALUE
    SELECT x.rev_entry_id, {{old}}, x.source_key, now(), 'Reversal of entry ' || x.old_entry_id, x.old_entry_id
    FROM x
), lines AS (
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT x.rev_entry_id, l.line_no, l.account, l.currency, l.credit, l.debit
    FROM x
    JOIN ledger.line AS l ON l.entry_id = x.old_entry_id
), unlinked AS (
    DELETE FROM ledger.posting AS p
    USING x
    WHERE p.entry_id = x.old_entry_id
)
SELECT count(*) FROM x

-- rename (rename.py), after rename_reverse.sql: rule {{old}}'s live postings and open
-- failures become rule {{new}}'s. An open failure of a key that rule {{new}} has an open
-- failure of too is closed instead (the open failure index allows one per key); that key
-- stays recorded under rule {{new}}. Entries keep the name of the rule that wrote them.
WITH moved AS (
    UPDATE ledger.posting AS p
    SET rule = {{new}}
    WHERE p.rule = {{old}}
    RETURNING 1
), open_new AS (
    SELECT f.source_key FROM ledger.failure AS f WHERE f.rule = {{new}} AND f.resolved_at IS NULL
), failures AS (
    UPDATE ledger.failure AS f
    SET rule = {{new}}
    WHERE f.rule = {{old}}
      AND f.resolved_at IS NULL
      AND f.source_key NOT IN (SELECT o.source_key FROM open_new AS o)
    RETURNING 1
), closed AS (
    UPDATE ledger.failure AS f
    SET resolved_at = now()
    WHERE f.rule = {{old}}
      AND f.resolved_at IS NULL
      AND f.source_key IN (SELECT o.source_key FROM open_new AS o)
    RETURNING 1
)
SELECT (SELECT count(*) FROM moved), (SELECT count(*) FROM failures), (SELECT count(*) FROM closed)

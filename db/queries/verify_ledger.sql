-- Whole-ledger checks: entries, unbalanced entries (per entry and currency), keys with
-- more than one live entry, live entries no posting links to. With --since only entries
-- dated on or after the day are checked ({{entries}} / {{lines}} filters).
SELECT
    (SELECT count(*) FROM ledger.entry AS e WHERE true {{entries}}) AS entries,
    (SELECT count(*)
     FROM (SELECT l.entry_id
           FROM {{lines}} AS l
           GROUP BY l.entry_id, l.currency
           HAVING sum(l.debit) <> sum(l.credit)) AS u) AS unbalanced,
    (SELECT count(*)
     FROM (SELECT e.rule, e.source_key
           FROM ledger.entry AS e
           WHERE e.reverses IS NULL {{entries}}
             AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
           GROUP BY e.rule, e.source_key
           HAVING count(*) > 1) AS dup) AS duplicate_live_keys,
    (SELECT count(*)
     FROM ledger.entry AS e
     WHERE e.reverses IS NULL {{entries}}
       AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
       AND NOT EXISTS (SELECT FROM ledger.posting AS p WHERE p.entry_id = e.id)) AS unlinked_live_entries

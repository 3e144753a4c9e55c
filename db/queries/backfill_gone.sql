-- Live postings of one rule whose source row no longer exists, in key order after a
-- cursor ({{range}}); backfill reverses them chunk by chunk.
SELECT p.source_key, p.key_num
FROM ledger.posting AS p
WHERE p.rule = {{rule}}
  AND {{range}}
  AND NOT EXISTS (SELECT FROM {{source}} AS r WHERE {{row_match}})
ORDER BY {{order}}
LIMIT {{limit}}

-- Live postings of one rule whose source row no longer exists, in key order after a
-- cursor ({{range}}); backfill reverses them chunk by chunk. With --since, the live postings
-- dated on or after the day ({{recent}}) whose row is not among the rows dated so
-- ({{window}}): gone, or (outside) moved out of the window while the trigger was off, which
-- backfill reconciles as rows.
SELECT p.source_key, p.key_num, {{outside}} AS outside
FROM ledger.posting AS p
WHERE p.rule = {{rule}}
  AND {{range}}{{recent}}
  AND NOT EXISTS (SELECT FROM {{source}} AS r WHERE {{row_match}} AND {{window}})
ORDER BY {{order}}
LIMIT {{limit}}

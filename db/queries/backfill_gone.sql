-- Live postings of one rule whose source row no longer exists, within a key range
-- ({{range}}); they are reversed by the batch that covers the range.
SELECT p.source_key, p.key_num
FROM ledger.posting AS p
WHERE p.rule = {{rule}}
  AND {{range}}
  AND NOT EXISTS (SELECT FROM {{source}} AS r WHERE {{row_match}})
ORDER BY p.source_key
LIMIT {{limit}}

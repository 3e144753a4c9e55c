-- Unresolved failures of one rule whose source row no longer exists: nothing is left to
-- post for them, and the reconcile of their keys marks them resolved. With --since, also
-- those whose row is not among the rows dated in the window ({{window}}): their rows
-- (outside) are reconciled as rows, posting them or recording the failure again.
SELECT f.source_key, {{key_num}} AS key_num, {{outside}} AS outside
FROM ledger.failure AS f
WHERE f.rule = {{rule}}
  AND f.resolved_at IS NULL
  AND NOT EXISTS (SELECT FROM {{source}} AS r WHERE {{row_match}} AND {{window}})

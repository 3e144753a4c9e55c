-- The next batch of source rows of one rule in key order (in the --since window), whole.
-- With {{lock}}, locked so that no writer changes them while the batch is reconciled (in
-- the same statement, as a CTE): the form for batches with much to repair. Rows a writer
-- holds are skipped, never waited for: that writer's own trigger posts them, and a later
-- run picks up anything left. Without, the candidates of backfill_stale_rows.sql.
SELECT r.*
FROM {{source}} AS r
WHERE {{after}}
  AND {{window}}
ORDER BY {{key_columns}}
LIMIT {{batch_size}}
{{lock}}

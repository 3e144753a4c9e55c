-- The keys of the next batch of source rows of one rule in key order ({{after}}: after a
-- cursor; or the rows of given keys), in the --since window ({{window}}), locked so that no
-- writer changes them while the batch is reconciled. Rows a writer holds are skipped, never
-- waited for: that writer's own trigger posts them, and a later run picks up anything left.
SELECT {{key_columns}}, {{key_text}} AS source_key
FROM {{source}} AS r
WHERE {{after}}
  AND {{window}}
ORDER BY {{key_columns}}
LIMIT {{batch_size}}
FOR NO KEY UPDATE OF r SKIP LOCKED

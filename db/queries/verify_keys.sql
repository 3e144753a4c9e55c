-- The first keys of one verify category (missing, orphaned, drifted) of one rule.
WITH d AS (
{{desired}}
), p AS (
{{postings}}
)
SELECT coalesce(d.source_key, p.source_key) AS source_key
FROM d
FULL JOIN p ON {{join_on}}
WHERE {{condition}}
ORDER BY 1
LIMIT {{limit}}

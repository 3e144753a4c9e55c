-- Verify one rule: its desired postings (one pass over the source table) fully joined with
-- its live postings. A row is eligible when it has a desired posting; missing when that has
-- no live posting; drifted when the live posting's fingerprint differs from the desired one;
-- a live posting without a desired one is orphaned.
WITH d AS (
{{desired}}
), p AS (
{{postings}}
)
SELECT count(d.source_key) AS eligible,
       count(*) FILTER (WHERE d.source_key IS NOT NULL AND p.source_key IS NOT NULL) AS posted,
       count(*) FILTER (WHERE p.source_key IS NULL) AS missing,
       count(*) FILTER (WHERE d.source_key IS NULL) AS orphaned,
       count(*) FILTER (WHERE d.source_key IS NOT NULL AND p.source_key IS NOT NULL
                          AND d.fingerprint IS DISTINCT FROM p.fingerprint) AS drifted
FROM d
FULL JOIN p ON {{join_on}}

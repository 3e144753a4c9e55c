-- Verify one rule: its desired postings (one pass over the source table) left-joined with
-- its live postings, a join PostgreSQL runs in parallel. A row is eligible when it has a
-- desired posting; missing when that has no live posting; drifted when the live posting's
-- fingerprint differs from the desired one. The planner computes of the desired postings
-- only the key and the fingerprint (from each expression once: compiler.desired_sql's
-- unfenced form, a subquery here since it cannot be a CTE), and reads of the live postings
-- only the join key and the
-- fingerprint (never NULL, so it tells a matched row): for an integer key the join's hash
-- table holds no key text. Live postings without a desired one (orphaned) are counted by
-- verify_postings_count.sql: every live posting matches at most one eligible row, so
-- orphaned = live postings - posted. While a period is closed, the missing and drifted rows
-- dated in it are counted too ({{closed}}): they cannot post until it is reopened.
SELECT count(*) AS eligible,
       count(p.fingerprint) AS posted,
       count(*) FILTER (WHERE p.fingerprint IS NULL) AS missing,
       count(*) FILTER (WHERE p.fingerprint IS NOT NULL AND d.fingerprint IS DISTINCT FROM p.fingerprint) AS drifted,
       {{closed}}
FROM (
{{desired}}
) AS d
LEFT JOIN (
{{postings}}
) AS p ON {{join_on}}

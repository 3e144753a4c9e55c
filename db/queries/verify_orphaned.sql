-- The live postings of one rule that no row with a desired posting matches: verify's
-- orphaned count, which backfill would reverse, in one pass that computes no fingerprint
-- (only the rule's `when` and amounts, which decide whether a row has a desired posting).
-- backfill counts them before it changes anything (its --max-reversals guard).
SELECT count(*)
FROM (
{{postings}}
) AS p
WHERE NOT EXISTS (SELECT FROM (
{{desired}}
) AS d WHERE {{join_on}})

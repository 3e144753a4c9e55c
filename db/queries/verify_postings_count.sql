-- The number of live postings of one rule (with --since: of entries dated on or after the day).
SELECT count(*)
FROM (
{{postings}}
) AS p

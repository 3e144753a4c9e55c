-- Names with live postings that no rule of the config has (%(names)s): rules removed,
-- or renamed, with their entries left live. One index descent per name (a skip scan of
-- the link index, which leads with the rule), not a read of every link.
WITH RECURSIVE n AS (
    (SELECT p.rule FROM ledger.posting AS p ORDER BY p.rule LIMIT 1)
    UNION ALL
    SELECT (SELECT p.rule FROM ledger.posting AS p WHERE p.rule > n.rule ORDER BY p.rule LIMIT 1)
    FROM n
    WHERE n.rule IS NOT NULL
)
SELECT n.rule
FROM n
WHERE n.rule IS NOT NULL
  AND n.rule <> ALL (%(names)s::text[])
ORDER BY n.rule

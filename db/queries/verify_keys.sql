-- The first keys of one verify category (missing, orphaned, drifted) of one rule.
SELECT coalesce(d.source_key, p.source_key) AS source_key
FROM (
{{desired}}
) AS d
FULL JOIN (
{{postings}}
) AS p ON {{join_on}}
WHERE {{condition}}
ORDER BY 1
LIMIT {{limit}}

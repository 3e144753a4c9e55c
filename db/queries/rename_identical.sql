-- The rows rule {{rule}} has not posted whose identical entry (same key and fingerprint:
-- same date, currency, accounts and amounts) is live under a name of {{names}}, rules the
-- config does not have, counted by name. Such rows are the entries of a rule renamed in
-- ledger.toml without `ledgeradmin rename`: posting them would book them twice.
-- f: those names' links of keys rule {{rule}} has no link of; the rule's desired postings
-- are computed for the rows of those keys only.
WITH f AS MATERIALIZED (
    SELECT f.rule, f.source_key, f.key_num, f.fingerprint
    FROM ledger.posting AS f
    WHERE f.rule = ANY ({{names}})
      AND NOT EXISTS (SELECT FROM ledger.posting AS p
                      WHERE p.rule = {{rule}}
                        AND p.source_key = f.source_key
                        AND p.key_num IS NOT DISTINCT FROM f.key_num)
)
SELECT f.rule, count(*)
FROM f
JOIN (
{{desired}}
) AS d ON d.source_key = f.source_key AND d.fingerprint = f.fingerprint
GROUP BY f.rule
ORDER BY f.rule

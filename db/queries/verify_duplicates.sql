-- Keys with more than one live entry (with --since: among entries dated on or after the day).
SELECT count(*)
FROM (SELECT e.rule, e.source_key
      FROM ledger.entry AS e
      WHERE e.reverses IS NULL {{entries}}
        AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
      GROUP BY e.rule, e.source_key
      HAVING count(*) > 1) AS dup

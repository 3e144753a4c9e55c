-- Samples behind the whole-ledger checks: unbalanced entry ids and duplicated live keys.
SELECT 'unbalanced' AS problem, u.entry_id::text AS item
FROM (SELECT DISTINCT l.entry_id
      FROM {{lines}} AS l
      GROUP BY l.entry_id, l.currency
      HAVING sum(l.debit) <> sum(l.credit)
      ORDER BY l.entry_id
      LIMIT {{limit}}) AS u
UNION ALL
SELECT 'duplicate_live_keys', dup.rule || ':' || dup.source_key
FROM (SELECT e.rule, e.source_key
      FROM ledger.entry AS e
      WHERE e.reverses IS NULL {{entries}}
        AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
      GROUP BY e.rule, e.source_key
      HAVING count(*) > 1
      ORDER BY 1, 2
      LIMIT {{limit}}) AS dup

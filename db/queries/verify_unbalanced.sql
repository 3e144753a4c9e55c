-- The number of unbalanced entries, exactly: entries with a currency whose debits and
-- credits differ (with --since: among the entries dated on or after the day). An entry
-- unbalanced in two currencies counts once.
SELECT count(DISTINCT u.entry_id)
FROM (SELECT l.entry_id
      FROM {{lines}} AS l
      GROUP BY l.entry_id, l.currency
      HAVING sum(l.debit) <> sum(l.credit)) AS u

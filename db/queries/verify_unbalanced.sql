-- The number of unbalanced entries, exactly: groups of one entry and currency whose debits
-- and credits differ (with --since: among the entries dated on or after the day).
SELECT count(*)
FROM (SELECT 1
      FROM {{lines}} AS l
      GROUP BY l.entry_id, l.currency
      HAVING sum(l.debit) <> sum(l.credit)) AS u

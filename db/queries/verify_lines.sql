-- Whole-ledger line checks in one pass over the lines (with --since: the lines of entries
-- dated on or after the day, {{lines}}): per currency the total debits and credits (the
-- trial balance: each difference must be 0) and the number of unbalanced entries (groups
-- of one entry and currency whose debits and credits differ).
SELECT g.currency, sum(g.debit) AS debit, sum(g.credit) AS credit,
       count(*) FILTER (WHERE g.debit <> g.credit) AS unbalanced
FROM (SELECT l.entry_id, l.currency, sum(l.debit) AS debit, sum(l.credit) AS credit
      FROM {{lines}} AS l
      GROUP BY l.entry_id, l.currency) AS g
GROUP BY g.currency
ORDER BY g.currency

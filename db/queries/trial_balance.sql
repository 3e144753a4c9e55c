-- Total debits and credits per currency over every line (with --since: of entries dated
-- on or after the day); each difference must be 0.
SELECT l.currency, sum(l.debit) AS debit, sum(l.credit) AS credit
FROM {{lines}} AS l
GROUP BY l.currency
ORDER BY l.currency

-- Total debits and credits per currency over every line; each difference must be 0.
SELECT l.currency, sum(l.debit) AS debit, sum(l.credit) AS credit
FROM ledger.line AS l
GROUP BY l.currency
ORDER BY l.currency

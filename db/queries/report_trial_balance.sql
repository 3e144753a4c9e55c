-- Trial balance: per account and currency, total debits, total credits and the balance
-- (debit - credit) of every line of entries effective before {{before}}.
SELECT a.code AS account, a.name, a.type, l.currency,
       sum(l.debit) AS debit, sum(l.credit) AS credit, sum(l.debit) - sum(l.credit) AS balance
FROM ledger.line AS l
JOIN ledger.entry AS e ON e.id = l.entry_id
LEFT JOIN ledger.account AS a ON a.code = l.account
WHERE e.effective_at < {{before}}
GROUP BY a.code, a.name, a.type, l.currency
ORDER BY a.code, l.currency

-- Trial balance: per account and currency, the balance (debit - credit) of every line of
-- entries effective before {{before}}; with a period start ({{since}} not -infinity), the
-- opening balance before it, and the debits and credits of the period (else of all time).
SELECT a.code AS account, a.name, a.type, l.currency,
       round(coalesce(sum(l.debit - l.credit) FILTER (WHERE e.effective_at < {{since}}), 0), 4) AS opening,
       round(coalesce(sum(l.debit) FILTER (WHERE e.effective_at >= {{since}}), 0), 4) AS debit,
       round(coalesce(sum(l.credit) FILTER (WHERE e.effective_at >= {{since}}), 0), 4) AS credit,
       sum(l.debit) - sum(l.credit) AS balance
FROM ledger.line AS l
JOIN ledger.entry AS e ON e.id = l.entry_id
LEFT JOIN ledger.account AS a ON a.code = l.account
WHERE e.effective_at < {{before}}
GROUP BY a.code, a.name, a.type, l.currency
ORDER BY a.code, l.currency

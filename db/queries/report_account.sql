-- One account's lines in date order with a running balance per currency; each line names
-- its entry, the rule and source key it came from, and the entry it reverses
-- ({{dates}}: the entries dated from %(from)s to %(to)s when given; by default every entry).
SELECT e.effective_at, e.id AS entry, e.rule, e.source_key, e.reverses, e.memo, l.currency,
       l.debit, l.credit,
       sum(l.debit - l.credit) OVER (PARTITION BY l.currency ORDER BY e.effective_at, e.id, l.line_no) AS balance
FROM ledger.line AS l
JOIN ledger.entry AS e ON e.id = l.entry_id
WHERE l.account = %(account)s{{dates}}
ORDER BY e.effective_at, e.id, l.line_no

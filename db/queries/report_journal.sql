-- The journal: entries in date order, each with its lines, the rule and source key it came
-- from and the entry it reverses; the entries dated in [from, to) ({{filters}}: of one rule,
-- one source key).
SELECT e.effective_at, e.id AS entry, e.posted_at, e.rule, e.source_key, e.reverses, e.memo,
       l.line_no, l.account, l.currency, l.debit, l.credit
FROM ledger.entry AS e
JOIN ledger.line AS l ON l.entry_id = e.id
WHERE e.effective_at >= %(from)s
  AND e.effective_at < %(to)s{{filters}}
ORDER BY e.effective_at, e.id, l.line_no

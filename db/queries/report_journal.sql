-- The journal: entries in date order, each with its lines, the rule and source key it came
-- from and the entry it reverses ({{filters}}: of one rule, one source key, the entries
-- dated from %(from)s to %(to)s; by default every entry). One rule's history of one key:
-- report_journal_history.sql.
SELECT e.effective_at, e.id AS entry, e.posted_at, e.rule, e.source_key, e.reverses, e.memo,
       l.line_no, l.account, l.currency, l.debit, l.credit
FROM ledger.entry AS e
JOIN ledger.line AS l ON l.entry_id = e.id
WHERE true{{filters}}
ORDER BY e.effective_at, e.id, l.line_no

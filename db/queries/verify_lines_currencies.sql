-- The currencies of a random sample of the pages of ledger.line (the percent given; all
-- pages of a small table): the candidates that verify_lines_checksum.sql confirms are all.
SELECT DISTINCT l.currency
FROM ledger.line AS l TABLESAMPLE SYSTEM (%(percent)s)
ORDER BY 1

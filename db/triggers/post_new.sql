-- Template: post the rows a statement inserted (new_rows in the posting function), the
-- common case of an INSERT or COPY. It reads the rule's expressions (desired_columns.sql)
-- and writes what desired.sql would, but is built for a statement of one row: one layer,
-- no arrays, no named checks, because setting up a larger statement costs more than
-- computing one row.
-- - No live posting is expected for new keys, so nothing is looked up or reversed. If a
--   key does have one (a row deleted while the trigger was off, now inserted again), the
--   posting link's unique key refuses the statement.
-- - A row is written only if it passes every check of desired_problem.sql: those on date,
--   balance and accounts are tested here, in one conjunction; the ledger's own
--   constraints refuse a bad currency (line_currency_check) and an amount beyond
--   numeric(20, 4), and NULL or NaN amounts fail the balance. A failing row fails the
--   statement (ledger.posting_problem), before anything is kept.
-- Either way the posting function's fallback (fallback_<on_error>.sql) takes over: it
-- names the problem of the row at fault, or records it, or reconciles the rows in full.
-- Expressions of x are computed once per row: a CTE read more than once is materialized.
WITH x AS (
    SELECT {{columns}},
           nextval('ledger.entry_id_seq'::regclass) AS new_entry_id
    FROM new_rows AS r
    WHERE ({{when}}) IS TRUE
), new AS (
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo)
    OVERRIDING SYSTEM VALUE
    SELECT x.new_entry_id, {{rule}}, x.source_key, x.effective_at, x.memo
    FROM x
    WHERE ({{all_zero}}) IS NOT TRUE
      AND (({{checks}}) IS TRUE
           OR ledger.posting_problem('22000 a check failed', NULL::numeric[]))
), new_lines AS (
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT x.new_entry_id, l.n, l.account, x.currency, greatest(l.amount, 0), greatest(-l.amount, 0)
    FROM x
    CROSS JOIN LATERAL (VALUES {{line_values}}) AS l (n, account, amount)
    WHERE l.amount <> 0
)
INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
SELECT {{rule}}, x.key_num, x.source_key, x.new_entry_id, {{fingerprint}}
FROM x
WHERE ({{all_zero}}) IS NOT TRUE

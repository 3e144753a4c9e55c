-- Template: the desired posting of every row of {{relation}} under one rule.
-- Nothing for a row whose `when` is not true or whose amounts all round to zero; otherwise
-- one entry: date, memo, currency and the lines as parallel arrays (accounts; signed
-- amounts, debit > 0 and credit < 0, rounded to the ledger's numeric(20, 4)), the
-- fingerprint that identifies what would be posted, and the problem ('SQLSTATE reason')
-- that forbids posting it, NULL when there is none. Computing it never fails on a row's
-- amounts: a NULL, NaN, infinite or too large amount is a problem, not an error, so verify
-- can count such rows.
-- The fingerprint is a bigint: a hash of date (when the rule has one) and currency, plus
-- the sum over the lines of a hash of account and rounded amount less the hash of a zero
-- amount on that account, so zero lines add nothing and the order of the lines does not
-- matter.
-- Two layers: the inner one evaluates the rule's expressions (desired_columns.sql: an
-- account and a rounded amount per line as scalar columns), the outer one builds the
-- arrays, the fingerprint and the problem from those scalars. Each ends in an OFFSET 0
-- fence, so that every expression is computed once per row however often it is referred
-- to. Verify, and backfill's search for rows out of sync, remove the fences
-- (compiler.desired_sql, fenced=False): they read only keys and fingerprints, and the
-- planner then drops the arrays and the problem checks and scans the source in parallel
-- (PostgreSQL 15 plans no parallel scan under an OFFSET). There each layer gets a
-- volatile column instead ({{marker}}: clock_timestamp(), which is parallel safe), which
-- keeps PostgreSQL from merging the layers into the reader: each expression is still
-- computed once per row, not once for each reference of the fingerprint, and below a
-- join, which then carries the key and the fingerprint instead of the columns they are
-- computed from. Readers of that form use it as a subquery in FROM: a CTE with a volatile
-- function is always materialized, never scanned in parallel.
-- The problem is named by desired_problem.sql. The INSERT fast path of the posting
-- functions (post_new.sql) reads the same columns of desired_columns.sql but skips this
-- query's arrays, fences and named checks; when a statement fails any check there, the
-- posting function's fallback reads this query over the statement's rows.
-- The trigger, backfill and verify all use these expressions, so they cannot disagree.
SELECT x.source_key, x.key_num, x.effective_at, x.memo, x.currency,
       ARRAY[{{account_list}}]::text[] AS accounts,
       ARRAY[{{amount_list}}]::numeric[] AS amounts,
       {{fingerprint}} AS fingerprint,
{{problem}} AS problem{{marker}}
FROM (
    SELECT {{columns}}{{marker}}
    FROM {{relation}} AS r
    WHERE ({{when}}) IS TRUE
    OFFSET 0  -- each expression of the rule evaluated once per row
) AS x
WHERE ({{all_zero}}) IS NOT TRUE
OFFSET 0  -- a reader's references to the problem and the arrays share one computation

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
-- matter. It is computed from scalar columns, and every column
-- is computed in its own layer. Each layer ends in an OFFSET 0 fence (each expression
-- computed once per row); verify removes the fences (compiler.desired_sql, fenced=False):
-- it reads only keys and fingerprints, and the planner then drops the arrays and the
-- problem checks and scans the source in parallel.
-- The trigger, backfill and verify all use this one query, so they cannot disagree.
SELECT w.*,
       CASE
           WHEN w.effective_at IS NULL
               THEN '22004 the date is NULL'
           WHEN NOT isfinite(w.effective_at)
               THEN '22008 the date is ' || w.effective_at
           WHEN w.currency IS NULL OR w.currency !~ '^[A-Z]{3}$'
               THEN '22023 currency ' || coalesce(quote_literal(w.currency), 'NULL')
                    || ' is not a three-letter ISO 4217 code'
           WHEN array_position(w.raw, NULL) IS NOT NULL
               THEN '22004 the amount of line ' || array_position(w.raw, NULL) || ' is NULL'
           WHEN 'NaN' = ANY (w.raw)
               THEN '22023 the amount of line ' || array_position(w.raw, 'NaN') || ' is NaN'
           WHEN array_position(w.amounts, NULL) IS NOT NULL
               THEN '22003 the amount of line ' || array_position(w.amounts, NULL) || ', '
                    || abs(w.raw[array_position(w.amounts, NULL)]) || ', overflows numeric(20, 4)'
           WHEN array_position(w.accounts, NULL) IS NOT NULL
               THEN '22004 the account of line ' || array_position(w.accounts, NULL) || ' is NULL'
{{account_checks}}
           WHEN {{balance}} <> 0
               THEN '23514 unbalanced'  -- ledger.posting_problem adds the sums
       END AS problem
FROM (
    SELECT x.source_key, x.key_num, x.effective_at, x.memo, x.currency,
           ARRAY[{{account_list}}]::text[] AS accounts,
           ARRAY[{{guarded_list}}]::numeric[] AS amounts,
           ARRAY[{{raw_list}}]::numeric[] AS raw,
           {{fingerprint}} AS fingerprint
    FROM (
        SELECT y.*, {{rounded}}
        FROM (
            SELECT {{key_text}} AS source_key,
                   {{key_num}} AS key_num,
                   ({{date}})::timestamptz AS effective_at,
                   ({{memo}})::text AS memo,
                   ({{currency}})::text AS currency,
                   {{lines}}
            FROM {{relation}} AS r
            WHERE ({{when}}) IS TRUE
            OFFSET 0  -- each expression of the rule evaluated once per row
        ) AS y
        OFFSET 0
    ) AS x
    WHERE ({{all_zero}}) IS NOT TRUE
    OFFSET 0
) AS w
OFFSET 0  -- a reader's references to problem share one computation

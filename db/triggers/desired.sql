-- Template: the desired posting of every row of {{relation}} under one rule.
-- Nothing for a row whose `when` is not true or whose amounts are all zero; otherwise one
-- entry: date, memo, currency and the lines as parallel arrays (accounts; signed amounts,
-- debit > 0 and credit < 0, rounded to the ledger's numeric(20, 4)), the fingerprint that
-- identifies what would be posted, and the problem ('SQLSTATE reason') that forbids posting
-- it, NULL when there is none. Computing it never fails on a row's amounts: a NULL, NaN,
-- infinite or too large amount is a problem, not an error, so verify can count such rows.
-- The fingerprint covers date (when the rule has one), currency and the posted lines as a
-- multiset: zero lines are left out and the order of the lines does not matter.
-- The trigger, backfill and verify all use this one query, so they cannot disagree.
SELECT d.*,
       CASE WHEN d.problem IS NULL THEN
           md5(concat_ws('|', {{fingerprint_date}}, d.currency, ({{lines_hash}})::text))
       END AS fingerprint
FROM (
    SELECT x.source_key, x.key_num, x.effective_at, x.memo, x.currency, x.accounts, x.amounts,
           CASE
               WHEN x.effective_at IS NULL
                   THEN '22004 the date is NULL'
               WHEN NOT isfinite(x.effective_at)
                   THEN '22008 the date is ' || x.effective_at
               WHEN x.currency IS NULL OR x.currency !~ '^[A-Z]{3}$'
                   THEN '22023 currency ' || coalesce(quote_literal(x.currency), 'NULL')
                        || ' is not a three-letter ISO 4217 code'
               WHEN array_position(x.raw, NULL) IS NOT NULL
                   THEN '22004 the amount of line ' || array_position(x.raw, NULL) || ' is NULL'
               WHEN 'NaN' = ANY (x.raw)
                   THEN '22023 the amount of line ' || array_position(x.raw, 'NaN') || ' is NaN'
               WHEN array_position(x.amounts, NULL) IS NOT NULL
                   THEN '22003 the amount of line ' || array_position(x.amounts, NULL) || ', '
                        || abs(x.raw[array_position(x.amounts, NULL)]) || ', overflows numeric(20, 4)'
               WHEN array_position(x.accounts, NULL) IS NOT NULL
                   THEN '22004 the account of line ' || array_position(x.accounts, NULL) || ' is NULL'
{{account_checks}}
               WHEN {{balance}} <> 0
                   THEN '23514 unbalanced'  -- ledger.posting_problem adds the sums
           END AS problem
    FROM (
        SELECT y.*, ARRAY[{{rounded}}]::numeric[] AS amounts
        FROM (
            SELECT {{key_text}} AS source_key,
                   {{key_num}} AS key_num,
                   ({{date}})::timestamptz AS effective_at,
                   ({{memo}})::text AS memo,
                   ({{currency}})::text AS currency,
                   ARRAY[{{accounts}}]::text[] AS accounts,
                   ARRAY[{{amounts}}]::numeric[] AS raw
            FROM {{relation}} AS r
            WHERE ({{when}}) IS TRUE
            OFFSET 0  -- each expression of the rule evaluated once per row
        ) AS y
        OFFSET 0
    ) AS x
    WHERE NOT (x.amounts <@ ARRAY[0]::numeric[])
    OFFSET 0  -- keeps the problem column computed once per row
) AS d

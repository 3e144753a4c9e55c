-- Template: the problem column of desired.sql, 'SQLSTATE reason' naming the first check a
-- desired posting fails (NULL when it passes them all), from the scalar columns of layer x.
       CASE
           WHEN x.effective_at IS NULL
               THEN '22004 the date is NULL'
           WHEN NOT isfinite(x.effective_at)
               THEN '22008 the date is ' || x.effective_at
           WHEN x.currency IS NULL OR x.currency !~ '^[A-Z]{3}$'
               THEN '22023 currency ' || coalesce(quote_literal(x.currency), 'NULL')
                    || ' is not a three-letter ISO 4217 code'
{{line_checks}}
           WHEN {{balance}} <> 0
               THEN '23514 unbalanced'  -- ledger.posting_problem adds the sums
       END

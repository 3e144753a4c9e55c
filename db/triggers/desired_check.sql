-- Template: the problem column of desired.sql on the INSERT fast path: NULL when the
-- desired posting passes every check of desired_problem.sql, else a placeholder that makes
-- ledger.posting_problem fail the statement, which the posting function then replays row
-- by row through the checks that name the problem. The same checks, in one conjunction:
-- NULL and NaN amounts fail the balance, NULL dates and currencies their own tests.
       CASE
           WHEN (isfinite(x.effective_at)
                 AND x.currency ~ '^[A-Z]{3}$'
                 AND {{balance}} = 0
                 AND greatest({{abs_list}}) < {{amount_limit}}{{account_checks}}) IS TRUE
               THEN NULL
           ELSE '22000 a check failed: replay row by row'
       END

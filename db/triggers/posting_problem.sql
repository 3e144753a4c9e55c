-- ledger.problem_message: the reason of a desired posting's problem, as the error and the
-- failure record state it. p_problem is 'SQLSTATE reason', computed by the rule's
-- desired-posting query, which leaves the sums of an unbalanced entry to this function
-- (called only for bad rows).
CREATE OR REPLACE FUNCTION ledger.problem_message(p_problem text, p_amounts numeric[])
    RETURNS text
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $body$
    SELECT CASE WHEN substr(p_problem, 7) = 'unbalanced'
                THEN 'unbalanced: debits '
                     || (SELECT sum(greatest(v, 0)) FROM unnest(p_amounts) AS v)
                     || ' <> credits '
                     || (SELECT sum(greatest(-v, 0)) FROM unnest(p_amounts) AS v)
                ELSE substr(p_problem, 7) END;
$body$;

REVOKE ALL ON FUNCTION ledger.problem_message(text, numeric[]) FROM PUBLIC;

-- ledger.posting_problem: raises the error for a desired posting that must not be written
-- (NULL or NaN amount, unknown account, unbalanced lines, bad currency or date), with the
-- SQLSTATE of p_problem; the caller adds the rule and source key to the message.
CREATE OR REPLACE FUNCTION ledger.posting_problem(p_problem text, p_amounts numeric[])
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    RAISE EXCEPTION '%', ledger.problem_message(p_problem, p_amounts)
        USING ERRCODE = substr(p_problem, 1, 5);
END
$body$;

REVOKE ALL ON FUNCTION ledger.posting_problem(text, numeric[]) FROM PUBLIC;

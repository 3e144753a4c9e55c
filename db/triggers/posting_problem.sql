-- ledger.posting_problem: raises the error for a desired posting that must not be written
-- (NULL or NaN amount, unknown account, unbalanced lines, bad currency or date).
-- p_problem is 'SQLSTATE reason', computed by the rule's desired-posting query; the
-- caller adds the rule and source key to the message.
CREATE OR REPLACE FUNCTION ledger.posting_problem(p_problem text)
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    RAISE EXCEPTION '%', substr(p_problem, 7)
        USING ERRCODE = substr(p_problem, 1, 5);
END
$body$;

REVOKE ALL ON FUNCTION ledger.posting_problem(text) FROM PUBLIC;

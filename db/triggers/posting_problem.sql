-- ledger.posting_problem: raises the error for a desired posting that must not be written
-- (NULL or NaN amount, unknown account, unbalanced lines, bad currency or date).
-- p_problem is 'SQLSTATE reason', computed by the rule's desired-posting query (which
-- leaves the sums of an unbalanced entry to this function, called only for bad rows); the
-- caller adds the rule and source key to the message.
CREATE OR REPLACE FUNCTION ledger.posting_problem(p_problem text, p_amounts numeric[])
    RETURNS boolean
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $body$
DECLARE
    v_reason text := substr(p_problem, 7);
BEGIN
    IF v_reason = 'unbalanced' THEN
        v_reason := 'unbalanced: debits '
                    || (SELECT sum(greatest(v, 0)) FROM unnest(p_amounts) AS v)
                    || ' <> credits '
                    || (SELECT sum(greatest(-v, 0)) FROM unnest(p_amounts) AS v);
    END IF;
    RAISE EXCEPTION '%', v_reason
        USING ERRCODE = substr(p_problem, 1, 5);
END
$body$;

REVOKE ALL ON FUNCTION ledger.posting_problem(text, numeric[]) FROM PUBLIC;

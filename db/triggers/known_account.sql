-- ledger.known_account: whether an account code is in the chart of accounts. The INSERT
-- fast path of the posting functions calls it for an `account_sql` value that is not one of
-- the codes compiled into the function. A function call is evaluated only when reached: a
-- lookup written into the statement would open ledger.account and its index on every
-- execution, whether or not any row needs it. PL/pgSQL, not SQL: a SQL function would be
-- inlined into the statement as just such a lookup.
CREATE OR REPLACE FUNCTION ledger.known_account(p_code text)
    RETURNS boolean
    LANGUAGE plpgsql
    STABLE
    SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    RETURN EXISTS (SELECT FROM ledger.account AS a WHERE a.code = p_code);
END
$body$;

REVOKE ALL ON FUNCTION ledger.known_account(text) FROM PUBLIC;

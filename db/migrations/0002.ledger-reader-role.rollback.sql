-- Rollback of 0002: takes the grants back; the role itself is cluster-wide and stays.
DO $body$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_reader') THEN
        REVOKE SELECT ON ledger.account, ledger.entry, ledger.line, ledger.failure FROM ledger_reader;
        REVOKE USAGE ON SCHEMA ledger FROM ledger_reader;
    END IF;
END
$body$;

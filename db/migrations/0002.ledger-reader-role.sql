-- 0002 ledger_reader: a read-only auditor role that reads the journal and nothing else.
-- Creating a role needs CREATEROLE; without it (some managed services) the role is
-- skipped with a notice and the DBA can create it later and re-run the grants below.
-- depends: 0001.ledger-schema

DO $body$
BEGIN
    IF NOT EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_reader') THEN
        BEGIN
            CREATE ROLE ledger_reader NOLOGIN;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'role ledger_reader not created: % (needs CREATEROLE)', SQLERRM;
        END;
    END IF;
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_reader') THEN
        GRANT USAGE ON SCHEMA ledger TO ledger_reader;
        GRANT SELECT ON ledger.account, ledger.entry, ledger.line, ledger.failure TO ledger_reader;
    END IF;
END
$body$;

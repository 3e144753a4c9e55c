-- Rollback of 0001: drops the ledger tables (and every journal row with them).
DROP FUNCTION ledger.refuse_change() CASCADE;
DROP TABLE ledger.rule;
DROP TABLE ledger.failure;
DROP TABLE ledger.posting;
DROP TABLE ledger.line;
DROP TABLE ledger.entry;
DROP TABLE ledger.account;

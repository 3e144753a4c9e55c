-- Rollback of 0004: ledger.posting goes back to the default replica identity (none, as it
-- has no primary key); publications that include it then refuse its updates and deletes.
ALTER TABLE ledger.posting REPLICA IDENTITY DEFAULT;

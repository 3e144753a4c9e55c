-- Rollback of 0002: what `ledgeradmin uninstall --rule sale` runs. The posting function
-- goes and its triggers with it; every journal entry and line stays, and so do the
-- accounts (journal lines reference them).
DROP FUNCTION IF EXISTS "ledger"."post_sale"() CASCADE;

DELETE FROM ledger.rule WHERE name = 'sale';

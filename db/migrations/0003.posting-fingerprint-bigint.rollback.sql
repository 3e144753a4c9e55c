-- Rollback of 0003: fingerprints become text again (the digits of the bigint). The posting
-- functions of the previous version compare md5 fingerprints: after rolling back and
-- installing that version, `ledgeradmin verify` reports every posting as drifted until
-- `ledgeradmin backfill` reposts them.
ALTER TABLE ledger.posting ALTER COLUMN fingerprint TYPE text USING fingerprint::text;

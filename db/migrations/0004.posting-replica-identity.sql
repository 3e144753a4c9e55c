-- 0004 ledger.posting gets a replica identity: its unique, non-null entry_id. Every other
-- ledger table has a primary key. Without one, a publication that includes the table
-- (`CREATE PUBLICATION … FOR ALL TABLES`, a change-data-capture tool) makes PostgreSQL
-- refuse every UPDATE and DELETE of it, so every amount edit, cancellation and DELETE
-- of a posted row failed ("cannot delete from table "posting" because it does not have
-- a replica identity and publishes deletes"). Metadata only: no rewrite, a brief lock.
-- depends: 0003.posting-fingerprint-bigint

ALTER TABLE ledger.posting REPLICA IDENTITY USING INDEX posting_entry_key;

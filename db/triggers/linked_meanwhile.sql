-- ledger.linked_meanwhile: raises the serialization failure (SQLSTATE 40001) of a posting
-- function whose statement touched a row that another transaction linked an entry to out
-- of sight of this one's snapshot: backfill, rename or another writer that committed after
-- a REPEATABLE READ or SERIALIZABLE transaction began (at READ COMMITTED, during the
-- statement). Reconciling from what the snapshot shows would keep live an entry that
-- should be reversed, or post a second one; the retry sees the link. p_detail: what
-- PostgreSQL reported (the unique violation of the link's key, or the conflict of a trial
-- link).
CREATE OR REPLACE FUNCTION ledger.linked_meanwhile(p_rule text, p_detail text)
    RETURNS void
    LANGUAGE plpgsql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $body$
BEGIN
    RAISE EXCEPTION 'ledgeradmin rule %: another transaction linked an entry to a row of this statement since this transaction began (backfill, rename or another writer)', p_rule
        USING ERRCODE = 'serialization_failure',
              DETAIL = coalesce(p_detail, 'no detail'),
              HINT = 'Retry the transaction: it then sees that entry.';
END
$body$;

REVOKE ALL ON FUNCTION ledger.linked_meanwhile(text, text) FROM PUBLIC;

-- ledger.record_failure: records (or counts again) a posting that could not be written,
-- so that `ledgeradmin backfill` can repair it. Called by the generated posting functions
-- under on_error = "defer" and by backfill; never by applications.
CREATE OR REPLACE FUNCTION ledger.record_failure(
    p_rule        text,
    p_source_key  text,
    p_sqlstate    text,
    p_message     text,
    p_detail      text,
    p_hint        text)
    RETURNS void
    LANGUAGE sql
    VOLATILE
    SET search_path = pg_catalog, pg_temp
AS $body$
    INSERT INTO ledger.failure AS f (rule, source_key, sqlstate, message, detail, hint)
    VALUES (p_rule, p_source_key, p_sqlstate, p_message, nullif(p_detail, ''), nullif(p_hint, ''))
    ON CONFLICT (rule, source_key) WHERE resolved_at IS NULL
    DO UPDATE SET attempts  = f.attempts + 1,
                  last_seen = now(),
                  sqlstate  = EXCLUDED.sqlstate,
                  message   = EXCLUDED.message,
                  detail    = EXCLUDED.detail,
                  hint      = EXCLUDED.hint;
$body$;

REVOKE ALL ON FUNCTION ledger.record_failure(text, text, text, text, text, text) FROM PUBLIC;

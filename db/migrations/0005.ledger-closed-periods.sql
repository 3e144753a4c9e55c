-- 0005 closed periods: `ledgeradmin period close DATE` closes the books through DATE, so
-- that no entry dated on or before it can be written any more, by any rule, backfill or
-- hand. The date is held by a check constraint on ledger.entry, written by
-- ledger.set_closed_through (added NOT VALID: the entries already there stay as they are);
-- every change is logged in ledger.period_close. The check costs one comparison per entry;
-- only a refused entry calls ledger.closed_period, which raises an error naming the date.
-- depends: 0004.posting-replica-identity

CREATE TABLE ledger.period_close (
    id              bigint GENERATED ALWAYS AS IDENTITY,
    closed_through  date,
    changed_at      timestamptz NOT NULL DEFAULT now(),
    changed_by      text        NOT NULL DEFAULT session_user,
    CONSTRAINT period_close_pkey PRIMARY KEY (id),
    CONSTRAINT period_close_finite CHECK (isfinite(closed_through))
);
COMMENT ON TABLE ledger.period_close IS
    'Log of closes and reopens of the books, append-only; the latest row is in force (closed_through NULL: every period open).';
CREATE TRIGGER period_close_immutable BEFORE UPDATE OR DELETE ON ledger.period_close
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER period_close_no_truncate BEFORE TRUNCATE ON ledger.period_close
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
ALTER TABLE ledger.period_close ENABLE ALWAYS TRIGGER period_close_immutable;
ALTER TABLE ledger.period_close ENABLE ALWAYS TRIGGER period_close_no_truncate;

CREATE FUNCTION ledger.closed_period_error(p_effective_at timestamptz, p_through date,
                                           OUT message text, OUT hint text)
    LANGUAGE sql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $body$
-- The message and hint of an entry dated in a closed period (SQLSTATE 23514).
    SELECT 'the entry''s date, ' || to_char(p_effective_at AT TIME ZONE 'UTC', 'YYYY-MM-DD HH24:MI:SS "UTC"')
           || ', is in a closed period: the books are closed through ' || p_through,
           'Entries can be dated after ' || p_through || ' only. To post into the closed days, reopen them: '
           || '`ledgeradmin period reopen DATE`.';
$body$;

CREATE FUNCTION ledger.closed_period(p_effective_at timestamptz, p_through date)
    RETURNS boolean
    LANGUAGE plpgsql
    IMMUTABLE
    SET search_path = pg_catalog, pg_temp
AS $body$
-- Raises the error of an entry dated in a closed period. Called by the check constraint
-- entry_in_open_period only when the entry's date fails it, and by the posting functions'
-- fallbacks for a row they find dated so.
DECLARE
    e record := ledger.closed_period_error(p_effective_at, p_through);
BEGIN
    RAISE EXCEPTION '%', e.message USING ERRCODE = 'check_violation', HINT = e.hint;
END
$body$;

CREATE FUNCTION ledger.set_closed_through(p_through date)
    RETURNS void
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $body$
-- Puts the close date in force: replaces the check constraint of ledger.entry (ACCESS
-- EXCLUSIVE for a moment; NOT VALID, so no entry is read) and logs the change. NULL: every
-- period open. Called by `ledgeradmin period close` and `reopen`, which check the date.
BEGIN
    ALTER TABLE ledger.entry DROP CONSTRAINT IF EXISTS entry_in_open_period;
    IF p_through IS NOT NULL THEN
        EXECUTE format('ALTER TABLE ledger.entry ADD CONSTRAINT entry_in_open_period CHECK ('
                       'effective_at >= %L::timestamptz OR ledger.closed_period(effective_at, %L::date)) NOT VALID',
                       (p_through + 1)::text || ' 00:00:00+00', p_through::text);
    END IF;
    INSERT INTO ledger.period_close (closed_through) VALUES (p_through);
END
$body$;

REVOKE ALL ON FUNCTION ledger.closed_period_error(timestamptz, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.closed_period(timestamptz, date) FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.set_closed_through(date) FROM PUBLIC;
REVOKE ALL ON ledger.period_close FROM PUBLIC;

DO $body$
BEGIN
    IF EXISTS (SELECT FROM pg_catalog.pg_roles WHERE rolname = 'ledger_reader') THEN
        GRANT SELECT ON ledger.period_close TO ledger_reader;
    END IF;
END
$body$;

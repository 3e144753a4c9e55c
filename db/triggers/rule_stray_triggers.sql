-- Template: removes one rule's triggers from tables that are no longer its source or a
-- partition of it (a partition since detached: its rows are no longer the rule's, and its
-- TRUNCATE would be refused in the rule's name). Each DROP TRIGGER takes ACCESS EXCLUSIVE
-- on that table, under install's lock timeout, and needs its ownership: a table the
-- installing role does not own keeps the triggers, with a warning (status says so).
DO $ledgeradmin$
DECLARE
    v_trigger record;
BEGIN
    FOR v_trigger IN
        SELECT t.tgname, t.tgrelid
        FROM pg_catalog.pg_trigger AS t
        WHERE t.tgfoid = '{{function}}()'::pg_catalog.regprocedure
          AND t.tgrelid <> ALL (ARRAY[{{relations}}]::pg_catalog.regclass[])
    LOOP
        BEGIN
            EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.tgrelid::pg_catalog.regclass);
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE WARNING 'trigger % stays on %, which is no longer part of the rule''s table: only its owner may drop it',
                          v_trigger.tgname, v_trigger.tgrelid::pg_catalog.regclass;
        END;
    END LOOP;
END
$ledgeradmin$

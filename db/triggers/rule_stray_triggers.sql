-- Template: removes one rule's triggers from tables that are no longer its source or a
-- partition of it (a partition since detached: its rows are no longer the rule's, and its
-- TRUNCATE would be refused in the rule's name). Each DROP TRIGGER takes ACCESS EXCLUSIVE
-- on that table, under install's lock timeout.
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
        EXECUTE pg_catalog.format('DROP TRIGGER %I ON %s', v_trigger.tgname, v_trigger.tgrelid::pg_catalog.regclass);
    END LOOP;
END
$ledgeradmin$

-- Template: a statement whose rows were written again before this function ran for it.
-- An application's AFTER ROW trigger, or an AFTER STATEMENT trigger whose name sorts before
-- ledgeradmin's, runs before the posting function of the statement that fired it; when it
-- changes that statement's rows (an UPDATE of the row just inserted, a DELETE of it), the
-- statement's transition tables no longer hold their current versions, and reconciling
-- from them would undo what the nested statement posted. Every statement nested that way
-- fires this function too, at a trigger depth above 1: it marks a transaction-local
-- setting with the client statement's start time and its depth. A function that finds
-- the mark of a deeper statement of the same client statement reconciles its rows from
-- their current versions, read by key, row by row (a lookup per row, for this rare case
-- only), and returns. Reconciling a key again is harmless: it finds nothing to change.
-- The common case costs one test: depth 1 and no mark in the transaction.
    IF pg_catalog.pg_trigger_depth() > 1 OR pg_catalog.current_setting({{setting}}, true) <> '' THEN
        v_nested := pg_catalog.current_setting({{setting}}, true);
        v_mark := extract(epoch FROM pg_catalog.statement_timestamp())::text;
        IF pg_catalog.pg_trigger_depth() > 1 THEN
            PERFORM pg_catalog.set_config({{setting}}, v_mark || '/' || pg_catalog.pg_trigger_depth(), true);
        END IF;
        IF (CASE WHEN pg_catalog.split_part(v_nested, '/', 1) = v_mark
                 THEN pg_catalog.split_part(v_nested, '/', 2)::int > pg_catalog.pg_trigger_depth()
                 ELSE false END) THEN
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                FOR v_row IN SELECT {{row_columns}} FROM new_rows AS r LOOP
{{replay_row}}
                END LOOP;
            END IF;
            IF TG_OP IN ('UPDATE', 'DELETE') THEN
                FOR v_row IN SELECT {{row_columns}} FROM old_rows AS r LOOP
{{replay_row}}
                END LOOP;
            END IF;
            RETURN NULL;
        END IF;
    END IF;

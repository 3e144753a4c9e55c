-- Template: on_error = "block". The set-based reconcile failed; replay the statement's rows
-- one by one, each through the full reconcile. When every row posts (the set-based step
-- failed on no row's data: a key reinserted while its live posting remained, say), the
-- write goes on; otherwise it fails with an error that names the rule, the source row at
-- fault and the reason (original SQLSTATE, DETAIL and HINT kept).
        v_key := NULL;
        BEGIN
            IF TG_OP IN ('INSERT', 'UPDATE') THEN
                FOR v_row IN SELECT {{row_columns}} FROM new_rows AS r LOOP
                    v_key := {{row_key_text}};
{{reconcile_row}};
                END LOOP;
            END IF;
            IF TG_OP = 'UPDATE' THEN
                FOR v_key IN SELECT {{key_text}} FROM old_rows AS r
                             EXCEPT SELECT {{key_text}} FROM new_rows AS r LOOP
{{reconcile_gone}};
                END LOOP;
            ELSIF TG_OP = 'DELETE' THEN
                FOR v_key IN SELECT {{key_text}} FROM old_rows AS r LOOP
{{reconcile_gone}};
                END LOOP;
            END IF;
            RETURN NULL;  -- every row reconciled on its own
        EXCEPTION WHEN OTHERS THEN
            GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                    v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
        END;
        RAISE EXCEPTION 'ledgeradmin rule % cannot post %: %', {{rule}},
              CASE WHEN v_key IS NULL THEN 'rows of ' || {{source_label}}
                   ELSE {{source_label}} || ' row ' || {{key_display}} END,
              v_message
            USING ERRCODE = v_state,
                  DETAIL = 'rule ' || {{rule}} || ', table ' || {{source_label}} || ', key '
                           || coalesce({{key_display}}, '(several rows)')
                           || coalesce(E'\n' || nullif(v_detail, ''), ''),
                  HINT = coalesce(nullif(v_hint, ''),
                                  'Correct the row, or set on_error = "defer" on the rule to record such failures for `ledgeradmin backfill` instead of refusing the write.');

-- Template: the error of on_error = "block" for a posting that failed (v_state, v_message,
-- v_detail, v_hint from the failure): it names the rule, the table and the row (v_key;
-- NULL when no single row is at fault), keeps the SQLSTATE, DETAIL and HINT, and refuses
-- the write. fallback_block.sql ends with it; under block, so does a failed row of
-- replay_row.sql.
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

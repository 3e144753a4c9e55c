-- Template: the body of a row-by-row loop over a transition table (v_row): the row's key
-- reconciled in a subtransaction of its own, a failure handled as
-- on_error says (the write refused naming the row, or the failure
-- recorded). fallback_defer.sql replays the statement's rows from v_row itself;
-- nested_replay.sql from their current versions, read by key.
                    v_key := {{row_key_text}};
                    BEGIN
{{reconcile}};
                    EXCEPTION WHEN OTHERS THEN
                        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
{{row_error}}
                    END;

-- Template: one row of nested_replay.sql (v_row, from a transition table): its key
-- reconciled from the current version of the row, read by key (none when it is gone); a
-- failure handled as on_error says: the write refused naming the row, or the failure
-- recorded.
                    v_key := {{row_key_text}};
                    BEGIN
{{reconcile_current}};
                    EXCEPTION WHEN OTHERS THEN
                        GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                                v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
{{row_error}}
                    END;

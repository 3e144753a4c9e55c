-- Template: on_error = "defer". The set-based reconcile failed; replay the statement's rows
-- one by one, each in its own subtransaction: the good rows post, each bad row is recorded
-- in ledger.failure for `ledgeradmin backfill`, and the write commits.
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            FOR v_row IN SELECT {{row_columns}} FROM new_rows AS r LOOP
                v_key := {{row_key_text}};
                BEGIN
{{reconcile_row}};
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
                    PERFORM ledger.record_failure({{rule}}, v_key, v_state, v_message, v_detail, v_hint);
                END;
            END LOOP;
        END IF;
        IF TG_OP = 'UPDATE' THEN
            FOR v_key IN SELECT {{key_text}} FROM old_rows AS r
                         EXCEPT SELECT {{key_text}} FROM new_rows AS r LOOP
                BEGIN
{{reconcile_gone}};
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
                    PERFORM ledger.record_failure({{rule}}, v_key, v_state, v_message, v_detail, v_hint);
                END;
            END LOOP;
        ELSIF TG_OP = 'DELETE' THEN
            FOR v_key IN SELECT {{key_text}} FROM old_rows AS r LOOP
                BEGIN
{{reconcile_gone}};
                EXCEPTION WHEN OTHERS THEN
                    GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                            v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
                    PERFORM ledger.record_failure({{rule}}, v_key, v_state, v_message, v_detail, v_hint);
                END;
            END LOOP;
        END IF;

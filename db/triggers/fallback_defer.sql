-- Template: on_error = "defer". The statement's set-based reconcile failed.
-- First, set-based again, in one subtransaction: each row of new_rows whose desired posting
-- has a problem (NULL amount, unknown account, unbalanced …, or, inserted, a date in the
-- closed period, which ledger.entry would refuse) is recorded in ledger.failure
-- for `ledgeradmin backfill`, and the other rows are reconciled in one statement, whatever
-- the statement's size. Otherwise (an expression raised an error, or that reconcile
-- failed) the rows are replayed one by one, each in its own subtransaction: the good rows
-- post and each bad row is recorded. Either way the write commits.
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            DECLARE
                v_bad text[] := '{}';  -- the keys recorded as failures
            BEGIN
                v_through := (SELECT c.closed_through FROM ledger.period_close AS c ORDER BY c.id DESC LIMIT 1);
                FOR v_key, v_problem, v_amounts, v_date IN
                    SELECT d.source_key, d.problem, d.amounts, d.effective_at
                    FROM (
{{desired_new}}
                    ) AS d
                    WHERE d.problem IS NOT NULL
                       OR (TG_OP = 'INSERT' AND d.effective_at < (v_through + 1)::timestamp AT TIME ZONE 'UTC')
                LOOP
                    IF v_problem IS NOT NULL THEN
                        PERFORM ledger.record_failure({{rule}}, v_key, left(v_problem, 5),
                                                      ledger.problem_message(v_problem, v_amounts), NULL, NULL);
                    ELSE
                        PERFORM ledger.record_failure({{rule}}, v_key, '23514', e.message, NULL, e.hint)
                        FROM ledger.closed_period_error(v_date, v_through) AS e;
                    END IF;
                    v_bad := array_append(v_bad, v_key);
                END LOOP;
                IF TG_OP = 'INSERT' THEN
{{reconcile_new_rest}};
                ELSE
{{reconcile_update_rest}};
                END IF;
                RETURN NULL;  -- the bad rows recorded, the others reconciled
            EXCEPTION WHEN OTHERS THEN
                NULL;  -- replayed below, row by row
            END;
        END IF;
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            FOR v_row IN SELECT {{row_columns}} FROM new_rows AS r LOOP
{{replay_row}}
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
{{not_the_rows}}
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
{{not_the_rows}}
                    PERFORM ledger.record_failure({{rule}}, v_key, v_state, v_message, v_detail, v_hint);
                END;
            END LOOP;
        END IF;

-- Template: on_error = "block". The statement's set-based reconcile failed.
-- First, set-based again, in one subtransaction: the desired postings of new_rows are
-- checked, and the first row with a problem (NULL amount, unknown account, unbalanced …,
-- or, inserted, a date in the closed period, which ledger.entry would refuse) raises it,
-- naming that row, whatever the statement's size. When no row has a problem,
-- an INSERT is reconciled in full (a key reinserted while its live posting remained, say)
-- and the write goes on.
-- Otherwise (an expression raised an error, or the full reconcile failed), the rows are
-- replayed one by one, each through the full reconcile, to find the row at fault. When
-- every row posts, the write goes on; otherwise it fails with an error that names the
-- rule, the source row and the reason (original SQLSTATE, DETAIL and HINT kept).
        IF TG_OP IN ('INSERT', 'UPDATE') THEN
            v_through := (SELECT c.closed_through FROM ledger.period_close AS c ORDER BY c.id DESC LIMIT 1);
            BEGIN
                SELECT d.source_key, coalesce(d.problem, 'closed'), d.amounts, d.effective_at
                INTO v_key, v_problem, v_amounts, v_date
                FROM (
{{desired_new}}
                ) AS d
                WHERE d.problem IS NOT NULL
                   OR (TG_OP = 'INSERT' AND d.effective_at < (v_through + 1)::timestamp AT TIME ZONE 'UTC')
                LIMIT 1;
                IF v_problem = 'closed' THEN
                    PERFORM ledger.closed_period(v_date, v_through);
                ELSIF v_problem IS NOT NULL THEN
                    PERFORM ledger.posting_problem(v_problem, v_amounts);
                END IF;
                IF TG_OP = 'INSERT' THEN
{{reconcile_new}};
                    RETURN NULL;  -- the statement's rows reconciled in full
                END IF;
            EXCEPTION WHEN OTHERS THEN
                GET STACKED DIAGNOSTICS v_state = RETURNED_SQLSTATE, v_message = MESSAGE_TEXT,
                                        v_detail = PG_EXCEPTION_DETAIL, v_hint = PG_EXCEPTION_HINT;
{{not_the_rows}}
            END;
        END IF;
        IF v_problem IS NULL THEN
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
{{not_the_rows}}
            END;
        END IF;
{{raise_row_error}}

-- Template: in an exception handler of a full reconcile (it looks up the links of its
-- keys), after v_state and v_detail were read. A unique violation of a link's key there
-- means another transaction linked an entry to a row of this statement out of this one's
-- sight (ledger.linked_meanwhile). The INSERT fast path (post_new.sql) looks up no links:
-- its unique violation is a key inserted again while its live posting remained, which the
-- full reconcile of the fallback handles.
                GET STACKED DIAGNOSTICS v_constraint = CONSTRAINT_NAME;
                IF v_state = '23505' AND v_constraint = 'posting_live_key' THEN
                    PERFORM ledger.linked_meanwhile({{rule}}, v_detail);
                END IF;

-- Template: after an UPDATE's or DELETE's reconcile, at REPEATABLE READ and SERIALIZABLE.
-- The transaction's snapshot may predate a link that another transaction (backfill,
-- rename) committed since for a row of this statement; the reconcile did not see it, so a
-- cancelled or deleted row would keep its entry. PostgreSQL reports such a link when an
-- INSERT … ON CONFLICT meets it: a serialization failure (40001), which the application
-- retries and then sees the link. So each key of the statement's old rows that has no
-- visible link is tried as one, in a subtransaction that is always undone; its entry id is
-- negative and this session's own, so that concurrent sessions' trials never wait for each
-- other on the unique entry id. READ COMMITTED reads every committed link: there it costs
-- one test.
        IF TG_OP <> 'INSERT' AND pg_catalog.current_setting('transaction_isolation') <> 'read committed' THEN
            BEGIN
                INSERT INTO ledger.posting AS p (rule, key_num, source_key, entry_id, fingerprint)
                SELECT {{rule}}, k.key_num, k.source_key,
                       -(pg_catalog.pg_backend_pid()::bigint << 32) - row_number() OVER (), 0
                FROM ({{keys}}) AS k
                WHERE NOT EXISTS (SELECT FROM ledger.posting AS q
                                  WHERE q.rule = {{rule}} AND q.key_num IS NOT DISTINCT FROM k.key_num
                                    AND q.source_key = k.source_key)
                ON CONFLICT ON CONSTRAINT posting_live_key DO NOTHING;
                RAISE SQLSTATE 'LA000';  -- undo the trial links
            EXCEPTION
                WHEN SQLSTATE 'LA000' THEN
                    NULL;
                WHEN serialization_failure THEN
                    GET STACKED DIAGNOSTICS v_message = MESSAGE_TEXT;
                    PERFORM ledger.linked_meanwhile({{rule}}, v_message);
            END;
        END IF;

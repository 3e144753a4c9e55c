-- The fast path of a batch where most rows are in sync: the next rows in key order, read
-- without a lock (candidates: backfill_next_rows.sql), and of those only the rows whose
-- posting is not what it should be, locked (a row lock is a write: locking every row of a
-- table in sync would write all of it to the WAL). "Not what it should be" is verify's
-- comparison (verify_rule.sql): no live posting, no desired posting, or fingerprints that
-- differ; or an open failure. The locked rows are read again, as they are now. Rows a
-- writer holds are skipped, never waited for: that writer's own trigger posts them.
candidates AS MATERIALIZED (
{{candidates}}
), ck AS MATERIALIZED (
{{candidate_keys}}
), stale AS MATERIALIZED (
    SELECT coalesce(d.source_key, p.source_key) AS source_key
    FROM (
{{desired}}
    ) AS d
    FULL JOIN (
        SELECT p.source_key, p.key_num, p.fingerprint
        FROM ledger.posting AS p
        WHERE p.rule = {{rule}}
          AND {{link_match}}
    ) AS p ON {{join_on}}
    WHERE p.fingerprint IS NULL  -- missing (a row that cannot post may have no fingerprint)
       OR d.fingerprint IS DISTINCT FROM p.fingerprint  -- drifted, orphaned
    UNION
    SELECT f.source_key
    FROM ledger.failure AS f
    WHERE f.rule = {{rule}}
      AND f.resolved_at IS NULL
      AND f.source_key = ANY (ARRAY(SELECT ck.source_key FROM ck))
), locked AS MATERIALIZED (
    SELECT r.*
    FROM {{source}} AS r
    WHERE ({{key_columns}}) IN (SELECT {{candidate_columns}}
                                FROM candidates AS c
                                WHERE {{candidate_key}} IN (SELECT s.source_key FROM stale AS s))
    ORDER BY {{key_columns}}
    FOR NO KEY UPDATE OF r SKIP LOCKED
)

-- Template: reconcile the rows of one rule whose keys are {{keys}} with their desired
-- posting ({{desired}}): post what is missing, reverse what is no longer desired, reverse
-- and repost what differs (by fingerprint), and resolve recorded failures of those keys.
-- A desired posting with a problem raises it (ledger.posting_problem) before any write.
-- One statement: it all happens or nothing does. Backfill may cap the rows changed
-- ({{limit_cte}}); the trigger changes all. Backfill may also define the rows it reads
-- in CTEs before d (the prelude).
WITH {{prelude}}d AS MATERIALIZED (
{{desired}}
), k AS MATERIALIZED (
{{keys}}
), c AS MATERIALIZED (
    SELECT p.source_key, p.key_num, p.entry_id, p.fingerprint
    FROM ledger.posting AS p
    WHERE p.rule = {{rule}}
      AND {{link_match}}
), {{diff}} AS MATERIALIZED (
    -- Entry ids are drawn here, the reversal's before the new entry's, so that every later
    -- step reads x alone (no join back on RETURNING) and a reversal precedes its repost.
    SELECT y.*,
           CASE WHEN y.old_entry_id IS NOT NULL THEN nextval('ledger.entry_id_seq'::regclass) END AS rev_entry_id,
           CASE WHEN y.post THEN nextval('ledger.entry_id_seq'::regclass) END AS new_entry_id
    FROM (
        SELECT coalesce(d.source_key, c.source_key) AS source_key,
               coalesce(d.key_num, c.key_num) AS key_num,
               c.entry_id AS old_entry_id,
               d.source_key IS NOT NULL AS post,
               d.effective_at, d.memo, d.currency, d.accounts, d.amounts, d.fingerprint
        FROM d
        FULL JOIN c ON c.source_key = d.source_key
        WHERE CASE WHEN d.problem IS NOT NULL THEN ledger.posting_problem(d.problem, d.amounts)
                   ELSE c.fingerprint IS DISTINCT FROM d.fingerprint END
        OFFSET 0
    ) AS y
){{limit_cte}}, entries AS (
    -- One INSERT per ledger table, reversals and new entries together: every INSERT in a
    -- statement sets up its table's constraints and indexes anew.
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo, reverses)
    OVERRIDING SYSTEM VALUE
    SELECT x.rev_entry_id, {{rule}}, x.source_key, now(), 'Reversal of entry ' || x.old_entry_id, x.old_entry_id
    FROM x
    WHERE x.old_entry_id IS NOT NULL
    UNION ALL
    SELECT x.new_entry_id, {{rule}}, x.source_key, x.effective_at, x.memo, NULL
    FROM x
    WHERE x.post
), lines AS (
    -- The lines of each entry reversed are fetched by index, one lookup per entry (a
    -- subquery the planner cannot flatten): never a scan of ledger.line, and never a
    -- lookup that rereads an array of all the entries, whatever the planner thinks x holds.
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT x.rev_entry_id, l.line_no, l.account, l.currency, l.credit, l.debit
    FROM x
    CROSS JOIN LATERAL (
        SELECT l.line_no, l.account, l.currency, l.debit, l.credit
        FROM ledger.line AS l
        WHERE l.entry_id = x.old_entry_id
        OFFSET 0
    ) AS l
    WHERE x.old_entry_id IS NOT NULL
    UNION ALL
    SELECT x.new_entry_id, l.n, l.account, x.currency, greatest(l.amount, 0), greatest(-l.amount, 0)
    FROM x
    CROSS JOIN LATERAL unnest(x.accounts, x.amounts) WITH ORDINALITY AS l (account, amount, n)
    WHERE x.post
      AND l.amount <> 0
), unlinked AS (
    DELETE FROM ledger.posting AS p
    WHERE p.entry_id = ANY (ARRAY(SELECT x.old_entry_id FROM x WHERE x.old_entry_id IS NOT NULL AND NOT x.post))
), relinked AS (
    -- Joined on the entry id alone: a few rows of x probe the links' entry index, many are
    -- hashed against one scan of the links; an array of them all in the probe would be
    -- reread by every probe.
    UPDATE ledger.posting AS p
    SET entry_id = x.new_entry_id, fingerprint = x.fingerprint
    FROM x
    WHERE p.entry_id = x.old_entry_id
      AND x.post
), linked AS (
    INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
    SELECT {{rule}}, x.key_num, x.source_key, x.new_entry_id, x.fingerprint
    FROM x
    WHERE x.post
      AND x.old_entry_id IS NULL
), resolved AS (
    -- Found by key in the open-failure index, bounded as the links are (compiler.link_match):
    -- never a read of every open failure of the rule.
    UPDATE ledger.failure AS f
    SET resolved_at = now()
    WHERE f.rule = {{rule}}
      AND f.resolved_at IS NULL
      AND f.source_key = ANY (ARRAY(SELECT k.source_key FROM k))
      AND f.source_key BETWEEN (SELECT min(k.source_key) FROM k) AND (SELECT max(k.source_key) FROM k){{unresolved}}
)
SELECT {{result}} FROM x

-- Template: post the desired postings of newly inserted rows ({{desired}}), the common case
-- of an INSERT or COPY: no live posting is expected for new keys, so nothing is looked up
-- or reversed. If a key does have a live posting (a row deleted while the trigger was off,
-- now inserted again), the posting link's unique key refuses the statement and the caller
-- replays the rows one by one with the full reconcile. A desired posting with a problem
-- raises it (ledger.posting_problem) before any write.
WITH x AS MATERIALIZED (
    SELECT d.*, nextval('ledger.entry_id_seq'::regclass) AS new_entry_id
    FROM (
{{desired}}
    ) AS d
    WHERE d.problem IS NULL OR ledger.posting_problem(d.problem, d.amounts)
), new AS (
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo)
    OVERRIDING SYSTEM VALUE
    SELECT x.new_entry_id, {{rule}}, x.source_key, x.effective_at, x.memo
    FROM x
), new_lines AS (
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT x.new_entry_id, l.n, l.account, x.currency, greatest(l.amount, 0), greatest(-l.amount, 0)
    FROM x
    CROSS JOIN LATERAL unnest(x.accounts, x.amounts) WITH ORDINALITY AS l (account, amount, n)
    WHERE l.amount <> 0
), linked AS (
    INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
    SELECT {{rule}}, x.key_num, x.source_key, x.new_entry_id, x.fingerprint
    FROM x
)
SELECT count(*) INTO v_count FROM x

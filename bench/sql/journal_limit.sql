-- The limit of bulk posting and backfill: the journal rows the rule `sale` writes for the
-- sales of an id range (entry, its non-zero lines, posting link with fingerprint:
-- the same expressions as db/triggers/desired.sql and reconcile.sql), written by hand in ONE
-- set-based INSERT … SELECT. No problem checks, no batching, no locking, no existing
-- postings to compare with: the least work that leaves the same rows (verify finds 0
-- missing and 0 drifted afterwards).
WITH s AS MATERIALIZED (
    SELECT r.id, r.sold_at, r.customer, r.currency::text AS currency,
           nextval('ledger.entry_id_seq'::regclass) AS entry_id,
           ARRAY[CASE r.payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END,
                 '4000', '2200']::text[] AS accounts,
           ARRAY[r.total::numeric(20, 4), -((r.total - r.tax)::numeric(20, 4)), -(r.tax::numeric(20, 4))]::numeric[] AS amounts
    FROM public.sales AS r
    WHERE r.id BETWEEN {{lo}} AND {{hi}}
      AND r.status = 'completed'
), e AS (
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo)
    OVERRIDING SYSTEM VALUE
    SELECT s.entry_id, 'sale', s.id::text, s.sold_at, 'Sale ' || s.id || ' to ' || s.customer
    FROM s
), l AS (
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT s.entry_id, x.n, x.account, s.currency, greatest(x.amount, 0), greatest(-x.amount, 0)
    FROM s
    CROSS JOIN LATERAL unnest(s.accounts, s.amounts) WITH ORDINALITY AS x (account, amount, n)
    WHERE x.amount <> 0
)
INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
SELECT 'sale', s.id, s.id::text, s.entry_id,
       hashtextextended(s.currency, hashfloat8extended(date_part('epoch', s.sold_at), 0))
       # (((hash_numeric_extended(s.amounts[1], hash_numeric_extended(s.amounts[1], hashtext(s.accounts[1]) # (s.amounts[1] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(s.accounts[1]))) >> 9))
          + ((hash_numeric_extended(s.amounts[2], hash_numeric_extended(s.amounts[2], hashtext(s.accounts[2]) # (s.amounts[2] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(s.accounts[2]))) >> 9))
          + ((hash_numeric_extended(s.amounts[3], hash_numeric_extended(s.amounts[3], hashtext(s.accounts[3]) # (s.amounts[3] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(s.accounts[3]))) >> 9)))
FROM s

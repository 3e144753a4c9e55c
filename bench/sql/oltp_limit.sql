-- OLTP (c) the limit: the same sale and the journal rows the rule writes (entry, 3 lines,
-- posting link with the same fingerprint expression as db/triggers/desired.sql), by hand,
-- in ONE statement (one round trip), with the table's triggers disabled. Written the way a
-- careful developer would: amounts and accounts are known good, so the problem checks
-- (NULL/NaN amount, unknown account, unbalanced lines) of the product are left out.
\set c random(1, 100000)
\set cents random(100, 1000000)
\set pm random(1, 3)
WITH s AS (
    INSERT INTO public.sales (customer, payment_method, total, tax)
    VALUES ('customer ' || :c, (ARRAY['cash', 'card', 'invoice'])[:pm],
            :cents::numeric / 100, round(:cents::numeric / 1100, 2))
    RETURNING id, sold_at, customer, currency::text AS currency, status,
              ARRAY[CASE payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END,
                    '4000', '2200']::text[] AS accounts,
              ARRAY[total::numeric(20, 4), -((total - tax)::numeric(20, 4)), -(tax::numeric(20, 4))]::numeric[] AS amounts
), d AS (
    SELECT s.*, nextval('ledger.entry_id_seq'::regclass) AS entry_id
    FROM s
    WHERE s.status = 'completed'
), e AS (
    INSERT INTO ledger.entry (id, rule, source_key, effective_at, memo)
    OVERRIDING SYSTEM VALUE
    SELECT d.entry_id, 'sale', d.id::text, d.sold_at, 'Sale ' || d.id || ' to ' || d.customer
    FROM d
), l AS (
    INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
    SELECT d.entry_id, x.n, x.account, d.currency, greatest(x.amount, 0), greatest(-x.amount, 0)
    FROM d
    CROSS JOIN LATERAL unnest(d.accounts, d.amounts) WITH ORDINALITY AS x (account, amount, n)
    WHERE x.amount <> 0
)
INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
SELECT 'sale', d.id, d.id::text, d.entry_id,
       hashtextextended(d.currency, hashfloat8extended(date_part('epoch', d.sold_at), 0))
       # (((hash_numeric_extended(d.amounts[1], hash_numeric_extended(d.amounts[1], hashtext(d.accounts[1]) # (d.amounts[1] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(d.accounts[1]))) >> 9))
          + ((hash_numeric_extended(d.amounts[2], hash_numeric_extended(d.amounts[2], hashtext(d.accounts[2]) # (d.amounts[2] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(d.accounts[2]))) >> 9))
          + ((hash_numeric_extended(d.amounts[3], hash_numeric_extended(d.amounts[3], hashtext(d.accounts[3]) # (d.amounts[3] < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(d.accounts[3]))) >> 9)))
FROM d;

-- OLTP (d) the app-level pattern ledgeradmin replaces (what ORM signal handlers do): the
-- sale INSERT … RETURNING, then one INSERT per journal row (entry, each line, posting
-- link), each a round trip, in one transaction; the table's triggers disabled.
\set c random(1, 100000)
\set cents random(100, 1000000)
\set pm random(1, 3)
BEGIN;
INSERT INTO public.sales (customer, payment_method, total, tax)
VALUES ('customer ' || :c, (ARRAY['cash', 'card', 'invoice'])[:pm],
        :cents::numeric / 100, round(:cents::numeric / 1100, 2))
RETURNING id AS sale_id, sold_at, currency::text AS currency, total, tax,
          CASE payment_method WHEN 'cash' THEN '1000' WHEN 'card' THEN '1050' ELSE '1100' END AS debit_account
\gset
INSERT INTO ledger.entry (rule, source_key, effective_at, memo)
VALUES ('sale', :sale_id, :sold_at, 'Sale ' || :sale_id || ' to customer ' || :c)
RETURNING id AS entry_id
\gset
INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
VALUES (:entry_id, 1, :debit_account, :currency, :total, 0);
INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
VALUES (:entry_id, 2, '4000', :currency, 0, :total::numeric - :tax::numeric);
INSERT INTO ledger.line (entry_id, line_no, account, currency, debit, credit)
VALUES (:entry_id, 3, '2200', :currency, 0, :tax);
INSERT INTO ledger.posting (rule, key_num, source_key, entry_id, fingerprint)
VALUES ('sale', :sale_id, :sale_id, :entry_id,
        hashtextextended(:currency::text, hashfloat8extended(date_part('epoch', :sold_at::timestamptz), 0))
        # (((hash_numeric_extended(:total::numeric(20, 4), hash_numeric_extended(:total::numeric(20, 4), hashtext(:debit_account::text) # (:total::numeric(20, 4) < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(:debit_account::text))) >> 9))
           + ((hash_numeric_extended(-((:total::numeric - :tax::numeric)::numeric(20, 4)), hash_numeric_extended(-((:total::numeric - :tax::numeric)::numeric(20, 4)), hashtext('4000') # (-((:total::numeric - :tax::numeric)::numeric(20, 4)) < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext('4000'))) >> 9))
           + ((hash_numeric_extended(-(:tax::numeric(20, 4)), hash_numeric_extended(-(:tax::numeric(20, 4)), hashtext('2200') # (-(:tax::numeric(20, 4)) < 0)::int)) >> 9) - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext('2200'))) >> 9))));
COMMIT;

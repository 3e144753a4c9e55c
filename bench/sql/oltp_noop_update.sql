-- OLTP no-op UPDATE: a change of an unrelated column (note) of a random existing sale
-- (ids :noop_lo..:noop_hi, never amount-edited, so their postings stay current). With the
-- rule installed the trigger finds that no column the rule reads changed and returns.
\set id random(:noop_lo, :noop_hi)
\set n random(1, 1000000)
UPDATE public.sales SET note = 'note ' || :n WHERE id = :id;

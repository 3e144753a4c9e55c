-- OLTP (a) bare and (b) trigger: one sale per transaction (autocommit), nothing else.
-- Variant a runs it with the table's triggers disabled, variant b with the rule installed.
\set c random(1, 100000)
\set cents random(100, 1000000)
\set pm random(1, 3)
INSERT INTO public.sales (customer, payment_method, total, tax)
VALUES ('customer ' || :c, (ARRAY['cash', 'card', 'invoice'])[:pm],
        :cents::numeric / 100, round(:cents::numeric / 1100, 2));

-- Deterministic sales of one id range of a table of N rows: 90 % completed (the
-- rest draft or cancelled: no posting), 90 % USD, 10 % EUR, cash / card / invoice, sold in id
-- order over 100 days ending 2025-06-30 (so the last day holds the most recent 1 %).
SELECT g AS id,
       'customer ' || (g % 100000) AS customer,
       timestamptz '2025-03-23 00:00:00+00' + (g - 1) * (interval '100 days' / {{total}}) AS sold_at,
       CASE WHEN g % 20 = 7 THEN 'draft' WHEN g % 20 = 13 THEN 'cancelled' ELSE 'completed' END AS status,
       CASE WHEN g % 10 = 3 THEN 'EUR' ELSE 'USD' END AS currency,
       (ARRAY['cash', 'card', 'invoice'])[1 + g % 3] AS payment_method,
       (100 + (g * 7919) % 999900) / 100.0 AS total,
       round((100 + (g * 7919) % 999900) / 1100.0, 2) AS tax,
       NULL::text AS note
FROM generate_series({{lo}}::bigint, {{hi}}::bigint) AS g

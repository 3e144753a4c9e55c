-- OLTP UPDATE: an amount edit of a random existing completed sale (ids 1..:edit_rows).
-- With the rule installed the trigger reverses the sale's entry and posts the new one;
-- the bare variant runs the same UPDATE with the table's triggers disabled.
\set id random(1, :edit_rows)
UPDATE public.sales SET total = total + 0.01 WHERE id = :id;

-- Rollback of 0001: drops the sales table.
DROP TABLE public.sales;

-- Template: the rule's expressions over a row r of the source, each evaluated once: the
-- key, date, memo and currency, and per line i its account a<i> and its signed amount m<i>
-- (debit > 0, credit < 0) rounded to the ledger's numeric(20, 4). desired.sql and the
-- INSERT fast path (post_new.sql) both read the rows through these columns.
{{key_text}} AS source_key,
           {{key_num}} AS key_num,
           ({{date}})::timestamptz AS effective_at,
           ({{memo}})::text AS memo,
           ({{currency}})::text AS currency,
           {{lines}}

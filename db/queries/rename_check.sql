-- rename (rename.py), before anything changes: what rule {{old}} leaves to rule {{new}}.
-- live: its live postings; found: those whose key is a row of rule {{new}}'s source table;
-- misfit: those keyed in another form than rule {{new}} keys its rows (key_num is set for
-- a key of one integer column only), which rule {{new}} could never find; failures: its
-- open failures.
SELECT count(*) AS live,
       count(*) FILTER (WHERE EXISTS (SELECT FROM {{source}} AS r WHERE {{row_match}})) AS found,
       count(*) FILTER (WHERE (p.key_num IS NOT NULL) <> {{integer_key}}) AS misfit,
       (SELECT count(*) FROM ledger.failure AS f WHERE f.rule = {{old}} AND f.resolved_at IS NULL) AS failures
FROM ledger.posting AS p
WHERE p.rule = {{old}}

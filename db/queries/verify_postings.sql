-- The live postings of one rule, optionally only those of entries dated on or after a day.
SELECT p.source_key, p.key_num, p.fingerprint
FROM ledger.posting AS p
WHERE p.rule = {{rule}}{{recent}}

-- Whole-ledger entry checks, exactly: the number of entries and of live entries no posting
-- links to. Used with --since, where only entries dated on or after the day are checked
-- ({{entries}}, by index), and when the checksum of verify_links.sql is not 0.
-- Keys with more than one live entry are looked for only when some live entry is unlinked
-- (verify_duplicates.sql): a key has one posting link at most, so of two live entries of
-- one key at least one is unlinked.
SELECT
    (SELECT count(*) FROM ledger.entry AS e WHERE true {{entries}}) AS entries,
    (SELECT count(*)
     FROM ledger.entry AS e
     WHERE e.reverses IS NULL {{entries}}
       AND NOT EXISTS (SELECT FROM ledger.entry AS r WHERE r.reverses = e.id)
       AND NOT EXISTS (SELECT FROM ledger.posting AS p WHERE p.entry_id = e.id)) AS unlinked_live_entries

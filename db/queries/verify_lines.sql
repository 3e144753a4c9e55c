-- Whole-ledger line checks, exact per currency: with --since (over the lines of entries
-- dated on or after the day, {{lines}}), and in a full verify when the pass of
-- verify_lines_checksum.sql found something. One pass, which PostgreSQL runs in parallel:
-- per currency the total debits less the total credits (the trial balance: must be 0) and
-- a checksum of the entries' balances. The checksum weighs the balance (debits - credits)
-- of each entry in the currency by a 32-bit weight drawn from a hash of the entry id seeded
-- with a random number of this run (%(seed)s), and sums the products: 0 when every entry
-- balances. When some entry does not, the checksum is 0 only if the random weights happen
-- to cancel, with a chance below 2^-32 (and another seed next run); a non-zero checksum
-- makes verify count the unbalanced entries exactly (verify_unbalanced.sql).
SELECT l.currency, sum(l.debit - l.credit) AS balance,
       sum((l.debit - l.credit) * (hashint8extended(l.entry_id, %(seed)s) >> 32)) AS checksum
FROM {{lines}} AS l
GROUP BY l.currency
ORDER BY l.currency

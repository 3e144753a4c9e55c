-- Full verify's line check in one pass without grouping (grouping every line by its
-- currency costs a quarter of the pass): the lines whose currency is not among the
-- candidates of verify_lines_currencies.sql, and one checksum of every entry's balance in
-- each currency. Each line's debit less credit is weighted by a 32-bit hash of its entry id
-- seeded by a random number of this run and its currency, and the products summed: 0 when
-- every entry balances in every currency, and then so does the trial balance. An entry
-- that does not balance in some currency makes the sum 0 only if the weights happen to
-- cancel (a chance below 2^-32, another seed next run). When the sum is not 0, or a line
-- has another currency, verify runs verify_lines.sql, which counts exactly.
SELECT count(*) FILTER (WHERE l.currency <> ALL (%(currencies)s::text[])) AS stray,
       coalesce(sum((l.debit - l.credit)
                    * (hashint8extended(l.entry_id, %(seed)s # hashtext(l.currency)) >> 32)), 0) AS checksum
FROM ledger.line AS l

-- Whole-ledger link check without an anti-join, two parallel scans: the number of entries,
-- and a checksum that is 0 when the live entries are exactly the entries the postings link
-- to. With h the hash of an entry id seeded by a random number of this run (%(seed)s):
-- the sum of h over entries that reverse nothing, less the sum of h over the entries
-- reversed, is the sum over live entries; less the sum of h over the postings' entry ids,
-- it is 0 when each live entry has one posting and each posting links a live entry. A
-- difference cancels by chance only (below 2^-32 for one unlinked entry); a non-zero
-- checksum makes verify count the unlinked live entries exactly (verify_ledger.sql).
SELECT e.entries, e.live - p.linked AS checksum
FROM (SELECT count(*) AS entries,
             coalesce(sum(hashint8extended(e.id, %(seed)s)) FILTER (WHERE e.reverses IS NULL), 0)
             - coalesce(sum(hashint8extended(e.reverses, %(seed)s)), 0) AS live
      FROM ledger.entry AS e) AS e,
     (SELECT coalesce(sum(hashint8extended(p.entry_id, %(seed)s)), 0) AS linked
      FROM ledger.posting AS p) AS p

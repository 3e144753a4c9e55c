-- 0006 posting fingerprints hash each line's sign and size: hash_numeric_extended hashes
-- neither (it XORs the base-10000 weight into the low bits, which the fingerprint shifts
-- away), so an edit that flipped an amount's sign or scaled it by 10^4 (7.5 to 75000)
-- left the fingerprint as it was: the triggers reposted nothing and verify saw no drift.
-- Each line's hash is now hash_numeric_extended(m, hash_numeric_extended(m, seed)), the
-- seed carrying the sign (compiler.line_hash). Existing fingerprints are recomputed from
-- the posted entries: one that is the old hash of its entry, with the date or without it
-- (a rule without `date`), becomes the new hash of the same entry; any other is left as
-- it is (verify reports it drifted, backfill reposts it). Run `ledgeradmin install` in the
-- same deployment: until then the posting functions write old fingerprints, which verify
-- reports as drifted. Rewrites every row of ledger.posting (docs/operations.md, Upgrading).
-- depends: 0005.ledger-closed-periods

WITH entry AS (
    SELECT e.id,
           hashtextextended(min(l.currency), hashfloat8extended(date_part('epoch', e.effective_at), 0)) AS dated,
           hashtextextended(min(l.currency), 0) AS undated,
           sum((hash_numeric_extended(l.debit - l.credit, hashtext(l.account)) >> 9)
               - (hash_numeric_extended(0, hashtext(l.account)) >> 9))::bigint AS old_lines,
           sum((hash_numeric_extended(l.debit - l.credit,
                                      hash_numeric_extended(l.debit - l.credit,
                                                            hashtext(l.account) # (l.debit < l.credit)::int)) >> 9)
               - (hash_numeric_extended(0, hash_numeric_extended(0, hashtext(l.account))) >> 9))::bigint AS new_lines
    FROM ledger.posting AS p
    JOIN ledger.entry AS e ON e.id = p.entry_id
    JOIN ledger.line AS l ON l.entry_id = e.id
    GROUP BY e.id
)
UPDATE ledger.posting AS p
SET fingerprint = CASE p.fingerprint WHEN f.dated # f.old_lines THEN f.dated # f.new_lines
                                     ELSE f.undated # f.new_lines END
FROM entry AS f
WHERE f.id = p.entry_id
  AND p.fingerprint IN (f.dated # f.old_lines, f.undated # f.old_lines);

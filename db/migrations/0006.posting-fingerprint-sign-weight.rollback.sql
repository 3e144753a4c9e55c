-- Rollback of 0006: each fingerprint that is the new hash of its entry (with the date or
-- without it) becomes the old hash of the same entry, which the posting functions of the
-- previous version compute. Install that version right after.
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
SET fingerprint = CASE p.fingerprint WHEN f.dated # f.new_lines THEN f.dated # f.old_lines
                                     ELSE f.undated # f.old_lines END
FROM entry AS f
WHERE f.id = p.entry_id
  AND p.fingerprint IN (f.dated # f.new_lines, f.undated # f.new_lines);

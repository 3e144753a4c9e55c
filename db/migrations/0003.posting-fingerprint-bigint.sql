-- 0003 posting fingerprints become bigints: a hash of date and currency plus one hash per
-- line, cheaper to compute per row than the md5 of text they replace (verify computes one
-- per source row). Existing fingerprints are recomputed from the posted entries, exactly
-- as db/triggers/desired.sql computes them from the rows. The date is left out for rules
-- without `date`: those whose installed posting function hashed no date (its md5 began
-- with `concat_ws('|', NULL,`). Run `ledgeradmin install` in the same deployment: the
-- posting functions of the previous version write text fingerprints, which the new column
-- refuses.
-- depends: 0002.ledger-reader-role

ALTER TABLE ledger.posting ADD COLUMN fingerprint_bigint bigint;

WITH undated AS (
    SELECT r.name
    FROM ledger.rule AS r
    JOIN pg_catalog.pg_proc AS fn
      ON fn.oid = pg_catalog.to_regprocedure(pg_catalog.format('ledger.%I()', 'post_' || r.name))
    WHERE pg_catalog.strpos(fn.prosrc, 'concat_ws(''|'', NULL,') > 0
)
UPDATE ledger.posting AS p
SET fingerprint_bigint = f.fingerprint
FROM (
    SELECT e.id,
           hashtextextended(
               min(l.currency),
               CASE WHEN e.rule IN (SELECT u.name FROM undated AS u) THEN 0
                    ELSE hashfloat8extended(date_part('epoch', e.effective_at), 0) END)
           # sum((hash_numeric_extended(l.debit - l.credit, hashtext(l.account)) >> 9)
                 - (hash_numeric_extended(0, hashtext(l.account)) >> 9))::bigint AS fingerprint
    FROM ledger.entry AS e
    JOIN ledger.line AS l ON l.entry_id = e.id
    GROUP BY e.id
) AS f
WHERE f.id = p.entry_id;

ALTER TABLE ledger.posting DROP COLUMN fingerprint;
ALTER TABLE ledger.posting RENAME COLUMN fingerprint_bigint TO fingerprint;
ALTER TABLE ledger.posting ALTER COLUMN fingerprint SET NOT NULL;

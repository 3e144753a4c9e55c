-- One source row's history (report journal --rule R --key K): the entries of rule R and
-- key K, the entries they reverse, and every entry of the key under a name the rule had
-- before a rename: entries keep the name that wrote them, so after `rename OLD NEW` the
-- reversal of an old entry says NEW and reverses an entry of OLD (docs/design.md). The
-- names are found through those reversals, transitively (OLD's own before an earlier
-- rename); a name whose entries no entry of a later name reverses (a row not edited
-- since the rename) is not found: `--key K` without `--rule` lists every rule's entries
-- of the key. Each entry with its lines, in date order ({{dates}}: the entries dated from
-- %(from)s to %(to)s; by default every entry). Every entry is read once to find those of
-- the key: there is no index on (rule, source_key), by design (docs/design.md).
WITH RECURSIVE keyed AS MATERIALIZED (
    SELECT e.id, e.rule, e.reverses
    FROM ledger.entry AS e
    WHERE e.source_key = %(source_key)s
), names (rule) AS (
    SELECT %(rule)s::text
    UNION
    SELECT reversed.rule
    FROM names AS n
    JOIN keyed AS k ON k.rule = n.rule
    JOIN keyed AS reversed ON reversed.id = k.reverses
)
SELECT e.effective_at, e.id AS entry, e.posted_at, e.rule, e.source_key, e.reverses, e.memo,
       l.line_no, l.account, l.currency, l.debit, l.credit
FROM keyed AS k
JOIN ledger.entry AS e ON e.id = k.id
JOIN ledger.line AS l ON l.entry_id = e.id
WHERE k.rule IN (SELECT n.rule FROM names AS n){{dates}}
ORDER BY e.effective_at, e.id, l.line_no

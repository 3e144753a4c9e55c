-- Template: removes one rule's posting function (its triggers go with it) and its registry
-- row. Every journal entry and line stays.
DROP FUNCTION IF EXISTS {{function}}() CASCADE;

DELETE FROM ledger.rule WHERE name = {{rule}}

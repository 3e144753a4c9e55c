-- Template: after rule_key_form.sql, for a rule keyed by one integer column: refuses the
-- install when live entries of the rule are still keyed in a form no integer matches
-- ('1.5', 'abc': rows of the text or numeric key the column had, deleted while the trigger
-- was off). The integer rule could neither find nor reverse them, and they would stay
-- live beside the rows' new entries.
DO $ledgeradmin$
DECLARE
    v_count bigint;
    v_keys  text;
BEGIN
    SELECT count(*), string_agg(quote_literal(k.source_key), ', ') FILTER (WHERE k.n <= 5)
    INTO v_count, v_keys
    FROM (
        SELECT p.source_key, row_number() OVER (ORDER BY p.source_key) AS n
        FROM ledger.posting AS p
        WHERE p.rule = {{rule}}
          AND p.key_num IS NULL
    ) AS k;
    IF v_count > 0 THEN
        RAISE EXCEPTION 'rule %: % live entries are keyed in a form its integer key (%) cannot match: %',
                        {{rule}}, v_count, {{key}}, v_keys
            USING ERRCODE = 'data_exception',
                  HINT = 'Their rows are gone (no integer has that text). Change the key column back to its '
                         || 'former type, run `ledgeradmin install` and `ledgeradmin backfill`, which reverses '
                         || 'them, then change the type again and install.';
    END IF;
END
$ledgeradmin$

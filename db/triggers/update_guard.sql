-- Template: the early return of the posting function for an UPDATE that changed none of
-- the columns a rule's desired posting is computed from (the key and every column read by
-- the rule's expressions other than memo). Each new row then has an old row with the same
-- key and the same values, so its desired posting is the one it had before the statement,
-- and reconciling would write nothing: the statement is not set up at all. Values are
-- compared by their stored image (record_image_eq), which needs no equality operator and
-- counts 1.0 and 1.00 as a change (then reconciled, and found equal).
-- A statement of one row compares its two rows; a larger one pairs old and new rows by
-- key in a hash join (a FULL JOIN: its plan, cached with the first statement's row count,
-- can never become a nested loop over a large statement).
-- Compiled only when the rule reads nothing but the row (catalog.input_columns).
    IF TG_OP = 'UPDATE' THEN
        IF (CASE WHEN (SELECT count(*) FROM new_rows) = 1
                 THEN pg_catalog.record_image_eq((SELECT ROW({{old_columns}}) FROM old_rows AS o),
                                                 (SELECT ROW({{new_columns}}) FROM new_rows AS n))
                 ELSE NOT EXISTS (
                     SELECT FROM new_rows AS n
                     FULL JOIN old_rows AS o ON {{key_match}}
                     WHERE NOT pg_catalog.record_image_eq(ROW({{old_columns}}), ROW({{new_columns}})))
            END)
        THEN
            RETURN NULL;
        END IF;
    END IF;

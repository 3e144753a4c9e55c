-- Template: the triggers of one rule on one table (the source table, or each partition of a
-- partitioned source: a statement aimed at a partition fires that partition's statement
-- triggers, not the parent's). Statement level with transition tables: a 1M-row COPY posts
-- in a few set-based statements. TRUNCATE is refused while the rule is installed (it would
-- leave live entries for rows that no longer exist).
CREATE OR REPLACE TRIGGER {{trigger}}_insert
    AFTER INSERT ON {{source}}
    REFERENCING NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_update
    AFTER UPDATE ON {{source}}
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_delete
    AFTER DELETE ON {{source}}
    REFERENCING OLD TABLE AS old_rows
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

CREATE OR REPLACE TRIGGER {{trigger}}_truncate
    BEFORE TRUNCATE ON {{source}}
    FOR EACH STATEMENT EXECUTE FUNCTION {{function}}();

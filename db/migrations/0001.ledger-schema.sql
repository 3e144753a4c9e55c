-- 0001 ledger schema: the journal (account, entry, line), the live-posting links, the
-- failure log and the rule registry. Entries and lines are immutable: corrections are
-- reversal entries. Only ledgeradmin's SECURITY DEFINER functions write these tables.

CREATE TABLE ledger.account (
    code        text NOT NULL,
    name        text NOT NULL,
    type        text NOT NULL,
    CONSTRAINT account_pkey PRIMARY KEY (code),
    CONSTRAINT account_code_check CHECK (code ~ '^[A-Za-z0-9][A-Za-z0-9._-]{0,39}$'),
    CONSTRAINT account_type_check CHECK (type IN ('asset', 'liability', 'equity', 'income', 'expense'))
);
COMMENT ON TABLE ledger.account IS 'Chart of accounts, synced from [accounts] of ledger.toml by ledgeradmin install.';

CREATE TABLE ledger.entry (
    id            bigint GENERATED ALWAYS AS IDENTITY,
    rule          text        NOT NULL,
    source_key    text        NOT NULL,
    effective_at  timestamptz NOT NULL,
    posted_at     timestamptz NOT NULL DEFAULT now(),
    memo          text,
    reverses      bigint,
    CONSTRAINT entry_pkey PRIMARY KEY (id),
    CONSTRAINT entry_reverses_once UNIQUE (reverses),
    CONSTRAINT entry_reverses_other CHECK (reverses <> id)
);
CREATE INDEX entry_effective_at_idx ON ledger.entry (effective_at);
COMMENT ON TABLE ledger.entry IS 'Journal entries. Immutable. A live entry has reverses IS NULL and is reversed by no other entry.';

-- line.entry_id -> entry.id, line.account -> account.code and entry.reverses -> entry.id
-- hold by construction: only
-- ledgeradmin's posting functions insert lines, in the statement that inserts their
-- entry, with accounts checked against ledger.account. Foreign keys here cost 40-50% of
-- bulk posting time (docs/design.md).
CREATE TABLE ledger.line (
    entry_id    bigint   NOT NULL,
    line_no     smallint NOT NULL,
    account     text     NOT NULL,
    currency    text     NOT NULL,
    debit       numeric(20, 4) NOT NULL DEFAULT 0,
    credit      numeric(20, 4) NOT NULL DEFAULT 0,
    CONSTRAINT line_pkey PRIMARY KEY (entry_id, line_no),
    CONSTRAINT line_amounts_check CHECK (
        debit >= 0 AND credit >= 0 AND debit <> 'NaN' AND credit <> 'NaN'
        AND (debit = 0) <> (credit = 0)),
    CONSTRAINT line_currency_check CHECK (currency ~ '^[A-Z]{3}$')
);
COMMENT ON TABLE ledger.line IS 'Journal lines. Immutable. Exactly one of debit/credit is positive; per entry and currency debits equal credits.';

-- The live entry of each (rule, source key): at most one, by the unique constraint.
-- key_num repeats the key of rules keyed by one integer column (NULL otherwise): an ordered
-- bigint lets backfill and verify restrict the link side to a key range and join on it.
CREATE TABLE ledger.posting (
    rule         text   NOT NULL,
    key_num      bigint,
    source_key   text   NOT NULL,
    entry_id     bigint NOT NULL,
    fingerprint  text   NOT NULL,
    CONSTRAINT posting_live_key UNIQUE NULLS NOT DISTINCT (rule, key_num, source_key),
    CONSTRAINT posting_entry_key UNIQUE (entry_id)
);
COMMENT ON TABLE ledger.posting IS 'Implementation: links each live entry to its source row, with the fingerprint of the posted lines.';

CREATE TABLE ledger.failure (
    id           bigint GENERATED ALWAYS AS IDENTITY,
    rule         text        NOT NULL,
    source_key   text        NOT NULL,
    sqlstate     text        NOT NULL,
    message      text        NOT NULL,
    detail       text,
    hint         text,
    attempts     integer     NOT NULL DEFAULT 1,
    first_seen   timestamptz NOT NULL DEFAULT now(),
    last_seen    timestamptz NOT NULL DEFAULT now(),
    resolved_at  timestamptz,
    CONSTRAINT failure_pkey PRIMARY KEY (id)
);
CREATE UNIQUE INDEX failure_open_key ON ledger.failure (rule, source_key) WHERE resolved_at IS NULL;
COMMENT ON TABLE ledger.failure IS 'Postings that failed under on_error = defer (or during backfill); resolved_at is set when the row posts.';

CREATE TABLE ledger.rule (
    name          text        NOT NULL,
    source        text        NOT NULL,
    source_table  regclass    NOT NULL,
    on_error      text        NOT NULL,
    checksum      text        NOT NULL,
    installed_at  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT rule_pkey PRIMARY KEY (name),
    CONSTRAINT rule_on_error_check CHECK (on_error IN ('block', 'defer'))
);
COMMENT ON TABLE ledger.rule IS 'Implementation: installed rules and the checksum of the SQL installed for each.';

-- Guard: entries and lines never change.
CREATE FUNCTION ledger.refuse_change()
    RETURNS trigger
    LANGUAGE plpgsql
    SET search_path = pg_catalog, pg_temp
AS $body$
-- Refuses UPDATE, DELETE and TRUNCATE on an immutable ledger table.
BEGIN
    RAISE EXCEPTION 'ledger.% is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege',
              HINT = 'Journal entries are corrected by reversal entries, never edited.';
END
$body$;

CREATE TRIGGER entry_immutable BEFORE UPDATE OR DELETE ON ledger.entry
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER entry_no_truncate BEFORE TRUNCATE ON ledger.entry
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER line_immutable BEFORE UPDATE OR DELETE ON ledger.line
    FOR EACH ROW EXECUTE FUNCTION ledger.refuse_change();
CREATE TRIGGER line_no_truncate BEFORE TRUNCATE ON ledger.line
    FOR EACH STATEMENT EXECUTE FUNCTION ledger.refuse_change();
-- Fire even under session_replication_role = replica.
ALTER TABLE ledger.entry ENABLE ALWAYS TRIGGER entry_immutable;
ALTER TABLE ledger.entry ENABLE ALWAYS TRIGGER entry_no_truncate;
ALTER TABLE ledger.line ENABLE ALWAYS TRIGGER line_immutable;
ALTER TABLE ledger.line ENABLE ALWAYS TRIGGER line_no_truncate;

-- Nobody but the owner writes the ledger; a read-only auditor role may read it.
REVOKE ALL ON SCHEMA ledger FROM PUBLIC;
REVOKE ALL ON ALL TABLES IN SCHEMA ledger FROM PUBLIC;
REVOKE ALL ON FUNCTION ledger.refuse_change() FROM PUBLIC;

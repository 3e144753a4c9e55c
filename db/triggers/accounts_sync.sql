-- Template: upserts the chart of accounts from [accounts] of ledger.toml. Accounts that are
-- no longer configured stay (journal lines may reference them).
INSERT INTO ledger.account (code, name, type)
VALUES {{values}}
ON CONFLICT (code) DO UPDATE
SET name = EXCLUDED.name,
    type = EXCLUDED.type
WHERE (ledger.account.name, ledger.account.type) IS DISTINCT FROM (EXCLUDED.name, EXCLUDED.type)

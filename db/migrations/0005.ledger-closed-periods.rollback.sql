-- Rollback of 0005: every period open again; the log of closes is dropped.
ALTER TABLE ledger.entry DROP CONSTRAINT IF EXISTS entry_in_open_period;
DROP FUNCTION ledger.set_closed_through(date);
DROP FUNCTION ledger.closed_period(timestamptz, date);
DROP FUNCTION ledger.closed_period_error(timestamptz, date);
DROP TABLE ledger.period_close;

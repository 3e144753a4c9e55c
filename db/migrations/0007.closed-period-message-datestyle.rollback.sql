-- Rollback of 0007: ledger.closed_period_error writes the close date in its caller's DateStyle again.

ALTER FUNCTION ledger.closed_period_error(timestamptz, date) RESET "DateStyle";

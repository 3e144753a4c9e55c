-- 0007 the message of an entry dated in a closed period writes the close date as
-- YYYY-MM-DD whatever the writer's DateStyle. ledger.closed_period_error builds it under
-- its caller's settings, and the posting functions of rules that cannot depend on the
-- session's time zone and date styles no longer pin them (each pinned setting costs every
-- call). Changes one function's settings; no table is touched.
-- depends: 0006.posting-fingerprint-sign-weight

ALTER FUNCTION ledger.closed_period_error(timestamptz, date) SET "DateStyle" = 'ISO, YMD';

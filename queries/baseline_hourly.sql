-- baseline_hourly: one row per credential and hour of history with the
-- hour's volume. Tokens and cost count only successful requests (failed
-- ones are not billed), so a burst of errors is never read as spend.
-- Errors are what a retry storm is made of: 401/403, 429 and 5xx.
-- `{from}` and `{to}` are the first and last day of history.
-- Tokens, cost and the Bedrock de-duplication come from `billed`
-- (queries/fragments/billed_events.sql, shared with billing_spike.sql).
WITH {billed_events}
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  max(CAST(principal AS VARCHAR)) AS principal,
  -- date_bin is arithmetic on UTC milliseconds: same buckets as date_trunc, several times faster.
  arrow_cast(date_bin(INTERVAL '1 hour', ts), 'Timestamp(ms, "UTC")') AS hour,
  count(*) AS requests,
  sum(billed_tokens) AS tokens,
  sum(billed_cost) AS cost,
  sum(CASE WHEN status IN (401, 403, 429) OR status >= 500 THEN 1 ELSE 0 END) AS errors
FROM billed
GROUP BY 1, 3

-- baseline_hourly: one row per credential and hour of history with the
-- hour's volume. Tokens and cost count only successful requests (failed
-- ones are not billed), so a burst of errors is never read as spend.
-- Errors are what a retry storm is made of: 401/403, 429 and 5xx.
-- `{from}` and `{to}` are the first and last day of history.
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  max(CAST(principal AS VARCHAR)) AS principal,
  date_trunc('hour', ts) AS hour,
  count(*) AS requests,
  sum(CASE WHEN status IS NULL OR status < 400 THEN coalesce(tokens_in, 0) + coalesce(tokens_out, 0) ELSE 0 END) AS tokens,
  sum(CASE WHEN status IS NULL OR status < 400 THEN coalesce(cost_usd, 0) ELSE 0 END) AS cost,
  sum(CASE WHEN status IN (401, 403, 429) OR status >= 500 THEN 1 ELSE 0 END) AS errors
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
GROUP BY 1, 3

-- baseline_hourly: one row per credential and hour of history with the
-- hour's volume. Tokens and cost count only successful requests (failed
-- ones are not billed), so a burst of errors is never read as spend.
-- Errors are what a retry storm is made of: 401/403, 429 and 5xx.
-- `{from}` and `{to}` are the first and last day of history.
-- A Bedrock call in both CloudTrail and the model-invocation log counts
-- once, on the access key, with the invocation log's tokens and cost (as in
-- billing_spike.sql).
WITH invocation AS (
  SELECT request_id, max(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)) AS tokens, max(cost_usd) AS cost
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND source = 'bedrock-invocation' AND request_id IS NOT NULL
  GROUP BY 1
),
trail AS (
  SELECT DISTINCT request_id
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND source = 'cloudtrail' AND action = 'inference'
)
SELECT
  CAST(e.credential_id AS VARCHAR) AS credential_id,
  max(CAST(e.principal AS VARCHAR)) AS principal,
  -- date_bin is arithmetic on UTC milliseconds: same buckets as date_trunc, several times faster.
  arrow_cast(date_bin(INTERVAL '1 hour', e.ts), 'Timestamp(ms, "UTC")') AS hour,
  count(*) AS requests,
  sum(CASE WHEN e.status IS NULL OR e.status < 400
    THEN coalesce(i.tokens, coalesce(e.tokens_in, 0) + coalesce(e.tokens_out, 0)) ELSE 0 END) AS tokens,
  sum(CASE WHEN e.status IS NULL OR e.status < 400 THEN coalesce(i.cost, e.cost_usd, 0) ELSE 0 END) AS cost,
  sum(CASE WHEN e.status IN (401, 403, 429) OR e.status >= 500 THEN 1 ELSE 0 END) AS errors
FROM events e
LEFT JOIN invocation i ON i.request_id = e.request_id AND e.source = 'cloudtrail'
LEFT JOIN trail t ON t.request_id = e.request_id AND e.source = 'bedrock-invocation'
WHERE e.date BETWEEN '{from}' AND '{to}' AND t.request_id IS NULL
GROUP BY 1, 3

-- baseline_error_minutes: per credential, the minutes of history that had
-- errors (401/403, 429, 5xx) and how many: how bursty its normal errors are.
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  -- date_bin is arithmetic on UTC milliseconds: same buckets as date_trunc, several times faster.
  arrow_cast(date_bin(INTERVAL '1 minute', ts), 'Timestamp(ms, "UTC")') AS minute,
  count(*) AS errors
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
  AND (status IN (401, 403, 429) OR status >= 500)
GROUP BY 1, 2

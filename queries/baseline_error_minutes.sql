-- baseline_error_minutes: per credential, the minutes of history that had
-- errors (401/403, 429, 5xx) and how many: how bursty its normal errors are.
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  date_trunc('minute', ts) AS minute,
  count(*) AS errors
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
  AND (status IN (401, 403, 429) OR status >= 500)
GROUP BY 1, 2

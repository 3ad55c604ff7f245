-- retry_storm: per credential and minute, the failed requests that make
-- retry storms — 401/403 (invalid, revoked or guessed keys; denied calls),
-- 429 (throttling) and 5xx — by class. credtrail asks how improbable each
-- minute's count is under the credential's baseline error rate (a Poisson
-- tail) and joins neighbouring minutes into one storm; it also judges
-- 10-minute windows of these minutes, so a storm paced at a few failures a
-- minute is seen too. Every minute with a failure is kept.
---
--- family = "retry_storm"
--- inputs = ["events"]
--- events = "status IN (401, 403, 429) OR status >= 500"
--- live = { gated = "storm" }
--- scoring = "storm"
--- severity = "medium"
--- mitre = "T1499.003 Endpoint Denial of Service: Application Exhaustion Flood"
---
--- [findings.auth_failures]
--- mitre = "T1110 Brute Force"
---
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  max(CAST(principal AS VARCHAR)) AS principal,
  -- date_bin is arithmetic on UTC milliseconds: same buckets as date_trunc, several times faster.
  arrow_cast(date_bin(INTERVAL '1 minute', ts), 'Timestamp(ms, "UTC")') AS minute,
  count(*) AS errors,
  sum(CASE WHEN status IN (401, 403) THEN 1 ELSE 0 END) AS auth_failures,
  sum(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS throttled,
  sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS server_errors,
  array_agg(DISTINCT CAST(source_ip AS VARCHAR)) AS source_ips,
  array_agg(DISTINCT coalesce(CAST(error_code AS VARCHAR), CAST(status AS VARCHAR))) AS error_codes,
  array_agg(request_id ORDER BY ts, request_id) AS evidence,
  min(ts) AS first_ts,
  max(ts) AS last_ts
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
  AND (status IN (401, 403, 429) OR status >= 500)
GROUP BY 1, 3
ORDER BY 1, 3

-- secret_exposure: credential secrets that ingest found (and redacted) in
-- logged requests. One row per occurrence; grouped per credential and secret.
-- AWS's own records are not in the table (ingest redacts them quietly): the
-- session tokens CloudTrail logs in the response of the call that issued
-- them, without their secret key, and anything a call by an AWS service held
-- (see `aws_own_secret` in src/ingest/cloudtrail.rs).
---
--- family = "secret_exposure"
--- inputs = ["secret_exposures"]
--- live = { per_event = "credential" }
--- scoring = { rows = "secret_exposure" }
--- severity = "critical"
--- mitre = "T1552.001 Unsecured Credentials: Credentials In Files"
--- owasp = "NHI2:2025 Secret Leakage"
---
SELECT
  credential_id,
  CAST(NULL AS VARCHAR) AS principal,
  ts,
  request_id,
  CAST(NULL AS VARCHAR) AS source_ip,
  'secret_in_logs' AS finding,
  kind || ':' || fingerprint AS value,
  COALESCE(field, 'the raw record') AS allowed
FROM secret_exposures
WHERE ts IS NOT NULL
  AND credential_id IS NOT NULL
  AND CAST(ts AS DATE) BETWEEN DATE '{from}' AND DATE '{to}'

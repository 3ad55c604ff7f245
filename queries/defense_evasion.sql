-- defense_evasion: AI-plane defence evasion that follows a stolen key —
-- deleting Bedrock model-invocation logging, updating or deleting a
-- guardrail — and the classic cloud equivalents. Successful calls only.
---
--- family = "defense_evasion"
--- inputs = ["events"]
--- live = { per_event = "credential" }
--- scoring = { rows = "defense_evasion" }
--- severity = "high"
--- mitre = "T1562.008 Impair Defenses: Disable or Modify Cloud Logs"
--- owasp = "NHI5:2025 Overprivileged NHI"
---
SELECT
  credential_id,
  principal,
  ts,
  request_id,
  source_ip,
  'ai_defense_evasion' AS finding,
  CAST(tool AS VARCHAR) AS value,
  resource AS allowed
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
  AND (status IS NULL OR status < 400)
  AND tool IN (
    'bedrock:DeleteModelInvocationLoggingConfiguration',
    'bedrock:UpdateGuardrail',
    'bedrock:DeleteGuardrail',
    'cloudtrail:StopLogging',
    'cloudtrail:DeleteTrail'
  )

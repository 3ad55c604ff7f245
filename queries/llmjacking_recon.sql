-- llmjacking_recon: the steps of an LLMjacking intrusion on the Bedrock
-- plane, per credential and day, for credtrail to put in order: first-ever
-- control-plane calls (is logging on? which models? can I enable them?),
-- InvokeModel probes failing with ValidationException, defence evasion
-- (invocation logging or a guardrail deleted), then successful inference
-- from a network the credential never used. "First-ever" and "never used"
-- are against the learned scope of baseline `{baseline}`; without one
-- (cold start) every value is new, and the chain still needs its recon calls.
---
--- family = "tool_chaining"
--- inputs = ["events", "baseline_scope"]
--- events = "tool LIKE 'bedrock%'"
--- live = { per_event = "credential" }
--- scoring = "recon"
--- severity = "high"
--- mitre = "T1496 Resource Hijacking"
--- owasp = "NHI2:2025 Secret Leakage"
---
WITH known AS (
  SELECT credential_id, dimension, value FROM baseline_scope WHERE until = '{baseline}'
),
ev AS (
  SELECT
    CAST(credential_id AS VARCHAR) AS credential_id,
    CAST(principal AS VARCHAR) AS principal,
    ts,
    request_id,
    CAST(source_ip AS VARCHAR) AS source_ip,
    caller_network(source_ip, user_agent) AS network,
    CAST(tool AS VARCHAR) AS tool,
    CAST(action AS VARCHAR) AS action,
    CAST(model AS VARCHAR) AS model,
    status,
    CAST(error_code AS VARCHAR) AS error_code
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}'
    AND tool LIKE 'bedrock%'
),
steps AS (
  SELECT
    ev.*,
    CASE
      WHEN ev.tool IN (
        'bedrock:GetModelInvocationLoggingConfiguration',
        'bedrock:ListFoundationModels',
        'bedrock:GetFoundationModelAvailability',
        'bedrock:PutUseCaseForModelAccess',
        'bedrock:CreateFoundationModelAgreement',
        'bedrock:PutFoundationModelEntitlement',
        'bedrock:ListFoundationModelAgreementOffers',
        'bedrock:GetUseCaseForModelAccess'
      ) AND kt.value IS NULL THEN 'recon'
      WHEN ev.tool IN (
        'bedrock:DeleteModelInvocationLoggingConfiguration',
        'bedrock:DeleteGuardrail',
        'bedrock:UpdateGuardrail'
      ) AND (ev.status IS NULL OR ev.status < 400) THEN 'evasion'
      WHEN ev.action = 'inference' AND ev.error_code = 'ValidationException' THEN 'probe'
      WHEN ev.action = 'inference' AND (ev.status IS NULL OR ev.status < 400) AND ev.network IS NOT NULL
        AND kn.value IS NULL THEN 'new_address_inference'
    END AS step
  FROM ev
  LEFT JOIN known kt ON kt.dimension = 'tool' AND kt.credential_id = ev.credential_id AND kt.value = ev.tool
  LEFT JOIN known kn ON kn.dimension = 'network' AND kn.credential_id = ev.credential_id AND kn.value = ev.network
)
SELECT credential_id, principal, ts, request_id, source_ip, tool, model, error_code, step
FROM steps
WHERE step IS NOT NULL
ORDER BY credential_id, ts, request_id

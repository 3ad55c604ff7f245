-- out_of_scope: requests outside what the credential's inventory entry
-- declares (its expiry, allowed actions, models, tools, resources, regions).
-- One row per violating request; credtrail groups them into alerts per
-- credential, finding and value. `{from}` and `{to}` are the days detected.
-- A model invocation (action `inference`, on any provider) is judged by its
-- action and model only: the call that carried it (`bedrock:InvokeModel`)
-- is not a tool, and the model it names is not a data resource.
-- Resources are matched as prefixes (`resource_scope`: `allowed_resources`
-- with the prefixes made explicit; `=` pins one value).
-- `standing_since` is set when the value was the credential's standing
-- behaviour through its baseline `{baseline}` (used from its first day in
-- the window to the last): an inventory mismatch, reported once as a
-- governance finding rather than as an attack every day.
---
--- family = "out_of_scope"
--- inputs = ["events", "credentials"]
--- live = { per_event = "credential" }
--- scoring = "out_of_scope"
--- severity = "medium"
--- mitre = "T1078.004 Valid Accounts: Cloud Accounts"
--- owasp = "NHI5:2025 Overprivileged NHI"
---
--- [findings.expired_credential]
--- severity = "high"
--- owasp = "NHI1:2025 Improper Offboarding"
---
--- [findings.not_yet_valid]
--- severity = "high"
--- owasp = "NHI4:2025 Insecure Authentication"
---
--- [findings.action_outside_scope]
--- mitre = "T1098 Account Manipulation"
---
--- # An admin action outside scope is worse than any other action.
--- [findings."action_outside_scope/admin"]
--- severity = "high"
---
--- [findings.resource_outside_scope]
--- severity = "high"
--- mitre = "T1213 Data from Information Repositories"
---
--- [findings."resource_outside_scope/s3"]
--- mitre = "T1530 Data from Cloud Storage"
---
WITH scoped AS (
  SELECT
    e.credential_id, e.principal, e.ts, e.request_id, e.source_ip, e.action, e.model, e.region,
    CASE WHEN CAST(e.action AS VARCHAR) = 'inference' THEN NULL ELSE e.tool END AS tool,
    CASE WHEN CAST(e.action AS VARCHAR) = 'inference' THEN NULL ELSE e.resource END AS resource,
    c.expires_at, c.created_at, c.allowed_actions, c.allowed_models, c.allowed_tools, c.allowed_resources,
    c.resource_scope, c.allowed_regions
  FROM events e
  JOIN credentials c ON CAST(e.credential_id AS VARCHAR) = c.credential_id
  WHERE e.date BETWEEN '{from}' AND '{to}'
),
v AS (
  SELECT
    CAST(e.credential_id AS VARCHAR) AS credential_id,
    e.principal,
    e.ts,
    e.request_id,
    e.source_ip,
    CASE
      WHEN e.expires_at IS NOT NULL AND e.ts >= e.expires_at THEN 'expired_credential'
      WHEN e.created_at IS NOT NULL AND e.ts < e.created_at THEN 'not_yet_valid'
      WHEN NOT scope_allows(e.allowed_actions, e.action) THEN 'action_outside_scope'
      WHEN e.model IS NOT NULL AND NOT scope_allows(e.allowed_models, e.model) THEN 'model_outside_scope'
      WHEN e.tool IS NOT NULL AND NOT scope_allows(e.allowed_tools, e.tool) THEN 'tool_outside_scope'
      WHEN e.resource IS NOT NULL AND NOT scope_allows(e.resource_scope, e.resource) THEN 'resource_outside_scope'
      WHEN e.region IS NOT NULL AND NOT scope_allows(e.allowed_regions, e.region) THEN 'region_outside_scope'
    END AS finding,
    CASE
      WHEN e.expires_at IS NOT NULL AND e.ts >= e.expires_at THEN CAST(e.expires_at AS VARCHAR)
      WHEN e.created_at IS NOT NULL AND e.ts < e.created_at THEN CAST(e.created_at AS VARCHAR)
      WHEN NOT scope_allows(e.allowed_actions, e.action) THEN CAST(e.action AS VARCHAR)
      WHEN e.model IS NOT NULL AND NOT scope_allows(e.allowed_models, e.model) THEN CAST(e.model AS VARCHAR)
      WHEN e.tool IS NOT NULL AND NOT scope_allows(e.allowed_tools, e.tool) THEN CAST(e.tool AS VARCHAR)
      WHEN e.resource IS NOT NULL AND NOT scope_allows(e.resource_scope, e.resource) THEN e.resource
      ELSE CAST(e.region AS VARCHAR)
    END AS value,
    CASE
      WHEN e.ts >= e.expires_at OR e.ts < e.created_at THEN NULL
      WHEN NOT scope_allows(e.allowed_actions, e.action) THEN array_to_string(e.allowed_actions, ', ')
      WHEN e.model IS NOT NULL AND NOT scope_allows(e.allowed_models, e.model) THEN array_to_string(e.allowed_models, ', ')
      WHEN e.tool IS NOT NULL AND NOT scope_allows(e.allowed_tools, e.tool) THEN array_to_string(e.allowed_tools, ', ')
      WHEN e.resource IS NOT NULL AND NOT scope_allows(e.resource_scope, e.resource) THEN array_to_string(e.allowed_resources, ', ')
      ELSE array_to_string(e.allowed_regions, ', ')
    END AS allowed
  FROM scoped e
),
-- The baseline's dimension of each finding (resources by prefix, as learned).
found AS (
  SELECT v.*, CASE finding
      WHEN 'action_outside_scope' THEN 'action'
      WHEN 'model_outside_scope' THEN 'model'
      WHEN 'tool_outside_scope' THEN 'tool'
      WHEN 'resource_outside_scope' THEN 'resource_prefix'
      WHEN 'region_outside_scope' THEN 'region'
    END AS dimension,
    CASE WHEN finding = 'resource_outside_scope' THEN resource_prefix(value) ELSE value END AS learned_value
  FROM v
  WHERE finding IS NOT NULL
),
-- Credentials with a judged history, and the first time each was seen in it.
history AS (
  SELECT s.credential_id, b.history_to, min(s.first_seen) AS first_seen
  FROM baseline_scope s
  JOIN baseline_credentials b ON b.credential_id = s.credential_id AND b.until = s.until
  WHERE s.until = '{baseline}' AND s.dimension = 'action' AND NOT b.cold_start
    AND EXISTS (SELECT 1 FROM found f WHERE f.credential_id = s.credential_id)
  GROUP BY 1, 2
),
standing AS (
  SELECT s.credential_id, s.dimension, s.value, s.first_seen
  FROM baseline_scope s
  JOIN history h ON h.credential_id = s.credential_id
  WHERE s.until = '{baseline}'
    AND date_trunc('day', s.first_seen) = date_trunc('day', h.first_seen)
    AND CAST(CAST(s.last_seen AS DATE) AS VARCHAR) = h.history_to
)
SELECT f.credential_id, f.principal, f.ts, f.request_id, f.source_ip, f.finding, f.value, f.allowed,
  s.first_seen AS standing_since
FROM found f
LEFT JOIN standing s ON s.credential_id = f.credential_id AND s.dimension = f.dimension AND s.value = f.learned_value
ORDER BY f.credential_id, f.finding, f.ts

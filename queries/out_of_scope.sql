-- out_of_scope: requests outside what the credential's inventory entry
-- declares (its expiry, allowed actions, models, tools, resources, regions).
-- One row per violating request; credtrail groups them into alerts per
-- credential, finding and value. `{from}` and `{to}` are the days detected.
---
--- family = "out_of_scope"
--- inputs = ["events", "credentials"]
--- live = { per_event = "credential" }
--- scoring = { rows = "out_of_scope" }
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
SELECT * FROM (
  SELECT
    e.credential_id,
    e.principal,
    e.ts,
    e.request_id,
    e.source_ip,
    CASE
      WHEN c.expires_at IS NOT NULL AND e.ts >= c.expires_at THEN 'expired_credential'
      WHEN c.created_at IS NOT NULL AND e.ts < c.created_at THEN 'not_yet_valid'
      WHEN NOT scope_allows(c.allowed_actions, e.action) THEN 'action_outside_scope'
      WHEN e.model IS NOT NULL AND NOT scope_allows(c.allowed_models, e.model) THEN 'model_outside_scope'
      WHEN e.tool IS NOT NULL AND NOT scope_allows(c.allowed_tools, e.tool) THEN 'tool_outside_scope'
      WHEN e.resource IS NOT NULL AND NOT scope_allows(c.allowed_resources, e.resource) THEN 'resource_outside_scope'
      WHEN e.region IS NOT NULL AND NOT scope_allows(c.allowed_regions, e.region) THEN 'region_outside_scope'
    END AS finding,
    CASE
      WHEN c.expires_at IS NOT NULL AND e.ts >= c.expires_at THEN CAST(c.expires_at AS VARCHAR)
      WHEN c.created_at IS NOT NULL AND e.ts < c.created_at THEN CAST(c.created_at AS VARCHAR)
      WHEN NOT scope_allows(c.allowed_actions, e.action) THEN CAST(e.action AS VARCHAR)
      WHEN e.model IS NOT NULL AND NOT scope_allows(c.allowed_models, e.model) THEN CAST(e.model AS VARCHAR)
      WHEN e.tool IS NOT NULL AND NOT scope_allows(c.allowed_tools, e.tool) THEN CAST(e.tool AS VARCHAR)
      WHEN e.resource IS NOT NULL AND NOT scope_allows(c.allowed_resources, e.resource) THEN e.resource
      ELSE CAST(e.region AS VARCHAR)
    END AS value,
    CASE
      WHEN e.ts >= c.expires_at OR e.ts < c.created_at THEN NULL
      WHEN NOT scope_allows(c.allowed_actions, e.action) THEN array_to_string(c.allowed_actions, ', ')
      WHEN e.model IS NOT NULL AND NOT scope_allows(c.allowed_models, e.model) THEN array_to_string(c.allowed_models, ', ')
      WHEN e.tool IS NOT NULL AND NOT scope_allows(c.allowed_tools, e.tool) THEN array_to_string(c.allowed_tools, ', ')
      WHEN e.resource IS NOT NULL AND NOT scope_allows(c.allowed_resources, e.resource) THEN array_to_string(c.allowed_resources, ', ')
      ELSE array_to_string(c.allowed_regions, ', ')
    END AS allowed
  FROM events e
  JOIN credentials c ON CAST(e.credential_id AS VARCHAR) = c.credential_id
  WHERE e.date BETWEEN '{from}' AND '{to}'
) v
WHERE finding IS NOT NULL
ORDER BY credential_id, finding, ts

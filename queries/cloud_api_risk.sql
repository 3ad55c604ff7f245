-- cloud_api_risk: the day's candidate control-plane calls (CloudTrail, and the
-- LLM platforms' admin audit logs), each with what the learned
-- history (baseline `{baseline}`) says about it: whether the credential had
-- history at all, had called the same API, how many other credentials of
-- the same principal had (its peers), and whether the source network is
-- one the credential used. src/detect/cloud.rs matches the calls against
-- the API risk tiers (models/api_risk.toml) and judges first uses, bursts
-- and instance-profile sessions used off their instance.
---
--- family = "cloud_api_risk"
--- inputs = ["events", "baseline_scope", "baseline_credentials"]
--- events = "tool IS NOT NULL AND ({api_risk} OR (source = 'cloudtrail' AND session_id LIKE 'i-%'))"
--- live = { per_event = "credential" }
--- scoring = "cloud"
--- severity = "high"
--- owasp = "NHI5:2025 Overprivileged NHI"
---
WITH tools AS (
  SELECT s.credential_id, c.principal, s.value AS tool
  FROM baseline_scope s
  JOIN baseline_credentials c ON c.credential_id = s.credential_id AND c.until = s.until
  WHERE s.until = '{baseline}' AND s.dimension = 'tool'
),
peers AS (
  SELECT principal, tool, count(DISTINCT credential_id) AS users FROM tools GROUP BY 1, 2
),
known AS (
  SELECT credential_id FROM baseline_credentials WHERE until = '{baseline}'
),
networks AS (
  SELECT credential_id, value AS network FROM baseline_scope WHERE until = '{baseline}' AND dimension = 'network'
),
ev AS (
  SELECT
    CAST(credential_id AS VARCHAR) AS credential_id,
    CAST(principal AS VARCHAR) AS principal,
    session_id, ts, request_id,
    CAST(source_ip AS VARCHAR) AS source_ip,
    caller_network(source_ip, user_agent) AS network,
    CAST(tool AS VARCHAR) AS tool,
    resource, status, detail
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND tool IS NOT NULL
    -- A call an AWS service made on the credential's behalf (CloudFormation
    -- creating a stack's roles, SQS its service-linked role) names the service
    -- as its source, not an address: it is AWS at work, judged through the
    -- credential's own call that started it.
    AND NOT coalesce(source_ip LIKE '%.amazonaws.com' OR source_ip = 'AWS Internal', false)
    -- Only candidates reach Rust: calls the API risk tiers name, from any
    -- log whose mapping writes `service:EventName` tools (CloudTrail, the LLM
    -- platforms' audit logs; the condition below is filled in from the tier
    -- file, and Rust still checks each entry's `when`), and every call of an
    -- EC2 instance-profile session (`i-…`, a CloudTrail notion only).
    -- The lake's columns are tested as they are, not cast: LIKE and = on a
    -- dictionary test each distinct value once instead of copying every event's.
    AND ({api_risk} OR (source = 'cloudtrail' AND coalesce(session_id LIKE 'i-%', false)))
)
SELECT
  e.credential_id, e.principal, e.session_id, e.ts, e.request_id, e.source_ip, e.network, e.tool, e.resource, e.status,
  e.detail,
  k.credential_id IS NOT NULL AS has_history,
  t.tool IS NOT NULL AS own_used,
  COALESCE(p.users, 0) - CASE WHEN t.tool IS NULL THEN 0 ELSE 1 END AS peers_used,
  n.network IS NOT NULL AS network_known
FROM ev e
LEFT JOIN known k ON k.credential_id = e.credential_id
LEFT JOIN tools t ON t.credential_id = e.credential_id AND t.tool = e.tool
LEFT JOIN peers p ON p.principal = e.principal AND p.tool = e.tool
LEFT JOIN networks n ON n.credential_id = e.credential_id AND n.network = e.network

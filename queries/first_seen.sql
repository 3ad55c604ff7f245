-- first_seen: requests that use something the credential never used in its
-- learned history (models/scope of baseline `{baseline}`): a new source
-- network, model, tool, action, resource prefix or cloud region. Only credentials with
-- enough history are judged (cold-start keys would flood this), and a value
-- that is part of another alert (the new model of a billing spike, say)
-- joins that alert instead of standing alone.
WITH judged AS (
  SELECT credential_id
  FROM baseline_credentials
  WHERE until = '{baseline}' AND NOT cold_start AND requests >= 100
),
ev AS (
  SELECT
    CAST(e.credential_id AS VARCHAR) AS credential_id,
    CAST(e.principal AS VARCHAR) AS principal,
    e.ts,
    e.request_id,
    CAST(e.source_ip AS VARCHAR) AS source_ip,
    ip_network(CAST(e.source_ip AS VARCHAR)) AS network,
    CAST(e.model AS VARCHAR) AS model,
    CAST(e.tool AS VARCHAR) AS tool,
    CAST(e.action AS VARCHAR) AS action,
    resource_prefix(e.resource) AS resource_prefix,
    CAST(e.region AS VARCHAR) AS region
  FROM events e
  JOIN judged j ON CAST(e.credential_id AS VARCHAR) = j.credential_id
  WHERE e.date BETWEEN '{from}' AND '{to}'
),
candidates AS (
  SELECT credential_id, principal, ts, request_id, source_ip, 'network' AS dimension, network AS value FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'model', model FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'tool', tool FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'action', action FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'resource_prefix', resource_prefix FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'region', region FROM ev
),
known AS (
  SELECT credential_id, dimension, value
  FROM baseline_scope
  WHERE until = '{baseline}'
),
known_list AS (
  SELECT credential_id, dimension, string_agg(value, ', ' ORDER BY requests DESC) AS vals
  FROM baseline_scope
  WHERE until = '{baseline}'
  GROUP BY 1, 2
)
SELECT
  c.credential_id,
  c.principal,
  c.ts,
  c.request_id,
  c.source_ip,
  'first_seen_' || c.dimension AS finding,
  c.value,
  l.vals AS allowed
FROM candidates c
LEFT JOIN known k ON k.credential_id = c.credential_id AND k.dimension = c.dimension AND k.value = c.value
LEFT JOIN known_list l ON l.credential_id = c.credential_id AND l.dimension = c.dimension
WHERE c.value IS NOT NULL AND k.value IS NULL
ORDER BY c.credential_id, finding, c.ts

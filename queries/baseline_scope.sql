-- baseline_scope: what each credential was seen using in its history, one
-- row per dimension and value — source networks (/24 for IPv4, /64 for
-- IPv6), user agents, models, tools, actions, resource prefixes, regions,
-- active hours (UTC). First-seen detection compares new days with this.
WITH ev AS (
  SELECT
    CAST(credential_id AS VARCHAR) AS credential_id,
    ts,
    ip_network(CAST(source_ip AS VARCHAR)) AS network,
    CAST(user_agent AS VARCHAR) AS user_agent,
    CAST(model AS VARCHAR) AS model,
    CAST(tool AS VARCHAR) AS tool,
    CAST(action AS VARCHAR) AS action,
    resource_prefix(resource) AS resource_prefix,
    CAST(region AS VARCHAR) AS region,
    CAST(date_part('hour', ts) AS VARCHAR) AS hour
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}'
),
dims AS (
  SELECT credential_id, ts, 'network' AS dimension, network AS value FROM ev
  UNION ALL SELECT credential_id, ts, 'user_agent', user_agent FROM ev
  UNION ALL SELECT credential_id, ts, 'model', model FROM ev
  UNION ALL SELECT credential_id, ts, 'tool', tool FROM ev
  UNION ALL SELECT credential_id, ts, 'action', action FROM ev
  UNION ALL SELECT credential_id, ts, 'resource_prefix', resource_prefix FROM ev
  UNION ALL SELECT credential_id, ts, 'region', region FROM ev
  UNION ALL SELECT credential_id, ts, 'hour', hour FROM ev
)
SELECT credential_id, dimension, value, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS requests
FROM dims
WHERE value IS NOT NULL AND credential_id IS NOT NULL
GROUP BY 1, 2, 3

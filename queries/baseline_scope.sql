-- baseline_scope: what each credential was seen using in its history, one
-- row per dimension and value — source networks (/24 for IPv4, /64 for
-- IPv6), user agents, models, tools, actions, resource prefixes, regions,
-- active hours (UTC). First-seen detection compares new days with this.
-- Each dimension is aggregated on the lake's own (dictionary) columns first,
-- so the per-value functions and string casts run once per distinct value,
-- not once per event.
WITH ev AS (
  SELECT credential_id, ts, source_ip, user_agent, model, tool, action, resource, region, date_part('hour', ts) AS hour
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND credential_id IS NOT NULL
),
-- With the user agent: a call AWS relayed for its caller is not the
-- caller's network (`caller_network`).
ips AS (
  SELECT credential_id, source_ip, user_agent, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS requests
  FROM ev GROUP BY 1, 2, 3
),
resources AS (
  SELECT credential_id, resource, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS requests
  FROM ev GROUP BY 1, 2
),
dims AS (
  SELECT credential_id, 'network' AS dimension, caller_network(source_ip, user_agent) AS value, first_seen, last_seen, requests
    FROM ips
  UNION ALL SELECT credential_id, 'resource_prefix', resource_prefix(resource), first_seen, last_seen, requests FROM resources
  UNION ALL SELECT credential_id, 'user_agent', CAST(user_agent AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
  UNION ALL SELECT credential_id, 'model', CAST(model AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
  UNION ALL SELECT credential_id, 'tool', CAST(tool AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
  UNION ALL SELECT credential_id, 'action', CAST(action AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
  UNION ALL SELECT credential_id, 'region', CAST(region AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
  UNION ALL SELECT credential_id, 'hour', CAST(hour AS VARCHAR), min(ts), max(ts), count(*) FROM ev GROUP BY 1, 3
)
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id, dimension, value,
  min(first_seen) AS first_seen, max(last_seen) AS last_seen, sum(requests) AS requests
FROM dims
WHERE value IS NOT NULL
GROUP BY 1, 2, 3

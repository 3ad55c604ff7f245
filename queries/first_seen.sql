-- first_seen: requests that use something the credential's identity never
-- used in its learned history (models/scope of baseline `{baseline}`): a
-- new source network, model, tool, action, resource prefix or cloud region.
-- What the credential and its principal's other learned credentials used is
-- known (a rotated or second key of a user is the same identity's work);
-- `allowed` lists it, prefixed by the principal when other credentials add
-- to it. Which level judges a credential is decided when the rows are
-- scored (`detect::explain::judge_first_seen`): its own or its principal's
-- history when long enough, else its peer group's, else none. A value that
-- is part of another alert (the new model of a billing spike, say) joins
-- that alert instead of standing alone.
-- New values are rare: the day's distinct values are compared with the
-- baseline first, and only the requests of credentials with a new value are
-- read again for the evidence.
---
--- family = "out_of_scope"
--- inputs = ["events", "baseline_credentials", "baseline_scope"]
--- # Nothing is new before some credential has left cold start (`learned` above).
--- needs_history = true
--- # `listed` is a few rows, but estimated from the events through six GROUP BYs.
--- joins = "as_written"
--- live = { per_event = "credential" }
--- # Only a value the credential's own history lacks can be evidence, and
--- # `creds` needs each caller once: a pass reads the events with such a value.
--- live_events = { new_to_scope = ["network", "model", "tool", "action", "resource_prefix", "region"] }
--- scoring = { rows = "first_seen" }
--- severity = "low"
--- mitre = "T1078.004 Valid Accounts: Cloud Accounts"
--- owasp = "NHI5:2025 Overprivileged NHI"
---
--- [findings.first_seen_network]
--- severity = "medium"
---
--- [findings.first_seen_action]
--- severity = "medium"
---
--- [findings.first_seen_tool]
--- severity = "medium"
---
--- [findings.first_seen_resource_prefix]
--- severity = "medium"
--- mitre = "T1213 Data from Information Repositories"
---
--- # LLMjacking shops for regions with the models enabled.
--- [findings.first_seen_region]
--- severity = "medium"
--- mitre = "T1535 Unused/Unsupported Cloud Regions"
---
WITH learned AS (
  SELECT credential_id, principal, requests
  FROM baseline_credentials
  WHERE until = '{baseline}' AND NOT cold_start
),
-- Every credential of the day, once the baseline has learned one; before
-- that (a lake's first days) no level knows anything.
ev AS (
  SELECT e.credential_id, e.principal, e.ts, e.request_id, e.source_ip, e.user_agent, e.model, e.tool, e.action,
    e.resource, e.region
  -- The one-row side first: a cross join is built from its left side, and
  -- `watch` plans its small passes without statistics to swap them by; built
  -- from the events, it made a batch per event (3.5 s for 20k events).
  -- `learned` written out: each named reference is two plan levels.
  FROM (SELECT count(*) AS n FROM baseline_credentials WHERE until = '{baseline}' AND NOT cold_start) f
  CROSS JOIN events e
  WHERE e.date BETWEEN '{from}' AND '{to}' AND f.n > 0
),
-- Whose history counts as known for a credential: its own (in cold start
-- too), and its principal's other learned credentials'. Read from the
-- events, not from `ev`: a plan shipped to a cluster must stay shallow.
creds AS (
  -- Cast after the DISTINCT: casting the lake's dictionaries first copied a string per event.
  SELECT CAST(credential_id AS VARCHAR) AS credential_id, CAST(principal AS VARCHAR) AS principal
  FROM (SELECT DISTINCT credential_id, principal FROM events WHERE date BETWEEN '{from}' AND '{to}')
),
knowers AS (
  SELECT credential_id, credential_id AS knower FROM creds
  UNION
  SELECT c.credential_id, l.credential_id AS knower FROM creds c JOIN learned l ON l.principal = c.principal
),
-- Two halves of three: a chain of UNION ALLs nests one plan level per
-- branch, and the plan must stay shallow (see `listed`).
used AS (
  (SELECT credential_id, 'network' AS dimension, caller_network(source_ip, user_agent) AS value
    FROM (SELECT DISTINCT credential_id, source_ip, user_agent FROM ev)
  UNION ALL SELECT credential_id, 'model', CAST(model AS VARCHAR) FROM (SELECT DISTINCT credential_id, model FROM ev)
  UNION ALL SELECT credential_id, 'tool', CAST(tool AS VARCHAR) FROM (SELECT DISTINCT credential_id, tool FROM ev))
  UNION ALL
  (SELECT credential_id, 'action', CAST(action AS VARCHAR) FROM (SELECT DISTINCT credential_id, action FROM ev)
  UNION ALL SELECT credential_id, 'resource_prefix', resource_prefix(resource)
    FROM (SELECT DISTINCT credential_id, resource FROM ev)
  UNION ALL SELECT credential_id, 'region', CAST(region AS VARCHAR) FROM (SELECT DISTINCT credential_id, region FROM ev))
),
-- What the learned credentials of each principal used, once per principal:
-- joined per credential instead, a principal with many keys multiplied its
-- history by its keys (1.2M rows for 1,000 credentials).
by_principal AS (
  SELECT DISTINCT l.principal, k.dimension, k.value
  FROM learned l
  JOIN baseline_scope k ON k.credential_id = l.credential_id
  WHERE k.until = '{baseline}'
),
-- Used values that neither the credential's own history nor any of its
-- principals' (`knowers`, by principal) holds.
new AS (
  SELECT CAST(used.credential_id AS VARCHAR) AS credential_id, used.dimension, used.value
  FROM used
  LEFT JOIN baseline_scope k ON k.until = '{baseline}' AND k.credential_id = CAST(used.credential_id AS VARCHAR)
    AND k.dimension = used.dimension AND k.value = used.value
  LEFT JOIN creds c ON c.credential_id = CAST(used.credential_id AS VARCHAR)
  LEFT JOIN by_principal p ON p.principal = c.principal AND p.dimension = used.dimension AND p.value = used.value
  GROUP BY 1, 2, 3
  -- Not `used.value IS NOT NULL`: a condition on a group key is pushed below
  -- `used`'s DISTINCTs, and there derives networks and prefixes per event.
  HAVING count(used.value) > 0 AND count(k.value) = 0 AND count(p.value) = 0
),
-- Each credential's new values by dimension, with what its identity used
-- before in that dimension (by level, most used first). `new` is named once:
-- DataFusion plans and runs a CTE again wherever it is named, and listing
-- every credential's history instead would cost more than the rest of a
-- live pass. A cluster decodes plans to a bounded depth, so no level here
-- is spent on an alias or a filter that a join condition can hold.
listed AS (
  SELECT credential_id, dimension, first_value(vals) AS vals,
    string_agg(value, ', ' ORDER BY requests DESC, value) AS known
  FROM (
    SELECT cred AS credential_id, dim AS dimension, first_value(vals) AS vals, k.value, sum(k.requests) AS requests
    FROM (SELECT credential_id AS cred, dimension AS dim, array_agg(value) AS vals FROM new GROUP BY 1, 2)
    LEFT JOIN knowers w ON w.credential_id = cred
    LEFT JOIN baseline_scope k ON k.until = '{baseline}' AND k.credential_id = w.knower AND k.dimension = dim
    GROUP BY cred, dim, k.value
  )
  GROUP BY 1, 2
),
levels AS (
  SELECT c.credential_id,
    CASE WHEN count(l.credential_id) = 0 THEN ''
      ELSE '(with its principal ' || min(c.principal) || ': ' || count(DISTINCT l.credential_id)
        || ' other learned credential(s)) '
    END AS level
  FROM creds c
  LEFT JOIN learned l ON l.principal = c.principal AND l.credential_id <> c.credential_id
  GROUP BY 1
)
-- The evidence: each request that used one of its credential's new values.
SELECT
  listed.credential_id,
  CAST(e.principal AS VARCHAR) AS principal,
  e.ts,
  e.request_id,
  CAST(e.source_ip AS VARCHAR) AS source_ip,
  'first_seen_' || listed.dimension AS finding,
  scope_value(listed.dimension, e.source_ip, e.user_agent, e.model, e.tool, e.action, e.resource, e.region) AS value,
  lv.level || coalesce(listed.known, '') AS allowed
FROM listed
-- The value of the select list, named again: an alias cannot be used in a
-- join condition, and a subquery would cost plan levels (see `listed`).
JOIN ev e ON CAST(e.credential_id AS VARCHAR) = listed.credential_id AND array_has(listed.vals,
    scope_value(listed.dimension, e.source_ip, e.user_agent, e.model, e.tool, e.action, e.resource, e.region))
JOIN levels lv ON lv.credential_id = listed.credential_id
ORDER BY listed.credential_id, finding, e.ts

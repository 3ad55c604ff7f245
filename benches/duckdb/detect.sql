-- `credtrail detect --date {day} --inventory …` as DuckDB SQL over the same
-- lake, against the baseline baseline.sql wrote to {models}/: every
-- detector's query (queries/*.sql) plus, in SQL, the scoring credtrail does
-- in Rust (billing ratio and robust z, retry-storm rates, Markov
-- probabilities of session steps), and the whole-lake usage the governance
-- findings need. Results are written as the day's alerts in zstd Parquet.
-- Not reproduced: incident grouping and explanations (cheap, per alert).
CREATE VIEW events AS
  SELECT * FROM read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true)
  WHERE CAST(date AS VARCHAR) = '{day}';
-- {models}/ holds one baseline version: `until` names it, as in credtrail's tables.
CREATE VIEW baseline_credentials AS
  SELECT *, '{baseline}' AS until FROM read_parquet('{models}/credentials.parquet');
CREATE VIEW baseline_scope AS SELECT *, '{baseline}' AS until FROM read_parquet('{models}/scope.parquet');
CREATE VIEW baseline_transitions AS SELECT * FROM read_parquet('{models}/transitions.parquet');
CREATE TABLE credentials AS
  SELECT credential_id, CAST(created_at AS TIMESTAMPTZ) AS created_at, CAST(expires_at AS TIMESTAMPTZ) AS expires_at,
    string_split(coalesce(allowed_actions, ''), ';').list_filter(lambda x: x <> '') AS allowed_actions,
    string_split(coalesce(allowed_models, ''), ';').list_filter(lambda x: x <> '') AS allowed_models,
    string_split(coalesce(allowed_tools, ''), ';').list_filter(lambda x: x <> '') AS allowed_tools,
    string_split(coalesce(allowed_resources, ''), ';').list_filter(lambda x: x <> '') AS allowed_resources,
    string_split(coalesce(allowed_regions, ''), ';').list_filter(lambda x: x <> '') AS allowed_regions
  FROM read_csv('{inventory}', all_varchar = true);
-- `allowed_resources` as scope_allows reads them: prefixes made explicit,
-- `=` pins one value (src/inventory.rs resource_pattern).
ALTER TABLE credentials ADD COLUMN resource_scope VARCHAR[];
UPDATE credentials SET resource_scope = list_transform(allowed_resources,
  lambda p: CASE WHEN p LIKE '=%' OR p LIKE '%*' THEN p ELSE p || '*' END);

-- billing_spike (queries/billing_spike.sql, scored as src/detect/billing.rs).
CREATE TABLE billing AS
WITH ev AS (
  SELECT credential_id, principal, ts, date_trunc('hour', ts) AS hour, request_id, source_ip,
    ip_network(source_ip) AS network, model,
    CASE WHEN status IS NULL OR status < 400 THEN coalesce(tokens_in, 0) + coalesce(tokens_out, 0) ELSE 0 END AS tokens,
    CASE WHEN status IS NULL OR status < 400 THEN coalesce(cost_usd, 0) ELSE 0 END AS cost
  FROM events
),
hours AS (SELECT credential_id, hour, sum(tokens) AS tokens, sum(cost) AS cost, count(*) AS requests FROM ev GROUP BY 1, 2),
today AS (SELECT credential_id, median(tokens) AS day_median_tokens, median(cost) AS day_median_cost FROM hours GROUP BY 1),
candidates AS (
  SELECT h.*, t.day_median_tokens, t.day_median_cost, b.tokens_per_hour_p99, b.tokens_per_hour_median,
    b.tokens_per_hour_mad, b.cost_per_hour_p99
  FROM hours h JOIN today t USING (credential_id)
  LEFT JOIN baseline_credentials b USING (credential_id)
  WHERE (h.tokens > 0 OR h.cost > 0) AND (
    (b.credential_id IS NOT NULL AND NOT b.cold_start
      AND (h.tokens > 2 * b.tokens_per_hour_p99 OR h.cost > 2 * b.cost_per_hour_p99))
    OR ((b.credential_id IS NULL OR b.cold_start)
      AND ((h.tokens >= 1000000 AND h.tokens >= 10 * t.day_median_tokens)
        OR (h.cost >= 20 AND h.cost >= 10 * t.day_median_cost))))
),
known AS (SELECT credential_id, dimension, value FROM baseline_scope)
SELECT c.credential_id, max(ev.principal) AS principal, c.hour, c.tokens, c.cost, c.requests,
  c.tokens / greatest(coalesce(c.tokens_per_hour_p99, 0), 5000) AS ratio,
  (c.tokens - coalesce(c.tokens_per_hour_median, 0)) / (1.4826 * greatest(coalesce(c.tokens_per_hour_mad, 0), 1000)) AS z,
  min(ev.ts) AS first_ts, max(ev.ts) AS last_ts,
  array_agg(DISTINCT CASE WHEN km.value IS NULL THEN ev.model END) AS new_models,
  array_agg(DISTINCT CASE WHEN kn.value IS NULL THEN ev.network END) AS new_networks,
  array_agg(DISTINCT ev.source_ip) AS source_ips,
  array_agg(ev.request_id ORDER BY ev.tokens DESC) AS evidence
FROM candidates c
JOIN ev ON ev.credential_id = c.credential_id AND ev.hour = c.hour
LEFT JOIN known km ON km.dimension = 'model' AND km.credential_id = ev.credential_id AND km.value = ev.model
LEFT JOIN known kn ON kn.dimension = 'network' AND kn.credential_id = ev.credential_id AND kn.value = ev.network
GROUP BY c.credential_id, c.hour, c.tokens, c.cost, c.requests, c.tokens_per_hour_p99, c.tokens_per_hour_median, c.tokens_per_hour_mad
HAVING ratio >= 4 AND z >= 8;

-- retry_storm (queries/retry_storm.sql; src/detect/storm.rs asks how
-- unlikely each minute is at the credential's usual error rate).
CREATE TABLE storm AS
WITH m AS (
  SELECT credential_id, max(principal) AS principal, date_trunc('minute', ts) AS minute, count(*) AS errors,
    sum(CASE WHEN status IN (401, 403) THEN 1 ELSE 0 END) AS auth_failures,
    sum(CASE WHEN status = 429 THEN 1 ELSE 0 END) AS throttled,
    sum(CASE WHEN status >= 500 THEN 1 ELSE 0 END) AS server_errors,
    array_agg(DISTINCT source_ip) AS source_ips,
    array_agg(DISTINCT coalesce(error_code, CAST(status AS VARCHAR))) AS error_codes,
    array_agg(request_id ORDER BY ts) AS evidence, min(ts) AS first_ts, max(ts) AS last_ts
  FROM events WHERE status IN (401, 403, 429) OR status >= 500
  GROUP BY 1, 3 HAVING count(*) >= 5
)
SELECT m.*, greatest(CASE WHEN b.cold_start OR b.credential_id IS NULL THEN 0.2
                          ELSE b.errors_per_hour_mean / 60 END, 0.05) AS usual_per_minute
FROM m LEFT JOIN baseline_credentials b USING (credential_id)
WHERE m.errors >= 20;

-- tool_chaining (queries/tool_chaining.sql; src/detect/chaining.rs scores
-- each step with the principal's smoothed Markov probability).
CREATE TABLE chaining AS
WITH calls AS (
  SELECT credential_id, coalesce(principal, credential_id) AS principal, session_id, ts, request_id, tool,
    coalesce(lag(tool) OVER w, '^') AS prev
  FROM events WHERE session_id IS NOT NULL AND tool IS NOT NULL
  WINDOW w AS (PARTITION BY credential_id, session_id ORDER BY ts, request_id)
),
t AS (SELECT * FROM baseline_transitions),
support AS (SELECT principal, from_tool, sum(count) AS n FROM t GROUP BY 1, 2),
states AS (SELECT principal, count(DISTINCT to_tool) + 2 AS k FROM t WHERE to_tool <> '$' GROUP BY 1),
steps AS (
  SELECT c.*, (coalesce(t.count, 0) + 0.1) / (coalesce(s.n, 0) + 0.1 * coalesce(k.k, 2)) AS p, coalesce(s.n, 0) AS support
  FROM calls c
  LEFT JOIN t ON t.principal = c.principal AND t.from_tool = c.prev AND t.to_tool = c.tool
  LEFT JOIN support s ON s.principal = c.principal AND s.from_tool = c.prev
  LEFT JOIN states k ON k.principal = c.principal
)
SELECT credential_id, principal, session_id, min(ts) AS first_ts, max(ts) AS last_ts, min(p) AS min_p,
  array_agg(tool ORDER BY ts, request_id) AS tools, array_agg(request_id ORDER BY ts, request_id) AS evidence
FROM steps GROUP BY 1, 2, 3
HAVING min(CASE WHEN support >= 20 THEN p END) < 0.01;

-- first_seen (queries/first_seen.sql).
CREATE TABLE first_seen AS
WITH judged AS (SELECT credential_id FROM baseline_credentials WHERE NOT cold_start AND requests >= 100),
ev AS (
  SELECT e.credential_id, e.principal, e.ts, e.request_id, e.source_ip, ip_network(e.source_ip) AS network,
    e.model, e.tool, e.action, resource_prefix(e.resource) AS resource_prefix
  FROM events e JOIN judged j USING (credential_id)
),
candidates AS (
  SELECT credential_id, principal, ts, request_id, source_ip, 'network' AS dimension, network AS value FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'model', model FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'tool', tool FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'action', action FROM ev
  UNION ALL SELECT credential_id, principal, ts, request_id, source_ip, 'resource_prefix', resource_prefix FROM ev
),
known_list AS (
  SELECT credential_id, dimension, string_agg(value, ', ' ORDER BY requests DESC) AS vals FROM baseline_scope GROUP BY 1, 2
)
SELECT c.credential_id, c.principal, c.ts, c.request_id, c.source_ip, 'first_seen_' || c.dimension AS finding,
  c.value, l.vals AS allowed
FROM candidates c
LEFT JOIN baseline_scope k ON k.credential_id = c.credential_id AND k.dimension = c.dimension AND k.value = c.value
LEFT JOIN known_list l ON l.credential_id = c.credential_id AND l.dimension = c.dimension
WHERE c.value IS NOT NULL AND k.value IS NULL
ORDER BY c.credential_id, finding, c.ts;

-- out_of_scope: queries/out_of_scope.sql itself, its text put here by
-- benches/duckdb_run.py, so both sides run the same detection.
CREATE TABLE out_of_scope AS
{query:out_of_scope};

-- defense_evasion (queries/defense_evasion.sql).
CREATE TABLE evasion AS
SELECT credential_id, principal, ts, request_id, source_ip, tool AS value FROM events
WHERE (status IS NULL OR status < 400) AND tool IN ('bedrock:DeleteModelInvocationLoggingConfiguration',
  'bedrock:UpdateGuardrail', 'bedrock:DeleteGuardrail', 'cloudtrail:StopLogging', 'cloudtrail:DeleteTrail');

-- Governance needs each credential's first and last use over the whole lake.
CREATE TABLE usage AS
SELECT credential_id, min(ts) AS first_seen, max(ts) AS last_seen, count(*) AS events
FROM read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true) GROUP BY 1;

-- The day's alerts, grouped per credential, finding and value like credtrail's.
COPY (
  SELECT 'billing_spike' AS detector, credential_id, 'billing_spike' AS finding, NULL AS value, first_ts AS window_start,
    last_ts AS window_end, len(evidence) AS requests FROM billing
  UNION ALL SELECT 'retry_storm', credential_id, 'retry_storm', NULL, first_ts, last_ts, errors FROM storm
  UNION ALL SELECT 'tool_chaining', credential_id, 'tool_chaining', session_id, first_ts, last_ts, len(evidence) FROM chaining
  UNION ALL SELECT 'first_seen', credential_id, finding, value, min(ts), max(ts), count(*) FROM first_seen GROUP BY 2, 3, 4
  -- Standing use is a governance finding, not an alert; resources group per
  -- directory (src/detect/explain.rs group_key).
  UNION ALL SELECT 'out_of_scope', credential_id, finding, grp, min(ts), max(ts), count(*) FROM (
    SELECT *, CASE WHEN finding = 'resource_outside_scope' AND contains(rtrim(value, '/'), '/')
      THEN left(value, length(rtrim(value, '/')) - strpos(reverse(rtrim(value, '/')), '/') + 1) ELSE value END AS grp
    FROM out_of_scope WHERE standing_since IS NULL
  ) GROUP BY 2, 3, 4
  UNION ALL SELECT 'defense_evasion', credential_id, 'ai_defense_evasion', value, min(ts), max(ts), count(*) FROM evasion GROUP BY 2, 4
) TO '{alerts}' (FORMAT parquet, COMPRESSION zstd);
SELECT (SELECT count(*) FROM billing) AS billing, (SELECT count(*) FROM storm) AS storm_minutes,
  (SELECT count(*) FROM chaining) AS sessions, (SELECT count(*) FROM first_seen) AS first_seen_rows,
  (SELECT count(*) FROM out_of_scope) AS out_of_scope_rows, (SELECT count(*) FROM usage) AS credentials;

-- `credtrail baseline --until {until}` as DuckDB SQL over the same lake:
-- the same four model tables (queries/baseline_*.sql and src/baseline.rs),
-- written as zstd Parquet under {models}/. Quantiles are DuckDB's, so
-- figures may differ in the last digits; the work is the same.
CREATE VIEW events AS
  SELECT * FROM read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true)
  WHERE CAST(date AS VARCHAR) BETWEEN '{from}' AND '{until}';

-- Hourly volume per credential (queries/baseline_hourly.sql).
CREATE TABLE hourly AS
SELECT credential_id, max(principal) AS principal, date_trunc('hour', ts) AS hour, count(*) AS requests,
  sum(CASE WHEN status IS NULL OR status < 400 THEN coalesce(tokens_in, 0) + coalesce(tokens_out, 0) ELSE 0 END) AS tokens,
  sum(CASE WHEN status IS NULL OR status < 400 THEN coalesce(cost_usd, 0) ELSE 0 END) AS cost,
  sum(CASE WHEN status IN (401, 403, 429) OR status >= 500 THEN 1 ELSE 0 END) AS errors
FROM events GROUP BY 1, 3;

-- Zero-filled from each credential's first hour to the end of the window.
CREATE TABLE series AS
WITH span AS (
  SELECT credential_id, unnest(generate_series(min(hour),
    CAST('{until}' AS TIMESTAMPTZ) + INTERVAL 23 HOUR, INTERVAL 1 HOUR)) AS hour
  FROM hourly GROUP BY 1
)
SELECT s.credential_id, s.hour, coalesce(h.requests, 0) AS requests, coalesce(h.tokens, 0) AS tokens,
  coalesce(h.cost, 0) AS cost, coalesce(h.errors, 0) AS errors
FROM span s LEFT JOIN hourly h USING (credential_id, hour);

-- Error counts per minute (queries/baseline_error_minutes.sql).
CREATE TABLE error_minutes AS
SELECT credential_id, date_trunc('minute', ts) AS minute, count(*) AS errors
FROM events WHERE status IN (401, 403, 429) OR status >= 500 GROUP BY 1, 2;

COPY (
  WITH s AS (
    SELECT credential_id, count(*) AS hours, sum(requests) AS requests, sum(errors) AS errors,
      median(requests) AS requests_per_hour_median, mad(requests) AS requests_per_hour_mad,
      quantile_cont(requests, 0.95) AS requests_per_hour_p95, quantile_cont(requests, 0.99) AS requests_per_hour_p99,
      max(requests) AS requests_per_hour_max, avg(requests) AS requests_per_hour_mean,
      median(tokens) AS tokens_per_hour_median, mad(tokens) AS tokens_per_hour_mad,
      quantile_cont(tokens, 0.95) AS tokens_per_hour_p95, quantile_cont(tokens, 0.99) AS tokens_per_hour_p99,
      max(tokens) AS tokens_per_hour_max, avg(tokens) AS tokens_per_hour_mean,
      median(cost) AS cost_per_hour_median, mad(cost) AS cost_per_hour_mad,
      quantile_cont(cost, 0.95) AS cost_per_hour_p95, quantile_cont(cost, 0.99) AS cost_per_hour_p99,
      max(cost) AS cost_per_hour_max, avg(cost) AS cost_per_hour_mean,
      median(errors) AS errors_per_hour_median, mad(errors) AS errors_per_hour_mad,
      quantile_cont(errors, 0.95) AS errors_per_hour_p95, quantile_cont(errors, 0.99) AS errors_per_hour_p99,
      max(errors) AS errors_per_hour_max, avg(errors) AS errors_per_hour_mean
    FROM series GROUP BY 1
  ),
  d AS (SELECT credential_id, max(principal) AS principal, count(DISTINCT CAST(hour AS DATE)) AS days_seen FROM hourly GROUP BY 1),
  m AS (SELECT credential_id, max(errors) AS error_minute_max, quantile_cont(errors, 0.99) AS error_minute_p99
        FROM error_minutes GROUP BY 1)
  SELECT 1 AS model_version, s.credential_id, d.principal, '{from}' AS history_from, '{until}' AS history_to,
    d.days_seen, s.hours, s.requests, d.days_seen < 2 OR s.requests < 10 AS cold_start,
    s.* EXCLUDE (credential_id, hours, requests, errors),
    CASE WHEN s.requests > 0 THEN s.errors / s.requests ELSE 0 END AS error_rate,
    coalesce(m.error_minute_max, 0) AS error_minute_max, coalesce(m.error_minute_p99, 0) AS error_minute_p99
  FROM s JOIN d USING (credential_id) LEFT JOIN m USING (credential_id)
  ORDER BY credential_id
) TO '{models}/credentials.parquet' (FORMAT parquet, COMPRESSION zstd);

-- Seasonality: hour-of-day and hour-of-week slots seen at least 3 times.
COPY (
  WITH slots AS (
    SELECT credential_id, 'hour_of_day' AS slot_kind, hour(hour) AS slot, tokens, cost, requests FROM series
    UNION ALL
    SELECT credential_id, 'hour_of_week', (isodow(hour) - 1) * 24 + hour(hour), tokens, cost, requests FROM series
  )
  SELECT credential_id, slot_kind, slot, count(*) AS observations, median(tokens) AS tokens_median,
    max(tokens) AS tokens_high, median(cost) AS cost_median, max(cost) AS cost_high, median(requests) AS requests_median
  FROM slots GROUP BY 1, 2, 3 HAVING count(*) >= 3
) TO '{models}/profile.parquet' (FORMAT parquet, COMPRESSION zstd);

-- Learned scope (queries/baseline_scope.sql).
COPY (
  WITH ev AS (
    SELECT credential_id, ts, ip_network(source_ip) AS network, user_agent, model, tool, action,
      resource_prefix(resource) AS resource_prefix, region, CAST(hour(ts) AS VARCHAR) AS hour
    FROM events
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
  FROM dims WHERE value IS NOT NULL AND credential_id IS NOT NULL
  GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
) TO '{models}/scope.parquet' (FORMAT parquet, COMPRESSION zstd);

-- Tool transitions of agent sessions (queries/baseline_transitions.sql).
COPY (
  WITH calls AS (
    SELECT coalesce(principal, credential_id) AS principal, tool,
      lag(tool) OVER w AS prev, lead(tool) OVER w AS next
    FROM events
    WHERE session_id IS NOT NULL AND tool IS NOT NULL
    WINDOW w AS (PARTITION BY credential_id, session_id ORDER BY ts, request_id)
  ),
  steps AS (
    SELECT principal, coalesce(prev, '^') AS from_tool, tool AS to_tool FROM calls
    UNION ALL SELECT principal, tool, '$' FROM calls WHERE next IS NULL
  )
  SELECT principal, from_tool, to_tool, count(*) AS count FROM steps GROUP BY 1, 2, 3 ORDER BY 1, 2, 3
) TO '{models}/transitions.parquet' (FORMAT parquet, COMPRESSION zstd);

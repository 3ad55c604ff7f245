-- billing_spike: credential-hours whose spend (tokens and cost of
-- successful requests) may be far above the credential's own baseline
-- (`baseline_credentials` of version `{baseline}`), with what was new in
-- the hour: models and source networks the credential never used before —
-- the LLMjacking signature. credtrail scores each candidate hour against the
-- baseline (robust z and ratio to the credential's high quantile, with
-- floors; a smaller multiple of its usual hour when some of the spend came
-- from a new network); this query only keeps hours worth scoring.
-- Tokens, cost and the Bedrock de-duplication (a call CloudTrail and the
-- model-invocation log both recorded counts once) come from `billed`
-- (queries/fragments/billed_events.sql, shared with baseline_hourly.sql).
---
--- family = "billing_spike"
--- inputs = ["events", "baseline_credentials", "baseline_scope"]
--- # Spend is tokens or cost; a day without any has no spike.
--- events = "tokens_in > 0 OR tokens_out > 0 OR cost_usd > 0"
--- live = { gated = "spend" }
--- scoring = "billing"
--- severity = "high"
--- mitre = "T1496.004 Resource Hijacking: Cloud Service Hijacking"
--- # Only when the spend came from a new network: a stranger spending on the key.
--- owasp = "NHI2:2025 Secret Leakage"
---
WITH {billed_events},
ev AS (
  -- The lake's own (dictionary) columns: cast only in the few candidate hours.
  SELECT
    credential_id,
    principal,
    ts,
    -- date_bin is arithmetic on UTC milliseconds: same buckets as date_trunc, several times faster.
    arrow_cast(date_bin(INTERVAL '1 hour', ts), 'Timestamp(ms, "UTC")') AS hour,
    request_id,
    source_ip,
    user_agent,
    model,
    billed_tokens AS tokens,
    billed_cost AS cost
  FROM billed
),
-- Each credential-hour's spend, beside the credential's typical hour today
-- (what a key without history is compared with). A window, not a second
-- aggregate joined back: a CTE is planned and run again wherever it is
-- named, and `ev` under it is three reads of the day's events.
hours AS (
  SELECT *, median(tokens) OVER (PARTITION BY credential_id) AS day_median_tokens,
    median(cost) OVER (PARTITION BY credential_id) AS day_median_cost
  FROM (SELECT credential_id, hour, sum(tokens) AS tokens, sum(cost) AS cost, count(*) AS requests FROM ev GROUP BY 1, 2)
),
base AS (
  SELECT * FROM baseline_credentials WHERE until = '{baseline}'
),
candidates AS (
  SELECT h.*
  FROM hours h
  LEFT JOIN base b ON b.credential_id = CAST(h.credential_id AS VARCHAR)
  WHERE (h.tokens > 0 OR h.cost > 0)
    AND (
      -- Judged against its own history: well above its usual busiest hours.
      (b.credential_id IS NOT NULL AND NOT b.cold_start
        AND (h.tokens > 2 * b.tokens_per_hour_p99 OR h.cost > 2 * b.cost_per_hour_p99
          -- From a network it never used (judged by credtrail), several times its usual hour is enough.
          OR h.tokens >= 3 * greatest(b.tokens_per_hour_median, 5000)
          OR h.cost >= 3 * greatest(b.cost_per_hour_median, 0.25)))
      -- No usable history (cold start): above absolute floors and far above its other hours today…
      OR ((b.credential_id IS NULL OR b.cold_start)
        AND ((h.tokens >= 1000000 AND h.tokens >= 10 * h.day_median_tokens)
          OR (h.cost >= 20 AND h.cost >= 10 * h.day_median_cost)
          -- …or, judged by its peers' or the fleet's usual hours (two learned credentials at least),
          -- 4× the least "busiest hour" (the floors, 5,000 tokens or $0.25).
          OR ((SELECT count(*) FROM base WHERE NOT cold_start) >= 2 AND (h.tokens >= 20000 OR h.cost >= 1))))
    )
),
known AS (
  SELECT credential_id, dimension, value FROM baseline_scope WHERE until = '{baseline}'
),
-- Each candidate hour's heaviest requests, the alert's evidence: ranked by a
-- window and only the first `{max_evidence}` collected. An `array_agg` with
-- ORDER BY over every request of a busy hour cost more than the rest of the query.
evidence AS (
  SELECT credential_id, hour, array_agg(request_id ORDER BY tokens DESC, request_id) AS evidence
  FROM (
    SELECT ev.credential_id, ev.hour, ev.request_id, ev.tokens
    FROM candidates c
    JOIN ev ON ev.credential_id = c.credential_id AND ev.hour = c.hour
    QUALIFY row_number() OVER (PARTITION BY ev.credential_id, ev.hour ORDER BY ev.tokens DESC, ev.request_id)
      <= {max_evidence}
  )
  GROUP BY 1, 2
),
-- What each candidate hour spent on, and from where: its requests grouped by
-- model and caller first, so that what is new against the learned scope is
-- looked up once per group, not once per request. (Unaliased, as below.)
seen AS (
  SELECT
    candidates.credential_id,
    candidates.hour,
    ev.model,
    ev.source_ip,
    ev.user_agent,
    max(candidates.tokens) AS tokens,
    max(candidates.cost) AS cost,
    max(candidates.requests) AS requests,
    max(candidates.day_median_tokens) AS day_median_tokens,
    max(candidates.day_median_cost) AS day_median_cost,
    max(CAST(ev.principal AS VARCHAR)) AS principal,
    min(ev.ts) AS first_ts,
    max(ev.ts) AS last_ts
  FROM candidates
  JOIN ev ON ev.credential_id = candidates.credential_id AND ev.hour = candidates.hour
  GROUP BY candidates.credential_id, candidates.hour, ev.model, ev.source_ip, ev.user_agent
),
spikes AS (
  SELECT
    seen.credential_id AS key,
    CAST(seen.credential_id AS VARCHAR) AS credential_id,
    max(seen.principal) AS principal,
    seen.hour,
    max(seen.tokens) AS tokens,
    max(seen.cost) AS cost,
    max(seen.requests) AS requests,
    max(seen.day_median_tokens) AS day_median_tokens,
    max(seen.day_median_cost) AS day_median_cost,
    min(seen.first_ts) AS first_ts,
    max(seen.last_ts) AS last_ts,
    array_agg(DISTINCT CASE WHEN km.value IS NULL THEN CAST(seen.model AS VARCHAR) END) AS new_models,
    array_agg(DISTINCT CASE WHEN kn.value IS NULL THEN caller_network(seen.source_ip, seen.user_agent) END) AS new_networks,
    array_agg(DISTINCT CAST(seen.model AS VARCHAR)) AS models,
    array_agg(DISTINCT CAST(seen.source_ip AS VARCHAR)) AS source_ips
  FROM seen
  LEFT JOIN known km ON km.dimension = 'model' AND km.credential_id = CAST(seen.credential_id AS VARCHAR)
    AND km.value = CAST(seen.model AS VARCHAR)
  LEFT JOIN known kn ON kn.dimension = 'network' AND kn.credential_id = CAST(seen.credential_id AS VARCHAR)
    AND kn.value = caller_network(seen.source_ip, seen.user_agent)
  GROUP BY seen.credential_id, seen.hour
)
-- Unaliased: each alias is a plan level, and a cluster's plans must stay shallow.
SELECT spikes.* EXCEPT (key), evidence.evidence
FROM spikes
JOIN evidence ON evidence.credential_id = spikes.key AND evidence.hour = spikes.hour
ORDER BY spikes.credential_id, spikes.hour

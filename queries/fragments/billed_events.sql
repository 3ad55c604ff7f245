-- billed_events: the common table expressions `invocation`, `trail` and
-- `billed` that baseline_hourly.sql and billing_spike.sql begin with.
-- `billed` is every event of the days '{from}' to '{to}' with what it was
-- billed: tokens and cost count only successful requests (failed ones are
-- not billed), and a Bedrock call that both CloudTrail (with the access key)
-- and the model-invocation log (with the role and real token counts)
-- recorded counts once: on the key, with the invocation log's tokens and
-- cost (CloudTrail's own cost is an estimate from the pricing table).
invocation AS (
  SELECT request_id, max(coalesce(tokens_in, 0) + coalesce(tokens_out, 0)) AS tokens, max(cost_usd) AS cost
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND source = 'bedrock-invocation' AND request_id IS NOT NULL
  GROUP BY 1
),
trail AS (
  SELECT DISTINCT request_id
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}' AND source = 'cloudtrail' AND action = 'inference'
),
billed AS (
  -- Only Bedrock-plane records (CloudTrail's and the invocation log's) can
  -- have a twin: the rest skip the two joins, which would otherwise hash
  -- every request id of a gateway's day for nothing.
  SELECT
    e.*,
    CASE WHEN e.status IS NULL OR e.status < 400
      THEN coalesce(e.tokens_in, 0) + coalesce(e.tokens_out, 0) ELSE 0 END AS billed_tokens,
    CASE WHEN e.status IS NULL OR e.status < 400 THEN coalesce(e.cost_usd, 0) ELSE 0 END AS billed_cost
  FROM events e
  WHERE e.date BETWEEN '{from}' AND '{to}'
    AND (e.source IS NULL OR e.source NOT IN ('cloudtrail', 'bedrock-invocation'))
  UNION ALL
  SELECT
    e.*,
    CASE WHEN e.status IS NULL OR e.status < 400
      THEN coalesce(i.tokens, coalesce(e.tokens_in, 0) + coalesce(e.tokens_out, 0)) ELSE 0 END AS billed_tokens,
    CASE WHEN e.status IS NULL OR e.status < 400 THEN coalesce(i.cost, e.cost_usd, 0) ELSE 0 END AS billed_cost
  FROM events e
  LEFT JOIN invocation i ON i.request_id = e.request_id AND e.source = 'cloudtrail'
  LEFT JOIN trail t ON t.request_id = e.request_id AND e.source = 'bedrock-invocation'
  WHERE e.date BETWEEN '{from}' AND '{to}' AND e.source IN ('cloudtrail', 'bedrock-invocation') AND t.request_id IS NULL
)

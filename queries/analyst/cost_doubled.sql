-- cost_doubled: credentials whose spend at least doubled from one week to the
-- next (LLMjacking and runaway agents show up here first). Weeks are ISO weeks
-- (Monday 00:00 UTC). A credential with no spend the week before is not
-- "doubled" (see first_used_tools.sql for what is new); `days` shows how many
-- days of each week the lake holds, since a partial first week makes the next
-- one look larger.
WITH weekly AS (
  SELECT credential_id,
         date_trunc('week', ts) AS week,
         sum(cost_usd) AS cost,
         count(*) AS requests,
         count(DISTINCT date) AS days
  FROM events
  GROUP BY 1, 2
)
SELECT cur.credential_id,
       cur.week,
       prev.cost AS previous_cost,
       cur.cost AS cost,
       cur.cost / prev.cost AS ratio,
       prev.requests AS previous_requests,
       cur.requests AS requests,
       prev.days AS previous_days,
       cur.days AS days
FROM weekly cur
JOIN weekly prev
  ON prev.credential_id = cur.credential_id
 AND prev.week = cur.week - INTERVAL '7 days'
WHERE prev.cost > 0
  AND cur.cost >= 2 * prev.cost
ORDER BY ratio DESC, cur.credential_id, cur.week;

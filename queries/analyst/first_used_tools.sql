-- first_used_tools: tools a credential used for the first time this week (the
-- lake's latest ISO week), among credentials already active before it — a key
-- that suddenly reaches for new tools may be in new hands. A credential first
-- seen this week is left out: everything it does is new.
WITH this_week AS (
  SELECT date_trunc('week', max(ts)) AS start FROM events
),
first_use AS (
  SELECT credential_id, tool, min(ts) AS first_used, count(*) AS uses
  FROM events
  WHERE tool IS NOT NULL
  GROUP BY 1, 2
),
credential_first AS (
  SELECT credential_id, min(ts) AS first_seen FROM events GROUP BY 1
)
SELECT f.credential_id, f.tool, f.first_used, f.uses, c.first_seen AS credential_first_seen
FROM first_use f
JOIN credential_first c ON c.credential_id = f.credential_id
CROSS JOIN this_week w
WHERE f.first_used >= w.start
  AND c.first_seen < w.start
ORDER BY f.first_used, f.credential_id, f.tool;

-- baseline_transitions: the tool-to-tool transitions of agent sessions per
-- principal (several keys of one agent share its model), with `^` for a
-- session's start and `$` for its end: the counts of a first-order Markov
-- chain that tool-chaining detection scores sessions against.
WITH calls AS (
  SELECT
    coalesce(CAST(principal AS VARCHAR), CAST(credential_id AS VARCHAR)) AS principal,
    CAST(tool AS VARCHAR) AS tool,
    lag(CAST(tool AS VARCHAR)) OVER w AS prev,
    lead(CAST(tool AS VARCHAR)) OVER w AS next
  FROM events
  WHERE date BETWEEN '{from}' AND '{to}'
    AND session_id IS NOT NULL
    AND tool IS NOT NULL
  WINDOW w AS (PARTITION BY credential_id, session_id ORDER BY ts, request_id)
),
steps AS (
  SELECT principal, coalesce(prev, '^') AS from_tool, tool AS to_tool FROM calls
  UNION ALL
  SELECT principal, tool, '$' FROM calls WHERE next IS NULL
)
SELECT principal, from_tool, to_tool, count(*) AS count
FROM steps
GROUP BY 1, 2, 3

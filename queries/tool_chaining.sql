-- tool_chaining: the tool calls of every agent session active on the
-- day(s), in order. credtrail scores each session's transitions against its
-- principal's learned Markov model (models/transitions of baseline
-- `{baseline}`) and matches known-dangerous chains (data read → external
-- send, read → shell, privilege change mid-session; see
-- models/tool_categories.toml).
SELECT
  CAST(credential_id AS VARCHAR) AS credential_id,
  coalesce(CAST(principal AS VARCHAR), CAST(credential_id AS VARCHAR)) AS principal,
  session_id,
  ts,
  request_id,
  CAST(source_ip AS VARCHAR) AS source_ip,
  CAST(tool AS VARCHAR) AS tool,
  resource,
  status
FROM events
WHERE date BETWEEN '{from}' AND '{to}'
  AND session_id IS NOT NULL
  AND tool IS NOT NULL
ORDER BY credential_id, session_id, ts, request_id

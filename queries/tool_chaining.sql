-- tool_chaining: the tool calls of every agent session active on the
-- day(s), in order. credtrail scores each session's transitions against its
-- principal's learned Markov model (models/transitions of baseline
-- `{baseline}`) and matches known-dangerous chains (data read → external
-- send, read → shell, privilege change mid-session; see
-- models/tool_categories.toml).
---
--- family = "tool_chaining"
--- inputs = ["events"]
--- events = "session_id IS NOT NULL AND tool IS NOT NULL"
--- live = { per_event = "session" }
--- scoring = "chaining"
--- severity = "medium"
--- mitre = "T1078.004 Valid Accounts: Cloud Accounts"
--- owasp = "NHI5:2025 Overprivileged NHI"
---
--- [findings.read_then_exec]
--- mitre = "T1059 Command and Scripting Interpreter"
---
--- [findings.exfiltration]
--- mitre = "T1567 Exfiltration Over Web Service"
---
--- [findings.privilege_change]
--- mitre = "T1098 Account Manipulation"
---
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

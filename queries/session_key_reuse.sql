-- session_key_reuse: a temporary AWS session key (ASIA…, kept in
-- `session_id` beside its role session name) used from a second network.
-- A session's key belongs to the one host that assumed the role; the same
-- key from elsewhere is a stolen session token. Looks back one day
-- (`{baseline}` is the day before `{from}`) so a session that started
-- yesterday is compared with where it started. One row per session and
-- network, with when the network first and last used the key, and whether
-- that was on the day(s) detected (`in_range`).
---
--- family = "session_key_reuse"
--- inputs = ["events"]
--- # Yesterday's uses are read too, but only a use of the day detected alerts.
--- events = "source = 'cloudtrail' AND session_id LIKE '%ASIA%'"
--- live = { gated = "session_key" }
--- scoring = "session_reuse"
--- severity = "high"
--- mitre = "T1550.001 Use Alternate Authentication Material: Application Access Token"
--- owasp = "NHI2:2025 Secret Leakage"
---
WITH ev AS (
  SELECT
    CAST(credential_id AS VARCHAR) AS credential_id,
    CAST(principal AS VARCHAR) AS principal,
    session_id,
    ts,
    request_id,
    CAST(source_ip AS VARCHAR) AS source_ip,
    -- A call the console's backend made for the session (user agent
    -- `aws-internal/…` from an address inside AWS, as CloudTrail records the
    -- S3 or EC2 console's own requests) has no caller network: AWS at work,
    -- like a service's call, is not a second network.
    caller_network(source_ip, user_agent) AS network
  FROM events
  WHERE date BETWEEN '{baseline}' AND '{to}'
    AND source = 'cloudtrail'
    AND session_id LIKE '%ASIA%'
),
per_network AS (
  SELECT credential_id, session_id, network, min(ts) AS first_ts, max(ts) AS last_ts, count(*) AS requests,
    max(principal) AS principal,
    array_agg(DISTINCT source_ip) AS source_ips,
    array_agg(request_id ORDER BY ts, request_id) AS evidence
  FROM ev
  WHERE network IS NOT NULL
  GROUP BY 1, 2, 3
),
shared AS (
  SELECT credential_id, session_id FROM per_network GROUP BY 1, 2 HAVING count(*) > 1
)
SELECT p.*, CAST(p.first_ts AS DATE) >= DATE '{from}' AS in_range
FROM per_network p
JOIN shared s ON s.credential_id = p.credential_id AND s.session_id = p.session_id
ORDER BY p.credential_id, p.session_id, p.first_ts

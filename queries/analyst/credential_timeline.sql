-- credential_timeline: everything one credential did in the hour around a
-- moment (an alert's window_start, say): 30 minutes either side, oldest first.
--
--   credtrail sql -f queries/analyst/credential_timeline.sql \
--     --param credential=key_J3US6E8FLSKC --param at=2026-11-05T10:49:47Z
--
-- {credential} is a credential_id; {at} an RFC 3339 time (UTC). The date
-- filter lets DataFusion skip every other day's files.
SELECT ts, request_id, principal, session_id, source_ip, action, tool, model,
       resource, status, error_code, tokens_in, tokens_out, cost_usd
FROM events
WHERE credential_id = '{credential}'
  AND date BETWEEN to_char(to_timestamp('{at}') - INTERVAL '30 minutes', '%Y-%m-%d')
               AND to_char(to_timestamp('{at}') + INTERVAL '30 minutes', '%Y-%m-%d')
  AND ts BETWEEN to_timestamp('{at}') - INTERVAL '30 minutes'
             AND to_timestamp('{at}') + INTERVAL '30 minutes'
ORDER BY ts, request_id;

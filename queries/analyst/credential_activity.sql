-- credential_activity: everything one credential did on one day, oldest first:
-- the first query of an investigation.
--
--   credtrail sql -f queries/analyst/credential_activity.sql \
--     --param credential=key_J3US6E8FLSKC --param date=2026-11-05
SELECT ts, request_id, principal, source_ip, action, tool, model, resource,
       status, error_code, tokens_in, tokens_out, cost_usd
FROM events
WHERE date = '{date}'
  AND credential_id = '{credential}'
ORDER BY ts, request_id;

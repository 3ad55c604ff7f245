-- Everything one credential did on one day, oldest first: the first query of
-- an investigation. Replace the credential and the date.
SELECT ts, request_id, principal, source_ip, action, tool, model, resource,
       status, error_code, tokens_in, tokens_out, cost_usd
FROM events
WHERE date = '2026-11-05'
  AND credential_id = 'key_REPLACE_ME'
ORDER BY ts;

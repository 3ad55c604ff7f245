-- top_errors: the 20 commonest failures per credential, status and error
-- code, with when they started and stopped. A burst of 401/403 from one key
-- is someone trying a stolen or revoked credential; 429s are a runaway loop.
SELECT credential_id,
       status,
       error_code,
       count(*) AS errors,
       min(ts) AS first_seen,
       max(ts) AS last_seen
FROM events
WHERE status >= 400 OR error_code IS NOT NULL
GROUP BY 1, 2, 3
ORDER BY errors DESC, credential_id, status, error_code NULLS LAST
LIMIT 20;

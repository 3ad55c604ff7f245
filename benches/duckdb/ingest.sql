-- Ingest as credtrail does it: typed columns, one directory per UTC day,
-- rows sorted by (credential_id, ts) for pruning, zstd Parquet.
-- credtrail also scans every record for secrets and validates each field;
-- DuckDB does neither.
COPY (
  SELECT *, strftime(ts, '%Y-%m-%d') AS date
  FROM read_json('{input}/*.jsonl', format = 'newline_delimited', columns = {
    ts: 'TIMESTAMPTZ', request_id: 'VARCHAR', credential_id: 'VARCHAR', principal: 'VARCHAR',
    session_id: 'VARCHAR', source_ip: 'VARCHAR', user_agent: 'VARCHAR', provider: 'VARCHAR',
    model: 'VARCHAR', action: 'VARCHAR', tool: 'VARCHAR', resource: 'VARCHAR', status: 'USMALLINT',
    error_code: 'VARCHAR', latency_ms: 'DOUBLE', tokens_in: 'BIGINT', tokens_out: 'BIGINT',
    cost_usd: 'DOUBLE', region: 'VARCHAR', account_id: 'VARCHAR'})
  ORDER BY credential_id, ts
) TO '{out}' (FORMAT parquet, COMPRESSION zstd, PARTITION_BY (date));

-- The plainest DuckDB ingest, for reference: read_json with auto-detected
-- types straight into one zstd Parquet file, no sort, no partitions.
COPY (SELECT * FROM read_json('{input}/*.jsonl', format = 'newline_delimited'))
TO '{out}/events.parquet' (FORMAT parquet, COMPRESSION zstd);

-- CloudTrail delivery files (`{"Records":[…]}`, gzip) into one zstd Parquet
-- file: read_json over the AWSLogs tree, one row per record (unnest), the
-- record's fields as DuckDB infers them. No mapping to the canonical schema,
-- no redaction, no sort: less work than credtrail does.
COPY (
  SELECT unnest(Records) AS record
  FROM read_json('{input}/**/*.json.gz', format = 'auto', union_by_name = true, maximum_object_size = 1073741824)
) TO '{out}' (FORMAT parquet, COMPRESSION zstd);

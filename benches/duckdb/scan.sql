-- Floor: read every column of every row of the lake's events once.
SELECT min(ts), min(request_id), min(credential_id), min(principal), min(session_id), min(source_ip),
  min(user_agent), min(provider), min(model), min(action), min(tool), min(resource), min(status),
  min(error_code), min(latency_ms), min(tokens_in), min(tokens_out), min(cost_usd), min(region),
  min(account_id), min(detail), min(source), min(source_file), min(source_record)
FROM read_parquet('{lake}/events/*/*.parquet', hive_partitioning = true);

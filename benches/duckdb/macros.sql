-- The scalar functions credtrail registers in DataFusion (src/sql.rs,
-- src/baseline.rs), as DuckDB macros, so the SQL of the detectors can be
-- written the same way. IPv4 only: the sample set has no IPv6 addresses.
CREATE MACRO ip_network(ip) AS
  CASE WHEN regexp_matches(ip, '^\d+\.\d+\.\d+\.\d+$')
       THEN regexp_extract(ip, '^(\d+\.\d+\.\d+)\.', 1) || '.0/24' END;
-- The directory of a resource, cut to scheme + authority + one segment.
CREATE MACRO resource_prefix_of(head, dirs) AS
  CASE WHEN len(dirs) = 0 THEN nullif(head, '') ELSE head || array_to_string(dirs, '/') || '/' END;
CREATE MACRO resource_prefix(r) AS
  CASE WHEN r IS NULL OR trim(r) = '' THEN NULL ELSE resource_prefix_of(
    regexp_extract(trim(r), '^[^/]*://', 0),
    list_slice(list_filter(list_slice(string_split(regexp_replace(trim(r), '^[^/]*://', ''), '/'), 1,
      len(string_split(regexp_replace(trim(r), '^[^/]*://', ''), '/')) - 1), lambda x: x <> ''), 1, 2)) END;
-- Inventory scope: empty allows everything; `=x` pins one value, `x*` is a
-- prefix, `x/` a directory (src/engine/udf.rs pattern_matches).
CREATE MACRO scope_allows(patterns, v) AS
  patterns IS NULL OR len(patterns) = 0 OR list_bool_or(list_transform(patterns, lambda p:
    CASE WHEN p LIKE '=%' THEN v = substr(p, 2)
         WHEN p LIKE '%*' THEN starts_with(v, rtrim(p, '*'))
         WHEN p LIKE '%/' THEN starts_with(v, p)
         ELSE v = p END));

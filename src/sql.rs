//! DataFusion over the lake: the tables analysts and detectors query.

use std::collections::HashMap;
use std::net::IpAddr;
use std::num::NonZeroUsize;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::array::{BooleanArray, Float64Array};
use arrow::datatypes::{DataType, Float64Type, Int64Type, TimestampMillisecondType};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::error::DataFusionError;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::logical_expr::{
    ColumnarValue, ScalarFunctionArgs, ScalarUDF, ScalarUDFImpl, Signature, Volatility, create_udf,
};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::inventory::{Inventory, InventoryErrors, Usage};
use crate::lake::{self, Lake, LakeError};
use crate::schema::{col, event_schema};

#[derive(Debug, thiserror::Error)]
pub enum SqlError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    #[error("formatting results: {0}")]
    Format(#[from] arrow::error::ArrowError),
    #[error(transparent)]
    Inventory(#[from] InventoryErrors),
}

/// How [`run_one`] renders a result.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Table,
    Csv,
    Json,
}

/// How an analyst's session is set up (the shell and `serve`).
#[derive(Debug, Clone, Default)]
pub struct SessionOptions {
    /// Bytes DataFusion may hold at once; spilling operators spill, others fail cleanly past it.
    pub memory_limit: Option<usize>,
    /// A credential inventory to register as `credentials`.
    pub inventory: Option<PathBuf>,
}

/// A session with the lake's tables registered:
/// `events` (hive-partitioned by `date`, so date filters prune whole
/// directories), `alerts`, `secret_exposures` and `quarantine`, plus the
/// `scope_allows(patterns, value)`, `robust_z(x, median, mad)` and
/// `ip_in_cidr(ip, cidr)` functions.
pub async fn context(root: &Path) -> Result<SessionContext, SqlError> {
    context_with(root, None).await
}

/// [`context`] with DataFusion's memory bounded to `memory_limit` bytes.
pub async fn context_with(root: &Path, memory_limit: Option<usize>) -> Result<SessionContext, SqlError> {
    let lake = Lake::existing(root)?;
    let config = SessionConfig::new().with_information_schema(true);
    let mut runtime = RuntimeEnvBuilder::new();
    if let Some(limit) = memory_limit {
        // Fair to spilling operators (sorts, aggregates); tracking names the top consumers in the error.
        let pool = TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::new(3).expect("3 > 0"));
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    let ctx = SessionContext::new_with_config_rt(config, runtime.build_arc()?);
    ctx.register_udf(scope_allows_udf());
    ctx.register_udf(text_udf("ip_network", crate::baseline::network_of));
    ctx.register_udf(text_udf("resource_prefix", crate::baseline::resource_prefix));
    ctx.register_udf(robust_z_udf());
    ctx.register_udf(ip_in_cidr_udf());
    let parquet = || Arc::new(ParquetFormat::default());
    let url = |dir: &str| format!("{}/", lake.path(dir).display());

    let events = ListingOptions::new(parquet())
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(col::DATE.to_string(), DataType::Utf8)]);
    ctx.register_listing_table("events", url(lake::EVENTS), events, Some(event_schema()), None).await?;

    let exposures = ListingOptions::new(parquet()).with_file_extension(".parquet");
    ctx.register_listing_table(
        "secret_exposures",
        url(lake::SECRET_EXPOSURES),
        exposures,
        Some(crate::secrets::exposures_schema()),
        None,
    )
    .await?;

    let alerts = ListingOptions::new(parquet())
        .with_file_extension(".parquet")
        .with_table_partition_cols(vec![(col::DATE.to_string(), DataType::Utf8)]);
    ctx.register_listing_table("alerts", url(lake::ALERTS), alerts, Some(crate::alert::schema()), None).await?;

    for (dir, name) in crate::baseline::TABLES {
        let models = ListingOptions::new(parquet())
            .with_file_extension(".parquet")
            .with_table_partition_cols(vec![("until".to_string(), DataType::Utf8)]);
        let url = url(&format!("{}/{dir}", crate::baseline::MODELS));
        ctx.register_listing_table(*name, url, models, Some(crate::baseline::table_schema(dir)), None).await?;
    }

    let quarantine = ListingOptions::new(Arc::new(JsonFormat::default())).with_file_extension(".jsonl");
    ctx.register_listing_table("quarantine", url(lake::QUARANTINE), quarantine, Some(quarantine_schema()), None)
        .await?;
    Ok(ctx)
}

/// Registers an inventory as the `credentials` table.
pub fn register_inventory(ctx: &SessionContext, inv: &Inventory) -> Result<(), SqlError> {
    let batch = inv.to_record_batch();
    let table = MemTable::try_new(batch.schema(), vec![vec![batch]])?;
    ctx.register_table("credentials", Arc::new(table))?;
    Ok(())
}

/// The analyst's session: [`context_with`], the inventory as `credentials`
/// when given, and every detector query as a view `detector_<name>` over the
/// whole lake. Returns notes on views that could not be made (e.g. no
/// inventory), for the shell to show rather than fail on.
pub async fn analyst_context(root: &Path, opts: &SessionOptions) -> Result<(SessionContext, Vec<String>), SqlError> {
    let ctx = context_with(root, opts.memory_limit).await?;
    if let Some(path) = &opts.inventory {
        register_inventory(&ctx, &Inventory::load(path)?)?;
    }
    // Views that compare with a baseline use the newest one in the lake.
    let latest = crate::baseline::versions(root).pop().unwrap_or_default();
    let notes = register_detector_views(&ctx, &latest).await;
    Ok((ctx, notes))
}

/// A table or view a session can query.
#[derive(Debug, Clone)]
pub struct TableInfo {
    pub catalog: String,
    pub schema: String,
    pub name: String,
    /// `TABLE`, `VIEW` or `LOCAL TEMPORARY` (as Flight SQL and JDBC name them).
    pub kind: &'static str,
    pub columns: arrow::datatypes::SchemaRef,
}

/// Every table and view of the session except DataFusion's `information_schema`, by name.
pub async fn list_tables(ctx: &SessionContext) -> Result<Vec<TableInfo>, SqlError> {
    use datafusion::datasource::TableType;
    let mut out = Vec::new();
    for catalog_name in ctx.catalog_names() {
        let Some(catalog) = ctx.catalog(&catalog_name) else { continue };
        for schema_name in catalog.schema_names() {
            if schema_name == "information_schema" {
                continue;
            }
            let Some(schema) = catalog.schema(&schema_name) else { continue };
            for name in schema.table_names() {
                let Some(table) = schema.table(&name).await? else { continue };
                let kind = match table.table_type() {
                    TableType::Base => "TABLE",
                    TableType::View => "VIEW",
                    TableType::Temporary => "LOCAL TEMPORARY",
                };
                out.push(TableInfo {
                    catalog: catalog_name.clone(),
                    schema: schema_name.clone(),
                    name,
                    kind,
                    columns: table.schema(),
                });
            }
        }
    }
    out.sort_by(|a, b| (&a.catalog, &a.schema, &a.name).cmp(&(&b.catalog, &b.schema, &b.name)));
    Ok(out)
}

/// Days that stand for "the whole lake" in a detector query's `{from}`/`{to}`.
const ALL_DAYS: (&str, &str) = ("0000-01-01", "9999-12-31");

/// Registers each built-in detector query as the view `detector_<name>`;
/// a query that cannot be planned here (it reads a table this session lacks)
/// is skipped with a note.
pub async fn register_detector_views(ctx: &SessionContext, baseline: &str) -> Vec<String> {
    let mut notes = Vec::new();
    for (name, query) in crate::detect::detector_queries() {
        let query = query.replace("{from}", ALL_DAYS.0).replace("{to}", ALL_DAYS.1).replace("{baseline}", baseline);
        let query = query.trim().trim_end_matches(';');
        let view = format!("detector_{name}");
        if let Err(e) = ctx.sql(&format!("CREATE VIEW {view} AS\n{query}")).await {
            let e = e.strip_backtrace();
            notes.push(if e.contains("credentials") && e.contains("not found") {
                format!("{view} is not available: it reads the credentials table, which --inventory FILE provides")
            } else {
                format!("{view} is not available: {e}")
            });
        }
    }
    notes
}

/// Parses a size such as `2GiB`, `512MB`, `1.5G` or `1048576` into bytes
/// (K/M/G/T are binary multiples with or without `iB`; `KB`/`MB`/… are decimal).
pub fn parse_size(text: &str) -> Result<usize, String> {
    let t = text.trim();
    let split = t.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| format!("{text:?} is not a size (e.g. 2GiB, 512MiB)"))?;
    let mult: f64 = match unit.trim().to_ascii_lowercase().as_str() {
        "" | "b" => 1.0,
        "k" | "kib" => 1024.0,
        "m" | "mib" => 1024.0 * 1024.0,
        "g" | "gib" => 1024.0 * 1024.0 * 1024.0,
        "t" | "tib" => 1024.0_f64.powi(4),
        "kb" => 1e3,
        "mb" => 1e6,
        "gb" => 1e9,
        "tb" => 1e12,
        _ => return Err(format!("{text:?}: unknown unit {unit:?} (use B, KiB, MiB, GiB, TiB)")),
    };
    let bytes = n * mult;
    if !(bytes >= 1.0 && bytes < usize::MAX as f64) {
        return Err(format!("{text:?} is not a usable size"));
    }
    Ok(bytes as usize)
}

/// `(x - median) / (1.4826 * mad)`: how many robust standard deviations `x`
/// lies from the median; `None` when the MAD is zero (no spread to compare with).
pub fn robust_z(x: f64, median: f64, mad: f64) -> Option<f64> {
    (mad != 0.0).then(|| (x - median) / (1.4826 * mad))
}

/// `robust_z(x, median, mad) -> double`, null when any input is null or mad is 0.
pub fn robust_z_udf() -> ScalarUDF {
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let f = |i: usize| arrow::compute::cast(&arrays[i], &DataType::Float64);
        let (x, m, d) = (f(0)?, f(1)?, f(2)?);
        let (x, m, d) =
            (x.as_primitive::<Float64Type>(), m.as_primitive::<Float64Type>(), d.as_primitive::<Float64Type>());
        let out: Float64Array = (0..x.len())
            .map(|i| {
                if x.is_null(i) || m.is_null(i) || d.is_null(i) {
                    return None;
                }
                robust_z(x.value(i), m.value(i), d.value(i))
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf(
        "robust_z",
        vec![DataType::Float64, DataType::Float64, DataType::Float64],
        DataType::Float64,
        Volatility::Immutable,
        fun,
    )
}

/// Whether `ip` lies in `cidr` (`10.0.0.0/8`, `2001:db8::/32`, or a bare
/// address); false when either does not parse. An IPv4 address and an
/// IPv4-mapped IPv6 one are the same address.
pub fn ip_in_cidr(ip: &str, cidr: &str) -> bool {
    let Some(ip) = crate::net::parse_ip(ip) else { return false };
    let (net, len) = match cidr.trim().split_once('/') {
        Some((a, l)) => (a, Some(l)),
        None => (cidr.trim(), None),
    };
    let Some(net) = crate::net::parse_ip(net) else { return false };
    let max = if net.is_ipv4() { 32 } else { 128 };
    let len = match len.map(str::parse::<u32>) {
        None => max,
        Some(Ok(l)) if l <= max => l,
        Some(_) => return false,
    };
    let mask = |bits: u32, width: u32| if bits == 0 { 0u128 } else { u128::MAX << (width - bits) };
    match (ip, net) {
        (IpAddr::V4(a), IpAddr::V4(n)) => {
            let m = mask(len, 32) as u32;
            u32::from(a) & m == u32::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V6(n)) => {
            let m = mask(len, 128);
            u128::from(a) & m == u128::from(n) & m
        }
        (IpAddr::V6(a), IpAddr::V4(_)) => a.to_ipv4_mapped().is_some_and(|a| ip_in_cidr(&a.to_string(), cidr)),
        (IpAddr::V4(a), IpAddr::V6(n)) => {
            let m = mask(len, 128);
            u128::from(a.to_ipv6_mapped()) & m == u128::from(n) & m
        }
    }
}

/// `ip_in_cidr(ip, cidr) -> bool`: null when either is null, false when either does not parse.
pub fn ip_in_cidr_udf() -> ScalarUDF {
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let ips = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let cidrs = arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
        let (ips, cidrs) = (ips.as_string::<i32>(), cidrs.as_string::<i32>());
        let out: BooleanArray = (0..ips.len())
            .map(|i| (!ips.is_null(i) && !cidrs.is_null(i)).then(|| ip_in_cidr(ips.value(i), cidrs.value(i))))
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf("ip_in_cidr", vec![DataType::Utf8, DataType::Utf8], DataType::Boolean, Volatility::Immutable, fun)
}

/// `scope_allows(patterns list<string>, value string) -> bool`: whether an
/// inventory scope allows a value (see [`crate::inventory::scope_allows`]).
/// Null when the value is null.
pub fn scope_allows_udf() -> ScalarUDF {
    let list = DataType::List(Arc::new(arrow::datatypes::Field::new("item", DataType::Utf8, true)));
    let fun = Arc::new(|args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let patterns = arrays[0].as_list::<i32>();
        let values = arrow::compute::cast(&arrays[1], &DataType::Utf8)?;
        let values = values.as_string::<i32>();
        let out: BooleanArray = (0..values.len())
            .map(|i| {
                if values.is_null(i) {
                    return None;
                }
                let allowed = if patterns.is_null(i) {
                    true
                } else {
                    let p = patterns.value(i);
                    let p = p.as_string::<i32>();
                    let list: Vec<&str> = p.iter().flatten().collect();
                    crate::inventory::scope_allows(&list, values.value(i))
                };
                Some(allowed)
            })
            .collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf("scope_allows", vec![list, DataType::Utf8], DataType::Boolean, Volatility::Immutable, fun)
}

/// A one-argument text function from a Rust `fn(&str) -> Option<String>`
/// (`ip_network`, `resource_prefix`); null in, null out. The lake's strings
/// are dictionary-encoded, so a dictionary argument is mapped once per
/// distinct value, not once per row: these run over every event of every
/// detection pass.
fn text_udf(name: &str, f: fn(&str) -> Option<String>) -> ScalarUDF {
    ScalarUDF::new_from_impl(TextUdf { name: name.to_string(), f, signature: Signature::any(1, Volatility::Immutable) })
}

#[derive(Debug)]
struct TextUdf {
    name: String,
    f: fn(&str) -> Option<String>,
    signature: Signature,
}

// A function is known by its name: each name is registered once.
impl PartialEq for TextUdf {
    fn eq(&self, other: &Self) -> bool {
        self.name == other.name
    }
}
impl Eq for TextUdf {}
impl std::hash::Hash for TextUdf {
    fn hash<H: std::hash::Hasher>(&self, state: &mut H) {
        self.name.hash(state);
    }
}

impl ScalarUDFImpl for TextUdf {
    fn name(&self) -> &str {
        &self.name
    }
    fn signature(&self) -> &Signature {
        &self.signature
    }
    fn return_type(&self, _: &[DataType]) -> datafusion::error::Result<DataType> {
        Ok(DataType::Utf8)
    }
    fn invoke_with_args(&self, args: ScalarFunctionArgs) -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(&args.args)?;
        let map = |a: &dyn Array| -> datafusion::error::Result<arrow::array::StringArray> {
            let values = arrow::compute::cast(a, &DataType::Utf8)?;
            Ok(values.as_string::<i32>().iter().map(|v| v.and_then(self.f)).collect())
        };
        // A filtered or joined batch keeps its whole dictionary: map per row
        // when the dictionary is the larger side.
        let out = match arrays[0].as_any_dictionary_opt() {
            Some(dict) if dict.values().len() <= dict.keys().len() => {
                let mapped = map(dict.values().as_ref())?;
                arrow::compute::take(&mapped, dict.keys(), None)?
            }
            _ => Arc::new(map(arrays[0].as_ref())?),
        };
        Ok(ColumnarValue::Array(out))
    }
}

fn quarantine_schema() -> arrow::datatypes::SchemaRef {
    use arrow::datatypes::{Field, Schema};
    Arc::new(Schema::new(vec![
        Field::new("run_id", DataType::Utf8, true),
        Field::new("source_file", DataType::Utf8, true),
        Field::new("record", DataType::Int64, true),
        Field::new("format", DataType::Utf8, true),
        Field::new("reason", DataType::Utf8, true),
        Field::new("raw", DataType::Utf8, true),
        Field::new("raw_truncated", DataType::Boolean, true),
    ]))
}

/// Runs one statement and renders its result.
pub async fn run_one(root: &Path, statement: &str, output: Output) -> Result<String, SqlError> {
    let ctx = context(root).await?;
    let batches = ctx.sql(statement).await?.collect().await?;
    render(&batches, output)
}

pub fn render(batches: &[RecordBatch], output: Output) -> Result<String, SqlError> {
    Ok(match output {
        Output::Table => format!("{}\n", arrow::util::pretty::pretty_format_batches(batches)?),
        Output::Csv => {
            let mut w = arrow::csv::WriterBuilder::new().with_header(true).build(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            String::from_utf8_lossy(&w.into_inner()).into_owned()
        }
        Output::Json => {
            let mut w = arrow::json::LineDelimitedWriter::new(Vec::new());
            for b in batches {
                w.write(b)?;
            }
            w.finish()?;
            String::from_utf8_lossy(&w.into_inner()).into_owned()
        }
    })
}

/// First and last use and event count of every credential in the lake.
pub async fn credential_usage(root: &Path) -> Result<HashMap<String, Usage>, SqlError> {
    let ctx = context(root).await?;
    let sql = "SELECT credential_id AS id, min(ts) AS first_seen, max(ts) AS last_seen, \
               count(*) AS events FROM events GROUP BY 1";
    let batches = ctx.sql(sql).await?.collect().await?;
    let mut out = HashMap::new();
    for b in &batches {
        // Cast rather than assume: DataFusion may hand back dictionary or view arrays.
        let utf8 = |i: usize| arrow::compute::cast(b.column(i), &DataType::Utf8);
        let id = utf8(0)?;
        let id = id.as_string::<i32>();
        let first = b.column(1).as_primitive::<TimestampMillisecondType>();
        let last = b.column(2).as_primitive::<TimestampMillisecondType>();
        let n = b.column(3).as_primitive::<Int64Type>();
        for i in 0..b.num_rows() {
            if id.is_null(i) {
                continue;
            }
            out.insert(
                id.value(i).to_string(),
                Usage { first_seen_ms: first.value(i), last_seen_ms: last.value(i), events: n.value(i) as u64 },
            );
        }
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes() {
        assert_eq!(parse_size("2GiB"), Ok(2 << 30));
        assert_eq!(parse_size("512MiB"), Ok(512 << 20));
        assert_eq!(parse_size("1.5g"), Ok(3 << 29));
        assert_eq!(parse_size("10MB"), Ok(10_000_000));
        assert_eq!(parse_size("4096"), Ok(4096));
        assert!(parse_size("lots").is_err());
        assert!(parse_size("2 parsecs").is_err());
        assert!(parse_size("0").is_err());
    }

    /// The dictionary fast path of `ip_network` gives what the per-row path
    /// gives, nulls and unparseable values included.
    #[tokio::test]
    async fn text_udf_maps_dictionaries_like_strings() {
        use arrow::array::{DictionaryArray, StringArray};
        use arrow::datatypes::{Field, Int32Type, Schema};
        let ips = [Some("10.1.2.3"), None, Some("10.1.2.99"), Some("junk"), Some("2001:db8:1:2::7"), Some("10.1.2.3")];
        let dict: DictionaryArray<Int32Type> = ips.iter().copied().collect();
        let plain: StringArray = ips.iter().copied().collect();
        let schema = Arc::new(Schema::new(vec![
            Field::new("d", dict.data_type().clone(), true),
            Field::new("p", DataType::Utf8, true),
        ]));
        let batch = RecordBatch::try_new(schema.clone(), vec![Arc::new(dict), Arc::new(plain)]).unwrap();
        let ctx = SessionContext::new();
        ctx.register_udf(text_udf("ip_network", crate::baseline::network_of));
        let want: Vec<Option<String>> = ips.iter().map(|v| v.and_then(crate::baseline::network_of)).collect();
        // Whole, the dictionary is mapped per value; sliced to two rows it
        // keeps all five values and is mapped per row.
        for (rows, want) in [(6, &want[..]), (2, &want[..2])] {
            let table = MemTable::try_new(schema.clone(), vec![vec![batch.slice(0, rows)]]).unwrap();
            ctx.deregister_table("t").unwrap();
            ctx.register_table("t", Arc::new(table)).unwrap();
            let out = ctx.sql("SELECT ip_network(d) AS a, ip_network(p) AS b FROM t").await.unwrap().collect().await.unwrap();
            let (a, b) = (out[0].column(0).as_string::<i32>(), out[0].column(1).as_string::<i32>());
            assert_eq!(a.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>(), want);
            assert_eq!(b.iter().map(|v| v.map(str::to_string)).collect::<Vec<_>>(), want);
        }
        assert_eq!(want[0].as_deref(), Some("10.1.2.0/24"));
        assert_eq!(want[3], None);
    }

    #[test]
    fn robust_z_is_mad_scaled() {
        assert_eq!(robust_z(10.0, 4.0, 2.0), Some(6.0 / (1.4826 * 2.0)));
        assert_eq!(robust_z(4.0, 4.0, 0.0), None);
    }

    #[test]
    fn cidr_membership() {
        assert!(ip_in_cidr("10.1.2.3", "10.0.0.0/8"));
        assert!(!ip_in_cidr("11.1.2.3", "10.0.0.0/8"));
        assert!(ip_in_cidr("192.168.1.77", "192.168.1.64/26"));
        assert!(!ip_in_cidr("192.168.1.128", "192.168.1.64/26"));
        assert!(ip_in_cidr("203.0.113.9", "203.0.113.9"));
        assert!(ip_in_cidr("8.8.8.8", "0.0.0.0/0"));
        assert!(ip_in_cidr("2001:db8::1", "2001:db8::/32"));
        assert!(!ip_in_cidr("2001:db9::1", "2001:db8::/32"));
        assert!(ip_in_cidr("::ffff:10.0.0.1", "10.0.0.0/8"));
        assert!(ip_in_cidr("10.0.0.1", "::ffff:10.0.0.0/104"));
        assert!(ip_in_cidr("035.249.253.232", "35.249.253.0/24") && ip_in_cidr("35.249.253.232", "035.249.253.0/24"));
        for (ip, cidr) in [("nonsense", "10.0.0.0/8"), ("10.0.0.1", "10.0.0.0/33"), ("10.0.0.1", "ten/8"), ("", "")] {
            assert!(!ip_in_cidr(ip, cidr), "{ip} in {cidr}");
        }
    }

    async fn one_row(sql: &str) -> RecordBatch {
        let ctx = SessionContext::new();
        ctx.register_udf(robust_z_udf());
        ctx.register_udf(ip_in_cidr_udf());
        let b = ctx.sql(sql).await.unwrap().collect().await.unwrap();
        assert_eq!(b.iter().map(|b| b.num_rows()).sum::<usize>(), 1, "{sql}");
        b.into_iter().find(|b| b.num_rows() == 1).unwrap()
    }

    #[tokio::test]
    async fn udfs_in_sql() {
        let b = one_row(
            "SELECT robust_z(10, 4, 2) AS z, robust_z(1, 1, 0) AS flat, robust_z(NULL, 1, 1) AS none, \
             ip_in_cidr('10.9.8.7', '10.0.0.0/8') AS inside, ip_in_cidr(arrow_cast('fe80::1', \
             'Dictionary(Int32, Utf8)'), '10.0.0.0/8') AS dict_outside, ip_in_cidr('x', 'y') AS junk, \
             ip_in_cidr(NULL, '10.0.0.0/8') AS null_ip",
        )
        .await;
        let f = |name: &str| b.column_by_name(name).unwrap().clone();
        let z = f("z");
        assert!((z.as_primitive::<Float64Type>().value(0) - 6.0 / 2.9652).abs() < 1e-12);
        assert!(f("flat").is_null(0) && f("none").is_null(0) && f("null_ip").is_null(0));
        assert!(f("inside").as_boolean().value(0));
        assert!(!f("dict_outside").as_boolean().value(0));
        assert!(!f("junk").as_boolean().value(0));
    }
}

//! DataFusion over the lake: the tables analysts and detectors query.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;

use arrow::array::BooleanArray;
use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{DataType, Int64Type, TimestampMillisecondType};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::error::DataFusionError;
use datafusion::logical_expr::{ColumnarValue, ScalarUDF, Volatility, create_udf};
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::inventory::{Inventory, Usage};
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
}

/// How [`run_one`] renders a result.
#[derive(Debug, Clone, Copy)]
pub enum Output {
    Table,
    Csv,
    Json,
}

/// A session with the lake's tables registered:
/// `events` (hive-partitioned by `date`, so date filters prune whole
/// directories), `alerts`, `secret_exposures` and `quarantine`, plus the
/// `scope_allows(patterns, value)` function.
pub async fn context(root: &Path) -> Result<SessionContext, SqlError> {
    let lake = Lake::existing(root)?;
    let config = SessionConfig::new().with_information_schema(true);
    let ctx = SessionContext::new_with_config(config);
    ctx.register_udf(scope_allows_udf());
    ctx.register_udf(text_udf("ip_network", crate::baseline::network_of));
    ctx.register_udf(text_udf("resource_prefix", crate::baseline::resource_prefix));
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

/// A one-argument text function from a Rust `fn(&str) -> Option<String>`;
/// null in, null out.
fn text_udf(name: &str, f: fn(&str) -> Option<String>) -> ScalarUDF {
    let fun = Arc::new(move |args: &[ColumnarValue]| -> datafusion::error::Result<ColumnarValue> {
        let arrays = ColumnarValue::values_to_arrays(args)?;
        let values = arrow::compute::cast(&arrays[0], &DataType::Utf8)?;
        let out: arrow::array::StringArray = values.as_string::<i32>().iter().map(|v| v.and_then(f)).collect();
        Ok(ColumnarValue::Array(Arc::new(out)))
    });
    create_udf(name, vec![DataType::Utf8], DataType::Utf8, Volatility::Immutable, fun)
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

//! The lake's tables as SQL sees them: one list of name, directory,
//! partitioning, file format and schema. Sessions register every table from
//! it, and the baseline writes its model tables where it says.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use datafusion::datasource::file_format::FileFormat;
use datafusion::datasource::file_format::json::JsonFormat;
use datafusion::datasource::file_format::parquet::ParquetFormat;
use datafusion::datasource::listing::ListingOptions;
use datafusion::prelude::SessionContext;

use super::EngineError;
use crate::lake::{self, Lake};
use crate::schema::{col, event_schema};

/// How a table's files are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FileKind {
    Parquet,
    /// One JSON object per line.
    Jsonl,
}

/// One table of the lake.
#[derive(Debug, Clone, Copy)]
pub struct Table {
    /// The SQL name.
    pub name: &'static str,
    /// The directory under the lake's root.
    pub dir: &'static str,
    /// The hive partition column (`date=…`, `until=…`), read as text, if any.
    pub partition: Option<&'static str>,
    pub kind: FileKind,
    /// The files' schema, without the partition column.
    pub schema: fn() -> SchemaRef,
}

/// The partition column of the model tables: the last day a baseline learned from.
pub const UNTIL: &str = "until";

pub const EVENTS: Table = Table {
    name: "events",
    dir: lake::EVENTS,
    // Date filters prune whole directories.
    partition: Some(col::DATE),
    kind: FileKind::Parquet,
    schema: event_schema,
};
pub const SECRET_EXPOSURES: Table = Table {
    name: "secret_exposures",
    dir: lake::SECRET_EXPOSURES,
    partition: None,
    kind: FileKind::Parquet,
    schema: crate::secrets::exposures_schema,
};
pub const ALERTS: Table = Table {
    name: "alerts",
    dir: lake::ALERTS,
    partition: Some(col::DATE),
    kind: FileKind::Parquet,
    schema: crate::alert::schema,
};
pub const BASELINE_CREDENTIALS: Table = model("baseline_credentials", "models/credentials", credentials_schema);
pub const BASELINE_PROFILE: Table = model("baseline_profile", "models/profile", profile_schema);
pub const BASELINE_SCOPE: Table = model("baseline_scope", "models/scope", scope_schema);
pub const BASELINE_TRANSITIONS: Table = model("baseline_transitions", "models/transitions", transitions_schema);
/// Per-day partial aggregates the baselines merge (see `crate::baseline::daily`):
/// one `date=` directory per day of events, recomputed when the day's events change.
pub const DAILY_HOURLY: Table = daily("daily_hourly", "models/daily/hourly", daily_hourly_schema);
pub const DAILY_ERROR_MINUTES: Table =
    daily("daily_error_minutes", "models/daily/error_minutes", daily_error_minutes_schema);
pub const DAILY_SCOPE: Table = daily("daily_scope", "models/daily/scope", scope_schema);
pub const DAILY_TRANSITIONS: Table = daily("daily_transitions", "models/daily/transitions", transitions_schema);
pub const DAILY_SESSIONS: Table = daily("daily_sessions", "models/daily/sessions", daily_sessions_schema);
pub const DAILY_SOURCES: Table = daily("daily_sources", "models/daily/sources", daily_sources_schema);
pub const QUARANTINE: Table = Table {
    name: "quarantine",
    dir: lake::QUARANTINE,
    partition: None,
    kind: FileKind::Jsonl,
    schema: quarantine_schema,
};

/// Every table, in the order sessions register them.
pub const TABLES: &[Table] = &[
    EVENTS,
    SECRET_EXPOSURES,
    ALERTS,
    BASELINE_CREDENTIALS,
    BASELINE_PROFILE,
    BASELINE_SCOPE,
    BASELINE_TRANSITIONS,
    DAILY_HOURLY,
    DAILY_ERROR_MINUTES,
    DAILY_SCOPE,
    DAILY_TRANSITIONS,
    DAILY_SESSIONS,
    DAILY_SOURCES,
    QUARANTINE,
];

/// A baseline model table: one `until=` directory per learned version.
const fn model(name: &'static str, dir: &'static str, schema: fn() -> SchemaRef) -> Table {
    Table { name, dir, partition: Some(UNTIL), kind: FileKind::Parquet, schema }
}

/// A per-day partial table: one `date=` directory per day of events.
const fn daily(name: &'static str, dir: &'static str, schema: fn() -> SchemaRef) -> Table {
    Table { name, dir, partition: Some(col::DATE), kind: FileKind::Parquet, schema }
}

/// The baseline's model tables.
pub fn models() -> impl Iterator<Item = &'static Table> {
    TABLES.iter().filter(|t| t.partition == Some(UNTIL))
}

impl Table {
    /// Registers the table's directory in `lake` as a listing table.
    pub async fn register(&self, ctx: &SessionContext, lake: &Lake) -> Result<(), EngineError> {
        let (format, ext): (Arc<dyn FileFormat>, &str) = match self.kind {
            FileKind::Parquet => (Arc::new(ParquetFormat::default()), ".parquet"),
            FileKind::Jsonl => (Arc::new(JsonFormat::default()), ".jsonl"),
        };
        let mut options = ListingOptions::new(format).with_file_extension(ext);
        if let Some(p) = self.partition {
            options = options.with_table_partition_cols(vec![(p.to_string(), DataType::Utf8)]);
        }
        ctx.register_listing_table(self.name, lake.table_url(self.dir), options, Some((self.schema)()), None).await?;
        Ok(())
    }
}

fn stats_fields(prefix: &str) -> Vec<Field> {
    ["median", "mad", "p95", "p99", "max", "mean"]
        .iter()
        .map(|s| Field::new(format!("{prefix}_{s}"), DataType::Float64, false))
        .collect()
}

fn credentials_schema() -> SchemaRef {
    let mut f = vec![
        Field::new("model_version", DataType::UInt32, false),
        Field::new("credential_id", DataType::Utf8, false),
        Field::new("principal", DataType::Utf8, true),
        Field::new("history_from", DataType::Utf8, false),
        Field::new("history_to", DataType::Utf8, false),
        Field::new("days_seen", DataType::UInt32, false),
        Field::new("hours", DataType::UInt32, false),
        Field::new("requests", DataType::UInt64, false),
        Field::new("cold_start", DataType::Boolean, false),
    ];
    for m in ["requests_per_hour", "tokens_per_hour", "cost_per_hour", "errors_per_hour"] {
        f.extend(stats_fields(m));
    }
    f.extend([
        Field::new("error_rate", DataType::Float64, false),
        Field::new("error_minute_max", DataType::Float64, false),
        Field::new("error_minute_p99", DataType::Float64, false),
    ]);
    Arc::new(Schema::new(f))
}

/// A schema of `(name, type)` fields that are all `nullable` or all not.
fn uniform(nullable: bool, fields: &[(&str, DataType)]) -> SchemaRef {
    Arc::new(Schema::new(fields.iter().map(|(n, t)| Field::new(*n, t.clone(), nullable)).collect::<Vec<_>>()))
}

fn profile_schema() -> SchemaRef {
    use DataType::{Float64 as F, UInt32 as U, Utf8 as S};
    let stats = ["tokens_median", "tokens_high", "cost_median", "cost_high", "requests_median"].map(|n| (n, F));
    let mut fields = vec![("credential_id", S), ("slot_kind", S), ("slot", U), ("observations", U)];
    fields.extend(stats);
    uniform(false, &fields)
}

fn transitions_schema() -> SchemaRef {
    use DataType::{UInt64, Utf8};
    uniform(false, &[("principal", Utf8), ("from_tool", Utf8), ("to_tool", Utf8), ("count", UInt64)])
}

fn scope_schema() -> SchemaRef {
    let ts = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    let text = ["credential_id", "dimension", "value"].map(|n| (n, DataType::Utf8));
    let rest = [("first_seen", ts.clone()), ("last_seen", ts), ("requests", DataType::Int64)];
    uniform(false, &[text.as_slice(), &rest].concat())
}

fn daily_hourly_schema() -> SchemaRef {
    use DataType::{Float64, Int64, Utf8};
    let hour = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    // Nullable as the query's columns are: rows without a credential are kept as the query gave them.
    let fields = [("credential_id", Utf8), ("principal", Utf8), ("hour", hour), ("requests", Int64)];
    uniform(true, &[fields.as_slice(), &[("tokens", Int64), ("cost", Float64), ("errors", Int64)]].concat())
}

fn daily_error_minutes_schema() -> SchemaRef {
    let minute = DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into()));
    uniform(true, &[("credential_id", DataType::Utf8), ("minute", minute), ("errors", DataType::Int64)])
}

/// A day's first and last tool call of each agent session, so sessions that
/// cross midnight are stitched when days merge.
fn daily_sessions_schema() -> SchemaRef {
    let text = ["credential_id", "session_id", "first_tool", "first_principal", "last_tool", "last_principal"];
    uniform(true, &text.map(|n| (n, DataType::Utf8)))
}

/// The event files a day's partials were computed from.
fn daily_sources_schema() -> SchemaRef {
    uniform(false, &[("model_version", DataType::UInt32), ("file", DataType::Utf8)])
}

fn quarantine_schema() -> SchemaRef {
    use DataType::{Boolean, Int64, Utf8};
    let text = |n| (n, Utf8);
    let fields = [text("run_id"), text("source_file"), ("record", Int64), text("format"), text("reason"), text("raw")];
    uniform(true, &[fields.as_slice(), &[("raw_truncated", Boolean), ("raw_bytes", Int64)]].concat())
}

//! The query engine: DataFusion sessions over the lake, for every layer
//! above it (baseline, detect, stream, analyst).
//!
//! - this module: the session ([`context`]; [`context_with`] and
//!   [`EngineOptions`] for a memory bound or a cluster),
//!   the one error type [`EngineError`], and [`collect`] / [`replace_table`]
//!   for running a statement and swapping in-memory tables;
//! - [`catalog`]: the lake's tables (name, directory, partitioning, schema),
//!   which every session registers;
//! - [`udf`]: the SQL functions every session has, with the Rust functions
//!   behind them;
//! - [`cluster`]: sessions planned on a Ballista cluster (`--cluster`), and
//!   the cluster's scheduler and executor processes;
//! - [`counted`]: in-memory tables whose statistics are counted once, for
//!   tables planned over again with new rows (`watch`'s live day);
//! - [`verify`]: the object store every session reads files through (the
//!   local filesystem, or the lake's own store for `s3://…`), which holds
//!   each committed file to its commit record;
//! - [`file_errors`]: the last physical optimizer rule of an in-process
//!   session, so an error reading a file (a page failing its CRC) names it.

pub mod catalog;
pub mod cluster;
pub mod counted;
pub mod file_errors;
pub mod udf;
pub mod verify;

use std::num::NonZeroUsize;
use std::path::Path;
use std::sync::Arc;

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use datafusion::datasource::MemTable;
use datafusion::error::DataFusionError;
use datafusion::execution::cache::cache_manager::CacheManagerConfig;
use datafusion::execution::memory_pool::{FairSpillPool, TrackConsumersPool};
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::RuntimeEnvBuilder;
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::object_store::ObjectStore;
use datafusion::object_store::local::LocalFileSystem;
use datafusion::prelude::{SessionConfig, SessionContext};

use crate::lake::{Lake, LakeError, Open};

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error(transparent)]
    Lake(#[from] LakeError),
    #[error(transparent)]
    DataFusion(#[from] DataFusionError),
    /// The cluster is unreachable or refused the session.
    #[error("{0}")]
    Cluster(String),
    #[error("formatting results: {0}")]
    Format(#[from] arrow::error::ArrowError),
}

/// Where and how a session runs; the default is in this process, unbounded.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct EngineOptions {
    /// Bytes DataFusion may hold at once; spilling operators spill, others fail cleanly past it.
    pub memory_limit: Option<usize>,
    /// Plan and run the session's queries on this Ballista cluster.
    pub cluster: Option<cluster::Cluster>,
}

/// A session with every table of the [`catalog`] registered and every
/// function of [`udf`]: `scope_allows(patterns, value)`,
/// `robust_z(x, median, mad)`, `ip_in_cidr(ip, cidr)`, `ip_network(ip)`,
/// `caller_network(ip, user_agent)` and `resource_prefix(resource)`.
pub async fn context(root: &Path) -> Result<SessionContext, EngineError> {
    context_with(root, &EngineOptions::default()).await
}

/// [`context`] with DataFusion's memory bounded, or planned on a cluster, as `opts` say.
pub async fn context_with(root: &Path, opts: &EngineOptions) -> Result<SessionContext, EngineError> {
    let lake = Lake::open(root, Open::Read)?;
    let config = SessionConfig::new().with_information_schema(true);
    // No listing cache: DataFusion would keep each table's file list for the
    // session's life, so a long one (the shell, `serve`) would miss every
    // file committed after its first query and open files a commit replaced.
    let mut runtime =
        RuntimeEnvBuilder::new().with_cache_manager(CacheManagerConfig::default().with_list_files_cache_limit(0));
    if let Some(limit) = opts.memory_limit {
        // Fair to spilling operators (sorts, aggregates); tracking names the top consumers in the error.
        let pool = TrackConsumersPool::new(FairSpillPool::new(limit), NonZeroUsize::new(3).expect("3 > 0"));
        runtime = runtime.with_memory_pool(Arc::new(pool));
    }
    let mut state =
        SessionStateBuilder::new().with_config(config).with_runtime_env(runtime.build_arc()?).with_default_features();
    if opts.cluster.is_none() {
        state = state.with_physical_optimizer_rule(Arc::new(file_errors::NameFiles));
    }
    let mut ctx = SessionContext::new_with_state(state.build());
    let (url, store) = lake_store(&lake)?;
    ctx.register_object_store(url.as_ref(), store);
    udf::register_all(&ctx);
    if let Some(c) = &opts.cluster {
        ctx = cluster::connect(c, ctx.state(), &lake).await?;
    }
    for table in catalog::TABLES {
        table.register(&ctx, &lake).await?;
    }
    Ok(ctx)
}

/// The store a session reads `lake`'s files through, and the URL it serves:
/// the lake's own store for `s3://…`, the local filesystem otherwise; either
/// under the verifying store. A cluster's scheduler and executors register
/// the same one ([`cluster`]).
pub fn lake_store(lake: &Lake) -> Result<(ObjectStoreUrl, Arc<dyn ObjectStore>), EngineError> {
    let (inner, url): (Arc<dyn ObjectStore>, ObjectStoreUrl) = match lake.remote() {
        Some(r) => (r.store.clone(), ObjectStoreUrl::parse(format!("s3://{}", r.url.host_str().unwrap_or_default()))?),
        None => (Arc::new(LocalFileSystem::new()), ObjectStoreUrl::local_filesystem()),
    };
    Ok((url, Arc::new(verify::VerifiedStore::new(inner, lake.file_checks()?))))
}

/// SQL that several queries share, by placeholder: `{billed_events}` is the
/// common table expressions of `queries/fragments/billed_events.sql`.
const FRAGMENTS: &[(&str, &str)] = &[("{billed_events}", include_str!("../../queries/fragments/billed_events.sql"))];

/// `sql` with each fragment placeholder replaced by its text; expand before
/// substituting a query's own placeholders (`{from}`, `{to}`, …), which
/// fragments use too.
pub fn expand_fragments(sql: &str) -> String {
    FRAGMENTS.iter().fold(sql.to_string(), |sql, (name, text)| sql.replace(name, text.trim_end()))
}

/// Runs one statement to its batches. A statement that lost a file to a
/// commit that replaced it (a watcher merging small files, `detect` run
/// again) between listing and reading it runs again, over a new listing.
pub async fn collect(ctx: &SessionContext, statement: &str) -> Result<Vec<RecordBatch>, EngineError> {
    let mut tries = 1;
    loop {
        match ctx.sql(statement).await?.collect().await {
            Err(e) if tries < 3 && lost_a_file(&e) => {
                tracing::debug!(error = %e, "a file was replaced while the statement ran; running it again");
                tries += 1;
            }
            r => return Ok(r?),
        }
    }
}

/// Whether `e` is a file gone between a query's listing and its reading.
fn lost_a_file(e: &DataFusionError) -> bool {
    use datafusion::object_store::Error as Store;
    let store = |e: &Store| matches!(e, Store::NotFound { .. });
    let io = |e: &std::io::Error| e.kind() == std::io::ErrorKind::NotFound;
    let boxed = |e: &(dyn std::error::Error + Send + Sync + 'static)| {
        e.downcast_ref::<Store>().is_some_and(store) || e.downcast_ref::<std::io::Error>().is_some_and(io)
    };
    match e.find_root() {
        DataFusionError::ObjectStore(e) => store(e),
        DataFusionError::IoError(e) => io(e),
        DataFusionError::External(e) => boxed(e.as_ref()),
        DataFusionError::ParquetError(e) => match e.as_ref() {
            parquet::errors::ParquetError::External(e) => boxed(e.as_ref()),
            _ => false,
        },
        _ => false,
    }
}

/// Registers `batches` as the in-memory table `name`, replacing any table of that name.
pub fn replace_table(
    ctx: &SessionContext,
    name: &str,
    schema: SchemaRef,
    batches: Vec<RecordBatch>,
) -> Result<(), EngineError> {
    let table = MemTable::try_new(schema, vec![batches])?;
    ctx.deregister_table(name)?;
    ctx.register_table(name, Arc::new(table))?;
    Ok(())
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::lake::write::tests::batch;
    use crate::lake::{LakeWriter, Open as LakeOpen};
    use arrow::array::AsArray;

    /// Commits `batches` as one events file, replacing `replaces`.
    fn commit(lake: &Lake, batches: &[RecordBatch], replaces: Vec<String>) {
        let txn = lake.begin().unwrap();
        let w = LakeWriter::new(&txn);
        for b in batches {
            w.push(b, &[], &[]).unwrap();
        }
        w.finish().unwrap();
        txn.replace(replaces);
        txn.commit(vec![]).unwrap();
    }

    fn count(batches: &[RecordBatch]) -> i64 {
        batches[0].column(0).as_primitive::<arrow::datatypes::Int64Type>().value(0)
    }

    /// A query planned over two files that a commit then replaces with one
    /// (as merging small files does): reading fails as a lost file, and
    /// `collect` runs it again over the new listing. A session lists again
    /// at every query.
    #[tokio::test]
    async fn a_file_replaced_between_listing_and_reading_is_a_lost_file_and_collect_runs_again() {
        let dir = tempfile::tempdir().unwrap();
        let lake = Lake::open(dir.path(), LakeOpen::Write).unwrap();
        // Files larger than DataFusion's footer read (512 KiB), which holds a small file whole.
        let ids: Vec<String> =
            (0..120_000u64).map(|i| format!("{:032x}", xxhash_rust::xxh3::xxh3_128(&i.to_le_bytes()))).collect();
        let halves: Vec<RecordBatch> =
            ids.chunks(60_000).map(|h| batch(&h.iter().map(|k| (k.as_str(), 1)).collect::<Vec<_>>())).collect();
        for h in &halves {
            commit(&lake, std::slice::from_ref(h), Vec::new());
        }
        let old = crate::lake::committed_files(&lake, "events/date=1970-01-01", "parquet").unwrap();
        assert!(old.iter().all(|f| std::fs::metadata(lake.path(f)).unwrap().len() > 512 * 1024));
        let ctx = context(dir.path()).await.unwrap();
        let sql = "SELECT count(DISTINCT credential_id) AS n FROM events";
        let planned = ctx.sql(sql).await.unwrap().create_physical_plan().await.unwrap();
        commit(&lake, &halves, old);
        let err = datafusion::physical_plan::collect(planned, ctx.task_ctx()).await.unwrap_err();
        assert!(lost_a_file(&err), "{err:?}");
        assert_eq!(count(&collect(&ctx, sql).await.unwrap()), 120_000);
        commit(&lake, &[batch(&[("c", 3)])], Vec::new());
        assert_eq!(count(&collect(&ctx, sql).await.unwrap()), 120_001);
    }

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
}

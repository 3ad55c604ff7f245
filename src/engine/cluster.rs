//! Sessions whose queries run on a Ballista cluster, and the scheduler and
//! executor processes of such a cluster.
//!
//! - [`Cluster`]: where queries go (`df://HOST:PORT`, or `standalone` for a
//!   scheduler and executor inside this process). A session asks for one in
//!   its [`super::EngineOptions`]; [`super::context_with`] then hands its
//!   planning to it ([`connect`]). Without one no code here runs.
//! - [`run_scheduler`] / [`run_executor`]: `credtrail cluster scheduler` and
//!   `executor`. Both know credtrail's SQL functions ([`super::udf`]) and
//!   [`LakeCodec`], so the cluster plans and runs the same SQL as a local
//!   session.
//!
//! What ships: the lake's tables are listing tables, which Ballista sends by
//! path or URL (every executor must reach the lake at the same path, or the
//! same `s3://` lake with its own AWS environment); in-memory tables (the
//! inventory as `credentials`) travel inside the plan as Arrow IPC
//! ([`LakeCodec`]). A session's configuration names its lake
//! ([`LakeOptions`], `credtrail.lake`), and the scheduler (which lists the
//! files) and the executors (which read them) register that lake's store as
//! the client does ([`super::lake_store`]): S3 or local, verified against
//! the commit records. A job fails as a whole: the client gets every row or
//! an error, never a part presented as the whole.

use std::collections::HashMap;
use std::net::{SocketAddr, ToSocketAddrs};
use std::path::Path;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::Duration;

use arrow::ipc::reader::StreamReader;
use arrow::ipc::writer::StreamWriter;
use ballista_core::extension::{SessionConfigExt, SessionStateExt};
use ballista_core::registry::BallistaFunctionRegistry;
use ballista_core::serde::BallistaLogicalExtensionCodec;
use ballista_core::utils::default_session_builder;
use datafusion::catalog::TableProvider;
use datafusion::common::TableReference;
use datafusion::common::config::{ConfigEntry, ConfigExtension, ExtensionOptions};
use datafusion::datasource::MemTable;
use datafusion::datasource::file_format::FileFormatFactory;
use datafusion::error::{DataFusionError, Result};
use datafusion::execution::TaskContext;
use datafusion::execution::context::SessionState;
use datafusion::execution::object_store::ObjectStoreUrl;
use datafusion::execution::runtime_env::{RuntimeEnv, RuntimeEnvBuilder};
use datafusion::execution::session_state::SessionStateBuilder;
use datafusion::logical_expr::{AggregateUDF, Extension, LogicalPlan, ScalarUDF, WindowUDF};
use datafusion::prelude::{SessionConfig, SessionContext};
use datafusion_proto::logical_plan::LogicalExtensionCodec;
use object_store::ObjectStore;

use super::EngineError;
use crate::lake::check::Hasher;
use crate::lake::{COMMITS, Lake, Open};

/// Where a session's queries run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Cluster {
    /// A Ballista scheduler at `host:port` (`df://host:port` on the command line).
    Remote { host: String, port: u16 },
    /// A scheduler and one executor started inside this process, once.
    Standalone,
}

impl Cluster {
    /// Parses `df://HOST:PORT` or `standalone`.
    pub fn parse(text: &str) -> Result<Cluster, String> {
        if text == "standalone" {
            return Ok(Cluster::Standalone);
        }
        let hint = "use df://HOST:PORT (the address `credtrail cluster scheduler` listens on) or `standalone`";
        let Some(rest) = text.strip_prefix("df://") else {
            return Err(format!("{text:?} is not a cluster address; {hint}"));
        };
        let (host, port) =
            rest.trim_end_matches('/').rsplit_once(':').ok_or_else(|| format!("{text:?} has no port; {hint}"))?;
        let port = port.parse::<u16>().map_err(|_| format!("{text:?}: {port:?} is not a port; {hint}"))?;
        if host.is_empty() || host.contains(['/', '@', '?', '#']) {
            return Err(format!("{text:?} has no usable host; {hint}"));
        }
        Ok(Cluster::Remote { host: host.trim_start_matches('[').trim_end_matches(']').to_string(), port })
    }
}

impl std::fmt::Display for Cluster {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Cluster::Remote { host, port } => write!(f, "df://{host}:{port}"),
            Cluster::Standalone => f.write_str("standalone"),
        }
    }
}

/// How long a client waits to reach the scheduler before giving up.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// credtrail's settings a cluster session carries to the scheduler and
/// executors: `credtrail.lake`, the lake its queries read (an s3:// URL or an
/// absolute path), and `credtrail.commits`, which commit records the client
/// saw (a hash of their names). Written out rather than by DataFusion's
/// macro, whose entries leave out the prefix, so the scheduler could not set them.
#[derive(Debug, Clone, Default)]
pub struct LakeOptions {
    pub lake: String,
    pub commits: String,
}

impl ConfigExtension for LakeOptions {
    const PREFIX: &'static str = "credtrail";
}

impl ExtensionOptions for LakeOptions {
    fn as_any(&self) -> &dyn std::any::Any {
        self
    }

    fn as_any_mut(&mut self) -> &mut dyn std::any::Any {
        self
    }

    fn cloned(&self) -> Box<dyn ExtensionOptions> {
        Box::new(self.clone())
    }

    fn set(&mut self, key: &str, value: &str) -> Result<()> {
        let field = match key {
            "lake" => &mut self.lake,
            "commits" => &mut self.commits,
            _ => return Err(DataFusionError::Configuration(format!("credtrail.{key} is not a setting"))),
        };
        *field = value.to_string();
        Ok(())
    }

    fn entries(&self) -> Vec<ConfigEntry> {
        let entry = |name: &str, value: &String, description| ConfigEntry {
            key: format!("{}.{name}", Self::PREFIX),
            value: Some(value.clone()).filter(|v| !v.is_empty()),
            description,
        };
        vec![
            entry("lake", &self.lake, "the lake the session reads"),
            entry("commits", &self.commits, "the lake's commit records the client saw"),
        ]
    }
}

/// The configuration a scheduler or executor starts each session from: it
/// knows [`LakeOptions`], so a client's settings are kept, not dropped.
fn cluster_config() -> SessionConfig {
    SessionConfig::new_with_ballista().with_option_extension(LakeOptions::default())
}

/// Registers the store of the lake `config` names (if any) in `runtime`:
/// what a scheduler's or executor's session reads the lake's files through.
fn register_lake(config: &SessionConfig, runtime: &RuntimeEnv) -> Result<()> {
    let Some(options) = config.options().extensions.get::<LakeOptions>().filter(|o| !o.lake.is_empty()) else {
        return Ok(());
    };
    let (url, store) = lake_store(options).map_err(|e| DataFusionError::External(Box::new(e)))?;
    runtime.register_object_store(url.as_ref(), store);
    Ok(())
}

/// The verified store of the lake `options` names, built (reading every
/// commit record) once per lake and client view of its commits: every task
/// an executor decodes asks for it. Opened later than the client's view, it
/// knows more records than the client's own store, never fewer.
fn lake_store(options: &LakeOptions) -> Result<(ObjectStoreUrl, Arc<dyn ObjectStore>), EngineError> {
    type Entry = (String, ObjectStoreUrl, Arc<dyn ObjectStore>);
    // One entry per lake, its latest view: a long-lived executor keeps no more.
    static STORES: LazyLock<Mutex<HashMap<String, Entry>>> = LazyLock::new(Mutex::default);
    if let Some((commits, url, store)) = STORES.lock().expect("lake stores lock").get(&options.lake)
        && *commits == options.commits
    {
        return Ok((url.clone(), Arc::clone(store)));
    }
    let lake = Lake::open(Path::new(&options.lake), Open::Read)?;
    let (url, store) = super::lake_store(&lake)?;
    let entry = (options.commits.clone(), url.clone(), Arc::clone(&store));
    STORES.lock().expect("lake stores lock").insert(options.lake.clone(), entry);
    Ok((url, store))
}

/// The lake's settings for a cluster session: the name the scheduler and
/// executors open it by (a URL, or an absolute path: they need not share
/// the client's working directory), and a hash of its commit records' names.
fn lake_options(lake: &Lake) -> Result<LakeOptions, EngineError> {
    let name = match lake.remote() {
        Some(r) => r.url.to_string(),
        None => std::path::absolute(lake.root())
            .map_err(|e| EngineError::Cluster(format!("{}: {e}", lake.root().display())))?
            .to_string_lossy()
            .into_owned(),
    };
    let mut h = Hasher::default();
    for (rel, _) in lake.list(COMMITS, "json")? {
        h.update(rel.as_bytes());
        h.update(b"\n");
    }
    Ok(LakeOptions { lake: name, commits: h.hex() })
}

/// `state` (with credtrail's functions and object stores, over `lake`)
/// turned into a session whose queries are planned and run by `cluster`.
pub async fn connect(cluster: &Cluster, state: SessionState, lake: &Lake) -> Result<SessionContext, EngineError> {
    let config = state
        .config()
        .clone()
        .with_option_extension(lake_options(lake)?)
        .upgrade_for_ballista()
        .with_ballista_logical_extension_codec(Arc::new(LakeCodec::default()))
        // Ballista 55's adaptive planner re-plans the baseline's billed-events
        // join without end (new stages, no progress); the static planner runs it.
        .with_ballista_adaptive_query_planner(false);
    let state = SessionStateBuilder::new_from_existing(state).with_config(config).build();
    let url = match cluster {
        Cluster::Remote { host, port } => {
            reachable(host, *port).await?;
            format!("http://{host}:{port}")
        }
        Cluster::Standalone => standalone(&state).await?,
    };
    let ctx = SessionContext::new_with_state(state.upgrade_for_ballista(url)?);
    // The upgrade replaces the session's functions with Ballista's list.
    super::udf::register_all(&ctx);
    Ok(ctx)
}

/// Fails with one clear line when nothing answers at `host:port`: Ballista
/// itself would only fail at the first query, with a transport error.
async fn reachable(host: &str, port: u16) -> Result<(), EngineError> {
    let addr = format!("df://{host}:{port}");
    let unreachable = |why: String| {
        EngineError::Cluster(format!(
            "cannot reach the Ballista scheduler at {addr}: {why}; start one with `credtrail cluster scheduler` or fix --cluster"
        ))
    };
    let target = (host.to_string(), port);
    let connect = tokio::net::TcpStream::connect(target);
    match tokio::time::timeout(CONNECT_TIMEOUT, connect).await {
        Ok(Ok(_)) => Ok(()),
        Ok(Err(e)) => Err(unreachable(e.to_string())),
        Err(_) => Err(unreachable(format!("no answer within {}s", CONNECT_TIMEOUT.as_secs()))),
    }
}

/// The in-process scheduler's URL, started (with one executor) on first use.
static STANDALONE: tokio::sync::OnceCell<String> = tokio::sync::OnceCell::const_new();

async fn standalone(state: &SessionState) -> Result<String, EngineError> {
    let start = async {
        // A fresh state per job, as a scheduler process makes: one shared state
        // would keep its cached file listings, and miss the baselines a
        // detect run writes between its queries.
        let codec = ballista_core::serde::BallistaCodec::new(
            Arc::new(LakeCodec::default()),
            state.config().ballista_physical_extension_codec(),
        );
        let config = state.config().clone();
        let addr = ballista_scheduler::standalone::new_standalone_scheduler_with_builder(
            Arc::new(state_with_functions),
            Arc::new(move || config.clone()),
            codec,
        )
        .await
        .map_err(ballista)?;
        let url = format!("http://localhost:{}", addr.port());
        let scheduler = loop {
            // The scheduler's server task is starting; it answers within moments.
            match ballista_core::serde::protobuf::scheduler_grpc_client::SchedulerGrpcClient::connect(url.clone()).await
            {
                Ok(s) => break s,
                Err(_) => tokio::time::sleep(Duration::from_millis(50)).await,
            }
        };
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        ballista_executor::new_standalone_executor_from_state(scheduler, cores, state).await.map_err(ballista)?;
        Ok::<_, EngineError>(url)
    };
    Ok(STANDALONE.get_or_try_init(|| start).await?.clone())
}

fn ballista(e: ballista_core::error::BallistaError) -> EngineError {
    EngineError::Cluster(e.to_string())
}

/// A session state with credtrail's SQL functions: what the scheduler plans
/// with and the executors' function registry.
/// With the store of the lake the configuration names, if any.
fn state_with_functions(config: SessionConfig) -> Result<SessionState> {
    let state = default_session_builder(config)?;
    register_lake(state.config(), state.runtime_env())?;
    let ctx = SessionContext::new_with_state(state);
    super::udf::register_all(&ctx);
    Ok(ctx.state())
}

/// `credtrail cluster scheduler`: what it listens on and how it treats executors.
#[derive(Debug, Clone)]
pub struct SchedulerOptions {
    pub bind: SocketAddr,
    /// An executor silent this long is dead and its tasks run elsewhere.
    pub executor_timeout: Duration,
}

/// Runs a scheduler until `shutdown` resolves.
pub async fn run_scheduler(opts: SchedulerOptions, shutdown: impl Future<Output = ()>) -> Result<(), EngineError> {
    use ballista_scheduler::cluster::BallistaCluster;
    use ballista_scheduler::config::SchedulerConfig;

    let config = SchedulerConfig {
        bind_host: opts.bind.ip().to_string(),
        bind_port: opts.bind.port(),
        external_host: opts.bind.ip().to_string(),
        executor_timeout_seconds: opts.executor_timeout.as_secs().max(1),
        // Checks for dead executors at a fraction of the timeout, so one is noticed soon after it.
        expire_dead_executor_interval_seconds: (opts.executor_timeout.as_secs() / 3).clamp(1, 15),
        override_session_builder: Some(Arc::new(state_with_functions)),
        override_config_producer: Some(Arc::new(cluster_config)),
        override_logical_codec: Some(Arc::new(LakeCodec::default())),
        ..Default::default()
    };
    let cluster = BallistaCluster::new_from_config(&config).await.map_err(ballista)?;
    let server = ballista_scheduler::scheduler_process::start_server(cluster, opts.bind, Arc::new(config));
    tokio::select! {
        r = server => r.map_err(ballista),
        () = shutdown => Ok(()),
    }
}

/// `credtrail cluster executor`: where it listens, its scheduler, its share of the work.
#[derive(Debug, Clone)]
pub struct ExecutorOptions {
    pub scheduler: (String, u16),
    /// The Arrow Flight address other executors and clients fetch results from.
    pub bind: SocketAddr,
    /// The gRPC port the scheduler pushes tasks to (on the same host as `bind`).
    pub grpc_port: u16,
    pub concurrent_tasks: usize,
    pub heartbeat: Duration,
    /// Where shuffle files go; a temporary directory when absent.
    pub work_dir: Option<String>,
}

/// Runs an executor until SIGTERM or Ctrl-C (Ballista's own handlers, which
/// deregister it from the scheduler first).
pub async fn run_executor(opts: ExecutorOptions) -> Result<(), EngineError> {
    use ballista_executor::executor_process::{ExecutorProcessConfig, start_executor_process};

    let functions = state_with_functions(SessionConfig::new_with_ballista())?;
    // Ballista's own runtime, plus the store of each task's lake.
    let work_dir = opts.work_dir.clone();
    let runtime = move |config: &SessionConfig| {
        let mut runtime = RuntimeEnvBuilder::new();
        if let Some(dir) = &work_dir {
            runtime = runtime.with_temp_file_path(dir);
        }
        let runtime = runtime.build_arc()?;
        register_lake(config, &runtime)?;
        Ok(runtime)
    };
    let config = ExecutorProcessConfig {
        bind_host: opts.bind.ip().to_string(),
        external_host: Some(opts.bind.ip().to_string()),
        port: opts.bind.port(),
        grpc_port: opts.grpc_port,
        scheduler_host: opts.scheduler.0,
        scheduler_port: opts.scheduler.1,
        vcores: opts.concurrent_tasks,
        executor_heartbeat_interval_seconds: opts.heartbeat.as_secs().max(1),
        work_dir: opts.work_dir,
        override_function_registry: Some(Arc::new(BallistaFunctionRegistry::from(&functions))),
        override_runtime_producer: Some(Arc::new(runtime)),
        override_config_producer: Some(Arc::new(cluster_config)),
        override_logical_codec: Some(Arc::new(LakeCodec::default())),
        ..Default::default()
    };
    start_executor_process(Arc::new(config)).await.map_err(ballista)
}

/// Resolves `HOST:PORT` (a name or an address) to one socket address.
pub fn resolve(text: &str) -> Result<SocketAddr, String> {
    text.to_socket_addrs()
        .map_err(|e| format!("{text:?} is not HOST:PORT: {e}"))?
        .next()
        .ok_or_else(|| format!("{text:?} resolves to no address"))
}

/// Ballista's logical codec, plus in-memory tables: a [`MemTable`] is sent
/// as its batches in Arrow IPC, so a query joining the inventory runs on
/// the cluster like any other.
#[derive(Debug, Default)]
pub struct LakeCodec {
    inner: BallistaLogicalExtensionCodec,
}

impl LogicalExtensionCodec for LakeCodec {
    fn try_decode(&self, buf: &[u8], inputs: &[LogicalPlan], ctx: &TaskContext) -> Result<Extension> {
        self.inner.try_decode(buf, inputs, ctx)
    }

    fn try_encode(&self, node: &Extension, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode(node, buf)
    }

    fn try_decode_table_provider(
        &self,
        buf: &[u8],
        _table_ref: &TableReference,
        schema: arrow::datatypes::SchemaRef,
        _ctx: &TaskContext,
    ) -> Result<Arc<dyn TableProvider>> {
        let reader = StreamReader::try_new(buf, None)?;
        let batches = reader.collect::<Result<Vec<_>, _>>()?;
        Ok(Arc::new(MemTable::try_new(schema, vec![batches])?))
    }

    fn try_encode_table_provider(
        &self,
        table_ref: &TableReference,
        node: Arc<dyn TableProvider>,
        buf: &mut Vec<u8>,
    ) -> Result<()> {
        let Some(table) = node.downcast_ref::<MemTable>() else {
            return Err(DataFusionError::NotImplemented(format!(
                "table {table_ref} cannot be sent to a cluster; only the lake's tables and in-memory tables can"
            )));
        };
        let mut writer = StreamWriter::try_new(buf, &table.schema())?;
        for partition in &table.batches {
            // A poisoned lock means a writer panicked mid-insert: refuse rather than ship half a table.
            let batches = partition
                .try_read()
                .map_err(|_| DataFusionError::Execution(format!("table {table_ref} is being written to")))?;
            for b in batches.iter() {
                writer.write(b)?;
            }
        }
        writer.finish()?;
        Ok(())
    }

    fn try_decode_file_format(&self, buf: &[u8], ctx: &TaskContext) -> Result<Arc<dyn FileFormatFactory>> {
        self.inner.try_decode_file_format(buf, ctx)
    }

    fn try_encode_file_format(&self, buf: &mut Vec<u8>, node: Arc<dyn FileFormatFactory>) -> Result<()> {
        self.inner.try_encode_file_format(buf, node)
    }

    fn try_decode_udf(&self, name: &str, buf: &[u8]) -> Result<Arc<ScalarUDF>> {
        self.inner.try_decode_udf(name, buf)
    }

    fn try_encode_udf(&self, node: &ScalarUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udf(node, buf)
    }

    fn try_decode_udaf(&self, name: &str, buf: &[u8]) -> Result<Arc<AggregateUDF>> {
        self.inner.try_decode_udaf(name, buf)
    }

    fn try_encode_udaf(&self, node: &AggregateUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udaf(node, buf)
    }

    fn try_decode_udwf(&self, name: &str, buf: &[u8]) -> Result<Arc<WindowUDF>> {
        self.inner.try_decode_udwf(name, buf)
    }

    fn try_encode_udwf(&self, node: &WindowUDF, buf: &mut Vec<u8>) -> Result<()> {
        self.inner.try_encode_udwf(node, buf)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cluster_addresses() {
        assert_eq!(Cluster::parse("df://10.0.0.5:50050"), Ok(Cluster::Remote { host: "10.0.0.5".into(), port: 50050 }));
        assert_eq!(Cluster::parse("df://sched.local:1/"), Ok(Cluster::Remote { host: "sched.local".into(), port: 1 }));
        assert_eq!(Cluster::parse("standalone"), Ok(Cluster::Standalone));
        assert_eq!(Cluster::parse("df://[::1]:50050").map(|c| c.to_string()), Ok("df://::1:50050".into()));
        for bad in ["10.0.0.5:50050", "df://host", "df://host:99999", "df://:50050", "http://h:1", "df://u@h:1"] {
            assert!(Cluster::parse(bad).is_err(), "{bad} accepted");
        }
    }

    #[tokio::test]
    async fn in_memory_tables_travel_whole() {
        use arrow::array::{ArrayRef, StringArray};
        use arrow::datatypes::{DataType, Field, Schema};
        let schema = Arc::new(Schema::new(vec![Field::new("id", DataType::Utf8, false)]));
        let rows = |v: &[&str]| {
            let col: ArrayRef = Arc::new(StringArray::from(v.to_vec()));
            arrow::array::RecordBatch::try_new(Arc::clone(&schema), vec![col]).unwrap()
        };
        let table = MemTable::try_new(Arc::clone(&schema), vec![vec![rows(&["a", "b"])], vec![rows(&["c"])]]).unwrap();
        let codec = LakeCodec::default();
        let mut buf = Vec::new();
        let name = TableReference::bare("credentials");
        codec.try_encode_table_provider(&name, Arc::new(table), &mut buf).unwrap();
        let ctx = SessionContext::new();
        let back = codec.try_decode_table_provider(&buf, &name, Arc::clone(&schema), &ctx.task_ctx()).unwrap();
        ctx.register_table("t", back).unwrap();
        let got = ctx.sql("SELECT string_agg(id, ',' ORDER BY id) AS s FROM t").await.unwrap().collect().await.unwrap();
        let s = crate::columns::strings(&got[0], "t", "s").unwrap();
        assert_eq!(s, vec![Some("a,b,c".to_string())]);
    }

    #[test]
    fn the_lake_settings_reach_a_scheduler_or_executor_session() {
        let lake = LakeOptions { lake: "s3://bucket/lake".into(), commits: "0123abcd".into() };
        let client = SessionConfig::new_with_ballista().with_option_extension(lake);
        // What Ballista sends with each job, set on the far side's own configuration.
        let mut far = cluster_config();
        for e in client.options().entries() {
            if let Some(v) = e.value {
                let _ = far.options_mut().set(&e.key, &v);
            }
        }
        let got = far.options().extensions.get::<LakeOptions>().unwrap();
        assert_eq!((got.lake.as_str(), got.commits.as_str()), ("s3://bucket/lake", "0123abcd"));
        assert!(far.options_mut().set("credtrail.nope", "x").is_err());
    }
}

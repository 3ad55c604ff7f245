//! `credtrail serve`: the analyst's tables over Arrow Flight SQL, so BI tools
//! and ADBC/JDBC clients query the lake directly.
//!
//! Statement and prepared-statement handles are the SQL text itself: the
//! server keeps no per-query state, and a ticket can be fetched again. It is
//! read-only (no DDL, INSERT, or COPY unless `--allow-files`).
//!
//! Who may connect: loopback only unless `--allow-remote`, which needs
//! tokens ([`auth`]) and TLS (or `--insecure`). Queries run as tasks of one
//! runtime the server starts once ([`QueryRuntime`]), apart from the one
//! serving gRPC, so a heavy one cannot starve the gRPC side (new clients,
//! signals) or other queries. Each stops when its client goes away, at its
//! deadline, or when the server shuts down.

mod auth;

pub use auth::{TOKEN_ENV, TokenError, Tokens};

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use arrow::array::RecordBatch;
use arrow::datatypes::{DataType, Field, Schema, SchemaRef};
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::{FlightService, FlightServiceServer};
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::FlightSqlService;
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest, ActionCreatePreparedStatementResult,
    CommandGetCatalogs, CommandGetDbSchemas, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandStatementQuery, ProstMessageExt, SqlInfo, TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse, IpcMessage,
    SchemaAsIpc, Ticket,
};
use datafusion::error::DataFusionError;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tokio::sync::{OwnedSemaphorePermit, Semaphore, mpsc, watch};
use tonic::metadata::MetadataMap;
use tonic::transport::{Identity, ServerTlsConfig};
use tonic::{Request, Response, Status, Streaming};

use crate::analyst::{self, AnalystError, Permit, SessionOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Analyst(#[from] AnalystError),
    #[error("{0:?} is not a host:port address")]
    BadAddress(String),
    #[error(
        "{0} is not a loopback address: anyone who reaches it could query the lake; pass --allow-remote \
         (with --tokens-file and --tls-cert/--tls-key) to listen there"
    )]
    NotLoopback(SocketAddr),
    #[error(
        "--allow-remote needs authentication: give tokens with --tokens-file FILE or the {TOKEN_ENV} \
         environment variable"
    )]
    RemoteWithoutTokens,
    #[error(
        "--allow-remote needs TLS, or tokens and results cross the network in clear: pass --tls-cert FILE \
         --tls-key FILE, or --insecure if a proxy in front of the server terminates TLS"
    )]
    RemoteWithoutTls,
    #[error("reading {flag} {}: {error}", path.display())]
    TlsFile { flag: &'static str, path: PathBuf, error: std::io::Error },
    #[error("--tls-cert/--tls-key: {0} (both must be PEM: the certificate chain and its private key)")]
    Tls(tonic::transport::Error),
    #[error("listening on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
    #[error("starting the threads queries run on: {0}")]
    QueryThreads(std::io::Error),
}

/// A certificate chain and its private key, both PEM files.
#[derive(Debug, Clone)]
pub struct TlsFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub lake: PathBuf,
    pub session: SessionOptions,
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Permit a non-loopback address (with tokens, and TLS unless `insecure`).
    pub allow_remote: bool,
    /// Bearer tokens; when there are any, every call needs one.
    pub tokens: Tokens,
    pub tls: Option<TlsFiles>,
    /// `--allow-remote` without TLS.
    pub insecure: bool,
    /// Longest a query runs; a client's shorter `grpc-timeout` wins.
    pub query_timeout: Duration,
    /// Most queries running at once; more are refused, not queued.
    pub max_queries: usize,
}

/// How long a shut-down server waits for clients to hang up before it stops anyway.
const GRACE: Duration = Duration::from_secs(2);

/// Resolves `--listen` and refuses a non-loopback address unless allowed.
pub fn listen_address(listen: &str, allow_remote: bool) -> Result<SocketAddr, ServeError> {
    let addr = listen
        .to_socket_addrs()
        .map_err(|_| ServeError::BadAddress(listen.to_string()))?
        .next()
        .ok_or_else(|| ServeError::BadAddress(listen.to_string()))?;
    if !allow_remote && !addr.ip().is_loopback() {
        return Err(ServeError::NotLoopback(addr));
    }
    Ok(addr)
}

/// `--allow-remote` only with tokens, and with TLS unless `--insecure`.
pub fn check_exposure(opts: &ServeOptions) -> Result<(), ServeError> {
    if !opts.allow_remote {
        return Ok(());
    }
    if opts.tokens.is_empty() {
        return Err(ServeError::RemoteWithoutTokens);
    }
    if opts.tls.is_none() && !opts.insecure {
        return Err(ServeError::RemoteWithoutTls);
    }
    Ok(())
}

fn tls_config(files: &TlsFiles) -> Result<ServerTlsConfig, ServeError> {
    let read = |flag, path: &PathBuf| {
        std::fs::read(path).map_err(|error| ServeError::TlsFile { flag, path: path.clone(), error })
    };
    let identity = Identity::from_pem(read("--tls-cert", &files.cert)?, read("--tls-key", &files.key)?);
    Ok(ServerTlsConfig::new().identity(identity))
}

/// The threads every query runs on, for the server's life. Not the gRPC
/// runtime: an operator may compute for seconds in one poll (a nested-loop
/// join: one batch against the whole other side), and tokio cannot preempt
/// it, so on shared workers a heavy query held off new clients and SIGTERM
/// for over 10 s. A worker per core for each of up to [`THREADED_QUERIES`]
/// queries (as a runtime per query had), started once rather than per
/// query, so a busy query leaves workers for the next. Shut down without
/// waiting when dropped (a runtime may not be dropped inside another's task
/// otherwise): threads end when their current poll returns.
struct QueryRuntime(Option<tokio::runtime::Runtime>);

/// Queries that get workers of their own; more (up to `--max-queries`) share them.
const THREADED_QUERIES: usize = 4;

impl QueryRuntime {
    fn start(max_queries: usize) -> Result<QueryRuntime, ServeError> {
        let cores = std::thread::available_parallelism().map_or(2, |n| n.get());
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(cores * max_queries.clamp(1, THREADED_QUERIES))
            .thread_name("credtrail-query")
            .enable_all()
            .build()
            .map_err(ServeError::QueryThreads)?;
        Ok(QueryRuntime(Some(rt)))
    }

    fn handle(&self) -> tokio::runtime::Handle {
        self.0.as_ref().expect("present until dropped").handle().clone()
    }
}

impl Drop for QueryRuntime {
    fn drop(&mut self) {
        if let Some(rt) = self.0.take() {
            rt.shutdown_background();
        }
    }
}

/// The task one query runs in, aborted when dropped: it ends at its next
/// await, and dropping its plan's stream stops the tasks the plan spawned.
struct QueryTask(tokio::task::AbortHandle);

impl Drop for QueryTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Serves until `shutdown` resolves, then stops the running queries and
/// returns once clients have hung up (or after a short grace). `ready` is
/// told the bound address once the server accepts connections (the CLI
/// prints it, so a caller that asked for port 0 learns the port).
pub async fn serve(
    opts: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listen_address(&opts.listen, opts.allow_remote)?;
    check_exposure(opts)?;
    let mut server = tonic::transport::Server::builder();
    if let Some(files) = &opts.tls {
        server = server.tls_config(tls_config(files)?).map_err(ServeError::Tls)?;
    }
    let (ctx, notes) = analyst::analyst_context(&opts.lake, &opts.session).await?;
    for n in notes {
        tracing::info!("{n}");
    }
    let (stop, stopped) = watch::channel(false);
    let queries = QueryRuntime::start(opts.max_queries)?;
    let service = LakeFlightSql {
        queries: queries.handle(),
        ctx: Arc::new(ctx),
        permit: Permit { session_changes: false, files: opts.session.allow_files },
        query_timeout: opts.query_timeout,
        slots: Arc::new(Semaphore::new(opts.max_queries)),
        max_queries: opts.max_queries,
        stopped: stopped.clone(),
        authenticated: !opts.tokens.is_empty(),
    };
    let service = FlightServiceServer::with_interceptor(service, opts.tokens.clone());
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| ServeError::Bind { addr, error })?;
    let bound = listener.local_addr().map_err(|error| ServeError::Bind { addr, error })?;
    ready(bound);
    let mut on_stop = stopped;
    let serving = server.add_service(service).serve_with_incoming_shutdown(
        tonic::transport::server::TcpIncoming::from(listener),
        async move {
            let _ = on_stop.wait_for(|s| *s).await;
        },
    );
    let signalled = async {
        shutdown.await;
        // Running queries end now (their clients get UNAVAILABLE), so connections can close.
        let _ = stop.send(true);
        tokio::time::sleep(GRACE).await;
    };
    tokio::select! {
        r = serving => r?,
        () = signalled => tracing::warn!("clients still connected {GRACE:?} after shutdown: stopping anyway"),
    }
    Ok(())
}

/// The Flight SQL service over one analyst session.
pub struct LakeFlightSql {
    ctx: Arc<SessionContext>,
    /// Where queries run: [`QueryRuntime`]'s threads.
    queries: tokio::runtime::Handle,
    permit: Permit,
    query_timeout: Duration,
    /// One permit per running query: each takes cores and memory, so without
    /// a bound any client could start enough of them to exhaust the host.
    slots: Arc<Semaphore>,
    max_queries: usize,
    /// Becomes true when the server shuts down.
    stopped: watch::Receiver<bool>,
    /// Tokens are required (the interceptor has checked them by the time a call gets here).
    authenticated: bool,
}

type DoGetStream = Pin<Box<dyn Stream<Item = Result<FlightData, Status>> + Send + 'static>>;

/// A DataFusion error as the gRPC status a client can act on.
fn status(e: DataFusionError) -> Status {
    let msg = e.strip_backtrace();
    match e.find_root() {
        DataFusionError::ResourcesExhausted(_) => Status::resource_exhausted(msg),
        DataFusionError::SQL(..) | DataFusionError::Plan(_) | DataFusionError::SchemaError(..) => {
            Status::invalid_argument(msg)
        }
        DataFusionError::NotImplemented(_) => Status::unimplemented(msg),
        _ => Status::internal(msg),
    }
}

/// The schema as clients receive it: the encoder sends dictionary columns as
/// their plain values, so the advertised schema must say so too.
fn wire_schema(schema: &Schema) -> Schema {
    fn plain(t: &DataType) -> DataType {
        match t {
            DataType::Dictionary(_, v) => plain(v),
            t => t.clone(),
        }
    }
    let fields: Vec<Field> =
        schema.fields().iter().map(|f| f.as_ref().clone().with_data_type(plain(f.data_type()))).collect();
    Schema::new_with_metadata(fields, schema.metadata().clone())
}

fn utf8(handle: &[u8]) -> Result<&str, Status> {
    std::str::from_utf8(handle).map_err(|_| Status::invalid_argument("the statement handle is not UTF-8"))
}

/// A FlightInfo whose one endpoint's ticket is `ticket` (an encoded Flight SQL command).
fn info(schema: &Schema, ticket: Vec<u8>, descriptor: FlightDescriptor) -> Result<Response<FlightInfo>, Status> {
    let endpoint = FlightEndpoint::new().with_ticket(Ticket::new(ticket));
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|e| Status::internal(e.to_string()))?
        .with_endpoint(endpoint)
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// A metadata answer (catalogs, tables, …): one batch.
fn one_batch<E: Into<FlightError> + Send + 'static>(
    schema: SchemaRef,
    batch: Result<arrow::array::RecordBatch, E>,
) -> DoGetStream {
    let stream = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(futures::stream::once(async move { batch.map_err(Into::into) }))
        .map_err(Status::from);
    Box::pin(stream)
}

static SQL_INFO: OnceLock<SqlInfoData> = OnceLock::new();

fn sql_info() -> &'static SqlInfoData {
    SQL_INFO.get_or_init(|| {
        let mut b = SqlInfoDataBuilder::new();
        b.append(SqlInfo::FlightSqlServerName, "credtrail");
        b.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        b.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        b.append(SqlInfo::FlightSqlServerReadOnly, true);
        b.append(SqlInfo::FlightSqlServerSql, true);
        b.append(SqlInfo::FlightSqlServerSubstrait, false);
        b.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        // A query is cancelled by dropping its stream, not by CancelFlightInfo.
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.build().expect("static SQL info is valid")
    })
}

impl LakeFlightSql {
    /// Plans a query; only queries (no DDL, DML or SET; files only if allowed) reach the shared session.
    async fn plan(&self, query: &str) -> Result<DataFrame, Status> {
        analyst::sql(&self.ctx, query, self.permit).await.map_err(status)
    }

    async fn schema_of(&self, query: &str) -> Result<Schema, Status> {
        Ok(wire_schema(self.plan(query).await?.schema().as_arrow()))
    }

    /// Runs a query as a task of the [`QueryRuntime`] and streams its
    /// batches. The query ends when the stream is dropped (the client went
    /// away), at its deadline (the client's `grpc-timeout` or
    /// `--query-timeout`, whichever is sooner: the client gets
    /// DEADLINE_EXCEEDED at once) or at shutdown.
    async fn execute(&self, query: &str, metadata: &MetadataMap) -> Result<Response<DoGetStream>, Status> {
        let df = self.plan(query).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let slot = self.slots.clone().try_acquire_owned().map_err(|_| {
            Status::resource_exhausted(format!(
                "{} queries are already running (serve --max-queries); try again when one ends",
                self.max_queries
            ))
        })?;
        let limit = client_timeout(metadata).map_or(self.query_timeout, |t| t.min(self.query_timeout));
        let deadline = tokio::time::Instant::now() + limit;
        let (tx, rx) = mpsc::channel::<Result<RecordBatch, FlightError>>(2);
        let task = self.queries.spawn(async move {
            let mut batches = match df.execute_stream().await {
                Ok(b) => b,
                Err(e) => return drop(tx.send(Err(FlightError::Tonic(Box::new(status(e))))).await),
            };
            while let Some(b) = batches.next().await {
                let failed = b.is_err();
                if tx.send(b.map_err(|e| FlightError::Tonic(Box::new(status(e))))).await.is_err() || failed {
                    break;
                }
            }
        });
        let task = Some(QueryTask(task.abort_handle()));
        let state = Running { rx, task, stopped: self.stopped.clone(), _slot: slot };
        let batches = futures::stream::unfold(state, move |mut s| async move {
            // Ended: the task is aborted, so is the query.
            s.task.as_ref()?;
            let next = tokio::select! {
                b = s.rx.recv() => Ok(b),
                _ = tokio::time::sleep_until(deadline) => Err(Status::deadline_exceeded(format!(
                    "the query ran past its deadline of {} and was stopped (serve --query-timeout, or the \
                     client's own timeout)",
                    humantime::format_duration(limit)
                ))),
                _ = s.stopped.wait_for(|stop| *stop) => Err(Status::unavailable("the server is shutting down")),
            };
            let ended = match next {
                Ok(b) => return b.map(|b| (b, s)),
                Err(ended) => ended,
            };
            s.task = None;
            Some((Err(FlightError::Tonic(Box::new(ended))), s))
        });
        let stream = FlightDataEncoderBuilder::new().with_schema(schema).build(batches).map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn tables(&self) -> Result<Vec<analyst::TableInfo>, Status> {
        analyst::list_tables(&self.ctx).await.map_err(|e| Status::internal(e.to_string()))
    }
}

/// A running query as its response stream holds it: dropping it stops the query.
struct Running {
    rx: mpsc::Receiver<Result<RecordBatch, FlightError>>,
    task: Option<QueryTask>,
    stopped: watch::Receiver<bool>,
    /// Given back when the stream is dropped: the query has ended or its client left.
    _slot: OwnedSemaphorePermit,
}

/// The client's deadline, from gRPC's `grpc-timeout` header (up to 8 digits and a unit).
fn client_timeout(metadata: &MetadataMap) -> Option<Duration> {
    let v = metadata.get("grpc-timeout")?.to_str().ok()?;
    let (digits, unit) = v.split_at(v.len().checked_sub(1)?);
    if digits.is_empty() || digits.len() > 8 {
        return None;
    }
    let n: u64 = digits.parse().ok()?;
    Some(match unit {
        "H" => Duration::from_secs(n * 3600),
        "M" => Duration::from_secs(n * 60),
        "S" => Duration::from_secs(n),
        "m" => Duration::from_millis(n),
        "u" => Duration::from_micros(n),
        "n" => Duration::from_nanos(n),
        _ => return None,
    })
}

#[tonic::async_trait]
impl FlightSqlService for LakeFlightSql {
    type FlightService = LakeFlightSql;

    /// With tokens, a client shakes hands with basic auth whose password is a
    /// token (already checked by the interceptor), and gets it back as the
    /// bearer for its later calls, as Flight SQL drivers expect. Without
    /// tokens, an empty handshake so clients that always shake hands can connect.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let reply = HandshakeResponse { protocol_version: 0, payload: Default::default() };
        let mut response = Response::new(Box::pin(futures::stream::iter([Ok(reply)])) as Pin<Box<_>>);
        if self.authenticated
            && let Some(token) = auth::presented(request.metadata())
        {
            let bearer = format!("Bearer {}", String::from_utf8_lossy(&token))
                .parse()
                .map_err(|_| Status::invalid_argument("the token is not valid in a header"))?;
            response.metadata_mut().insert("authorization", bearer);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(&query.query).await?;
        let ticket = TicketStatementQuery { statement_handle: query.query.into_bytes().into() };
        info(&schema, ticket.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.execute(utf8(&ticket.statement_handle)?, request.metadata()).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let schema = self.schema_of(&query.query).await?;
        let IpcMessage(dataset_schema) = SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
            .try_into()
            .map_err(|e: arrow::error::ArrowError| Status::internal(e.to_string()))?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: query.query.into_bytes().into(),
            dataset_schema,
            parameter_schema: Default::default(),
        })
    }

    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        _request: Request<Action>,
    ) -> Result<(), Status> {
        Ok(())
    }

    async fn get_flight_info_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = self.schema_of(utf8(&cmd.prepared_statement_handle)?).await?;
        info(&schema, cmd.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        cmd: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.execute(utf8(&cmd.prepared_statement_handle)?, request.metadata()).await
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        let mut names = self.ctx.catalog_names();
        names.sort();
        for name in names {
            b.append(name);
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for catalog_name in self.ctx.catalog_names() {
            let Some(catalog) = self.ctx.catalog(&catalog_name) else { continue };
            for schema_name in catalog.schema_names() {
                b.append(&catalog_name, schema_name);
            }
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for t in self.tables().await? {
            b.append(&t.catalog, &t.schema, &t.name, t.kind, &wire_schema(&t.columns)).map_err(Status::from)?;
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.into_builder().schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let mut b = query.into_builder();
        for kind in ["TABLE", "VIEW", "LOCAL TEMPORARY"] {
            b.append(kind);
        }
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let schema = query.clone().into_builder(sql_info()).schema();
        info(&schema, query.as_any().encode_to_vec(), request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let b = query.into_builder(sql_info());
        Ok(Response::new(one_batch(b.schema(), b.build())))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_only_unless_allowed() {
        assert!(listen_address("127.0.0.1:0", false).is_ok());
        assert!(listen_address("[::1]:0", false).is_ok());
        assert!(matches!(listen_address("0.0.0.0:0", false), Err(ServeError::NotLoopback(_))));
        assert!(matches!(listen_address("192.0.2.1:9", false), Err(ServeError::NotLoopback(_))));
        assert!(listen_address("0.0.0.0:0", true).is_ok());
        assert!(matches!(listen_address("nowhere", false), Err(ServeError::BadAddress(_))));
    }

    #[test]
    fn dictionaries_are_sent_as_values() {
        let dict = DataType::Dictionary(Box::new(DataType::Int32), Box::new(DataType::Utf8));
        let s = Schema::new(vec![Field::new("a", dict, true), Field::new("b", DataType::Int64, false)]);
        let w = wire_schema(&s);
        assert_eq!(w.field(0).data_type(), &DataType::Utf8);
        assert_eq!(w.field(1).data_type(), &DataType::Int64);
        assert!(!w.field(1).is_nullable());
    }

    #[test]
    fn the_clients_deadline_is_read_from_grpc_timeout() {
        let with = |v: &str| {
            let mut m = MetadataMap::new();
            m.insert("grpc-timeout", v.parse().unwrap());
            client_timeout(&m)
        };
        assert_eq!(with("1500m"), Some(Duration::from_millis(1500)));
        assert_eq!(with("2S"), Some(Duration::from_secs(2)));
        assert_eq!(with("3H"), Some(Duration::from_secs(3 * 3600)));
        assert_eq!(with("5u"), Some(Duration::from_micros(5)));
        for bad in ["", "S", "123456789S", "10x", "-1S", "1.5S"] {
            assert_eq!(with(bad), None, "{bad:?}");
        }
        assert_eq!(client_timeout(&MetadataMap::new()), None);
    }

    #[test]
    fn remote_needs_tokens_and_tls_unless_insecure() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("tokens");
        std::fs::write(&file, "0123456789abcdef0123\n").unwrap();
        let mut o = ServeOptions {
            lake: dir.path().into(),
            session: SessionOptions::default(),
            listen: "0.0.0.0:0".into(),
            allow_remote: true,
            tokens: Tokens::default(),
            tls: None,
            insecure: true,
            query_timeout: Duration::from_secs(1),
            max_queries: 1,
        };
        assert!(matches!(check_exposure(&o), Err(ServeError::RemoteWithoutTokens)));
        o.tokens = Tokens::load(Some(&file), None).unwrap();
        assert!(check_exposure(&o).is_ok());
        o.insecure = false;
        assert!(matches!(check_exposure(&o), Err(ServeError::RemoteWithoutTls)));
        o.tls = Some(TlsFiles { cert: file.clone(), key: file.clone() });
        assert!(check_exposure(&o).is_ok());
        o.allow_remote = false;
        o.tokens = Tokens::default();
        o.tls = None;
        assert!(check_exposure(&o).is_ok(), "loopback needs neither");
    }
}

//! `credtrail serve`: the analyst's tables over Arrow Flight SQL, so BI tools
//! and ADBC/JDBC clients query the lake directly.
//!
//! Statement and prepared-statement handles are the SQL text itself: the
//! server keeps no per-query state, and a ticket can be fetched again. It is
//! read-only (no DDL, INSERT or COPY) and unauthenticated, hence loopback
//! unless the operator says otherwise.

use std::net::{SocketAddr, ToSocketAddrs};
use std::path::PathBuf;
use std::pin::Pin;
use std::sync::{Arc, OnceLock};

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
use datafusion::execution::context::SQLOptions;
use datafusion::prelude::{DataFrame, SessionContext};
use futures::{Stream, TryStreamExt};
use prost::Message;
use tonic::{Request, Response, Status, Streaming};

use crate::analyst::{self, AnalystError, SessionOptions};

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(transparent)]
    Analyst(#[from] AnalystError),
    #[error("{0:?} is not a host:port address")]
    BadAddress(String),
    #[error(
        "{0} is not a loopback address: the server has no authentication, so anyone who reaches it could read \
         the lake; pass --allow-remote to listen there anyway"
    )]
    NotLoopback(SocketAddr),
    #[error("listening on {addr}: {error}")]
    Bind { addr: SocketAddr, error: std::io::Error },
    #[error("serving: {0}")]
    Transport(#[from] tonic::transport::Error),
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub lake: PathBuf,
    pub session: SessionOptions,
    /// `host:port`; port 0 picks a free port.
    pub listen: String,
    /// Permit a non-loopback address.
    pub allow_remote: bool,
}

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

/// Serves until `shutdown` resolves. `ready` is told the bound address once
/// the server accepts connections (the CLI prints it, so a caller that asked
/// for port 0 learns the port).
pub async fn serve(
    opts: &ServeOptions,
    ready: impl FnOnce(SocketAddr),
    shutdown: impl Future<Output = ()>,
) -> Result<(), ServeError> {
    let addr = listen_address(&opts.listen, opts.allow_remote)?;
    let (ctx, notes) = analyst::analyst_context(&opts.lake, &opts.session).await?;
    for n in notes {
        tracing::info!("{n}");
    }
    let listener = tokio::net::TcpListener::bind(addr).await.map_err(|error| ServeError::Bind { addr, error })?;
    let bound = listener.local_addr().map_err(|error| ServeError::Bind { addr, error })?;
    let service = FlightServiceServer::new(LakeFlightSql::new(ctx));
    ready(bound);
    tonic::transport::Server::builder()
        .add_service(service)
        .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(listener), shutdown)
        .await?;
    Ok(())
}

/// The Flight SQL service over one analyst session.
pub struct LakeFlightSql {
    ctx: Arc<SessionContext>,
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
        b.append(SqlInfo::FlightSqlServerCancel, false);
        b.build().expect("static SQL info is valid")
    })
}

impl LakeFlightSql {
    pub fn new(ctx: SessionContext) -> Self {
        LakeFlightSql { ctx: Arc::new(ctx) }
    }

    /// Plans a query; only queries (no DDL, DML or SET) reach the shared session.
    async fn plan(&self, query: &str) -> Result<DataFrame, Status> {
        let opts = SQLOptions::new().with_allow_ddl(false).with_allow_dml(false).with_allow_statements(false);
        self.ctx.sql_with_options(query, opts).await.map_err(status)
    }

    async fn schema_of(&self, query: &str) -> Result<Schema, Status> {
        Ok(wire_schema(self.plan(query).await?.schema().as_arrow()))
    }

    async fn execute(&self, query: &str) -> Result<Response<DoGetStream>, Status> {
        let df = self.plan(query).await?;
        let schema = Arc::new(df.schema().as_arrow().clone());
        let batches = df.execute_stream().await.map_err(status)?;
        let stream = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches.map_err(|e| FlightError::Tonic(Box::new(status(e)))))
            .map_err(Status::from);
        Ok(Response::new(Box::pin(stream)))
    }

    async fn tables(&self) -> Result<Vec<analyst::TableInfo>, Status> {
        analyst::list_tables(&self.ctx).await.map_err(|e| Status::internal(e.to_string()))
    }
}

#[tonic::async_trait]
impl FlightSqlService for LakeFlightSql {
    type FlightService = LakeFlightSql;

    /// No authentication: an empty handshake so clients that always shake hands can connect.
    async fn do_handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>, Status> {
        let reply = HandshakeResponse { protocol_version: 0, payload: Default::default() };
        Ok(Response::new(Box::pin(futures::stream::iter([Ok(reply)]))))
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
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.execute(utf8(&ticket.statement_handle)?).await
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
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        self.execute(utf8(&cmd.prepared_statement_handle)?).await
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
}

//! Flight SQL (SPEC §10) on the Flight port, beside trimatch's own tickets:
//! any Flight SQL client (ADBC, JDBC, Grafana) queries the collections as
//! the read-only tables of catalog `trimatch`, schema `live`, and every
//! statement reads all of its tables at one logical time.
//!
//! The Flight service (`serve::flight`) passes every call through the access
//! gate and hands the Flight SQL ones (a protobuf `Any` of the Flight SQL
//! protocol as ticket or command, or a Flight SQL action) to [`SqlService`],
//! whose Flight service is arrow-flight's, built from the
//! [`FlightSqlService`] methods here. The caller travels in the request's
//! extensions ([`with_principal`]). Statements are planned and run by
//! DataFusion (`statement`) over the collections as tables (`tables`), read
//! through the cluster reader; the catalog commands are answered in
//! `catalog`.
//!
//! May use: `serve::reader`, `serve::gate` (the tenant scope of a table's
//! scan), `serve::metrics` (rows scanned), `serve::auth` (the principal's
//! type) and `output`; never `serve::flight`.
//!
//! A statement may pin its time with the `x-trimatch-as-of` request header
//! (milliseconds, within the retained history; ADBC sets headers with the
//! `adbc.flight.sql.rpc.call_header.` options); the result's schema carries
//! `trimatch.as_of` and `trimatch.offsets`, as DoGet's does.

mod catalog;
mod functions;
#[doc(hidden)]
pub mod fuzzing;
mod handle;
mod ipc_check;
mod limits;
mod parameters;
mod statement;
mod tables;

use std::sync::Arc;

use arrow::datatypes::SchemaRef;
use arrow::record_batch::RecordBatch;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, Any, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetPrimaryKeys, CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables,
    CommandPreparedStatementQuery, CommandPreparedStatementUpdate, CommandStatementIngest,
    CommandStatementQuery, CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt,
    SqlInfo, TicketStatementQuery,
};
use arrow_flight::{FlightDescriptor, FlightEndpoint, FlightInfo, IpcMessage, SchemaAsIpc, Ticket};
use arrow_ipc::writer::IpcWriteOptions;
use futures::{stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataMap;
use tonic::{Request, Response, Status};
use trimatch_dataflows::Time;

use crate::output::with_snapshot_metadata;
use crate::serve::auth::Principal;
use crate::serve::gate::{SlotKind, SlotPermit, Slots};
use crate::serve::metrics::Metrics;
use crate::serve::reader::ClusterReader;
use crate::serve::ReplyStream as FlightStream;
use catalog::CatalogAnswer;
use handle::{HandleKey, StatementHandle};
pub use handle::{MAX_HANDLE_BYTES, MAX_PARAMETER_BYTES};
pub use limits::SqlSettings;
use limits::{deadline_exceeded, SqlPool};
use statement::{plan, sql_error, PlannedStatement};

/// The request header that pins a statement's time.
pub const AS_OF_HEADER: &str = "x-trimatch-as-of";

/// The Flight SQL actions (the others, transactions and Substrait, are not offered).
pub const SQL_ACTIONS: [&str; 2] = ["CreatePreparedStatement", "ClosePreparedStatement"];

/// Whether a ticket or a descriptor's command is a Flight SQL one: a
/// protobuf `Any` of the Flight SQL protocol. trimatch's own tickets (a
/// collection name, a JSON object) never carry that type URL.
pub fn is_sql_command(bytes: &[u8]) -> bool {
    Any::decode(bytes).is_ok_and(|any| {
        any.type_url
            .starts_with("type.googleapis.com/arrow.flight.protocol.sql.")
    })
}

/// What every SQL call of one server shares: where statements read, their
/// settings, the pool they run on, the count of those running, and the key
/// that seals their handles.
pub struct SqlEngine {
    reader: ClusterReader,
    metrics: Arc<Metrics>,
    settings: SqlSettings,
    pool: SqlPool,
    /// Statements planning or running, in all and per caller.
    admission: Arc<Slots>,
    key: HandleKey,
}

impl SqlEngine {
    /// Statements read through `reader`, count the rows their scans copy in
    /// `metrics`, run with `settings`, and seal their handles with
    /// `handle_secret` (see `handle`).
    pub fn new(
        reader: ClusterReader,
        metrics: Arc<Metrics>,
        settings: SqlSettings,
        handle_secret: &[u8; 32],
    ) -> std::io::Result<Self> {
        Ok(SqlEngine {
            pool: SqlPool::new(settings.threads)?,
            admission: Slots::new(
                STATEMENT_SLOTS,
                settings.max_running,
                settings.max_running_per_caller,
            ),
            key: HandleKey::new(handle_secret),
            reader,
            metrics,
            settings,
        })
    }

    /// The purpose the handle secret is derived for (see
    /// `Authenticator::process_key`).
    pub const HANDLE_KEY_PURPOSE: &'static str = HandleKey::PURPOSE;
}

/// Statement slots, as refusals name them.
const STATEMENT_SLOTS: SlotKind = SlotKind {
    things: "statements",
    state: "running",
    total_flag: "--sql-max-running",
    caller_flag: "--sql-max-running-per-caller",
};

/// The Flight SQL adapter, for the calls of one request.
pub struct SqlService {
    engine: Arc<SqlEngine>,
}

impl SqlService {
    pub fn new(engine: Arc<SqlEngine>) -> Self {
        SqlService { engine }
    }
}

/// A planned statement holding its slot until it has run.
struct Admitted {
    planned: PlannedStatement,
    permit: SlotPermit,
    deadline: tokio::time::Instant,
}

/// `request`, carrying the authenticated `principal` to the SQL adapter.
pub fn with_principal<T>(mut request: Request<T>, principal: &Principal) -> Request<T> {
    request.extensions_mut().insert(principal.clone());
    request
}

/// What a write is told.
fn read_only() -> Status {
    Status::invalid_argument(
        "trimatch's collections are read-only; documents come in through the Kafka input topics",
    )
}

/// The authenticated caller, which the Flight service put in the request.
fn principal<T>(request: &Request<T>) -> Result<Principal, Status> {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        .ok_or_else(|| {
            Status::internal("a Flight SQL call reached the SQL service unauthenticated")
        })
}

/// The time a request pins with [`AS_OF_HEADER`], if it does.
fn pinned_as_of(metadata: &MetadataMap) -> Result<Option<Time>, Status> {
    let Some(value) = metadata.get(AS_OF_HEADER) else {
        return Ok(None);
    };
    value
        .to_str()
        .ok()
        .and_then(|text| text.trim().parse::<Time>().ok())
        .map(Some)
        .ok_or_else(|| {
            Status::invalid_argument(format!(
                "the {AS_OF_HEADER} header must be a time in milliseconds since the Unix epoch \
                 (as trimatch.as_of says), got {value:?}"
            ))
        })
}

/// A schema as Flight SQL carries it in messages (IPC-encapsulated).
fn schema_bytes(schema: &arrow::datatypes::Schema) -> Result<prost::bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|error: arrow::error::ArrowError| Status::internal(error.to_string()))?;
    Ok(bytes)
}

/// The FlightInfo of a command answered by DoGet on `ticket`, on this
/// connection (no location: clients reuse the channel they have).
fn flight_info(
    schema: &arrow::datatypes::Schema,
    ticket: Vec<u8>,
    descriptor: FlightDescriptor,
) -> Result<Response<FlightInfo>, Status> {
    let info = FlightInfo::new()
        .try_with_schema(schema)
        .map_err(|error| Status::internal(error.to_string()))?
        .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
        .with_descriptor(descriptor);
    Ok(Response::new(info))
}

/// A catalog answer as a DoGet stream.
fn catalog_stream(answer: CatalogAnswer) -> Response<FlightStream<arrow_flight::FlightData>> {
    batches_stream(answer.schema, stream::iter([Ok(answer.batch)]).boxed())
}

fn batches_stream(
    schema: SchemaRef,
    batches: futures::stream::BoxStream<'static, Result<RecordBatch, FlightError>>,
) -> Response<FlightStream<arrow_flight::FlightData>> {
    let encoded = FlightDataEncoderBuilder::new()
        .with_schema(schema)
        .build(batches)
        .map_err(Status::from);
    Response::new(encoded.boxed())
}

impl SqlService {
    /// Admits `statement` and plans it as `principal` may run it, on the SQL
    /// pool and within the deadline.
    async fn plan(
        &self,
        principal: &Principal,
        statement: &StatementHandle,
    ) -> Result<Admitted, Status> {
        let permit = self.engine.admission.take(principal)?;
        let limit = self.engine.settings.deadline;
        let deadline = tokio::time::Instant::now() + limit;
        let (engine, principal, statement) =
            (self.engine.clone(), principal.clone(), statement.clone());
        let planned = self
            .engine
            .pool
            .run(async move {
                let planning = plan(
                    &engine.reader,
                    &engine.metrics,
                    &principal,
                    &statement,
                    &engine.settings,
                );
                tokio::time::timeout_at(deadline, planning)
                    .await
                    .unwrap_or_else(|_| Err(deadline_exceeded(limit)))
            })
            .await?;
        Ok(Admitted {
            planned,
            permit,
            deadline,
        })
    }

    /// The handle `bytes` hold, if this server sealed it for `principal`.
    fn open(&self, bytes: &[u8], principal: &Principal) -> Result<StatementHandle, Status> {
        StatementHandle::open(bytes, &self.engine.key, principal)
    }

    /// `statement` sealed for `principal`.
    fn seal(&self, statement: &StatementHandle, principal: &Principal) -> prost::bytes::Bytes {
        statement.seal(&self.engine.key, principal).into()
    }

    /// The FlightInfo of a statement: its result's schema (planning, not
    /// running it), and the ticket that runs it.
    async fn statement_info(
        &self,
        principal: &Principal,
        statement: &StatementHandle,
        ticket: Vec<u8>,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let admitted = self.plan(principal, statement).await?;
        flight_info(&admitted.planned.schema(), ticket, descriptor)
    }

    /// Runs a statement: the schema (with `trimatch.as_of` and
    /// `trimatch.offsets`), then the result's batches as DataFusion makes
    /// them on the SQL pool, until the last one, the deadline, or the
    /// client going away (which cancels the statement).
    async fn run(
        &self,
        principal: &Principal,
        statement: &StatementHandle,
    ) -> Result<Response<FlightStream<arrow_flight::FlightData>>, Status> {
        let Admitted {
            planned,
            permit,
            deadline,
        } = self.plan(principal, statement).await?;
        let offsets = self.engine.reader.offsets_at(planned.as_of).await?;
        let schema = with_snapshot_metadata(planned.schema(), planned.as_of, &offsets);
        let (sender, receiver) = tokio::sync::mpsc::channel::<Result<RecordBatch, Status>>(2);
        let limit = self.engine.settings.deadline;
        self.engine.pool.spawn(async move {
            let running = async {
                let mut batches = planned
                    .frame
                    .execute_stream()
                    .await
                    .map_err(|error| sql_error(error, &[]))?;
                while let Some(batch) = batches.next().await {
                    let batch = batch.map_err(|error| sql_error(error, &[]))?;
                    if sender.send(Ok(batch)).await.is_err() {
                        break; // the client went away
                    }
                }
                Ok(())
            };
            let outcome = tokio::time::timeout_at(deadline, running)
                .await
                .unwrap_or_else(|_| Err(deadline_exceeded(limit)));
            // The slot is free before the client hears how the statement
            // ended (its error, or the end of the stream when `sender` is
            // dropped): a caller may start the next one at once.
            drop(permit);
            if let Err(status) = outcome {
                let _ = sender.send(Err(status)).await;
            }
        });
        let batches = tokio_stream::wrappers::ReceiverStream::new(receiver)
            .map_err(|status| FlightError::Tonic(Box::new(status)))
            .boxed();
        Ok(batches_stream(schema, batches))
    }
}

#[tonic::async_trait]
impl FlightSqlService for SqlService {
    type FlightService = SqlService;

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = principal(&request)?;
        let statement = StatementHandle::new(query.query, pinned_as_of(request.metadata())?);
        let ticket = TicketStatementQuery {
            statement_handle: self.seal(&statement, &principal),
        }
        .as_any()
        .encode_to_vec();
        self.statement_info(&principal, &statement, ticket, request.into_inner())
            .await
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = principal(&request)?;
        let statement = self.open(&ticket.statement_handle, &principal)?;
        self.run(&principal, &statement).await
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let principal = principal(&request)?;
        let statement = self.open(&query.prepared_statement_handle, &principal)?;
        let ticket = query.as_any().encode_to_vec();
        self.statement_info(&principal, &statement, ticket, request.into_inner())
            .await
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        let principal = principal(&request)?;
        let statement = self.open(&query.prepared_statement_handle, &principal)?;
        self.run(&principal, &statement).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        let principal = principal(&request)?;
        let statement = StatementHandle::new(query.query, pinned_as_of(request.metadata())?);
        let Admitted { planned, .. } = self.plan(&principal, &statement).await?;
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: self.seal(&statement, &principal),
            dataset_schema: schema_bytes(&planned.schema())?,
            parameter_schema: schema_bytes(&planned.parameter_schema()?)?,
        })
    }

    /// Handles hold the whole statement, so there is nothing to free.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<arrow_flight::Action>,
    ) -> Result<(), Status> {
        principal(&request).map(|_| ())
    }

    /// Binds parameters (the first row the client sends; see `parameters`):
    /// the new handle holds them, and the client sends it back.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        let principal = principal(&request)?;
        let statement = self.open(&query.prepared_statement_handle, &principal)?;
        let bound = match parameters::first_parameter_batch(request.into_inner()).await? {
            Some(batch) => statement.bind(&batch)?,
            None => statement,
        };
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(self.seal(&bound, &principal)),
        })
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let answer = catalog::catalogs(query)?;
        flight_info(&answer.schema, ticket, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::catalogs(query)?))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let answer = catalog::db_schemas(query)?;
        flight_info(&answer.schema, ticket, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::db_schemas(query)?))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let answer = catalog::tables(query, &principal(&request)?)?;
        flight_info(&answer.schema, ticket, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::tables(
            query,
            &principal(&request)?,
        )?))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let answer = catalog::table_types(query)?;
        flight_info(&answer.schema, ticket, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::table_types(query)?))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        let answer = catalog::sql_info(query)?;
        flight_info(&answer.schema, ticket, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        _request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::sql_info(query)?))
    }

    async fn get_flight_info_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = query.as_any().encode_to_vec();
        flight_info(
            &catalog::primary_keys_schema(),
            ticket,
            request.into_inner(),
        )
    }

    async fn do_get_primary_keys(
        &self,
        query: CommandGetPrimaryKeys,
        request: Request<Ticket>,
    ) -> Result<Response<<Self as FlightService>::DoGetStream>, Status> {
        Ok(catalog_stream(catalog::primary_keys(
            query,
            &principal(&request)?,
        )?))
    }

    /// DoPut of anything but parameters: the tables are read-only.
    async fn do_put_fallback(
        &self,
        _request: Request<PeekableFlightDataStream>,
        _message: Any,
    ) -> Result<Response<<Self as FlightService>::DoPutStream>, Status> {
        Err(read_only())
    }

    async fn do_put_statement_update(
        &self,
        _command: CommandStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_statement_ingest(
        &self,
        _command: CommandStatementIngest,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    async fn do_put_prepared_statement_update(
        &self,
        _command: CommandPreparedStatementUpdate,
        _request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        Err(read_only())
    }

    /// The SQL info is fixed (see `catalog`).
    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}

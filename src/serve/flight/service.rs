//! The Arrow Flight service of SPEC §5: Handshake, ListFlights,
//! GetFlightInfo, GetSchema, DoGet (snapshots and subscriptions) and the
//! `status` action. Every call passes the access gate first; reads go
//! through the cluster reader; calls that carry a Flight SQL command or
//! action are handed to the Flight SQL adapter with the caller attached.

use std::sync::{Arc, OnceLock};
use std::time::{Duration, Instant};

use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use futures::stream::{self, StreamExt};
use tonic::{Request, Response, Status, Streaming};
use trimatch_dataflows::OutputCollection;

use super::encode::{feed_stream, snapshot_stream};
use super::preview::{Previews, PREVIEW_ACTION, PREVIEW_SHARD_ACTION};
use crate::output::columns::{change_schema, schema};
use crate::pipeline::PipelineHandle;
use crate::serve::auth::{Authenticator, Principal};
use crate::serve::flight_sql::{self, SqlEngine, SqlService, SqlSettings, SQL_ACTIONS};
use crate::serve::gate::{authorize, authorize_admin, may_read, scoped, AccessGate, CallRecord};
use crate::serve::metrics::Metrics;
use crate::serve::reader::{ClusterReader, PeerLink};
use crate::serve::tickets::{collection, parse_ticket, QueryError, SnapshotQuery, Ticket as Query};
use crate::serve::ReplyStream;

/// The Flight service.
#[derive(Clone)]
pub struct TrimatchFlight {
    reader: ClusterReader,
    gate: AccessGate,
    /// How Flight SQL statements run.
    sql: SqlSettings,
    /// What the SQL calls share, made at the first one (when the reader,
    /// the metrics and the key are final).
    sql_engine: Arc<OnceLock<Arc<SqlEngine>>>,
    /// Policy previews, one at a time.
    previews: Previews,
}

impl TrimatchFlight {
    pub fn new(pipeline: PipelineHandle, retention: Duration) -> Self {
        TrimatchFlight {
            reader: ClusterReader::new(pipeline, retention),
            gate: AccessGate::default(),
            sql: SqlSettings::default(),
            sql_engine: Arc::default(),
            previews: Previews::default(),
        }
    }

    /// Runs Flight SQL statements with `settings`.
    pub fn with_sql(mut self, settings: SqlSettings) -> Self {
        self.sql_engine = Arc::default();
        self.sql = settings;
        self
    }

    /// Authenticates every call with `auth`; with `audit`, logs each one.
    pub fn with_auth(mut self, auth: Arc<Authenticator>, audit: bool) -> Self {
        self.sql_engine = Arc::default();
        self.gate = self.gate.with_auth(auth, audit);
        self
    }

    /// Allows `total` DoGet and subscription streams open at once, and
    /// `per_caller` for one caller.
    pub fn with_stream_limits(mut self, total: usize, per_caller: usize) -> Self {
        self.gate = self.gate.with_stream_limits(total, per_caller);
        self
    }

    /// Counts requests in `metrics` (the ones `/metrics` renders).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.sql_engine = Arc::default();
        self.gate = self.gate.with_metrics(metrics);
        self
    }

    /// Answers reads with the shards of the processes at `peers` too,
    /// reached through `link`.
    pub fn with_peers(mut self, peers: Vec<String>, process: usize, link: PeerLink) -> Self {
        self.sql_engine = Arc::default();
        self.reader = self.reader.with_peers(peers, process, link);
        self
    }

    /// The Flight SQL adapter, for one call of `principal`.
    fn sql<T>(
        &self,
        principal: &Principal,
        request: Request<T>,
    ) -> Result<(SqlService, Request<T>), Status> {
        let engine = match self.sql_engine.get() {
            Some(engine) => engine.clone(),
            None => {
                let engine = SqlEngine::new(
                    self.reader.clone(),
                    self.gate.metrics().clone(),
                    self.sql.clone(),
                    &self.gate.process_key(SqlEngine::HANDLE_KEY_PURPOSE),
                )
                .map_err(|error| {
                    Status::unavailable(format!("the SQL pool could not start: {error}"))
                })?;
                // Two first calls at once: one engine is kept, the other dropped.
                let _ = self.sql_engine.set(Arc::new(engine));
                self.sql_engine.get().expect("just set").clone()
            }
        };
        Ok((
            SqlService::new(engine),
            flight_sql::with_principal(request, principal),
        ))
    }

    /// Records a call handed to the Flight SQL adapter.
    fn sql_done<T>(
        &self,
        principal: &Principal,
        started: Instant,
        result: Result<T, Status>,
    ) -> Result<T, Status> {
        self.gate
            .record(call(principal, "sql", None, started), &result);
        result
    }

    /// The FlightInfo of a query: its schema, a row count where one is cheap
    /// (a whole collection at the newest time, in this process), and an
    /// endpoint that serves its ticket.
    async fn info(
        &self,
        ticket: Vec<u8>,
        query: Query,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let (schema, count) = match query {
            Query::Snapshot(query) => {
                let whole = !query.filter.has_conditions()
                    && query.limit.is_none()
                    && query.as_of.is_none();
                let count = if whole {
                    self.reader
                        .count_newest(query.collection, query.filter)
                        .await
                        .map(|count| count as i64)
                        .unwrap_or(-1)
                } else {
                    -1
                };
                (schema(query.collection), count)
            }
            Query::Subscribe(query) => (change_schema(query.collection), -1),
        };
        FlightInfo::new()
            .try_with_schema(&schema)
            .map_err(|error| Status::internal(error.to_string()))
            .map(|info| {
                info.with_descriptor(descriptor)
                    .with_endpoint(FlightEndpoint::new().with_ticket(Ticket::new(ticket)))
                    .with_total_records(count)
                    .with_ordered(false)
            })
    }

    /// One FlightInfo per collection `principal` may read, with its row
    /// count over the principal's tenants.
    async fn list_infos(&self, principal: &Principal) -> Result<Vec<FlightInfo>, Status> {
        let mut infos = Vec::new();
        for collection in OutputCollection::ALL {
            if !may_read(principal, collection) {
                continue;
            }
            let descriptor = FlightDescriptor::new_path(vec![collection.name().to_string()]);
            let filter = scoped(principal, collection, Arc::default(), false)?;
            let query = Query::Snapshot(SnapshotQuery {
                collection,
                filter,
                as_of: None,
                limit: None,
                shard: false,
            });
            infos.push(
                self.info(collection.name().as_bytes().to_vec(), query, descriptor)
                    .await?,
            );
        }
        Ok(infos)
    }

    /// A DoGet of one of trimatch's own tickets: the stream, and the rows a
    /// snapshot sends.
    async fn read(
        &self,
        query: Query,
        ticket: &[u8],
    ) -> Result<(ReplyStream<FlightData>, Option<usize>), Status> {
        match query {
            Query::Snapshot(query) => {
                let snapshot = self.reader.snapshot(query, ticket).await?;
                let rows = snapshot.rows();
                Ok((snapshot_stream(snapshot), Some(rows)))
            }
            Query::Subscribe(query) => {
                let feed = self.reader.subscribe(query, ticket).await?;
                Ok((feed_stream(feed), None))
            }
        }
    }

    async fn action(
        &self,
        principal: &Principal,
        action: Action,
    ) -> Result<Vec<arrow_flight::Result>, Status> {
        match action.r#type.as_str() {
            PREVIEW_ACTION => {
                let answer = self
                    .previews
                    .preview(&self.reader, principal, &action.body)
                    .await?;
                Ok(answer
                    .into_iter()
                    .map(|stream| arrow_flight::Result {
                        body: stream.into(),
                    })
                    .collect())
            }
            PREVIEW_SHARD_ACTION => {
                let answer = self
                    .previews
                    .shard(&self.reader, principal, &action.body)
                    .await?;
                Ok(answer
                    .into_iter()
                    .map(|body| arrow_flight::Result { body: body.into() })
                    .collect())
            }
            "status" => {
                authorize_admin(principal, "the status action")?;
                let body = super::status::status_json(&self.reader, self.gate.metrics())
                    .await?
                    .to_string();
                Ok(vec![arrow_flight::Result { body: body.into() }])
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action {other:?}; the actions are: status, {PREVIEW_ACTION}"
            ))),
        }
    }
}

/// The record of a call.
fn call<'a>(
    principal: &'a Principal,
    method: &'static str,
    collection: Option<OutputCollection>,
    started: Instant,
) -> CallRecord<'a> {
    CallRecord {
        principal,
        method,
        collection,
        rows: None,
        started,
    }
}

fn invalid(error: QueryError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// The ticket a descriptor stands for: a path `[name]`, or a command holding a ticket.
fn descriptor_ticket(descriptor: &FlightDescriptor) -> Result<Vec<u8>, Status> {
    if !descriptor.cmd.is_empty() {
        return Ok(descriptor.cmd.to_vec());
    }
    match descriptor.path.as_slice() {
        [name] => {
            collection(name).map_err(invalid)?;
            Ok(name.as_bytes().to_vec())
        }
        _ => Err(Status::invalid_argument(
            "a descriptor is a path with one collection name, e.g. [\"match_exceptions\"], or a command holding a ticket",
        )),
    }
}

/// The query a descriptor stands for, as `principal` may run it.
fn descriptor_query(
    principal: &Principal,
    descriptor: &FlightDescriptor,
) -> Result<(Vec<u8>, Query), Status> {
    let ticket = descriptor_ticket(descriptor)?;
    let query = authorize(principal, parse_ticket(&ticket).map_err(invalid)?)?;
    Ok((ticket, query))
}

/// The collection a query reads.
fn collection_of(query: &Query) -> OutputCollection {
    match query {
        Query::Snapshot(query) => query.collection,
        Query::Subscribe(query) => query.collection,
    }
}

/// The schema a query is answered with.
fn schema_of(query: &Query) -> Result<SchemaResult, Status> {
    let schema = match query {
        Query::Snapshot(query) => schema(query.collection),
        Query::Subscribe(query) => change_schema(query.collection),
    };
    SchemaAsIpc::new(&schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|error: arrow::error::ArrowError| Status::internal(error.to_string()))
}

#[tonic::async_trait]
impl FlightService for TrimatchFlight {
    type HandshakeStream = ReplyStream<HandshakeResponse>;
    type ListFlightsStream = ReplyStream<FlightInfo>;
    type DoGetStream = ReplyStream<FlightData>;
    type DoPutStream = ReplyStream<PutResult>;
    type DoExchangeStream = ReplyStream<FlightData>;
    type DoActionStream = ReplyStream<arrow_flight::Result>;
    type ListActionsStream = ReplyStream<ActionType>;

    /// Basic credentials (or any accepted token) in the `authorization`
    /// header give a session token, returned in the `authorization` header
    /// as `Bearer <token>` (and as the payload), as Flight clients expect.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let (_, token) = self.gate.handshake(request.metadata(), peer)?;
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into(),
        };
        let mut response = Response::new(stream::iter([Ok(reply)]).boxed());
        let header = format!("Bearer {token}")
            .parse()
            .map_err(|_| Status::internal("a session token is ASCII"))?;
        response.metadata_mut().insert("authorization", header);
        Ok(response)
    }

    async fn list_flights(
        &self,
        request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        let result = self.list_infos(&principal).await;
        self.gate
            .record(call(&principal, "list_flights", None, started), &result);
        let infos = result?.into_iter().map(Ok);
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        if flight_sql::is_sql_command(&request.get_ref().cmd) {
            let (sql, request) = self.sql(&principal, request)?;
            let result = sql.get_flight_info(request).await;
            return self.sql_done(&principal, started, result);
        }
        let descriptor = request.into_inner();
        let (collection, result) = match descriptor_query(&principal, &descriptor) {
            Ok((ticket, query)) => (
                Some(collection_of(&query)),
                self.info(ticket, query, descriptor).await,
            ),
            Err(status) => (None, Err(status)),
        };
        self.gate.record(
            call(&principal, "get_flight_info", collection, started),
            &result,
        );
        result.map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.gate.caller(&request)?;
        Err(Status::unimplemented(
            "trimatch answers GetFlightInfo at once; PollFlightInfo is not needed",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        let query = descriptor_query(&principal, request.get_ref());
        let collection = query.as_ref().ok().map(|(_, query)| collection_of(query));
        let result = query.and_then(|(_, query)| schema_of(&query));
        self.gate
            .record(call(&principal, "get_schema", collection, started), &result);
        result.map(Response::new)
    }

    async fn do_get(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        if flight_sql::is_sql_command(&request.get_ref().ticket) {
            let (sql, request) = self.sql(&principal, request)?;
            let result = sql.do_get(request).await;
            return self.sql_done(&principal, started, result);
        }
        let ticket = request.into_inner().ticket;
        let query = parse_ticket(&ticket)
            .map_err(invalid)
            .and_then(|query| authorize(&principal, query));
        let collection = query.as_ref().ok().map(collection_of);
        let method = match &query {
            Ok(Query::Subscribe(_)) => "subscribe",
            _ => "do_get",
        };
        let result = match query {
            Ok(query) => match self.gate.open_stream(&principal) {
                Ok(slot) => self.read(query, &ticket).await.map(|(stream, rows)| {
                    // The slot is held as long as the stream is.
                    let stream = stream
                        .map(move |message| {
                            let _held = &slot;
                            message
                        })
                        .boxed();
                    (stream, rows)
                }),
                Err(status) => Err(status),
            },
            Err(status) => Err(status),
        };
        let rows = result.as_ref().ok().and_then(|(_, rows)| *rows);
        self.gate.record(
            CallRecord {
                rows,
                ..call(&principal, method, collection, started)
            },
            &result,
        );
        result.map(|(stream, _)| Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        // Flight SQL binds a prepared statement's parameters with DoPut;
        // the SQL adapter refuses every other put (the tables are read-only).
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        let (sql, request) = self.sql(&principal, request)?;
        let result = sql.do_put(request).await;
        self.sql_done(&principal, started, result)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.gate.caller(&request)?;
        Err(Status::unimplemented(
            "DoExchange is not offered; use DoGet with a subscribe ticket",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let started = Instant::now();
        let principal = self.gate.caller(&request)?;
        if SQL_ACTIONS.contains(&request.get_ref().r#type.as_str()) {
            let (sql, request) = self.sql(&principal, request)?;
            let result = sql.do_action(request).await;
            return self.sql_done(&principal, started, result);
        }
        let result = self.action(&principal, request.into_inner()).await;
        self.gate
            .record(call(&principal, "do_action", None, started), &result);
        Ok(Response::new(
            stream::iter(result?.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.gate.caller(&request)?;
        let status = ActionType {
            r#type: "status".to_string(),
            description: "JSON: newest complete time, frontier, offsets per topic-partition, row counts, uptime (admins)"
                .to_string(),
        };
        let preview = ActionType {
            r#type: PREVIEW_ACTION.to_string(),
            description: "JSON {\"upsert\": [policy, …], \"delete\": [identity, …]} → what the policy change would raise and release (Arrow IPC: match_exceptions' columns and _diff) and which invoices would change status (Arrow IPC), without changing anything (admins of the tenant; SPEC §12.4)".to_string(),
        };
        let sql = SQL_ACTIONS.iter().map(|name| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: format!("Flight SQL: {name} (SPEC §10)"),
            })
        });
        Ok(Response::new(
            stream::iter([Ok(status), Ok(preview)].into_iter().chain(sql)).boxed(),
        ))
    }
}

//! The Arrow Flight service of SPEC §5 over a running pipeline: Handshake,
//! ListFlights, GetFlightInfo, GetSchema, DoGet (snapshots and subscriptions)
//! and the `status` action. Every call is authenticated (`serve::auth`) and
//! authorized (`authorize`) before it reads. Reads go through
//! [`PipelineHandle`]; nothing here knows about Kafka or the matching rules.

use std::collections::BTreeMap;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::datatypes::{Schema, SchemaRef};
use arrow::record_batch::RecordBatch;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::{
    Action, ActionType, Criteria, Empty, FlightData, FlightDescriptor, FlightEndpoint, FlightInfo,
    HandshakeRequest, HandshakeResponse, PollInfo, PutResult, SchemaAsIpc, SchemaResult, Ticket,
};
use arrow_ipc::writer::IpcWriteOptions;
use futures::stream::{self, StreamExt};
use serde_json::json;
use tonic::{Request, Response, Status, Streaming};
use trimatch_dataflows::{OutputCollection, ReadError, Time};

use super::encode::Encoder;

use super::authorize::{authorize, authorize_admin, forwarded_ticket, may_read, scoped};
use super::peers::{peer_unavailable, PeerLink, PEER_COMPLETION_WAIT};
use super::sql::{is_sql_command, SqlSettings, SQL_ACTIONS};
use crate::output::columns::{change_schema, record_batch, schema};
use crate::output::filter::RowFilter;
use crate::output::{AS_OF_KEY, OFFSETS_KEY};
use crate::pipeline::{PipelineHandle, ServeError};
use crate::serve::auth::{Authenticator, Principal};
use crate::serve::metrics::Metrics;
use crate::serve::tickets::{collection, parse_ticket, QueryError, SnapshotQuery, Ticket as Query};

/// Rows per record batch sent.
pub const BATCH_ROWS: usize = 8 * 1024;
/// A subscription forwards a progress time at least this often while idle.
pub(super) const PROGRESS_INTERVAL: Duration = Duration::from_millis(100);

pub(super) type FlightStream<T> =
    Pin<Box<dyn futures::Stream<Item = Result<T, Status>> + Send + 'static>>;

/// The Flight service.
#[derive(Clone)]
pub struct TrimatchFlight {
    pub(super) pipeline: PipelineHandle,
    /// How far back `as_of` may go (for error messages).
    retention: Duration,
    /// In cluster mode: every process's Flight address, in process order, and
    /// this process's index. A snapshot asks the other processes for their
    /// shards at the same time and answers with the whole state.
    pub(super) peers: Vec<String>,
    pub(super) process: usize,
    /// How the other processes are reached (TLS, cluster token).
    pub(super) peer_link: PeerLink,
    /// Where requests are counted (shared with the metrics endpoint).
    pub(super) metrics: Arc<Metrics>,
    /// Who is calling.
    pub(super) auth: Arc<Authenticator>,
    /// One log line per authenticated request (`--audit-log`).
    pub(super) audit: bool,
    /// How Flight SQL statements run.
    pub(super) sql: SqlSettings,
}

impl TrimatchFlight {
    pub fn new(pipeline: PipelineHandle, retention: Duration) -> Self {
        TrimatchFlight {
            pipeline,
            retention,
            peers: Vec::new(),
            process: 0,
            peer_link: PeerLink::default(),
            metrics: Metrics::new(),
            auth: Arc::new(Authenticator::disabled()),
            audit: false,
            sql: SqlSettings::default(),
        }
    }

    /// Runs Flight SQL statements with `settings`.
    pub fn with_sql(mut self, settings: SqlSettings) -> Self {
        self.sql = settings;
        self
    }

    /// Authenticates every call with `auth`; with `audit`, logs each one.
    pub fn with_auth(mut self, auth: Arc<Authenticator>, audit: bool) -> Self {
        self.auth = auth;
        self.audit = audit;
        self
    }

    /// Counts requests in `metrics` (the ones `/metrics` renders).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers reads with the shards of the processes at `peers` too,
    /// reached through `link`.
    pub fn with_peers(mut self, peers: Vec<String>, process: usize, link: PeerLink) -> Self {
        self.peers = peers;
        self.process = process;
        self.peer_link = link;
        self
    }

    /// The other processes' shards of a snapshot at `as_of`: their record
    /// batches, and the offsets their shards of `source_progress` report.
    pub(super) async fn peer_shards(
        &self,
        ticket: &[u8],
        filter: &RowFilter,
        as_of: Time,
    ) -> Result<(Vec<RecordBatch>, BTreeMap<String, i64>), Status> {
        let mut request = forwarded_ticket(ticket, filter)?;
        request["as_of"] = json!(as_of);
        let mut batches = Vec::new();
        let mut offsets = BTreeMap::new();
        for (process, peer) in self.peers.iter().enumerate() {
            if process == self.process {
                continue;
            }
            let unavailable =
                |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
            let mut client = self.peer_link.connect(process, peer).await?;
            let mut stream = client
                .do_get(Ticket::new(request.to_string()))
                .await
                .map_err(|error| unavailable(&error))?;
            while let Some(batch) = stream.next().await {
                batches.push(batch.map_err(|error| unavailable(&error))?);
            }
            if let Some(text) = stream
                .schema()
                .and_then(|schema| schema.metadata().get(OFFSETS_KEY))
            {
                let shard: BTreeMap<String, i64> = serde_json::from_str(text).unwrap_or_default();
                offsets.extend(shard);
            }
        }
        Ok((batches, offsets))
    }

    pub(super) fn status_of(&self, error: ServeError) -> Status {
        match error {
            ServeError::Read(ReadError::Compacted { as_of, since }) => Status::out_of_range(format!(
                "as_of {as_of} is older than the retained history, which starts at {since} \
                 (history is kept for {} s); ask for a newer as_of, or omit it for the newest state",
                self.retention.as_secs()
            )),
            ServeError::Read(ReadError::NotComplete { as_of, newest }) => Status::out_of_range(format!(
                "as_of {as_of} is not complete yet; the newest complete time is {newest}"
            )),
            ServeError::Starting => Status::unavailable("trimatch is starting: no time is complete yet; retry shortly"),
            ServeError::Stopped(reason) => Status::unavailable(format!("the pipeline has stopped: {reason}")),
            error @ ServeError::AcrossRestart { .. } => Status::out_of_range(error.to_string()),
        }
    }

    /// Runs a blocking read off the async runtime.
    pub(super) async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&PipelineHandle) -> Result<T, ServeError> + Send + 'static,
    ) -> Result<T, Status> {
        let pipeline = self.pipeline.clone();
        match tokio::task::spawn_blocking(move || read(&pipeline)).await {
            Ok(result) => result.map_err(|error| self.status_of(error)),
            Err(error) => Err(Status::internal(format!("a read failed: {error}"))),
        }
    }

    /// The FlightInfo of a ticket: its schema and an endpoint that serves it.
    async fn info(
        &self,
        ticket: Vec<u8>,
        query: Query,
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let (schema, count) = match &query {
            Query::Snapshot(query) => {
                let collection = query.collection;
                let filter = query.filter.clone();
                let count =
                    if !filter.has_conditions() && query.limit.is_none() && query.as_of.is_none() {
                        self.blocking(move |pipeline| {
                            let as_of = pipeline.resolve_as_of(None)?;
                            pipeline.count_where(collection, as_of, &filter)
                        })
                        .await
                        .map(|count| count as i64)
                        .unwrap_or(-1)
                    } else {
                        -1
                    };
                (schema(collection), count)
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

    /// A snapshot: the schema (with `trimatch.as_of` and `trimatch.offsets`),
    /// then the rows in record batches of at most [`BATCH_ROWS`].
    async fn snapshot(
        &self,
        query: SnapshotQuery,
        ticket: &[u8],
    ) -> Result<(FlightStream<FlightData>, usize), Status> {
        let SnapshotQuery {
            collection,
            filter,
            as_of,
            limit,
            shard,
        } = query;
        let forwarded_filter = filter.clone();
        let (snapshot, mut offsets) = self
            .blocking(move |pipeline| {
                if let (true, Some(as_of)) = (shard, as_of) {
                    pipeline.wait_until_complete(as_of, PEER_COMPLETION_WAIT);
                }
                pipeline.read_with_offsets(collection, as_of, &filter, limit)
            })
            .await?;
        let (mut remote, remote_offsets) = if shard || self.peers.len() <= 1 {
            (Vec::new(), BTreeMap::new())
        } else {
            self.peer_shards(ticket, &forwarded_filter, snapshot.as_of)
                .await?
        };
        offsets.extend(remote_offsets);
        let schema = with_metadata(schema(collection), snapshot.as_of, &offsets);
        let mut encoder = Encoder::new(schema.clone());
        let first = encoder.schema();
        let mut rows = snapshot.rows;
        // With a limit, the whole answer holds at most that many rows.
        let mut room = limit.unwrap_or(usize::MAX).saturating_sub(rows.len());
        rows.truncate(limit.unwrap_or(usize::MAX));
        for batch in remote.iter_mut() {
            if batch.num_rows() > room {
                *batch = batch.slice(0, room);
            }
            room -= batch.num_rows();
        }
        remote.retain(|batch| batch.num_rows() > 0);
        let total = rows.len() + remote.iter().map(RecordBatch::num_rows).sum::<usize>();
        let local = (0..rows.len()).step_by(BATCH_ROWS).map(move |start| {
            let end = (start + BATCH_ROWS).min(rows.len());
            record_batch(&schema, rows[start..end].iter())
                .map_err(|error| Status::internal(error.to_string()))
        });
        let batches =
            stream::iter(local.chain(remote.into_iter().map(Ok))).flat_map(move |batch| {
                let messages = batch.and_then(|batch| encoder.batch(&batch));
                stream::iter(match messages {
                    Ok(messages) => messages.into_iter().map(Ok).collect::<Vec<_>>(),
                    Err(status) => vec![Err(status)],
                })
            });
        let stream = stream::once(async move { Ok(first) })
            .chain(batches)
            .boxed();
        Ok((stream, total))
    }
}

fn invalid(error: QueryError) -> Status {
    Status::invalid_argument(error.to_string())
}

/// `schema` with the snapshot's time and offsets as metadata.
pub(super) fn with_metadata(
    schema: SchemaRef,
    as_of: Time,
    offsets: &BTreeMap<String, i64>,
) -> SchemaRef {
    let mut metadata = schema.metadata().clone();
    metadata.insert(AS_OF_KEY.to_string(), as_of.to_string());
    metadata.insert(
        OFFSETS_KEY.to_string(),
        serde_json::to_string(offsets).expect("a map of numbers serializes"),
    );
    Arc::new(Schema::new_with_metadata(schema.fields().clone(), metadata))
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

impl TrimatchFlight {
    /// Counts a request and how long it took to answer (streams: until the
    /// reply stream was ready).
    pub(super) fn record<T>(&self, method: &str, result: &Result<T, Status>, started: Instant) {
        self.metrics
            .flight_request(method, result.is_err(), started.elapsed());
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

    async fn action(
        &self,
        principal: &Principal,
        action: Action,
    ) -> Result<Vec<arrow_flight::Result>, Status> {
        match action.r#type.as_str() {
            "status" => {
                authorize_admin(principal, "the status action")?;
                let body = self.status_json().await?.to_string();
                Ok(vec![arrow_flight::Result { body: body.into() }])
            }
            other => Err(Status::invalid_argument(format!(
                "unknown action {other:?}; the actions are: status"
            ))),
        }
    }
}

#[tonic::async_trait]
impl FlightService for TrimatchFlight {
    type HandshakeStream = FlightStream<HandshakeResponse>;
    type ListFlightsStream = FlightStream<FlightInfo>;
    type DoGetStream = FlightStream<FlightData>;
    type DoPutStream = FlightStream<PutResult>;
    type DoExchangeStream = FlightStream<FlightData>;
    type DoActionStream = FlightStream<arrow_flight::Result>;
    type ListActionsStream = FlightStream<ActionType>;

    /// Basic credentials (or any accepted token) in the `authorization`
    /// header give a session token, returned in the `authorization` header
    /// as `Bearer <token>` (and as the payload), as Flight clients expect.
    async fn handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        let peer = request.remote_addr().map(|addr| addr.ip());
        let (principal, token) = self.auth.handshake(request.metadata(), peer)?;
        self.audit(&principal, "handshake", None, None, &Ok::<(), Status>(()));
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
        let principal = self.caller(&request)?;
        let result = self.list_infos(&principal).await;
        self.record("list_flights", &result, started);
        self.audit(&principal, "list_flights", None, None, &result);
        let infos = result?.into_iter().map(Ok);
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let principal = self.caller(&request)?;
        if is_sql_command(&request.get_ref().cmd) {
            let (sql, request) = self.sql_call(&principal, request);
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
        self.record("get_flight_info", &result, started);
        self.audit(&principal, "get_flight_info", collection, None, &result);
        result.map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        self.caller(&request)?;
        Err(Status::unimplemented(
            "trimatch answers GetFlightInfo at once; PollFlightInfo is not needed",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let started = Instant::now();
        let principal = self.caller(&request)?;
        let query = descriptor_query(&principal, request.get_ref());
        let collection = query.as_ref().ok().map(|(_, query)| collection_of(query));
        let result = query.and_then(|(_, query)| schema_of(&query));
        self.record("get_schema", &result, started);
        self.audit(&principal, "get_schema", collection, None, &result);
        result.map(Response::new)
    }

    async fn do_get(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let started = Instant::now();
        let principal = self.caller(&request)?;
        if is_sql_command(&request.get_ref().ticket) {
            let (sql, request) = self.sql_call(&principal, request);
            let result = sql.do_get(request).await;
            return self.sql_done(&principal, started, result);
        }
        let ticket = request.into_inner().ticket;
        let query = parse_ticket(&ticket)
            .map_err(invalid)
            .and_then(|query| authorize(&principal, query));
        let collection = query.as_ref().ok().map(collection_of);
        let (method, result) = match query {
            Ok(Query::Snapshot(query)) => ("do_get", self.snapshot(query, &ticket).await),
            Ok(Query::Subscribe(query)) => (
                "subscribe",
                self.subscribe(query, &ticket)
                    .await
                    .map(|stream| (stream, 0)),
            ),
            Err(status) => ("do_get", Err(status)),
        };
        self.record(method, &result, started);
        let rows = result
            .as_ref()
            .ok()
            .filter(|_| method == "do_get")
            .map(|(_, rows)| *rows);
        self.audit(&principal, method, collection, rows, &result);
        result.map(|(stream, _)| Response::new(stream))
    }

    async fn do_put(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        // Flight SQL binds a prepared statement's parameters with DoPut;
        // the SQL service refuses every other put (the tables are read-only).
        let started = Instant::now();
        let principal = self.caller(&request)?;
        let (sql, request) = self.sql_call(&principal, request);
        let result = sql.do_put(request).await;
        self.sql_done(&principal, started, result)
    }

    async fn do_exchange(
        &self,
        request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        self.caller(&request)?;
        Err(Status::unimplemented(
            "DoExchange is not offered; use DoGet with a subscribe ticket",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let started = Instant::now();
        let principal = self.caller(&request)?;
        if SQL_ACTIONS.contains(&request.get_ref().r#type.as_str()) {
            let (sql, request) = self.sql_call(&principal, request);
            let result = sql.do_action(request).await;
            return self.sql_done(&principal, started, result);
        }
        let result = self.action(&principal, request.into_inner()).await;
        self.record("do_action", &result, started);
        self.audit(&principal, "do_action", None, None, &result);
        Ok(Response::new(
            stream::iter(result?.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        self.caller(&request)?;
        let status = ActionType {
            r#type: "status".to_string(),
            description: "JSON: newest complete time, frontier, offsets per topic-partition, row counts, uptime (admins)"
                .to_string(),
        };
        let sql = SQL_ACTIONS.iter().map(|name| {
            Ok(ActionType {
                r#type: name.to_string(),
                description: format!("Flight SQL: {name} (SPEC §10)"),
            })
        });
        Ok(Response::new(
            stream::iter(std::iter::once(Ok(status)).chain(sql)).boxed(),
        ))
    }
}

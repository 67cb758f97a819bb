//! The Arrow Flight service of SPEC §5 over a running pipeline: ListFlights,
//! GetFlightInfo, GetSchema, DoGet (snapshots and subscriptions) and the
//! `status` action. Reads go through [`PipelineHandle`]; nothing here knows
//! about Kafka or the matching rules.

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

use super::peers::{connect_peer, peer_unavailable, PEER_COMPLETION_WAIT};
use crate::output::columns::{change_schema, record_batch, schema};
use crate::output::{AS_OF_KEY, OFFSETS_KEY};
use crate::pipeline::{PipelineHandle, ServeError};
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
    /// Where requests are counted (shared with the metrics endpoint).
    metrics: Arc<Metrics>,
}

impl TrimatchFlight {
    pub fn new(pipeline: PipelineHandle, retention: Duration) -> Self {
        TrimatchFlight {
            pipeline,
            retention,
            peers: Vec::new(),
            process: 0,
            metrics: Metrics::new(),
        }
    }

    /// Counts requests in `metrics` (the ones `/metrics` renders).
    pub fn with_metrics(mut self, metrics: Arc<Metrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// Answers reads with the shards of the processes at `peers` too.
    pub fn with_peers(mut self, peers: Vec<String>, process: usize) -> Self {
        self.peers = peers;
        self.process = process;
        self
    }

    /// The other processes' shards of a snapshot at `as_of`: their record
    /// batches, and the offsets their shards of `source_progress` report.
    async fn peer_shards(
        &self,
        ticket: &[u8],
        as_of: Time,
    ) -> Result<(Vec<RecordBatch>, BTreeMap<String, i64>), Status> {
        let mut request: serde_json::Value = if ticket.trim_ascii_start().starts_with(b"{") {
            serde_json::from_slice(ticket)
                .map_err(|error| Status::invalid_argument(error.to_string()))?
        } else {
            json!({ "collection": String::from_utf8_lossy(ticket).trim() })
        };
        request["as_of"] = json!(as_of);
        request["shard"] = json!(true);
        let mut batches = Vec::new();
        let mut offsets = BTreeMap::new();
        for (process, peer) in self.peers.iter().enumerate() {
            if process == self.process {
                continue;
            }
            let unavailable =
                |error: &dyn std::fmt::Display| peer_unavailable(process, peer, error);
            let mut client = connect_peer(process, peer).await?;
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
        descriptor: FlightDescriptor,
    ) -> Result<FlightInfo, Status> {
        let query = parse_ticket(&ticket).map_err(invalid)?;
        let (schema, count) = match &query {
            Query::Snapshot(query) => {
                let collection = query.collection;
                let count =
                    if query.filter.is_empty() && query.limit.is_none() && query.as_of.is_none() {
                        self.blocking(move |pipeline| {
                            let as_of = pipeline.resolve_as_of(None)?;
                            pipeline.count(collection, as_of)
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
    ) -> Result<FlightStream<FlightData>, Status> {
        let SnapshotQuery {
            collection,
            filter,
            as_of,
            limit,
            shard,
        } = query;
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
            self.peer_shards(ticket, snapshot.as_of).await?
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
        Ok(stream::once(async move { Ok(first) })
            .chain(batches)
            .boxed())
    }

    /// The `status` action's JSON.
    async fn status_json(&self) -> Result<serde_json::Value, Status> {
        let pipeline = self.pipeline.clone();
        self.blocking(move |_| {
            let newest = pipeline.newest_complete();
            let mut row_counts = serde_json::Map::new();
            if let Some(newest) = newest {
                for collection in OutputCollection::ALL {
                    row_counts.insert(
                        collection.name().to_string(),
                        json!(pipeline.count(collection, newest)?),
                    );
                }
            }
            let offsets: serde_json::Map<String, serde_json::Value> = pipeline
                .metrics()
                .snapshot()
                .into_iter()
                .map(|((topic, partition), counters)| {
                    (
                        format!("{topic}/{partition}"),
                        json!({
                            "next_offset": counters.next_offset,
                            "high_watermark": counters.high_watermark,
                            "lag": counters.lag(),
                            "consumed": counters.consumed,
                            "applied": counters.applied,
                            "dead_lettered": counters.dead_lettered,
                        }),
                    )
                })
                .collect();
            Ok(json!({
                "time": newest,
                "frontier": newest.map(|time| time + 1),
                "ready": pipeline.is_ready(),
                "uptime_seconds": pipeline.started().elapsed().as_secs_f64(),
                "offsets": offsets,
                "row_counts": row_counts,
                "subscribers": pipeline.hub().subscribers(),
                "error": pipeline.error(),
            }))
        })
        .await
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

/// The schema a descriptor's ticket would be answered with.
fn schema_of(descriptor: &FlightDescriptor) -> Result<SchemaResult, Status> {
    let ticket = descriptor_ticket(descriptor)?;
    let schema = match parse_ticket(&ticket).map_err(invalid)? {
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
    fn record<T>(&self, method: &str, result: &Result<T, Status>, started: Instant) {
        self.metrics
            .flight_request(method, result.is_err(), started.elapsed());
    }

    async fn list_infos(&self) -> Result<Vec<FlightInfo>, Status> {
        let mut infos = Vec::new();
        for collection in OutputCollection::ALL {
            let descriptor = FlightDescriptor::new_path(vec![collection.name().to_string()]);
            infos.push(
                self.info(collection.name().as_bytes().to_vec(), descriptor)
                    .await?,
            );
        }
        Ok(infos)
    }

    async fn action(&self, action: Action) -> Result<Vec<arrow_flight::Result>, Status> {
        match action.r#type.as_str() {
            "status" => {
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

    async fn handshake(
        &self,
        _request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<Response<Self::HandshakeStream>, Status> {
        Err(Status::unimplemented(
            "trimatch needs no handshake: call DoGet directly",
        ))
    }

    async fn list_flights(
        &self,
        _request: Request<Criteria>,
    ) -> Result<Response<Self::ListFlightsStream>, Status> {
        let started = Instant::now();
        let result = self.list_infos().await;
        self.record("list_flights", &result, started);
        let infos = result?.into_iter().map(Ok);
        Ok(Response::new(stream::iter(infos).boxed()))
    }

    async fn get_flight_info(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        let started = Instant::now();
        let descriptor = request.into_inner();
        let result = match descriptor_ticket(&descriptor) {
            Ok(ticket) => self.info(ticket, descriptor).await,
            Err(status) => Err(status),
        };
        self.record("get_flight_info", &result, started);
        result.map(Response::new)
    }

    async fn poll_flight_info(
        &self,
        _request: Request<FlightDescriptor>,
    ) -> Result<Response<PollInfo>, Status> {
        Err(Status::unimplemented(
            "trimatch answers GetFlightInfo at once; PollFlightInfo is not needed",
        ))
    }

    async fn get_schema(
        &self,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<SchemaResult>, Status> {
        let started = Instant::now();
        let result = schema_of(&request.into_inner());
        self.record("get_schema", &result, started);
        result.map(Response::new)
    }

    async fn do_get(
        &self,
        request: Request<arrow_flight::Ticket>,
    ) -> Result<Response<Self::DoGetStream>, Status> {
        let started = Instant::now();
        let ticket = request.into_inner().ticket;
        let (method, result) = match parse_ticket(&ticket).map_err(invalid) {
            Ok(Query::Snapshot(query)) => ("do_get", self.snapshot(query, &ticket).await),
            Ok(Query::Subscribe(query)) => ("subscribe", self.subscribe(query, &ticket).await),
            Err(status) => ("do_get", Err(status)),
        };
        self.record(method, &result, started);
        result.map(Response::new)
    }

    async fn do_put(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoPutStream>, Status> {
        Err(Status::unimplemented(
            "trimatch's collections are read-only; documents come in through the Kafka input topics",
        ))
    }

    async fn do_exchange(
        &self,
        _request: Request<Streaming<FlightData>>,
    ) -> Result<Response<Self::DoExchangeStream>, Status> {
        Err(Status::unimplemented(
            "DoExchange is not offered; use DoGet with a subscribe ticket",
        ))
    }

    async fn do_action(
        &self,
        request: Request<Action>,
    ) -> Result<Response<Self::DoActionStream>, Status> {
        let started = Instant::now();
        let result = self.action(request.into_inner()).await;
        self.record("do_action", &result, started);
        Ok(Response::new(
            stream::iter(result?.into_iter().map(Ok)).boxed(),
        ))
    }

    async fn list_actions(
        &self,
        _request: Request<Empty>,
    ) -> Result<Response<Self::ListActionsStream>, Status> {
        let status = ActionType {
            r#type: "status".to_string(),
            description: "JSON: newest complete time, frontier, offsets per topic-partition, row counts, uptime"
                .to_string(),
        };
        Ok(Response::new(stream::iter(vec![Ok(status)]).boxed()))
    }
}

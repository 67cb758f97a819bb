//! The cluster reader: the one place serving reads the running job —
//! snapshots, a statement's tables, the offsets a time reflects, and change
//! feeds — from this process's workers and from the other processes of a
//! cluster, at one logical time (SPEC §4, §5).
//!
//! Both adapters (`serve::flight`, `serve::flight_sql`) read through a
//! [`ClusterReader`]; the filters they hand it are already scoped by the
//! access gate (`serve::gate`), so the reader never asks who is calling. What
//! it returns is Arrow record batches and typed feed events, never Flight
//! messages: encoding them is the adapters' business. Failures come back as
//! gRPC statuses, the one error both adapters answer with.
//!
//! May use: `pipeline` (the handle, the subscription hub), `output` (schemas,
//! record batches, filters), `serve::tickets` (the queries), and the Flight
//! client that reaches the other processes (`peers`).

mod feed;
mod peers;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use arrow::datatypes::SchemaRef;
use arrow::error::ArrowError;
use arrow::record_batch::RecordBatch;
use serde_json::{json, Map, Value};
use tonic::Status;
use trimatch_dataflows::{OutputCollection, ReadError, Row, Time};

use crate::output::columns::{projected_record_batch, record_batch, schema};
use crate::output::filter::RowFilter;
use crate::output::{with_snapshot_metadata, BATCH_ROWS};
use crate::pipeline::{PipelineHandle, ReadFailure};
use crate::serve::tickets::SnapshotQuery;
pub use feed::{Feed, FeedEvent};
use peers::Cluster;
pub use peers::{PeerLink, PeerTls};

/// Reads the running job across the processes of a cluster (see the module doc).
#[derive(Clone)]
pub struct ClusterReader {
    pipeline: PipelineHandle,
    /// How far back `as_of` may go (for error messages).
    retention: Duration,
    /// The other processes, if this one is part of a cluster.
    cluster: Arc<Cluster>,
}

/// A snapshot of one collection over the whole cluster: its time, the
/// offsets it reflects, and its rows (this process's, then the others').
pub struct ClusterSnapshot {
    collection: OutputCollection,
    pub as_of: Time,
    pub offsets: BTreeMap<String, i64>,
    local: Vec<Row>,
    remote: Vec<RecordBatch>,
}

impl ClusterSnapshot {
    /// How many rows it holds.
    pub fn rows(&self) -> usize {
        self.local.len() + self.remote.iter().map(RecordBatch::num_rows).sum::<usize>()
    }

    /// The collection's schema with the snapshot's time and offsets.
    pub fn schema(&self) -> SchemaRef {
        with_snapshot_metadata(schema(self.collection), self.as_of, &self.offsets)
    }

    /// The rows as record batches of at most [`BATCH_ROWS`], built as they
    /// are taken.
    pub fn into_batches(self) -> impl Iterator<Item = Result<RecordBatch, ArrowError>> + Send {
        let schema = schema(self.collection);
        let local = self.local;
        let local_batches = (0..local.len()).step_by(BATCH_ROWS).map(move |start| {
            let end = (start + BATCH_ROWS).min(local.len());
            record_batch(&schema, local[start..end].iter())
        });
        local_batches.chain(self.remote.into_iter().map(Ok))
    }
}

/// One collection as a table of a SQL statement: what a scan reads.
pub struct TableRead<'a> {
    pub collection: OutputCollection,
    /// The scoped filter the rows must pass.
    pub filter: Arc<RowFilter>,
    /// The filter's column conditions as a ticket's `filter` (what the other
    /// processes are asked for; `filter`'s tenant set goes with it).
    pub pushed: &'a Map<String, Value>,
    pub as_of: Time,
    /// The columns to build, as indices into the collection's schema.
    pub projection: &'a [usize],
    /// At most this many of this process's rows.
    pub limit: Option<usize>,
}

impl ClusterReader {
    /// A reader of this process alone.
    pub fn new(pipeline: PipelineHandle, retention: Duration) -> Self {
        ClusterReader {
            pipeline,
            retention,
            cluster: Arc::new(Cluster::default()),
        }
    }

    /// Reads the shards of the processes at `peers` (every process's Flight
    /// address, in process order; this one is `process`) too, reached
    /// through `link`.
    pub fn with_peers(mut self, peers: Vec<String>, process: usize, link: PeerLink) -> Self {
        self.cluster = Arc::new(Cluster {
            peers,
            process,
            link,
        });
        self
    }

    /// Whether other processes hold shards of the state.
    pub fn is_cluster(&self) -> bool {
        self.cluster.is_cluster()
    }

    /// The `Result` bodies every other process answers the action (`kind`,
    /// `body`) with (none outside a cluster).
    pub async fn peer_actions(&self, kind: &str, body: &[u8]) -> Result<Vec<Vec<u8>>, Status> {
        self.cluster.actions(kind, body).await
    }

    /// How long a peer's shard request waits for its `as_of` here.
    pub fn peer_completion_wait(&self) -> Duration {
        peers::PEER_COMPLETION_WAIT
    }

    /// The gRPC status of a failed read (what to ask for instead).
    pub fn status_of(&self, failure: ReadFailure) -> Status {
        status_of(failure, self.retention)
    }

    /// The running job this reader reads.
    pub fn pipeline(&self) -> &PipelineHandle {
        &self.pipeline
    }

    /// Runs a blocking read of the pipeline off the async runtime.
    pub async fn blocking<T: Send + 'static>(
        &self,
        read: impl FnOnce(&PipelineHandle) -> Result<T, ReadFailure> + Send + 'static,
    ) -> Result<T, Status> {
        let pipeline = self.pipeline.clone();
        let retention = self.retention;
        match tokio::task::spawn_blocking(move || read(&pipeline)).await {
            Ok(result) => result.map_err(|failure| status_of(failure, retention)),
            Err(error) => Err(Status::internal(format!("a read failed: {error}"))),
        }
    }

    /// The time a read at `as_of` reads (default: the newest complete one).
    pub fn resolve_as_of(&self, as_of: Option<Time>) -> Result<Time, Status> {
        self.pipeline
            .resolve_as_of(as_of)
            .map_err(|failure| status_of(failure, self.retention))
    }

    /// How many rows of `collection` pass `filter` at the newest complete
    /// time, in this process.
    pub async fn count_newest(
        &self,
        collection: OutputCollection,
        filter: Arc<RowFilter>,
    ) -> Result<u64, Status> {
        self.blocking(move |pipeline| {
            let as_of = pipeline.resolve_as_of(None)?;
            pipeline.count_where(collection, as_of, &filter)
        })
        .await
    }

    /// A snapshot: this process's shard of `query`, and — unless the query
    /// asks for the shard alone — every other process's at the same time,
    /// with the offsets they reflect. `ticket` is the query as the client
    /// sent it (what the other processes are forwarded).
    pub async fn snapshot(
        &self,
        query: SnapshotQuery,
        ticket: &[u8],
    ) -> Result<ClusterSnapshot, Status> {
        let SnapshotQuery {
            collection,
            filter,
            as_of,
            limit,
            shard,
        } = query;
        let local_filter = filter.clone();
        let (snapshot, mut offsets) = self
            .blocking(move |pipeline| {
                if let (true, Some(as_of)) = (shard, as_of) {
                    pipeline.wait_until_complete(as_of, peers::PEER_COMPLETION_WAIT);
                }
                pipeline.read_with_offsets(collection, as_of, &local_filter, limit)
            })
            .await?;
        let mut local = snapshot.rows;
        let mut remote = Vec::new();
        if !shard && self.cluster.is_cluster() {
            let shards = self.cluster.shards(ticket, &filter, snapshot.as_of).await?;
            remote = shards.batches;
            offsets.extend(shards.offsets);
        }
        // With a limit, the whole answer holds at most that many rows.
        let limit = limit.unwrap_or(usize::MAX);
        local.truncate(limit);
        let mut room = limit - local.len();
        for batch in remote.iter_mut() {
            if batch.num_rows() > room {
                *batch = batch.slice(0, room);
            }
            room -= batch.num_rows();
        }
        remote.retain(|batch| batch.num_rows() > 0);
        Ok(ClusterSnapshot {
            collection,
            as_of: snapshot.as_of,
            offsets,
            local,
            remote,
        })
    }

    /// A statement's table: the rows of `read.collection` passing its filter
    /// at its time, over the cluster, as batches of the projected columns.
    pub async fn table(&self, read: TableRead<'_>) -> Result<Vec<RecordBatch>, Status> {
        let TableRead {
            collection,
            filter,
            pushed,
            as_of,
            projection,
            limit,
        } = read;
        let local_filter = filter.clone();
        let rows = self
            .blocking(move |pipeline| {
                pipeline
                    .read(collection, Some(as_of), &local_filter, limit)
                    .map(|snapshot| snapshot.rows)
            })
            .await?;
        let full = schema(collection);
        let mut batches = rows
            .chunks(BATCH_ROWS)
            .map(|chunk| projected_record_batch(&full, projection, chunk.iter()))
            .collect::<Result<Vec<_>, _>>()
            .map_err(|error| Status::internal(error.to_string()))?;
        if self.cluster.is_cluster() {
            let ticket = json!({"collection": collection.name(), "filter": pushed}).to_string();
            let shards = self
                .cluster
                .shards(ticket.as_bytes(), &filter, as_of)
                .await?;
            for batch in shards.batches {
                batches.push(
                    batch
                        .project(projection)
                        .map_err(|error| Status::internal(error.to_string()))?,
                );
            }
        }
        Ok(batches)
    }

    /// The input offsets the state at `as_of` reflects (`"topic/partition"`
    /// → the first offset not included), over the whole cluster.
    pub async fn offsets_at(&self, as_of: Time) -> Result<BTreeMap<String, i64>, Status> {
        let (_, mut offsets) = self
            .blocking(move |pipeline| {
                pipeline.read_with_offsets(
                    OutputCollection::SourceProgress,
                    Some(as_of),
                    &Arc::default(),
                    Some(0),
                )
            })
            .await?;
        if self.cluster.is_cluster() {
            let ticket = json!({"collection": OutputCollection::SourceProgress.name()}).to_string();
            let shards = self
                .cluster
                .shards(ticket.as_bytes(), &RowFilter::default(), as_of)
                .await?;
            offsets.extend(shards.offsets);
        }
        Ok(offsets)
    }
}

/// The gRPC status of a failed read, saying what to ask for instead.
fn status_of(failure: ReadFailure, retention: Duration) -> Status {
    match failure {
        ReadFailure::Read(ReadError::Compacted { as_of, since }) => Status::out_of_range(format!(
            "as_of {as_of} is older than the retained history, which starts at {since} \
             (history is kept for {} s); ask for a newer as_of, or omit it for the newest state",
            retention.as_secs()
        )),
        ReadFailure::Read(ReadError::NotComplete { as_of, newest }) => Status::out_of_range(
            format!("as_of {as_of} is not complete yet; the newest complete time is {newest}"),
        ),
        ReadFailure::Starting => {
            Status::unavailable("trimatch is starting: no time is complete yet; retry shortly")
        }
        ReadFailure::Stopped(reason) => {
            Status::unavailable(format!("the pipeline has stopped: {reason}"))
        }
        failure @ ReadFailure::AcrossRestart { .. } => Status::out_of_range(failure.to_string()),
    }
}

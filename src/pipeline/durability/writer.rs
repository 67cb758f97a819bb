//! The process's checkpoint writer: a thread that collects the local
//! workers' shards of each checkpoint time, and once all are in, encodes and
//! writes the generation (`trimatch_state::StateDir::write`), off the worker
//! loops. A time some worker could not take is dropped, as is an older time
//! still incomplete when a newer one completes.

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::mpsc::Receiver;
use std::sync::Arc;

use trimatch_dataflows::model::WallClock;
use trimatch_dataflows::Time;
use trimatch_state::codec::FORMAT_VERSION;
use trimatch_state::{
    Checkpoint, ClusterShape, Manifest, PartitionCheckpoint, ShardSummary, StateDir,
};

use super::schedule::ShardMessage;
use super::CheckpointMetrics;

/// What the writer needs to know.
pub(in crate::pipeline) struct Writer {
    pub dir: StateDir,
    pub shape: ClusterShape,
    pub topics: Vec<String>,
    pub local_workers: usize,
    pub metrics: Arc<CheckpointMetrics>,
}

/// Shards received for one time.
#[derive(Default)]
struct Gathering {
    messages: Vec<ShardMessage>,
    /// A worker that could not take it.
    skipped_by: Option<usize>,
}

impl Writer {
    /// Writes generations until every worker has dropped its sender.
    pub(in crate::pipeline) fn run(self, shards: Receiver<ShardMessage>) {
        let mut gathering: BTreeMap<Time, Gathering> = BTreeMap::new();
        for message in shards {
            let as_of = message.as_of;
            let entry = gathering.entry(as_of).or_default();
            if message.shard.is_none() {
                entry.skipped_by = Some(message.worker);
            }
            entry.messages.push(message);
            if entry.messages.len() < self.local_workers {
                continue;
            }
            let complete = gathering.remove(&as_of).expect("just gathered");
            // Older times will never complete now: their workers moved on.
            gathering.retain(|time, _| *time > as_of);
            if let Some(worker) = complete.skipped_by {
                tracing::warn!(
                    as_of,
                    worker,
                    "worker {worker} could not take the checkpoint at {as_of}; the previous one stays"
                );
                continue;
            }
            self.write(as_of, complete.messages);
        }
    }

    fn write(&self, as_of: Time, messages: Vec<ShardMessage>) {
        let mut partitions = Vec::new();
        let mut shards = Vec::new();
        let mut unchanged_since = 0;
        let mut kafka_cluster_id = None;
        for message in messages {
            unchanged_since = unchanged_since.max(message.unchanged_since);
            kafka_cluster_id = kafka_cluster_id.or(message.kafka_cluster_id);
            partitions.extend(
                message
                    .positions
                    .into_iter()
                    .map(|(topic, partition, point)| PartitionCheckpoint {
                        topic: topic.to_string(),
                        partition,
                        next_offset: point.next_offset,
                        consumed: point.consumed,
                        applied: point.applied,
                        dead_lettered: point.dead_lettered,
                        skipped: point.skipped,
                    }),
            );
            shards.extend(message.shard);
        }
        partitions.sort_by(|a, b| (&a.topic, a.partition).cmp(&(&b.topic, b.partition)));
        shards.sort_by_key(|shard| shard.worker);
        let checkpoint = Checkpoint {
            manifest: Manifest {
                format: FORMAT_VERSION,
                written_by: env!("CARGO_PKG_VERSION").to_string(),
                as_of,
                unchanged_since,
                written_at_ms: Time::now() as i64,
                shape: self.shape.clone(),
                kafka_cluster_id,
                topics: self.topics.clone(),
                partitions,
                shards: shards
                    .iter()
                    .map(|shard| ShardSummary {
                        worker: shard.worker,
                        documents: shard.documents.len() as u64,
                        bookkeeping: shard.bookkeeping.len() as u64,
                        dead_letters_recorded: shard.dead_letters_recorded,
                    })
                    .collect(),
            },
            shards,
        };
        let metrics = &self.metrics;
        match self.dir.write(&checkpoint) {
            Ok(stats) => {
                metrics.last_as_of.store(as_of, Ordering::Relaxed);
                metrics
                    .last_written_at_ms
                    .store(Time::now(), Ordering::Relaxed);
                metrics
                    .last_duration_micros
                    .store((stats.seconds * 1e6) as u64, Ordering::Relaxed);
                metrics.last_bytes.store(stats.bytes, Ordering::Relaxed);
                metrics
                    .last_documents
                    .store(stats.documents, Ordering::Relaxed);
                metrics.written.fetch_add(1, Ordering::Relaxed);
                tracing::debug!(
                    as_of,
                    documents = stats.documents,
                    bytes = stats.bytes,
                    seconds = stats.seconds,
                    "checkpoint written"
                );
            }
            Err(error) => {
                metrics.failures.fetch_add(1, Ordering::Relaxed);
                tracing::error!(as_of, "could not write a checkpoint: {error}");
            }
        }
    }
}

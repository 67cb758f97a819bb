//! Finding the partitions a worker owns and where to start reading them.
//!
//! Everything here asks the brokers and may wait on them — metadata, watermarks,
//! offsets-for-times — so it runs on a helper thread per source, never on a
//! timely worker: a slow or unreachable broker then delays only the partitions
//! it owes us, not snapshots, time, or the other workers. The thread hands the
//! worker lists of partitions with resolved start offsets; the worker assigns
//! them to its consumer (a local call).
//!
//! Start offsets are resolved to numbers once, at start, so a run is
//! reproducible. Partitions that appear later (new partitions, or a topic the
//! source was told to wait for) are read from their beginning.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{channel, Receiver, Sender};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};

use crate::config::{ResumePoint, SourceConfig, StartPosition};
use crate::dead_letter;
use crate::error::SourceError;
use crate::ownership::owner;

/// How long one request to the brokers may take.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// The longest the dead-letter topic is read for at a restore.
const DEAD_LETTER_SCAN: Duration = Duration::from_secs(30);
/// How long to wait before asking an unreachable broker again.
const RETRY_INTERVAL: Duration = Duration::from_secs(1);

/// A partition to start reading, and where.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct NewPartition {
    pub topic: String,
    pub partition: i32,
    /// The first offset to read.
    pub start: i64,
    /// The high watermark when the start was resolved.
    pub high: i64,
    /// Restored from a checkpoint: its counters so far.
    pub resumed: Option<ResumePoint>,
}

/// What the helper thread tells the worker.
pub(crate) enum DiscoveryEvent {
    /// Start reading these partitions. The first event may be empty: the worker
    /// owns no partition yet, but the source is connected.
    Assign(Vec<NewPartition>),
    /// Before the first assignment after a restore: the dead letters already
    /// on the dead-letter topic for this worker's partitions, by source
    /// (topic, partition, offset); they are not produced again.
    AlreadyDeadLettered(dead_letter::Origins),
    /// The id of the Kafka cluster, once read (before the first assignment).
    Cluster(String),
    /// The source cannot run (e.g. a missing topic, not waited for).
    Failed(SourceError),
}

/// The helper thread's handle; dropping it stops the thread.
pub(crate) struct Discovery {
    events: Receiver<DiscoveryEvent>,
    stop: Arc<AtomicBool>,
}

impl Discovery {
    /// Starts discovering for `worker` of `peers`. In bounded mode it resolves
    /// the assignment once and ends; otherwise it re-reads metadata every
    /// `config.metadata_refresh`.
    pub fn spawn(
        config: SourceConfig,
        client: &ClientConfig,
        worker: usize,
        peers: usize,
    ) -> Result<Discovery, SourceError> {
        let consumer: BaseConsumer = client
            .clone()
            .set("group.id", "trimatch-metadata")
            .set("allow.auto.create.topics", "false")
            .create()?;
        let (sender, events) = channel();
        let stop = Arc::new(AtomicBool::new(false));
        let thread_stop = stop.clone();
        std::thread::Builder::new()
            .name(format!("trimatch-discovery-{worker}"))
            .spawn(move || {
                let mut scanner = Scanner {
                    consumer,
                    config,
                    worker,
                    peers,
                    known: BTreeSet::new(),
                    waiting_for: BTreeSet::new(),
                };
                scanner.run(&sender, &thread_stop);
            })
            .map_err(|error| SourceError::Thread(error.to_string()))?;
        Ok(Discovery { events, stop })
    }

    /// The next event, if one is waiting.
    pub fn try_next(&self) -> Option<DiscoveryEvent> {
        self.events.try_recv().ok()
    }
}

impl Drop for Discovery {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
    }
}

struct Scanner {
    consumer: BaseConsumer,
    config: SourceConfig,
    worker: usize,
    peers: usize,
    /// Partitions already handed to the worker (owned ones only).
    known: BTreeSet<(String, i32)>,
    /// Missing topics being waited for (logged once each).
    waiting_for: BTreeSet<String>,
}

impl Scanner {
    fn run(&mut self, events: &Sender<DiscoveryEvent>, stop: &AtomicBool) {
        let mut connected = false;
        let mut failures = 0u32;
        let mut cluster_known = false;
        while !stop.load(Ordering::SeqCst) {
            if !cluster_known {
                // `None`: not reachable yet (asked again next round), or a
                // broker that reports no id.
                if let Some(found) = self.consumer.client().fetch_cluster_id(REQUEST_TIMEOUT) {
                    cluster_known = true;
                    if let Some(expected) = &self.config.expected_cluster_id {
                        if *expected != found {
                            let _ =
                                events.send(DiscoveryEvent::Failed(SourceError::OtherCluster {
                                    brokers: self.config.brokers.clone(),
                                    expected: expected.clone(),
                                    found,
                                }));
                            return;
                        }
                    }
                    if events.send(DiscoveryEvent::Cluster(found)).is_err() {
                        return;
                    }
                }
            }
            if !connected {
                match self.dead_letters_already_produced() {
                    Ok(Some(produced)) => {
                        if events
                            .send(DiscoveryEvent::AlreadyDeadLettered(produced))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(None) => {}
                    Err(error) => {
                        if failures.is_multiple_of(30) {
                            tracing::warn!(brokers = %self.config.brokers, %error, "cannot read the dead-letter topic; retrying every second");
                        }
                        failures += 1;
                        std::thread::sleep(RETRY_INTERVAL);
                        continue;
                    }
                }
            }
            let pause = match self.scan(!connected) {
                Ok(new) => {
                    if (!connected || !new.is_empty())
                        && events.send(DiscoveryEvent::Assign(new)).is_err()
                    {
                        return;
                    }
                    if !connected {
                        tracing::info!(worker = self.worker, brokers = %self.config.brokers, "connected to Kafka");
                    }
                    connected = true;
                    failures = 0;
                    if self.config.until_end {
                        return;
                    }
                    self.config.metadata_refresh
                }
                Err(SourceError::Kafka(error)) => {
                    if failures.is_multiple_of(30) {
                        let state = if connected {
                            "cannot refresh topic metadata"
                        } else {
                            "cannot reach Kafka; not ready until connected"
                        };
                        tracing::warn!(brokers = %self.config.brokers, %error, "{state}; retrying every second");
                    }
                    failures += 1;
                    RETRY_INTERVAL
                }
                Err(fatal) => {
                    let _ = events.send(DiscoveryEvent::Failed(fatal));
                    return;
                }
            };
            let until = Instant::now() + pause;
            while Instant::now() < until && !stop.load(Ordering::SeqCst) {
                std::thread::sleep(Duration::from_millis(20).min(pause));
            }
        }
    }

    /// Finds owned partitions not handed over yet, with their start offsets.
    /// `first`: the start of the run (the configured start position applies,
    /// and missing topics are errors unless waited for).
    fn scan(&mut self, first: bool) -> Result<Vec<NewPartition>, SourceError> {
        let mut present = Vec::new();
        for topic in &self.config.topics {
            match self.topic_partitions(&topic.name)? {
                Some(partitions) => {
                    if self.waiting_for.remove(&topic.name) {
                        tracing::info!(topic = %topic.name, "topic appeared; reading it from the beginning");
                    }
                    present.extend(partitions.into_iter().map(|p| (topic.name.clone(), p)));
                }
                None if first && !self.config.wait_for_topics => {
                    return Err(SourceError::MissingTopic {
                        topic: topic.name.clone(),
                        brokers: self.config.brokers.clone(),
                    })
                }
                None => {
                    if self.waiting_for.insert(topic.name.clone()) && self.worker == 0 {
                        tracing::info!(topic = %topic.name, brokers = %self.config.brokers, "waiting for topic to be created");
                    }
                }
            }
        }
        if first {
            if let StartPosition::Offsets(offsets) = &self.config.start {
                if let Some((topic, partition)) = offsets.keys().find(|key| !present.contains(key))
                {
                    return Err(SourceError::UnknownStartPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
            }
        }
        let new: Vec<(String, i32)> = present
            .into_iter()
            .filter(|(topic, partition)| owner(topic, *partition, self.peers) == self.worker)
            .filter(|key| !self.known.contains(key))
            .collect();
        let start = if first {
            self.config.start.clone()
        } else {
            StartPosition::Earliest
        };
        let resolved = self.resolve_start(&new, &start)?;
        self.known.extend(new);
        Ok(resolved)
    }

    /// After a restore, the dead letters already produced for this worker's
    /// partitions since the checkpoint (see [`dead_letter::produced_since`]).
    fn dead_letters_already_produced(
        &mut self,
    ) -> Result<Option<dead_letter::Origins>, KafkaError> {
        let (Some(topic), Some(since)) = (
            &self.config.dead_letter_topic,
            self.config.dead_letters_produced_since,
        ) else {
            return Ok(None);
        };
        let mut produced =
            dead_letter::produced_since(&self.consumer, topic, since, DEAD_LETTER_SCAN)?;
        produced
            .retain(|(topic, partition, _)| owner(topic, *partition, self.peers) == self.worker);
        // Only once per run.
        self.config.dead_letters_produced_since = None;
        Ok(Some(produced))
    }

    /// The partitions of `topic`, or `None` if it does not exist.
    fn topic_partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, SourceError> {
        let metadata = self.consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let Some(entry) = metadata.topics().iter().find(|entry| entry.name() == topic) else {
            return Ok(None);
        };
        match entry.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
            Some(error) => return Err(SourceError::Kafka(KafkaError::MetadataFetch(error.into()))),
        }
        if entry.partitions().is_empty() {
            return Ok(None);
        }
        Ok(Some(entry.partitions().iter().map(|p| p.id()).collect()))
    }

    /// Resolves `start` to a numeric offset for each partition.
    fn resolve_start(
        &self,
        partitions: &[(String, i32)],
        start: &StartPosition,
    ) -> Result<Vec<NewPartition>, SourceError> {
        let mut watermarks = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            watermarks.push(
                self.consumer
                    .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?,
            );
        }
        let by_time = match start {
            StartPosition::Timestamp(ms) if !partitions.is_empty() => {
                let mut list = TopicPartitionList::new();
                for (topic, partition) in partitions {
                    list.add_partition_offset(topic, *partition, Offset::Offset(*ms))?;
                }
                Some(self.consumer.offsets_for_times(list, REQUEST_TIMEOUT)?)
            }
            _ => None,
        };
        let mut resolved = Vec::with_capacity(partitions.len());
        for ((topic, partition), (low, high)) in partitions.iter().zip(watermarks) {
            let resumed = match start {
                StartPosition::Resume(points) => points.get(&(topic.clone(), *partition)).copied(),
                _ => None,
            };
            let offset = match start {
                // Exactly where the checkpoint left it, even below the low
                // watermark: if the broker no longer holds that offset, the
                // consumer's offset reset reports the skipped range.
                StartPosition::Resume(_) => resumed.map_or(low, |point| point.next_offset),
                StartPosition::Earliest => low,
                StartPosition::Latest => high,
                StartPosition::Timestamp(_) => by_time
                    .as_ref()
                    .and_then(|list| list.find_partition(topic, *partition))
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
                    .unwrap_or(high),
                StartPosition::Offsets(offsets) => {
                    let wanted = offsets
                        .get(&(topic.clone(), *partition))
                        .copied()
                        .unwrap_or(low);
                    let clamped = wanted.clamp(low, high);
                    if clamped != wanted {
                        tracing::warn!(
                            topic,
                            partition,
                            requested = wanted,
                            low,
                            high,
                            "start offset outside the retained range; starting at {clamped}"
                        );
                    }
                    clamped
                }
            };
            resolved.push(NewPartition {
                topic: topic.clone(),
                partition: *partition,
                start: offset,
                high,
                resumed,
            });
        }
        Ok(resolved)
    }
}

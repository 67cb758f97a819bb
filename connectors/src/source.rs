//! A Kafka source for one timely worker: consumes its share of the input
//! partitions, decodes each message, and hands the engine batches of document
//! changes, dead letters and per-partition progress.
//!
//! * **Assignment.** Partitions are assigned manually — no consumer group, no
//!   rebalancing in the data path. A partition belongs to worker
//!   `(hash(topic) + partition) % peers`, so the owner of a partition never
//!   changes when partitions or topics are added.
//! * **Offsets.** Start offsets are resolved to numbers once, at start, so a run
//!   is reproducible; the source tracks, per partition, the first offset not yet
//!   handed over (`next_offset`), and never hands over an offset twice.
//! * **Faults.** An unreachable broker is retried (the source is not ready
//!   meanwhile); librdkafka resumes fetching at the next offset after a broker
//!   restart; a missing topic is an error naming it, or is waited for; new
//!   partitions are picked up by a periodic metadata refresh.
//! * **Bad input** is dead-lettered with its topic, partition, offset and the
//!   reason, and counted; it never stops the source.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::metadata::Metadata;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientConfig, Offset, TopicPartitionList};
use trimatch_dataflows::model::{Document, Fingerprint, Text};
use trimatch_dataflows::rows::{DeadLetterRow, SourceProgressRow};

use crate::config::{SourceConfig, StartPosition};
use crate::dead_letter::{DeadLetterProducer, Rejected};
use crate::envelope::{decode_message, Decoded};
use crate::metrics::{PartitionCounters, SourceMetrics};

/// Why a source cannot run.
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("topic {topic:?} does not exist on the brokers at {brokers} (create it, fix the topic name, or pass --wait-for-topics)")]
    MissingTopic { topic: String, brokers: String },
    #[error("start position names {topic}:{partition}, which is not an input partition")]
    UnknownStartPartition { topic: String, partition: i32 },
    #[error("Kafka client error: {0}")]
    Kafka(#[from] KafkaError),
}

/// One decoded document change: the identity key, the new version (`None`
/// deletes), and the source offset (which decides ties within a batch).
#[derive(Clone, Debug)]
pub struct SourceChange {
    pub key: Fingerprint,
    pub document: Option<Document>,
    pub offset: i64,
}

/// What one poll hands to the engine; all of it belongs to one logical time.
#[derive(Default, Debug)]
pub struct SourceBatch {
    pub changes: Vec<SourceChange>,
    pub dead_letters: Vec<DeadLetterRow>,
    pub progress: Vec<SourceProgressRow>,
}

impl SourceBatch {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dead_letters.is_empty() && self.progress.is_empty()
    }
    pub fn clear(&mut self) {
        self.changes.clear();
        self.dead_letters.clear();
        self.progress.clear();
    }
}

/// The worker that owns `partition` of `topic` among `peers` workers.
pub fn owner(topic: &str, partition: i32, peers: usize) -> usize {
    let topic_hash = xxhash_rust::xxh3::xxh3_64(topic.as_bytes());
    (topic_hash.wrapping_add(partition as u64) % peers as u64) as usize
}

/// One owned partition.
struct PartitionState {
    topic: Text,
    partition: i32,
    next_offset: i64,
    high_watermark: i64,
    /// The high watermark when the partition was assigned: reaching it means
    /// caught up (ready), and in bounded mode it is where reading stops.
    end: i64,
    done: bool,
    /// Progress changed since the last row handed over.
    dirty: bool,
    counters: Arc<PartitionCounters>,
}

impl PartitionState {
    fn progress_row(&self) -> SourceProgressRow {
        let high_watermark = self.high_watermark.max(self.next_offset);
        SourceProgressRow {
            topic: self.topic.clone(),
            partition: self.partition,
            next_offset: self.next_offset,
            high_watermark,
            lag: (high_watermark - self.next_offset) as u64,
        }
    }
}

enum Phase {
    /// Not yet connected; the next attempt is due at this instant.
    Connecting {
        next_attempt: Instant,
        attempts: u32,
    },
    Running,
}

/// How long a metadata or offsets request to the broker may block a worker.
const REQUEST_TIMEOUT: Duration = Duration::from_secs(2);
/// How often cached high watermarks and positions are re-read while idle.
const WATERMARK_REFRESH: Duration = Duration::from_millis(500);

/// One worker's Kafka source.
pub struct KafkaSource {
    config: SourceConfig,
    worker: usize,
    peers: usize,
    consumer: BaseConsumer,
    dead_letters: Option<DeadLetterProducer>,
    metrics: Arc<SourceMetrics>,
    phase: Phase,
    /// Owned partitions: by topic name, then partition number.
    partitions: HashMap<String, BTreeMap<i32, PartitionState>>,
    /// Topics found missing and not yet reported as present.
    missing_topics: Vec<String>,
    next_metadata_refresh: Instant,
    next_watermark_refresh: Instant,
}

impl KafkaSource {
    /// A source for worker `worker` of `peers`. Nothing is requested from the
    /// brokers until the first [`poll`](Self::poll).
    pub fn new(
        config: SourceConfig,
        worker: usize,
        peers: usize,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, SourceError> {
        let mut client = ClientConfig::new();
        client.set("bootstrap.servers", &config.brokers);
        let mut consumer_settings = client.clone();
        consumer_settings
            .set("fetch.wait.max.ms", "10")
            .set("topic.metadata.refresh.interval.ms", "10000");
        // Pass-through settings (SASL, SSL, tuning) override the defaults above...
        for (key, value) in &config.client_settings {
            client.set(key, value);
            consumer_settings.set(key, value);
        }
        // ...but not what the source's correctness rests on: no group, no commits.
        let consumer: BaseConsumer = consumer_settings
            .set("group.id", "trimatch")
            .set("enable.auto.commit", "false")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set("allow.auto.create.topics", "false")
            .create()?;
        let dead_letters = match &config.dead_letter_topic {
            Some(topic) => Some(DeadLetterProducer::new(
                &client,
                topic.clone(),
                metrics.clone(),
            )?),
            None => None,
        };
        let now = Instant::now();
        Ok(KafkaSource {
            config,
            worker,
            peers,
            consumer,
            dead_letters,
            metrics,
            phase: Phase::Connecting {
                next_attempt: now,
                attempts: 0,
            },
            partitions: HashMap::new(),
            missing_topics: Vec::new(),
            next_metadata_refresh: now,
            next_watermark_refresh: now,
        })
    }

    /// Connected, and every owned partition has reached the high watermark it
    /// had when it was assigned.
    pub fn is_ready(&self) -> bool {
        matches!(self.phase, Phase::Running)
            && self.owned().all(|state| state.next_offset >= state.end)
    }

    /// In bounded mode, whether every owned partition has reached its end.
    pub fn is_finished(&self) -> bool {
        self.config.until_end
            && matches!(self.phase, Phase::Running)
            && self.owned().all(|state| state.done)
    }

    /// The owned partitions' positions: (topic, partition) → next offset.
    pub fn positions(&self) -> BTreeMap<(String, i32), i64> {
        self.owned()
            .map(|state| {
                (
                    (state.topic.to_string(), state.partition),
                    state.next_offset,
                )
            })
            .collect()
    }

    fn owned(&self) -> impl Iterator<Item = &PartitionState> {
        self.partitions.values().flat_map(BTreeMap::values)
    }

    /// Polls for up to `timeout` and appends what arrived to `batch`: up to
    /// `max_batch` messages, the dead letters among them, and a progress row
    /// for every partition whose position or watermark moved.
    pub fn poll(&mut self, batch: &mut SourceBatch, timeout: Duration) -> Result<(), SourceError> {
        if let Phase::Connecting {
            next_attempt,
            attempts,
        } = self.phase
        {
            let now = Instant::now();
            if now < next_attempt {
                std::thread::sleep(timeout.min(next_attempt - now));
                return Ok(());
            }
            match self.connect() {
                Ok(()) => self.phase = Phase::Running,
                Err(SourceError::Kafka(error)) => {
                    if attempts % 30 == 0 {
                        tracing::warn!(
                            brokers = %self.config.brokers,
                            %error,
                            "cannot reach Kafka; retrying every second (not ready until connected)"
                        );
                    }
                    self.phase = Phase::Connecting {
                        next_attempt: Instant::now() + Duration::from_secs(1),
                        attempts: attempts + 1,
                    };
                    return Ok(());
                }
                Err(other) => return Err(other),
            }
        }
        let now = Instant::now();
        if !self.config.until_end && now >= self.next_metadata_refresh {
            self.next_metadata_refresh = now + self.config.metadata_refresh;
            if let Err(error) = self.discover_partitions() {
                tracing::warn!(%error, "could not refresh topic metadata; will retry");
            }
        }
        let received = self.consume(batch, timeout);
        if received == 0 || Instant::now() >= self.next_watermark_refresh {
            self.next_watermark_refresh = Instant::now() + WATERMARK_REFRESH;
            self.refresh_positions(received == 0);
        }
        if let Some(producer) = &self.dead_letters {
            producer.poll();
        }
        for state in self.partitions.values_mut().flat_map(BTreeMap::values_mut) {
            if state.dirty {
                state.dirty = false;
                state
                    .counters
                    .next_offset
                    .store(state.next_offset, Ordering::Relaxed);
                state.counters.high_watermark.store(
                    state.high_watermark.max(state.next_offset),
                    Ordering::Relaxed,
                );
                batch.progress.push(state.progress_row());
            }
        }
        Ok(())
    }

    /// Waits for dead letters still being produced (bounded mode, shutdown).
    pub fn flush(&self, timeout: Duration) {
        if let Some(producer) = &self.dead_letters {
            producer.flush(timeout);
        }
    }

    /// Consumes up to `max_batch` messages into `batch`; returns how many arrived.
    fn consume(&mut self, batch: &mut SourceBatch, timeout: Duration) -> usize {
        let mut received = 0;
        let mut wait = timeout;
        let mut finished = Vec::new();
        while received < self.config.max_batch {
            let message = match self.consumer.poll(wait) {
                None => break,
                Some(Ok(message)) => message,
                Some(Err(error)) => {
                    tracing::debug!(%error, "Kafka consumer error (librdkafka retries)");
                    wait = Duration::ZERO;
                    continue;
                }
            };
            wait = Duration::ZERO;
            received += 1;
            let Some(state) = self
                .partitions
                .get_mut(message.topic())
                .and_then(|partitions| partitions.get_mut(&message.partition()))
            else {
                continue;
            };
            let offset = message.offset();
            // A bounded run stops at `end`; an offset already handed over is never
            // handed over again.
            if state.done || offset < state.next_offset {
                continue;
            }
            let Some(topic) = self.config.topic(message.topic()) else {
                continue;
            };
            state.counters.consumed.fetch_add(1, Ordering::Relaxed);
            match decode_message(topic.kind, topic.envelope, message.key(), message.payload()) {
                Ok(Decoded::Change(upsert)) => {
                    state.counters.applied.fetch_add(1, Ordering::Relaxed);
                    batch.changes.push(SourceChange {
                        key: upsert.key,
                        document: upsert.document,
                        offset,
                    });
                }
                Ok(Decoded::Ignored) => {
                    state.counters.applied.fetch_add(1, Ordering::Relaxed);
                }
                Err(reason) => {
                    state.counters.dead_lettered.fetch_add(1, Ordering::Relaxed);
                    let reason = reason.to_string();
                    if let Some(producer) = &self.dead_letters {
                        producer.send(&Rejected {
                            topic: message.topic(),
                            partition: message.partition(),
                            offset,
                            key: message.key(),
                            value: message.payload(),
                            reason: &reason,
                        });
                    }
                    batch.dead_letters.push(DeadLetterRow {
                        topic: state.topic.clone(),
                        partition: state.partition,
                        offset,
                        key: message
                            .key()
                            .map(|key| Text::from(String::from_utf8_lossy(key))),
                        reason: Text::from(reason),
                        rejected_at: now_ms(),
                    });
                }
            }
            state.next_offset = offset + 1;
            state.dirty = true;
            if self.config.until_end && state.next_offset >= state.end {
                state.done = true;
                finished.push((state.topic.clone(), state.partition));
            }
        }
        self.pause(&finished);
        received
    }

    /// Re-reads cached high watermarks; when `idle` (everything polled has been
    /// handed over) also moves positions past gaps such as transaction markers.
    fn refresh_positions(&mut self, idle: bool) {
        let positions = if idle {
            self.consumer.position().ok()
        } else {
            None
        };
        let mut finished = Vec::new();
        for state in self.partitions.values_mut().flat_map(BTreeMap::values_mut) {
            if let Some(high) = cached_high_watermark(&self.consumer, &state.topic, state.partition)
            {
                if high != state.high_watermark {
                    state.high_watermark = high;
                    state.dirty = true;
                }
            }
            let position = positions.as_ref().and_then(|list| {
                list.find_partition(&state.topic, state.partition)
                    .and_then(|element| match element.offset() {
                        Offset::Offset(offset) => Some(offset),
                        _ => None,
                    })
            });
            if let Some(position) = position {
                let limit = if self.config.until_end {
                    state.end
                } else {
                    i64::MAX
                };
                let position = position.min(limit);
                if !state.done && position > state.next_offset {
                    state.next_offset = position;
                    state.dirty = true;
                }
            }
            if self.config.until_end && !state.done && state.next_offset >= state.end {
                state.done = true;
                finished.push((state.topic.clone(), state.partition));
            }
        }
        self.pause(&finished);
    }

    fn pause(&self, partitions: &[(Text, i32)]) {
        if partitions.is_empty() {
            return;
        }
        let mut list = TopicPartitionList::new();
        for (topic, partition) in partitions {
            list.add_partition(topic, *partition);
        }
        if let Err(error) = self.consumer.pause(&list) {
            tracing::debug!(%error, "could not pause finished partitions");
        }
    }

    /// Reads metadata, resolves start offsets of the owned partitions and
    /// assigns them.
    fn connect(&mut self) -> Result<(), SourceError> {
        let mut present = Vec::new();
        for topic in &self.config.topics {
            match self.topic_partitions(&topic.name)? {
                Some(partitions) => present.push((topic.name.clone(), partitions)),
                None if self.config.wait_for_topics => {
                    tracing::info!(topic = %topic.name, brokers = %self.config.brokers, "waiting for topic to be created");
                    self.missing_topics.push(topic.name.clone());
                }
                None => {
                    return Err(SourceError::MissingTopic {
                        topic: topic.name.clone(),
                        brokers: self.config.brokers.clone(),
                    })
                }
            }
        }
        if let StartPosition::Offsets(offsets) = &self.config.start {
            for (topic, partition) in offsets.keys() {
                let known = present
                    .iter()
                    .any(|(name, partitions)| name == topic && partitions.contains(partition));
                if !known {
                    return Err(SourceError::UnknownStartPartition {
                        topic: topic.clone(),
                        partition: *partition,
                    });
                }
            }
        }
        let owned: Vec<(String, i32)> = present
            .iter()
            .flat_map(|(topic, partitions)| partitions.iter().map(move |p| (topic.clone(), *p)))
            .filter(|(topic, partition)| owner(topic, *partition, self.peers) == self.worker)
            .collect();
        let starts = self.resolve_start(&owned, &self.config.start.clone())?;
        self.assign(starts)?;
        tracing::info!(
            worker = self.worker,
            partitions = self.owned().count(),
            brokers = %self.config.brokers,
            "Kafka source connected"
        );
        Ok(())
    }

    /// Picks up partitions (and, when waiting for them, topics) that appeared
    /// since the last look; they are read from their beginning.
    fn discover_partitions(&mut self) -> Result<(), SourceError> {
        let mut new = Vec::new();
        for topic in &self.config.topics {
            let Some(partitions) = self.topic_partitions(&topic.name)? else {
                continue;
            };
            if let Some(index) = self
                .missing_topics
                .iter()
                .position(|name| *name == topic.name)
            {
                self.missing_topics.remove(index);
                tracing::info!(topic = %topic.name, "topic appeared; reading it from the beginning");
            }
            let known = self.partitions.get(&topic.name);
            for partition in partitions {
                let is_known = known.is_some_and(|known| known.contains_key(&partition));
                if !is_known && owner(&topic.name, partition, self.peers) == self.worker {
                    new.push((topic.name.clone(), partition));
                }
            }
        }
        if !new.is_empty() {
            tracing::info!(worker = self.worker, partitions = ?new, "new partitions assigned");
            let starts = self.resolve_start(&new, &StartPosition::Earliest)?;
            self.assign(starts)?;
        }
        Ok(())
    }

    /// The partitions of `topic`, or `None` if it does not exist.
    fn topic_partitions(&self, topic: &str) -> Result<Option<Vec<i32>>, SourceError> {
        let metadata: Metadata = self.consumer.fetch_metadata(Some(topic), REQUEST_TIMEOUT)?;
        let Some(entry) = metadata.topics().iter().find(|entry| entry.name() == topic) else {
            return Ok(None);
        };
        match entry.error() {
            None => {}
            Some(RDKafkaRespErr::RD_KAFKA_RESP_ERR_UNKNOWN_TOPIC_OR_PART) => return Ok(None),
            Some(error) => {
                return Err(SourceError::Kafka(KafkaError::MetadataFetch(error.into())));
            }
        }
        if entry.partitions().is_empty() {
            return Ok(None);
        }
        Ok(Some(entry.partitions().iter().map(|p| p.id()).collect()))
    }

    /// Resolves `start` to a numeric offset and the current high watermark for
    /// each partition.
    fn resolve_start(
        &self,
        partitions: &[(String, i32)],
        start: &StartPosition,
    ) -> Result<Vec<(String, i32, i64, i64)>, SourceError> {
        let mut watermarks = Vec::with_capacity(partitions.len());
        for (topic, partition) in partitions {
            let (low, high) = self
                .consumer
                .fetch_watermarks(topic, *partition, REQUEST_TIMEOUT)?;
            watermarks.push((low, high));
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
            let offset = match start {
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
            resolved.push((topic.clone(), *partition, offset, high));
        }
        Ok(resolved)
    }

    /// Adds partitions at the given start offsets to the assignment.
    fn assign(&mut self, starts: Vec<(String, i32, i64, i64)>) -> Result<(), SourceError> {
        let mut list = TopicPartitionList::new();
        for (topic, partition, start, high) in starts {
            let counters = self.metrics.partition(&topic, partition);
            let done = self.config.until_end && start >= high;
            if !done {
                list.add_partition_offset(&topic, partition, Offset::Offset(start))?;
            }
            tracing::debug!(
                worker = self.worker,
                topic,
                partition,
                start,
                high,
                "assigning"
            );
            self.partitions.entry(topic.clone()).or_default().insert(
                partition,
                PartitionState {
                    topic: Text::from(topic.as_str()),
                    partition,
                    next_offset: start,
                    high_watermark: high,
                    end: high,
                    done,
                    dirty: true,
                    counters,
                },
            );
        }
        if list.count() > 0 {
            self.consumer.incremental_assign(&list)?;
        }
        Ok(())
    }
}

/// The high watermark librdkafka last saw for a partition, without asking the
/// broker (`rd_kafka_get_watermark_offsets`); `None` if it has seen none yet.
fn cached_high_watermark(consumer: &BaseConsumer, topic: &str, partition: i32) -> Option<i64> {
    let topic = CString::new(topic).ok()?;
    let (mut low, mut high) = (-1i64, -1i64);
    // SAFETY: the client pointer is valid for the consumer's lifetime, `topic` is
    // a NUL-terminated string that outlives the call, and `low`/`high` are valid
    // out-pointers. The function only reads librdkafka's cached state.
    let error = unsafe {
        rdkafka::bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (error == RDKafkaRespErr::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|elapsed| elapsed.as_millis() as i64)
        .unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::owner;

    #[test]
    fn ownership_is_stable_and_spreads_partitions() {
        for peers in 1..5 {
            for partition in 0..16 {
                assert!(owner("invoices", partition, peers) < peers);
                assert_eq!(
                    owner("invoices", partition, peers),
                    owner("invoices", partition, peers)
                );
            }
            // Consecutive partitions of a topic go to consecutive workers.
            let owners: std::collections::BTreeSet<usize> = (0..peers as i32)
                .map(|p| owner("invoices", p, peers))
                .collect();
            assert_eq!(owners.len(), peers);
        }
    }
}

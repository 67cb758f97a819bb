//! A Kafka source for one timely worker: consumes its share of the input
//! partitions, decodes each message, and hands the engine batches of document
//! changes, dead letters and per-partition progress.
//!
//! * **Assignment.** Partitions are assigned manually — no consumer group, no
//!   rebalancing in the data path. A partition belongs to worker
//!   `(hash(topic) + partition) % peers` ([`crate::ownership::owner`]), so the
//!   owner of a partition never changes when partitions or topics are added.
//! * **Offsets.** Start offsets are resolved to numbers once, at start, so a run
//!   is reproducible (see `discovery`); the source tracks, per partition, the
//!   first offset not yet handed over (`next_offset`), and never hands over an
//!   offset twice.
//! * **Faults.** Everything that waits on a broker runs on a helper thread, so
//!   the worker never blocks on Kafka beyond its poll timeout. An unreachable
//!   broker is retried (the source is not ready meanwhile); librdkafka resumes
//!   fetching at the next offset after a broker restart; a missing topic is an
//!   error naming it, or is waited for; new partitions are picked up by a
//!   periodic metadata refresh.
//! * **Bad input** is dead-lettered with its topic, partition, offset and the
//!   reason, and counted; it never stops the source.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::BaseConsumer;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::ClientConfig;
use trimatch_dataflows::decode::DecodeError;
use trimatch_dataflows::model::{Document, Fingerprint, WallClock};
use trimatch_dataflows::rows::{DeadLetterRow, SourceProgressRow};
use trimatch_dataflows::Time;

use crate::config::{SourceConfig, FETCH_MAX_BYTES};
use crate::dead_letter::DeadLetterProducer;
use crate::discovery::{Discovery, DiscoveryEvent};
use crate::envelope::{decode_message, Decoded};
use crate::error::SourceError;
use crate::metrics::SourceMetrics;
use crate::poll::{poll, ConsumerError};
use crate::tenants::{CensusTally, TenantFilter};

mod handover;
mod partition;
mod positions;
use handover::UnsentDeadLetter;
use partition::{resumed_after_reset, PartitionState, WARNING_INTERVAL};

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
    /// The Kafka timestamps (ms) of the messages in the batch, for freshness.
    pub message_timestamps: Vec<i64>,
}

impl SourceBatch {
    pub fn is_empty(&self) -> bool {
        self.changes.is_empty() && self.dead_letters.is_empty() && self.progress.is_empty()
    }
}

/// How often cached high watermarks are re-read while messages flow.
const WATERMARK_REFRESH: Duration = Duration::from_millis(500);
/// How often positions are re-read when a poll comes back empty. Reading a
/// position is a synchronous request to librdkafka's main thread; doing it on
/// every empty poll stalled replays (33k → 47k messages/s once it stopped),
/// and positions only
/// matter here to step over offsets that carry no message.
const IDLE_POSITION_REFRESH: Duration = Duration::from_millis(20);

/// One worker's Kafka source.
pub struct KafkaSource {
    config: SourceConfig,
    worker: usize,
    peers: usize,
    consumer: BaseConsumer,
    dead_letters: Option<DeadLetterProducer>,
    metrics: Arc<SourceMetrics>,
    /// Finds partitions and their start offsets off the worker thread.
    discovery: Discovery,
    /// Whether discovery has connected and handed over the first assignment.
    connected: bool,
    /// Owned partitions: by topic name, then partition number.
    partitions: HashMap<String, BTreeMap<i32, PartitionState>>,
    last_refresh: Instant,
    /// When the last warning about an error naming no partition was logged.
    last_client_warning: Option<Instant>,
    /// When a consumer error not tied to a partition was last seen (the
    /// brokers not answering, say).
    last_client_error: Option<Instant>,
    /// Whether the caller asked for the partitions to be paused (backpressure).
    paused: bool,
    /// Rejected messages polled and not yet sealed: they go to the
    /// dead-letter topic when they are (see [`commit_counters`](Self::commit_counters)).
    unsent_dead_letters: Vec<UnsentDeadLetter>,
    /// After a restore: dead letters the previous run already produced.
    already_dead_lettered: crate::dead_letter::Origins,
    /// The Kafka cluster's id, once connected (if the brokers report one).
    cluster_id: Option<String>,
    /// A census pass: what this poll consumed, not yet added to the census.
    census_tally: CensusTally,
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
        // Fetch sizes (librdkafka's defaults are 1 MiB a partition): a
        // broker that does not return an oversized first batch anyway
        // (KIP-74; tansu does not) would otherwise leave a larger message
        // unfetched, and its partition stuck behind it. What arrives over
        // `max_message_bytes` is dead-lettered below.
        let fetch = FETCH_MAX_BYTES.to_string();
        consumer_settings
            .set("fetch.wait.max.ms", "10")
            .set("topic.metadata.refresh.interval.ms", "10000")
            .set("fetch.message.max.bytes", &fetch)
            .set("message.max.bytes", &fetch)
            .set("fetch.max.bytes", &fetch)
            .set(
                "receive.message.max.bytes",
                (FETCH_MAX_BYTES + (1 << 20)).to_string(),
            );
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
        let discovery = Discovery::spawn(config.clone(), &client, worker, peers)?;
        Ok(KafkaSource {
            config,
            worker,
            peers,
            consumer,
            dead_letters,
            metrics,
            discovery,
            connected: false,
            partitions: HashMap::new(),
            last_refresh: Instant::now(),
            last_client_warning: None,
            last_client_error: None,
            paused: false,
            unsent_dead_letters: Vec::new(),
            already_dead_lettered: HashSet::new(),
            cluster_id: None,
            census_tally: CensusTally::default(),
        })
    }

    /// Connected, and every owned partition has reached the high watermark it
    /// had when it was assigned.
    pub fn is_ready(&self) -> bool {
        self.connected && self.owned().all(|state| state.next_offset >= state.end)
    }

    /// The id of the Kafka cluster the source is connected to, once known.
    pub fn cluster_id(&self) -> Option<&str> {
        self.cluster_id.as_deref()
    }

    /// In bounded mode, whether every owned partition has reached its end.
    pub fn is_finished(&self) -> bool {
        self.config.until_end && self.connected && self.owned().all(|state| state.done)
    }

    fn owned(&self) -> impl Iterator<Item = &PartitionState> {
        self.partitions.values().flat_map(BTreeMap::values)
    }

    /// Polls for up to `timeout` and appends what arrived to `batch`: up to
    /// `max_batch` messages, the dead letters among them, and a progress row
    /// for every partition whose position or watermark moved.
    pub fn poll(&mut self, batch: &mut SourceBatch, timeout: Duration) -> Result<(), SourceError> {
        while let Some(event) = self.discovery.try_next() {
            match event {
                DiscoveryEvent::Assign(partitions) => {
                    self.connected = true;
                    self.assign(partitions)?;
                }
                DiscoveryEvent::Cluster(id) => {
                    self.cluster_id = Some(id);
                }
                DiscoveryEvent::AlreadyDeadLettered(produced) => {
                    self.already_dead_lettered = produced;
                }
                DiscoveryEvent::Failed(error) => return Err(error),
            }
        }
        let received = self.consume(batch, timeout);
        let due = if received == 0 {
            IDLE_POSITION_REFRESH
        } else {
            WATERMARK_REFRESH
        };
        if self.last_refresh.elapsed() >= due {
            self.last_refresh = Instant::now();
            self.refresh_positions(received == 0, batch);
        }
        if let Some(producer) = &self.dead_letters {
            producer.poll();
        }
        for state in self.partitions.values_mut().flat_map(BTreeMap::values_mut) {
            if state.dirty {
                state.dirty = false;
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
            let Some(message) = poll(&self.consumer, wait) else {
                break;
            };
            wait = Duration::ZERO;
            if let Some(error) = message.error() {
                self.consumer_error(message.topic(), message.partition(), error);
                continue;
            }
            received += 1;
            let Some(topic_name) = message.topic() else {
                continue;
            };
            let Some(state) = self
                .partitions
                .get_mut(topic_name)
                .and_then(|partitions| partitions.get_mut(&message.partition()))
            else {
                continue;
            };
            let offset = message.offset();
            if let Some(reset) = state.reset_pending.take() {
                if !resumed_after_reset(state, offset, &reset, batch) {
                    // Re-reading offsets already reflected: the topic was
                    // re-created; wait for a person (the partition is stalled).
                    state.reset_pending = Some(reset);
                    continue;
                }
            }
            // A bounded run stops at `end`; an offset already handed over is never
            // handed over again.
            if state.done || offset < state.next_offset {
                continue;
            }
            let Some(topic) = self.config.topic(topic_name) else {
                continue;
            };
            state.unstall();
            state.uncommitted.consumed += 1;
            if let Some(timestamp) = message.timestamp_ms() {
                batch.message_timestamps.push(timestamp);
            }
            let size =
                message.key().map_or(0, <[u8]>::len) + message.payload().map_or(0, <[u8]>::len);
            let decoded = if size > self.config.max_message_bytes {
                Err(DecodeError::new(
                    "message",
                    format!(
                        "{size} bytes, more than the {} a message may have (--max-message-bytes)",
                        self.config.max_message_bytes
                    ),
                ))
            } else {
                decode_message(topic.kind, topic.envelope, message.key(), message.payload())
            };
            match decoded {
                Ok(Decoded::Change(upsert)) => {
                    state.uncommitted.applied += 1;
                    let tenant = upsert.identity.first().map_or("", String::as_str);
                    if let TenantFilter::Census(_) = &self.config.tenants {
                        let bytes = message.key().map_or(0, <[u8]>::len)
                            + message.payload().map_or(0, <[u8]>::len);
                        self.census_tally.count(tenant, bytes);
                    }
                    if self.config.tenants.hands_over(tenant) {
                        batch.changes.push(SourceChange {
                            key: upsert.key,
                            document: upsert.document,
                            offset,
                        });
                    }
                }
                Ok(Decoded::Ignored) => {
                    state.uncommitted.applied += 1;
                }
                Err(_) if !self.config.tenants.dead_letters() => {
                    state.uncommitted.dead_lettered += 1;
                }
                Err(reason) => {
                    state.uncommitted.dead_lettered += 1;
                    let reason = reason.to_string();
                    if self.dead_letters.is_some() {
                        // An oversized message's value is not copied: the
                        // dead-letter topic would refuse it too.
                        let copied = size <= self.config.max_message_bytes;
                        self.unsent_dead_letters.push(UnsentDeadLetter {
                            topic: state.topic.clone(),
                            partition: state.partition,
                            offset,
                            key: message.key().map(<[u8]>::to_vec),
                            value: message.payload().filter(|_| copied).map(<[u8]>::to_vec),
                            reason: reason.clone(),
                        });
                    }
                    batch.dead_letters.push(DeadLetterRow::bounded(
                        state.topic.clone(),
                        state.partition,
                        offset,
                        message.key(),
                        &reason,
                        now_ms(),
                    ));
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
        if let TenantFilter::Census(census) = &self.config.tenants {
            census.add(&mut self.census_tally);
        }
        received
    }

    /// Counts and reports a consumer error: against its partition (which it
    /// may stall, or whose offsets it may have reset), or against the client.
    fn consumer_error(&mut self, topic: Option<&str>, partition: i32, error: ConsumerError) {
        let state = topic
            .and_then(|topic| self.partitions.get_mut(topic))
            .and_then(|partitions| partitions.get_mut(&partition));
        let Some(state) = state else {
            self.metrics.count_client_error(&error.code);
            let now = Instant::now();
            self.last_client_error = Some(now);
            if self
                .last_client_warning
                .is_none_or(|last| now.duration_since(last) >= WARNING_INTERVAL)
            {
                self.last_client_warning = Some(now);
                tracing::warn!(worker = self.worker, code = %error.code, "Kafka consumer error: {}", error.message);
            }
            return;
        };
        state.counters.count_error(&error.code);
        state.last_error = Some(Instant::now());
        if state.may_warn() {
            tracing::warn!(
                topic = %state.topic,
                partition = state.partition,
                code = %error.code,
                next_offset = state.next_offset,
                "Kafka consumer error: {}",
                error.message
            );
        }
        if error.kind == RDKafkaRespErr::RD_KAFKA_RESP_ERR__AUTO_OFFSET_RESET {
            state.reset_pending = Some(error.message);
        } else {
            state.stall(format!("{}: {}", error.code, error.message));
        }
    }
}

/// Milliseconds since the Unix epoch, as Kafka timestamps and the rows that
/// carry them (`rejected_at`) count them.
pub fn now_ms() -> i64 {
    Time::now() as i64
}

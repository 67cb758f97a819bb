//! Producing rejected messages to a dead-letter topic: the original key and
//! value, with headers naming where the message came from and why it was
//! rejected, so a person (or a repair job) can fix and re-send it.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Header, Headers, Message, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext, Offset, TopicPartitionList};

use crate::metrics::SourceMetrics;

/// Header names on dead-lettered messages.
pub const HEADER_TOPIC: &str = "trimatch.source.topic";
pub const HEADER_PARTITION: &str = "trimatch.source.partition";
pub const HEADER_OFFSET: &str = "trimatch.source.offset";
pub const HEADER_REASON: &str = "trimatch.reason";

/// Counts deliveries and failures into the source metrics.
struct DeliveryCounter {
    metrics: Arc<SourceMetrics>,
}

impl ClientContext for DeliveryCounter {}

impl ProducerContext for DeliveryCounter {
    type DeliveryOpaque = ();
    fn delivery(&self, result: &DeliveryResult<'_>, _: ()) {
        self.metrics
            .dead_letters_settled
            .fetch_add(1, Ordering::Relaxed);
        match result {
            Ok(_) => {
                self.metrics
                    .dead_letters_produced
                    .fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                self.metrics
                    .dead_letter_produce_failures
                    .fetch_add(1, Ordering::Relaxed);
                tracing::warn!(%error, "could not produce a message to the dead-letter topic");
            }
        }
    }
}

/// A producer for the dead-letter topic.
pub struct DeadLetterProducer {
    topic: String,
    producer: BaseProducer<DeliveryCounter>,
}

/// Where a rejected message came from and why.
pub struct Rejected<'a> {
    pub topic: &'a str,
    pub partition: i32,
    pub offset: i64,
    pub key: Option<&'a [u8]>,
    pub value: Option<&'a [u8]>,
    pub reason: &'a str,
}

impl DeadLetterProducer {
    pub fn new(
        client: &ClientConfig,
        topic: String,
        metrics: Arc<SourceMetrics>,
    ) -> Result<Self, KafkaError> {
        // A missing or unreachable dead-letter topic must never hold up
        // ingestion: messages give up after `message.timeout.ms`, and a full
        // queue drops the dead letter (counted as not forwarded) instead of
        // waiting for room.
        let producer = client
            .clone()
            .set("linger.ms", "20")
            .set("message.timeout.ms", "60000")
            .set("queue.buffering.max.messages", "100000")
            .create_with_context(DeliveryCounter { metrics })?;
        Ok(DeadLetterProducer { topic, producer })
    }

    /// Queues one rejected message; if it cannot be queued (the queue is full
    /// because the topic is missing or unreachable), counts it as not
    /// forwarded and moves on: `dead_letters` still has it.
    pub fn send(&self, rejected: &Rejected<'_>) {
        let partition = rejected.partition.to_string();
        let offset = rejected.offset.to_string();
        let headers = OwnedHeaders::new()
            .insert(Header {
                key: HEADER_TOPIC,
                value: Some(rejected.topic),
            })
            .insert(Header {
                key: HEADER_PARTITION,
                value: Some(&partition),
            })
            .insert(Header {
                key: HEADER_OFFSET,
                value: Some(&offset),
            })
            .insert(Header {
                key: HEADER_REASON,
                value: Some(rejected.reason),
            });
        let mut record = BaseRecord::<[u8], [u8]>::to(&self.topic).headers(headers);
        if let Some(key) = rejected.key {
            record = record.key(key);
        }
        if let Some(value) = rejected.value {
            record = record.payload(value);
        }
        let metrics = &self.producer.context().metrics;
        match self.producer.send(record) {
            Ok(()) => {
                metrics.dead_letters_queued.fetch_add(1, Ordering::Relaxed);
            }
            Err((error, _)) => {
                let failures = self
                    .producer
                    .context()
                    .metrics
                    .dead_letter_produce_failures
                    .fetch_add(1, Ordering::Relaxed);
                // One warning per 1,000 failures: an unreachable topic fails every one.
                if failures.is_multiple_of(1_000) {
                    tracing::warn!(%error, topic = %self.topic, failures = failures + 1,
                    "could not queue a dead letter; it stays in dead_letters only");
                }
            }
        }
        self.producer.poll(Duration::ZERO);
    }

    /// Serves delivery reports without blocking.
    pub fn poll(&self) {
        self.producer.poll(Duration::ZERO);
    }

    /// Waits up to `timeout` for every queued dead letter to be delivered.
    pub fn flush(&self, timeout: Duration) {
        if let Err(error) = self.producer.flush(timeout) {
            tracing::warn!(%error, topic = %self.topic, "dead letters not all delivered");
        }
    }
}

/// Where rejected messages came from: (topic, partition, offset).
pub(crate) type Origins = HashSet<(String, i32, i64)>;

/// The source coordinates (topic, partition, offset) of the dead letters on
/// `topic` produced at or after `since_ms`, read with `consumer` (which must
/// not be reading anything else) up to the high watermarks seen first.
///
/// After a restore, the offsets past the checkpoint are read again, and the
/// previous run may already have produced their dead letters before it
/// stopped: those are found here and not produced twice. The scan reads only
/// the records since the checkpoint's time (offsets-for-times), bounded by
/// `timeout`; if it cannot finish, duplicates are possible and it says so.
pub(crate) fn produced_since(
    consumer: &BaseConsumer,
    topic: &str,
    since_ms: i64,
    timeout: Duration,
) -> Result<Origins, KafkaError> {
    let metadata = consumer.fetch_metadata(Some(topic), timeout)?;
    let partitions: Vec<i32> = metadata
        .topics()
        .iter()
        .filter(|entry| entry.name() == topic && entry.error().is_none())
        .flat_map(|entry| entry.partitions().iter().map(|p| p.id()))
        .collect();
    let mut produced = HashSet::new();
    if partitions.is_empty() {
        return Ok(produced);
    }
    let mut by_time = TopicPartitionList::new();
    for partition in &partitions {
        by_time.add_partition_offset(topic, *partition, Offset::Offset(since_ms))?;
    }
    let starts = consumer.offsets_for_times(by_time, timeout)?;
    let mut assignment = TopicPartitionList::new();
    let mut ends = HashMap::new();
    for partition in &partitions {
        let (_, high) = consumer.fetch_watermarks(topic, *partition, timeout)?;
        let start = starts
            .find_partition(topic, *partition)
            .and_then(|element| match element.offset() {
                Offset::Offset(offset) => Some(offset),
                _ => None,
            })
            .unwrap_or(high);
        if start < high {
            assignment.add_partition_offset(topic, *partition, Offset::Offset(start))?;
            ends.insert(*partition, high);
        }
    }
    if ends.is_empty() {
        return Ok(produced);
    }
    consumer.assign(&assignment)?;
    let deadline = Instant::now() + timeout;
    while !ends.is_empty() {
        if Instant::now() >= deadline {
            tracing::warn!(
                topic,
                "could not read the dead-letter topic's recent records in {} s; dead letters \
                 produced just before the restart may be produced again",
                timeout.as_secs()
            );
            break;
        }
        let Some(message) = consumer.poll(Duration::from_millis(100)) else {
            continue;
        };
        let message = message?;
        let header = |name: &str| {
            message.headers().and_then(|headers| {
                headers
                    .iter()
                    .find(|header| header.key == name)
                    .and_then(|header| header.value)
                    .and_then(|value| std::str::from_utf8(value).ok())
                    .map(str::to_string)
            })
        };
        if let (Some(source), Some(partition), Some(offset)) = (
            header(HEADER_TOPIC),
            header(HEADER_PARTITION).and_then(|p| p.parse().ok()),
            header(HEADER_OFFSET).and_then(|o| o.parse().ok()),
        ) {
            produced.insert((source, partition, offset));
        }
        if ends
            .get(&message.partition())
            .is_some_and(|end| message.offset() + 1 >= *end)
        {
            ends.remove(&message.partition());
        }
    }
    consumer.unassign()?;
    Ok(produced)
}

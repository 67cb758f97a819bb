//! Producing rejected messages to a dead-letter topic: the original key and
//! value, with headers naming where the message came from and why it was
//! rejected, so a person (or a repair job) can fix and re-send it.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use rdkafka::error::KafkaError;
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{BaseProducer, BaseRecord, DeliveryResult, Producer, ProducerContext};
use rdkafka::{ClientConfig, ClientContext};

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
        if let Err((error, _)) = self.producer.send(record) {
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

//! Producing a workload to Kafka: at a fixed rate or flat out, for a count or
//! a duration, keyed so that all versions of a document share a partition.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;

use trimatch_connectors::TopicConfig;

use crate::generate::GeneratedMessage;

/// How much to produce and how fast.
#[derive(Clone, Debug, Default)]
pub struct ProduceLimits {
    /// Messages per second; `None` is flat out.
    pub rate: Option<f64>,
    pub count: Option<u64>,
    pub duration: Option<Duration>,
}

/// How far ahead of schedule a paced run must be before it sleeps: messages
/// due within this step go out at once, in small bursts.
const PACING_STEP: Duration = Duration::from_millis(1);

/// What a run produced.
#[derive(Clone, Debug, Default)]
pub struct ProduceReport {
    pub sent: u64,
    pub malformed: u64,
    pub elapsed: Duration,
}

/// A producer of generated messages to the input topics.
pub struct WorkloadProducer {
    producer: BaseProducer,
    topics: Vec<TopicConfig>,
}

impl WorkloadProducer {
    /// A producer to `brokers`; `topics` maps each document kind to its topic.
    pub fn new(
        brokers: &str,
        topics: Vec<TopicConfig>,
        client_settings: &[(String, String)],
    ) -> Result<Self, KafkaError> {
        let mut client = ClientConfig::new();
        client
            .set("bootstrap.servers", brokers)
            .set("linger.ms", "5")
            .set("queue.buffering.max.messages", "500000")
            // Keyed messages hash to a fixed partition; never reorder a key.
            .set("enable.idempotence", "false")
            .set("max.in.flight.requests.per.connection", "1");
        for (key, value) in client_settings {
            client.set(key, value);
        }
        Ok(WorkloadProducer {
            producer: client.create()?,
            topics,
        })
    }

    /// Sends one message, waiting for room in the queue if needed.
    pub fn send(&self, message: &GeneratedMessage) -> Result<(), KafkaError> {
        self.send_at(message, None)
    }

    /// Sends one message with an explicit message timestamp (ms since epoch).
    pub fn send_at(
        &self,
        message: &GeneratedMessage,
        timestamp: Option<i64>,
    ) -> Result<(), KafkaError> {
        let topic = self
            .topics
            .iter()
            .find(|topic| topic.kind == message.kind)
            .map(|topic| topic.name.as_str())
            .unwrap_or_else(|| message.kind.default_topic());
        let mut record = BaseRecord::<[u8], [u8]>::to(topic);
        if let Some(key) = &message.key {
            record = record.key(key);
        }
        if let Some(value) = &message.value {
            record = record.payload(value);
        }
        if let Some(timestamp) = timestamp {
            record = record.timestamp(timestamp);
        }
        loop {
            match self.producer.send(record) {
                Ok(()) => return Ok(()),
                Err((KafkaError::MessageProduction(RDKafkaErrorCode::QueueFull), returned)) => {
                    record = returned;
                    self.producer.poll(Duration::from_millis(10));
                }
                Err((error, _)) => return Err(error),
            }
        }
    }

    /// Sends messages from `workload` within `limits` until it ends or `stop` is set.
    pub fn run(
        &self,
        workload: impl Iterator<Item = GeneratedMessage>,
        limits: &ProduceLimits,
        stop: &AtomicBool,
    ) -> Result<ProduceReport, KafkaError> {
        self.run_observed(workload, limits, stop, |_, _| {})
    }

    /// [`run`](Self::run), stamping each message with the wall-clock time it is
    /// sent (ms since the epoch, the Kafka message timestamp) and telling
    /// `observe` about it — how the load harness measures freshness.
    pub fn run_observed(
        &self,
        workload: impl Iterator<Item = GeneratedMessage>,
        limits: &ProduceLimits,
        stop: &AtomicBool,
        mut observe: impl FnMut(&GeneratedMessage, i64),
    ) -> Result<ProduceReport, KafkaError> {
        let started = Instant::now();
        let mut report = ProduceReport::default();
        for message in workload {
            if stop.load(Ordering::Relaxed)
                || limits.count.is_some_and(|count| report.sent >= count)
                || limits
                    .duration
                    .is_some_and(|duration| started.elapsed() >= duration)
            {
                break;
            }
            if let Some(rate) = limits.rate.filter(|rate| *rate > 0.0) {
                // Sleep only when at least PACING_STEP ahead: sleeping before
                // every message cost more CPU than producing it at 5k/s.
                let due = started + Duration::from_secs_f64(report.sent as f64 / rate);
                let now = Instant::now();
                if due >= now + PACING_STEP {
                    self.producer.poll(due - now);
                    std::thread::sleep(due.saturating_duration_since(Instant::now()));
                }
            }
            let timestamp = trimatch_connectors::source::now_ms();
            self.send_at(&message, Some(timestamp))?;
            observe(&message, timestamp);
            report.sent += 1;
            report.malformed += u64::from(message.malformed);
            if report.sent % 1024 == 0 {
                self.producer.poll(Duration::ZERO);
            }
        }
        self.flush(Duration::from_secs(30))?;
        report.elapsed = started.elapsed();
        Ok(report)
    }

    /// Waits until every queued message is acknowledged.
    pub fn flush(&self, timeout: Duration) -> Result<(), KafkaError> {
        self.producer.flush(timeout)
    }
}

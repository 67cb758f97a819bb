//! The broker's own figures, the references the pipeline is measured against:
//! how fast a bare librdkafka consumer reads, and how soon it sees a message.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use anyhow::{bail, Result};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::{ClientConfig, Message, Offset, TopicPartitionList};
use trimatch_workload::GeneratedMessage;
use trimatch_workload::{ProduceLimits, WorkloadProducer};

use super::measure::{wall_clock_ms, Latencies};

/// A consumer of every partition of `topics` from `offset`, configured like
/// the pipeline's sources (no group membership, short fetch waits).
fn consumer_at(brokers: &str, topics: &[&str], offset: Offset) -> Result<BaseConsumer> {
    let consumer: BaseConsumer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("group.id", "trimatch-bench")
        .set("enable.auto.commit", "false")
        .set("fetch.wait.max.ms", "10")
        .create()?;
    let mut assignment = TopicPartitionList::new();
    for topic in topics {
        let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(10))?;
        for partition in metadata.topics().iter().flat_map(|t| t.partitions()) {
            assignment.add_partition_offset(topic, partition.id(), offset)?;
        }
    }
    consumer.assign(&assignment)?;
    Ok(consumer)
}

/// A plain librdkafka consumer, configured like the pipeline's sources, reads
/// `count` messages from the start of every partition of `topics`; messages/s.
pub fn bare_consumer_rate(brokers: &str, topics: &[&str], count: u64) -> Result<f64> {
    let consumer = consumer_at(brokers, topics, Offset::Beginning)?;
    let started = Instant::now();
    let mut received = 0u64;
    let mut bytes = 0usize;
    while received < count {
        if started.elapsed() > Duration::from_secs(600) {
            bail!("the bare consumer read only {received} of {count} messages in 10 minutes");
        }
        if let Some(message) = consumer.poll(Duration::from_millis(100)) {
            let message = message?;
            bytes += message.payload().map_or(0, <[u8]>::len);
            received += 1;
        }
    }
    let rate = received as f64 / started.elapsed().as_secs_f64();
    std::hint::black_box(bytes);
    Ok(rate)
}

/// Produces from `workload` at `rate` for `duration` while a bare consumer
/// (at the topics' ends) measures each message's Kafka timestamp → receipt.
/// Returns the latencies and how many messages were produced.
pub fn bare_consumer_latency(
    brokers: &str,
    topics: &[&str],
    producer: &WorkloadProducer,
    workload: impl Iterator<Item = GeneratedMessage>,
    rate: Option<f64>,
    duration: Duration,
) -> Result<(Latencies, u64)> {
    let consumer = consumer_at(brokers, topics, Offset::End)?;
    // Let the consumer resolve its positions before anything is produced.
    let settle = Instant::now();
    while settle.elapsed() < Duration::from_millis(500) {
        consumer.poll(Duration::from_millis(10));
    }
    let stop = AtomicBool::new(false);
    let (latencies, produced) = std::thread::scope(|scope| {
        let receiver = scope.spawn(|| {
            let mut latencies = Vec::new();
            while !stop.load(Ordering::SeqCst) {
                if let Some(Ok(message)) = consumer.poll(Duration::from_millis(10)) {
                    if let Some(sent) = message.timestamp().to_millis() {
                        latencies.push(wall_clock_ms() - sent as f64);
                    }
                }
            }
            latencies
        });
        let produced = producer.run(
            workload,
            &ProduceLimits {
                rate,
                count: None,
                duration: Some(duration),
            },
            &AtomicBool::new(false),
        );
        std::thread::sleep(Duration::from_millis(500));
        stop.store(true, Ordering::SeqCst);
        (receiver.join().unwrap_or_default(), produced)
    });
    Ok((Latencies::of(latencies), produced?.sent))
}

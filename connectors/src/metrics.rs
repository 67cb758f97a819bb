//! Counters a source keeps per topic-partition, shared with whoever reports
//! them (Prometheus, the demo's summary, tests checking that every consumed
//! message is accounted for).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, AtomicU8, Ordering};
use std::sync::{Arc, Mutex};

use trimatch_dataflows::rows::PartitionHealth;

/// One partition's counters. `consumed = applied + dead_lettered + skipped`
/// always holds once a batch has been handed over (applied includes messages
/// the envelope says to skip, such as Debezium tombstones; skipped counts the
/// offsets a broker's offset reset jumped over).
#[derive(Debug, Default)]
pub struct PartitionCounters {
    pub consumed: AtomicU64,
    pub applied: AtomicU64,
    pub dead_lettered: AtomicU64,
    pub skipped: AtomicU64,
    /// The first offset not yet reflected (-1 before the partition is assigned).
    pub next_offset: AtomicI64,
    /// The high watermark last seen.
    pub high_watermark: AtomicI64,
    /// The partition's [`PartitionHealth`], as its index in [`HEALTH`].
    health: AtomicU8,
    /// Consumer errors reported for the partition, by librdkafka error name.
    errors: Mutex<BTreeMap<String, u64>>,
}

/// Every partition state, in the order [`PartitionCounters`] stores them.
const HEALTH: [PartitionHealth; 3] = [
    PartitionHealth::Ok,
    PartitionHealth::Stalled,
    PartitionHealth::Skipped,
];

impl PartitionCounters {
    /// Records the partition's state.
    pub fn set_health(&self, health: PartitionHealth) {
        let index = HEALTH
            .iter()
            .position(|known| *known == health)
            .unwrap_or(0);
        self.health.store(index as u8, Ordering::Relaxed);
    }

    /// Counts one consumer error (by librdkafka's error name, e.g.
    /// `TOPIC_AUTHORIZATION_FAILED`).
    pub fn count_error(&self, code: &str) {
        count(&self.errors, code);
    }
}

/// A copy of one partition's counters.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub consumed: u64,
    pub applied: u64,
    pub dead_lettered: u64,
    pub skipped: u64,
    pub next_offset: i64,
    pub high_watermark: i64,
    pub health: PartitionHealth,
    /// Consumer errors by librdkafka error name.
    pub errors: BTreeMap<String, u64>,
}

impl PartitionSnapshot {
    /// How far the partition is behind its high watermark.
    pub fn lag(&self) -> u64 {
        (self.high_watermark - self.next_offset).max(0) as u64
    }
}

/// The counters of every partition of every source worker in this process.
#[derive(Debug, Default)]
pub struct SourceMetrics {
    partitions: Mutex<BTreeMap<(String, i32), Arc<PartitionCounters>>>,
    /// Messages produced to the dead-letter topic, and those not forwarded
    /// (the topic missing or unreachable, or the producer's queue full).
    pub dead_letters_produced: AtomicU64,
    pub dead_letter_produce_failures: AtomicU64,
    /// Dead letters queued to the producer, and those whose delivery was
    /// reported (delivered or failed): a checkpoint is taken only once every
    /// dead letter queued before its time is settled, so none it covers can
    /// still be lost in a crash.
    pub dead_letters_queued: AtomicU64,
    pub dead_letters_settled: AtomicU64,
    /// Consumer errors that name no partition (the client's own, such as
    /// every broker being down), by librdkafka error name.
    client_errors: Mutex<BTreeMap<String, u64>>,
}

impl SourceMetrics {
    pub fn new() -> Arc<Self> {
        Arc::new(SourceMetrics::default())
    }

    /// The counters of one partition, created on first use.
    pub fn partition(&self, topic: &str, partition: i32) -> Arc<PartitionCounters> {
        let mut partitions = self.partitions.lock().expect("metrics lock");
        partitions
            .entry((topic.to_string(), partition))
            .or_insert_with(|| {
                let counters = PartitionCounters::default();
                counters.next_offset.store(-1, Ordering::Relaxed);
                counters.high_watermark.store(-1, Ordering::Relaxed);
                Arc::new(counters)
            })
            .clone()
    }

    /// A copy of every partition's counters, by (topic, partition).
    pub fn snapshot(&self) -> BTreeMap<(String, i32), PartitionSnapshot> {
        let partitions = self.partitions.lock().expect("metrics lock");
        partitions
            .iter()
            .map(|(key, counters)| {
                (
                    key.clone(),
                    PartitionSnapshot {
                        consumed: counters.consumed.load(Ordering::Relaxed),
                        applied: counters.applied.load(Ordering::Relaxed),
                        dead_lettered: counters.dead_lettered.load(Ordering::Relaxed),
                        skipped: counters.skipped.load(Ordering::Relaxed),
                        next_offset: counters.next_offset.load(Ordering::Relaxed),
                        high_watermark: counters.high_watermark.load(Ordering::Relaxed),
                        health: HEALTH[usize::from(counters.health.load(Ordering::Relaxed))
                            .min(HEALTH.len() - 1)],
                        errors: counters.errors.lock().expect("errors lock").clone(),
                    },
                )
            })
            .collect()
    }
}

impl SourceMetrics {
    /// Counts one consumer error that names no partition.
    pub fn count_client_error(&self, code: &str) {
        count(&self.client_errors, code);
    }

    /// Consumer errors that name no partition, by librdkafka error name.
    pub fn client_errors(&self) -> BTreeMap<String, u64> {
        self.client_errors.lock().expect("errors lock").clone()
    }

    /// Whether any partition is stalled, and the partitions that are.
    pub fn stalled(&self) -> Vec<(String, i32)> {
        self.snapshot()
            .into_iter()
            .filter(|(_, partition)| partition.health == PartitionHealth::Stalled)
            .map(|(key, _)| key)
            .collect()
    }
}

/// Adds one to `code`'s count.
fn count(counts: &Mutex<BTreeMap<String, u64>>, code: &str) {
    *counts
        .lock()
        .expect("errors lock")
        .entry(code.to_string())
        .or_default() += 1;
}

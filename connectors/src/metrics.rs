//! Counters a source keeps per topic-partition, shared with whoever reports
//! them (Prometheus, the demo's summary, tests checking that every consumed
//! message is accounted for).

use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

/// One partition's counters. `consumed = applied + dead_lettered` always holds
/// once a batch has been handed over (applied includes messages the envelope
/// says to skip, such as Debezium tombstones).
#[derive(Debug, Default)]
pub struct PartitionCounters {
    pub consumed: AtomicU64,
    pub applied: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// The first offset not yet reflected (-1 before the partition is assigned).
    pub next_offset: AtomicI64,
    /// The high watermark last seen.
    pub high_watermark: AtomicI64,
}

/// A copy of one partition's counters.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct PartitionSnapshot {
    pub consumed: u64,
    pub applied: u64,
    pub dead_lettered: u64,
    pub next_offset: i64,
    pub high_watermark: i64,
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
    /// Messages produced to the dead-letter topic, and failures to produce them.
    pub dead_letters_produced: AtomicU64,
    pub dead_letter_produce_failures: AtomicU64,
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
                        next_offset: counters.next_offset.load(Ordering::Relaxed),
                        high_watermark: counters.high_watermark.load(Ordering::Relaxed),
                    },
                )
            })
            .collect()
    }
}

//! The counters the workers write as they run: freshness (a message's Kafka
//! timestamp → its change visible to readers) and rows per output collection.
//! Serving reads them when
//! Prometheus scrapes (`serve::metrics`, which writes the exposition); the
//! per-partition source counters live with the sources
//! (`trimatch_connectors::SourceMetrics`).

use std::sync::atomic::{AtomicI64, AtomicU64, Ordering};
use std::sync::Arc;

use trimatch_dataflows::OutputCollection;

/// A histogram with fixed bucket bounds (seconds).
#[derive(Debug)]
pub struct Histogram {
    bounds: &'static [f64],
    buckets: Vec<AtomicU64>,
    count: AtomicU64,
    sum_micros: AtomicU64,
}

impl Histogram {
    pub fn new(bounds: &'static [f64]) -> Self {
        Histogram {
            bounds,
            buckets: bounds.iter().map(|_| AtomicU64::new(0)).collect(),
            count: AtomicU64::new(0),
            sum_micros: AtomicU64::new(0),
        }
    }

    pub fn observe(&self, seconds: f64) {
        let seconds = seconds.max(0.0);
        if let Some(index) = self.bounds.iter().position(|bound| seconds <= *bound) {
            self.buckets[index].fetch_add(1, Ordering::Relaxed);
        }
        self.count.fetch_add(1, Ordering::Relaxed);
        self.sum_micros
            .fetch_add((seconds * 1e6) as u64, Ordering::Relaxed);
    }

    /// How many observations there were.
    pub fn count(&self) -> u64 {
        self.count.load(Ordering::Relaxed)
    }

    /// The sum of the observations (seconds, to the microsecond).
    pub fn sum(&self) -> f64 {
        self.sum_micros.load(Ordering::Relaxed) as f64 / 1e6
    }

    /// The bucket bounds (seconds) and how many observations fell in each
    /// (not cumulative); observations above the last bound are not included.
    pub fn buckets(&self) -> Vec<(f64, u64)> {
        self.bounds
            .iter()
            .zip(&self.buckets)
            .map(|(bound, bucket)| (*bound, bucket.load(Ordering::Relaxed)))
            .collect()
    }
}

/// Bucket bounds for freshness and request latency, in seconds.
pub const LATENCY_BOUNDS: &[f64] = &[
    0.001, 0.002, 0.005, 0.01, 0.02, 0.05, 0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0, 30.0,
];

/// What the workers count.
#[derive(Debug)]
pub struct PipelineCounters {
    /// Kafka message timestamp → the change visible to readers.
    pub freshness: Histogram,
    /// Rows per output collection (in [`OutputCollection::ALL`] order) on
    /// this process's workers: each worker adds the change of its shard's
    /// count after every step, so a scrape reads atomics, never the workers.
    rows: [AtomicI64; OutputCollection::ALL.len()],
}

impl PipelineCounters {
    pub fn new() -> Arc<Self> {
        Arc::new(PipelineCounters {
            freshness: Histogram::new(LATENCY_BOUNDS),
            rows: Default::default(),
        })
    }

    /// Adds `change` to the rows of `collection`.
    pub fn add_rows(&self, collection: OutputCollection, change: i64) {
        self.rows[Self::slot(collection)].fetch_add(change, Ordering::Relaxed);
    }

    /// Rows per output collection on this process's workers, as of the newest
    /// time each has processed.
    pub fn rows(&self) -> Vec<(OutputCollection, u64)> {
        OutputCollection::ALL
            .into_iter()
            .map(|collection| {
                let rows = self.rows[Self::slot(collection)].load(Ordering::Relaxed);
                (collection, rows.max(0) as u64)
            })
            .collect()
    }

    fn slot(collection: OutputCollection) -> usize {
        OutputCollection::ALL
            .iter()
            .position(|c| *c == collection)
            .expect("ALL holds every collection")
    }
}

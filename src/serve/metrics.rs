//! Prometheus metrics: what `/metrics` (served by `serve::http`) renders.
//!
//! Counters that change on the hot path are atomics updated where the event
//! happens (freshness in the workers, Flight requests in the service); the
//! rest — per-partition source counters, rows per collection, subscribers — are
//! read when Prometheus scrapes. The text format is written by hand: it is a
//! dozen lines, and every metric's name and help live in one place here.

use std::fmt::Write as _;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use trimatch_connectors::retention::TopicRetention;
use trimatch_dataflows::rows::PartitionHealth;
use trimatch_dataflows::OutputCollection;

use crate::pipeline::counters::{Histogram, LATENCY_BOUNDS};
use crate::pipeline::{CheckpointMetrics, PipelineHandle};

/// The Flight methods whose requests are counted.
pub const FLIGHT_METHODS: [&str; 7] = [
    "list_flights",
    "get_flight_info",
    "get_schema",
    "do_get",
    "do_action",
    "subscribe",
    "sql",
];

/// Rows per collection.
type RowCounts = Vec<(OutputCollection, u64)>;

/// What serving counts (Flight requests), and the Prometheus exposition of
/// every metric of the job.
#[derive(Debug)]
pub struct Metrics {
    flight_requests: Vec<(AtomicU64, AtomicU64, Histogram)>,
    /// Rows per collection as of the last scrape (reads are not free; see `render`).
    rows_cache: Mutex<Option<(std::time::Instant, RowCounts)>>,
    /// What the broker said of the input topics' history at start.
    input_topics: Mutex<Vec<TopicRetention>>,
    /// Rows Flight SQL scans copied out of the collections.
    sql_rows_scanned: AtomicU64,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            flight_requests: FLIGHT_METHODS
                .iter()
                .map(|_| {
                    (
                        AtomicU64::new(0),
                        AtomicU64::new(0),
                        Histogram::new(LATENCY_BOUNDS),
                    )
                })
                .collect(),
            rows_cache: Mutex::new(None),
            input_topics: Mutex::new(Vec::new()),
            sql_rows_scanned: AtomicU64::new(0),
        }
    }
}

impl Metrics {
    pub fn new() -> Arc<Self> {
        Arc::new(Metrics::default())
    }

    /// Records one Flight request: its method, whether it failed, and how long
    /// it took to answer (for streams: until the first message was ready).
    pub fn flight_request(&self, method: &str, failed: bool, elapsed: Duration) {
        if let Some(index) = FLIGHT_METHODS.iter().position(|known| *known == method) {
            let (requests, errors, latency) = &self.flight_requests[index];
            requests.fetch_add(1, Ordering::Relaxed);
            if failed {
                errors.fetch_add(1, Ordering::Relaxed);
            }
            latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Records what the broker said of the input topics' history.
    pub fn set_input_topics(&self, topics: Vec<TopicRetention>) {
        *self.input_topics.lock().expect("metrics lock") = topics;
    }

    /// Counts rows a Flight SQL scan copied out of a collection.
    pub fn sql_rows_scanned(&self, rows: usize) {
        self.sql_rows_scanned
            .fetch_add(rows as u64, Ordering::Relaxed);
    }

    /// What the broker said of the input topics' history (empty until asked).
    pub fn input_topics(&self) -> Vec<TopicRetention> {
        self.input_topics.lock().expect("metrics lock").clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, pipeline: &PipelineHandle) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "# HELP trimatch_sql_rows_scanned_total Rows Flight SQL scans copied out of the collections (after tenant scope and pushed-down equality filters).\n# TYPE trimatch_sql_rows_scanned_total counter\ntrimatch_sql_rows_scanned_total {}",
            self.sql_rows_scanned.load(Ordering::Relaxed)
        );
        let input_topics = self.input_topics();
        let _ = writeln!(out, "# HELP trimatch_input_topic_compacted 1 if an input topic is compacted (cleanup.policy has compact); absent while unknown.\n# TYPE trimatch_input_topic_compacted gauge");
        for topic in input_topics
            .iter()
            .filter(|topic| topic.cleanup_policy.is_some())
        {
            let _ = writeln!(
                out,
                "trimatch_input_topic_compacted{{topic=\"{}\"}} {}",
                topic.topic,
                u8::from(topic.is_compacted())
            );
        }
        let _ = writeln!(out, "# HELP trimatch_input_history_deleted 1 if an input topic is not compacted and has deleted records (low watermark above 0): a replay may miss documents.\n# TYPE trimatch_input_history_deleted gauge");
        for topic in &input_topics {
            let _ = writeln!(
                out,
                "trimatch_input_history_deleted{{topic=\"{}\"}} {}",
                topic.topic,
                u8::from(topic.history_deleted())
            );
        }
        let source = pipeline.metrics();
        let partitions = source.snapshot();
        type Field = fn(&trimatch_connectors::metrics::PartitionSnapshot) -> f64;
        let per_partition: [(&str, &str, &str, Field); 7] = [
            ("trimatch_messages_consumed_total", "counter", "Messages consumed from an input partition.", |p| p.consumed as f64),
            ("trimatch_messages_applied_total", "counter", "Messages applied to the documents (valid changes, and Debezium tombstones, which change nothing).", |p| p.applied as f64),
            ("trimatch_messages_dead_lettered_total", "counter", "Messages rejected under SPEC 1.3 and dead-lettered.", |p| p.dead_lettered as f64),
            ("trimatch_messages_skipped_total", "counter", "Offsets the broker's offset reset skipped (the range is a dead_letters row).", |p| p.skipped as f64),
            ("trimatch_partition_lag", "gauge", "High watermark minus the next offset to reflect.", |p| p.lag() as f64),
            ("trimatch_partition_next_offset", "gauge", "The first offset of the partition not yet reflected.", |p| p.next_offset as f64),
            ("trimatch_partition_high_watermark", "gauge", "The partition's high watermark as last seen.", |p| p.high_watermark as f64),
        ];
        for (name, kind, help, value) in per_partition {
            let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} {kind}");
            for ((topic, partition), counters) in &partitions {
                let _ = writeln!(
                    out,
                    "{name}{{topic=\"{topic}\",partition=\"{partition}\"}} {}",
                    value(counters)
                );
            }
        }
        let _ = writeln!(out, "# HELP trimatch_partition_state 1 for the state an input partition is in (ok, stalled, skipped).\n# TYPE trimatch_partition_state gauge");
        for ((topic, partition), counters) in &partitions {
            for state in [
                PartitionHealth::Ok,
                PartitionHealth::Stalled,
                PartitionHealth::Skipped,
            ] {
                let value = u8::from(counters.health == state);
                let _ = writeln!(
                    out,
                    "trimatch_partition_state{{topic=\"{topic}\",partition=\"{partition}\",state=\"{}\"}} {value}",
                    state.as_str()
                );
            }
        }
        let _ = writeln!(out, "# HELP trimatch_consumer_errors_total Errors the Kafka consumer reported, by partition (empty for the client's own) and librdkafka error name.\n# TYPE trimatch_consumer_errors_total counter");
        for ((topic, partition), counters) in &partitions {
            for (code, count) in &counters.errors {
                let _ = writeln!(
                    out,
                    "trimatch_consumer_errors_total{{topic=\"{topic}\",partition=\"{partition}\",code=\"{code}\"}} {count}"
                );
            }
        }
        for (code, count) in source.client_errors() {
            let _ = writeln!(
                out,
                "trimatch_consumer_errors_total{{topic=\"\",partition=\"\",code=\"{code}\"}} {count}"
            );
        }
        let scalars: [(&str, &str, &str, f64); 6] = [
            (
                "trimatch_dead_letters_produced_total",
                "counter",
                "Rejected messages produced to the dead-letter topic.",
                source.dead_letters_produced.load(Ordering::Relaxed) as f64,
            ),
            (
                "trimatch_dead_letter_produce_failures_total",
                "counter",
                "Rejected messages that could not be produced to the dead-letter topic.",
                source.dead_letter_produce_failures.load(Ordering::Relaxed) as f64,
            ),
            (
                "trimatch_ready",
                "gauge",
                "1 once every source has caught up to the high watermarks seen at start.",
                if pipeline.is_ready() { 1.0 } else { 0.0 },
            ),
            (
                "trimatch_newest_complete_time_ms",
                "gauge",
                "The newest logical time complete on every worker (ms since the epoch).",
                pipeline.newest_complete().unwrap_or(0) as f64,
            ),
            (
                "trimatch_subscribers",
                "gauge",
                "Connected Flight subscribers.",
                pipeline.hub().subscribers() as f64,
            ),
            (
                "trimatch_uptime_seconds",
                "gauge",
                "Seconds since the job started.",
                pipeline.started().elapsed().as_secs_f64(),
            ),
        ];
        for (name, kind, help, value) in scalars {
            let _ = writeln!(
                out,
                "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
            );
        }
        if let Some(checkpoints) = pipeline.checkpoints() {
            render_checkpoints(&mut out, checkpoints);
        }
        let _ = writeln!(out, "# HELP trimatch_rows Rows per output collection at the newest complete time.\n# TYPE trimatch_rows gauge");
        for (collection, rows) in self.rows(pipeline) {
            let _ = writeln!(
                out,
                "trimatch_rows{{collection=\"{}\"}} {rows}",
                collection.name()
            );
        }
        let _ = writeln!(out, "# HELP trimatch_freshness_seconds Kafka message timestamp to the change being visible to readers.\n# TYPE trimatch_freshness_seconds histogram");
        pipeline
            .counters()
            .freshness
            .render(&mut out, "trimatch_freshness_seconds", "");
        let _ = writeln!(out, "# HELP trimatch_flight_requests_total Flight requests by method.\n# TYPE trimatch_flight_requests_total counter");
        for (method, (requests, _, _)) in FLIGHT_METHODS.iter().zip(&self.flight_requests) {
            let _ = writeln!(
                out,
                "trimatch_flight_requests_total{{method=\"{method}\"}} {}",
                requests.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP trimatch_flight_request_errors_total Flight requests answered with an error, by method.\n# TYPE trimatch_flight_request_errors_total counter");
        for (method, (_, errors, _)) in FLIGHT_METHODS.iter().zip(&self.flight_requests) {
            let _ = writeln!(
                out,
                "trimatch_flight_request_errors_total{{method=\"{method}\"}} {}",
                errors.load(Ordering::Relaxed)
            );
        }
        let _ = writeln!(out, "# HELP trimatch_flight_request_seconds Time to answer a Flight request (streams: to the first message).\n# TYPE trimatch_flight_request_seconds histogram");
        for (method, (_, _, latency)) in FLIGHT_METHODS.iter().zip(&self.flight_requests) {
            latency.render(
                &mut out,
                "trimatch_flight_request_seconds",
                &format!("method=\"{method}\""),
            );
        }
        out
    }

    /// Rows per collection, counted at most every 5 seconds (a count scans the
    /// collection's arrangement).
    fn rows(&self, pipeline: &PipelineHandle) -> RowCounts {
        let mut cache = self.rows_cache.lock().expect("rows cache lock");
        if let Some((at, rows)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(5) {
                return rows.clone();
            }
        }
        let Some(newest) = pipeline.newest_complete() else {
            return Vec::new();
        };
        let rows: RowCounts = OutputCollection::ALL
            .into_iter()
            .filter_map(|collection| {
                pipeline
                    .count(collection, newest)
                    .ok()
                    .map(|rows| (collection, rows))
            })
            .collect();
        *cache = Some((std::time::Instant::now(), rows.clone()));
        rows
    }
}

/// The checkpoint and restore metrics (with `--state-dir`).
fn render_checkpoints(out: &mut String, checkpoints: &CheckpointMetrics) {
    let load = |value: &std::sync::atomic::AtomicU64| value.load(Ordering::Relaxed);
    let written_at = load(&checkpoints.last_written_at_ms);
    let age = if written_at == 0 {
        f64::NAN
    } else {
        (trimatch_connectors::source::now_ms().max(0) as u64).saturating_sub(written_at) as f64
            / 1e3
    };
    let gauges = [
        (
            "trimatch_checkpoint_last_time_seconds",
            "gauge",
            "When the last checkpoint was written (seconds since the epoch; 0: none yet).",
            written_at as f64 / 1e3,
        ),
        (
            "trimatch_checkpoint_last_as_of",
            "gauge",
            "The logical time (ms) the last checkpoint reflects.",
            load(&checkpoints.last_as_of) as f64,
        ),
        (
            "trimatch_checkpoint_age_seconds",
            "gauge",
            "Seconds since the last checkpoint was written (NaN: none yet).",
            age,
        ),
        (
            "trimatch_checkpoint_duration_seconds",
            "gauge",
            "How long writing the last checkpoint took.",
            load(&checkpoints.last_duration_micros) as f64 / 1e6,
        ),
        (
            "trimatch_checkpoint_size_bytes",
            "gauge",
            "The size of the last checkpoint file.",
            load(&checkpoints.last_bytes) as f64,
        ),
        (
            "trimatch_checkpoint_documents",
            "gauge",
            "Documents in the last checkpoint.",
            load(&checkpoints.last_documents) as f64,
        ),
        (
            "trimatch_checkpoints_written_total",
            "counter",
            "Checkpoints written.",
            load(&checkpoints.written) as f64,
        ),
        (
            "trimatch_checkpoint_failures_total",
            "counter",
            "Checkpoints that could not be written.",
            load(&checkpoints.failures) as f64,
        ),
        (
            "trimatch_restore_documents",
            "gauge",
            "Documents restored from a checkpoint at start.",
            load(&checkpoints.restored_documents) as f64,
        ),
        (
            "trimatch_restore_seconds",
            "gauge",
            "How long loading the checkpoint took at start.",
            load(&checkpoints.restore_micros) as f64 / 1e6,
        ),
        (
            "trimatch_restore_as_of",
            "gauge",
            "The logical time (ms) of the checkpoint restored at start (0: none).",
            load(&checkpoints.restored_as_of) as f64,
        ),
    ];
    for (name, kind, help, value) in gauges {
        let _ = writeln!(
            out,
            "# HELP {name} {help}\n# TYPE {name} {kind}\n{name} {value}"
        );
    }
}

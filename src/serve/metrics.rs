//! Prometheus metrics: what `/metrics` (served by [`super::http`]) renders.
//!
//! The exposition is written by `prometheus-client`, the official Prometheus
//! Rust client, in the classic text format 0.0.4 ([`CONTENT_TYPE`]): the crate
//! writes the `# HELP` and `# TYPE` lines, escapes label values, appends
//! `_total` to counters and makes histogram buckets cumulative up to `+Inf`.
//! This module names each metric, says what it means and where its value
//! comes from. Counters are written here with the `_total` their samples carry
//! (what dashboards and tests query); `counter` hands the encoder the name
//! without it.
//!
//! [`Metrics::render`] assembles a [`Registry`] on every scrape, for the
//! pipeline it is handed (a `Metrics` is made before, and without, a
//! pipeline), and encodes it. The registry holds no values, only handles to
//! where they live, so assembling it is a few allocations:
//!
//! * Serving's own counters change on its hot path and are the crate's
//!   metrics, updated where the event happens: the rows Flight SQL scans copy
//!   (a [`Counter`]: one atomic add per scan) and Flight requests by method
//!   (count and errors are [`Counter`]s; latency is a [`Histogram`], whose
//!   observation takes the crate's uncontended lock, once per request and
//!   never per row). A [`Collector`] encodes the request metrics, so that
//!   every method is listed, in [`FLIGHT_METHODS`] order, from the first
//!   scrape on.
//! * Everything else lives with its owner and is read by a [`Collector`] when
//!   Prometheus scrapes, never copied on the hot path: the source's counters,
//!   the job's readiness, newest complete time, subscribers and uptime, the
//!   checkpoint and restore metrics, rows per collection (counted at most
//!   every 5 seconds: a count scans an arrangement) and freshness. Freshness
//!   is observed by every worker for every message, so it stays the
//!   pipeline's lock-free histogram (`pipeline::counters`), which knows
//!   nothing of Prometheus.
//!
//! Kafka: the source's metrics are Kafka's coordinates — messages, lag and
//! state per topic and partition, consumer errors by librdkafka error name —
//! because that is what an operator acts on (which partition is behind,
//! which broker error). They are kept by the connectors
//! ([`trimatch_connectors::metrics::SourceMetrics`], reached through
//! [`PipelineHandle::metrics`]), as is what the broker said of the input
//! topics' history ([`TopicRetention`], handed over by `cli::serve`). So this
//! module reads those types, and keeps the input topics for the Flight
//! `status` action too, which reports the same counters as JSON; neither
//! talks to Kafka, they only read what the source and `cli::serve` recorded.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeCounterValue, EncodeGaugeValue, EncodeMetric, NoLabelSet,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use trimatch_connectors::metrics::{PartitionSnapshot, SourceMetrics};
use trimatch_connectors::retention::TopicRetention;
use trimatch_dataflows::model::{Time, WallClock};
use trimatch_dataflows::rows::PartitionHealth;
use trimatch_dataflows::OutputCollection;

use crate::pipeline::counters::{PipelineCounters, LATENCY_BOUNDS};
use crate::pipeline::{CheckpointMetrics, PipelineHandle};

/// The `Content-Type` of what [`Metrics::render`] writes (the Prometheus text
/// format 0.0.4, UTF-8).
pub const CONTENT_TYPE: &str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;

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

/// What serving counts (Flight requests, Flight SQL scans), and the
/// Prometheus exposition of every metric of the job.
#[derive(Debug)]
pub struct Metrics {
    flight_requests: Arc<FlightRequests>,
    /// Rows Flight SQL scans copied out of the collections.
    sql_rows_scanned: Counter,
    /// What the broker said of the input topics' history at start.
    input_topics: Arc<Mutex<Vec<TopicRetention>>>,
    /// Rows per collection as of the last count (see [`Rows`]).
    rows_cache: Arc<Mutex<Option<(Instant, RowCounts)>>>,
}

impl Default for Metrics {
    fn default() -> Self {
        Metrics {
            flight_requests: Arc::new(FlightRequests(
                FLIGHT_METHODS
                    .iter()
                    .map(|_| FlightMethod {
                        requests: Counter::default(),
                        errors: Counter::default(),
                        latency: Histogram::new(LATENCY_BOUNDS.iter().copied()),
                    })
                    .collect(),
            )),
            sql_rows_scanned: Counter::default(),
            input_topics: Arc::default(),
            rows_cache: Arc::default(),
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
            let method = &self.flight_requests.0[index];
            method.requests.inc();
            if failed {
                method.errors.inc();
            }
            method.latency.observe(elapsed.as_secs_f64());
        }
    }

    /// Records what the broker said of the input topics' history.
    pub fn set_input_topics(&self, topics: Vec<TopicRetention>) {
        *self.input_topics.lock().expect("metrics lock") = topics;
    }

    /// Counts rows a Flight SQL scan copied out of a collection.
    pub fn sql_rows_scanned(&self, rows: usize) {
        self.sql_rows_scanned.inc_by(rows as u64);
    }

    /// What the broker said of the input topics' history (empty until asked).
    pub fn input_topics(&self) -> Vec<TopicRetention> {
        self.input_topics.lock().expect("metrics lock").clone()
    }

    /// The Prometheus text exposition of every metric.
    pub fn render(&self, pipeline: &PipelineHandle) -> String {
        let checkpoints = pipeline.checkpoints().map(|checkpoints| {
            Box::new(Checkpoints(Arc::clone(checkpoints))) as Box<dyn Collector>
        });
        let job: [Option<Box<dyn Collector>>; 5] = [
            Some(Box::new(Source(pipeline.metrics()))),
            Some(Box::new(Job(pipeline.clone()))),
            checkpoints,
            Some(Box::new(Rows {
                pipeline: pipeline.clone(),
                cache: Arc::clone(&self.rows_cache),
            })),
            Some(Box::new(Freshness(Arc::clone(pipeline.counters())))),
        ];
        self.encode(job.into_iter().flatten())
    }

    /// Encodes serving's metrics around `job`'s collectors: the SQL scans and
    /// the input topics first, Flight requests last.
    fn encode(&self, job: impl IntoIterator<Item = Box<dyn Collector>>) -> String {
        let mut registry = Registry::default();
        registry.register(
            counter("trimatch_sql_rows_scanned_total"),
            // The registry ends the help with its full stop.
            "Rows Flight SQL scans copied out of the collections (after tenant scope and pushed-down equality filters)",
            self.sql_rows_scanned.clone(),
        );
        registry.register_collector(Box::new(InputTopics(Arc::clone(&self.input_topics))));
        for collector in job {
            registry.register_collector(collector);
        }
        registry.register_collector(Box::new(Arc::clone(&self.flight_requests)));
        let mut text = String::new();
        // Writing to a String does not fail, and the collectors fail only
        // when the writer does.
        if prometheus_client::encoding::prometheus_text::encode(&mut text, &registry).is_err() {
            tracing::warn!("encoding the metrics failed; the scrape is cut short");
        }
        text
    }
}

/// A counter's name as the encoder takes it: without the `_total` it appends.
fn counter(name: &'static str) -> &'static str {
    name.strip_suffix("_total")
        .expect("a counter's name ends in _total")
}

/// A family with one unlabelled gauge.
fn gauge(
    encoder: &mut DescriptorEncoder,
    name: &str,
    help: &str,
    value: impl EncodeGaugeValue,
) -> fmt::Result {
    ConstGauge::new(value).encode(encoder.encode_descriptor(name, help, None, MetricType::Gauge)?)
}

/// A family with one unlabelled counter (`name` with its `_total`).
fn unlabelled_counter(
    encoder: &mut DescriptorEncoder,
    name: &'static str,
    help: &str,
    value: impl EncodeCounterValue,
) -> fmt::Result {
    ConstCounter::new(value).encode(encoder.encode_descriptor(
        counter(name),
        help,
        None,
        MetricType::Counter,
    )?)
}

/// 1 or 0.
fn flag(value: bool) -> i64 {
    i64::from(value)
}

/// One Flight method's requests.
#[derive(Debug)]
struct FlightMethod {
    requests: Counter,
    errors: Counter,
    latency: Histogram,
}

/// Flight requests, one [`FlightMethod`] per [`FLIGHT_METHODS`] entry.
#[derive(Debug)]
struct FlightRequests(Vec<FlightMethod>);

impl FlightRequests {
    /// The methods with their `method` label.
    fn labelled(&self) -> impl Iterator<Item = ([(&'static str, &'static str); 1], &FlightMethod)> {
        FLIGHT_METHODS
            .iter()
            .map(|method| [("method", *method)])
            .zip(&self.0)
    }
}

impl Collector for FlightRequests {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            counter("trimatch_flight_requests_total"),
            "Flight requests by method.",
            None,
            MetricType::Counter,
        )?;
        for (labels, method) in self.labelled() {
            method.requests.encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            counter("trimatch_flight_request_errors_total"),
            "Flight requests answered with an error, by method.",
            None,
            MetricType::Counter,
        )?;
        for (labels, method) in self.labelled() {
            method.errors.encode(family.encode_family(&labels)?)?;
        }
        let mut family = encoder.encode_descriptor(
            "trimatch_flight_request_seconds",
            "Time to answer a Flight request (streams: to the first message).",
            None,
            MetricType::Histogram,
        )?;
        for (labels, method) in self.labelled() {
            method.latency.encode(family.encode_family(&labels)?)?;
        }
        Ok(())
    }
}

/// What the broker said of the input topics' history (nothing until asked).
#[derive(Debug)]
struct InputTopics(Arc<Mutex<Vec<TopicRetention>>>);

impl Collector for InputTopics {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let topics = self.0.lock().expect("metrics lock").clone();
        let mut family = encoder.encode_descriptor(
            "trimatch_input_topic_compacted",
            "1 if an input topic is compacted (cleanup.policy has compact); absent while unknown.",
            None,
            MetricType::Gauge,
        )?;
        for topic in topics.iter().filter(|topic| topic.cleanup_policy.is_some()) {
            ConstGauge::new(flag(topic.is_compacted()))
                .encode(family.encode_family(&[("topic", topic.topic.as_str())])?)?;
        }
        let mut family = encoder.encode_descriptor(
            "trimatch_input_history_deleted",
            "1 if an input topic is not compacted and has deleted records (low watermark above 0): a replay may miss documents.",
            None,
            MetricType::Gauge,
        )?;
        for topic in &topics {
            ConstGauge::new(flag(topic.history_deleted()))
                .encode(family.encode_family(&[("topic", topic.topic.as_str())])?)?;
        }
        Ok(())
    }
}

/// The source's counters, per input partition and for the dead-letter topic
/// (the connectors' [`SourceMetrics`]).
#[derive(Debug)]
struct Source(Arc<SourceMetrics>);

/// Per-partition counters: name (with `_total`), help, value.
type PartitionCounter = (&'static str, &'static str, fn(&PartitionSnapshot) -> u64);

/// Per-partition gauges: name, help, value.
type PartitionGauge = (&'static str, &'static str, fn(&PartitionSnapshot) -> i64);

const PARTITION_COUNTERS: [PartitionCounter; 4] = [
    (
        "trimatch_messages_consumed_total",
        "Messages consumed from an input partition.",
        |p| p.consumed,
    ),
    (
        "trimatch_messages_applied_total",
        "Messages applied to the documents (valid changes, and Debezium tombstones, which change nothing).",
        |p| p.applied,
    ),
    (
        "trimatch_messages_dead_lettered_total",
        "Messages rejected under SPEC 1.3 and dead-lettered.",
        |p| p.dead_lettered,
    ),
    (
        "trimatch_messages_skipped_total",
        "Offsets the broker's offset reset skipped (the range is a dead_letters row).",
        |p| p.skipped,
    ),
];

const PARTITION_GAUGES: [PartitionGauge; 3] = [
    (
        "trimatch_partition_lag",
        "High watermark minus the next offset to reflect.",
        |p| i64::try_from(p.lag()).unwrap_or(i64::MAX),
    ),
    (
        "trimatch_partition_next_offset",
        "The first offset of the partition not yet reflected.",
        |p| p.next_offset,
    ),
    (
        "trimatch_partition_high_watermark",
        "The partition's high watermark as last seen.",
        |p| p.high_watermark,
    ),
];

impl Collector for Source {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let source = &self.0;
        let partitions: Vec<(String, String, PartitionSnapshot)> = source
            .snapshot()
            .into_iter()
            .map(|((topic, partition), counters)| (topic, partition.to_string(), counters))
            .collect();
        for (name, help, value) in PARTITION_COUNTERS {
            let mut family =
                encoder.encode_descriptor(counter(name), help, None, MetricType::Counter)?;
            for (topic, partition, counters) in &partitions {
                ConstCounter::new(value(counters)).encode(family.encode_family(&[
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ])?)?;
            }
        }
        for (name, help, value) in PARTITION_GAUGES {
            let mut family = encoder.encode_descriptor(name, help, None, MetricType::Gauge)?;
            for (topic, partition, counters) in &partitions {
                ConstGauge::new(value(counters)).encode(family.encode_family(&[
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                ])?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            "trimatch_partition_state",
            "1 for the state an input partition is in (ok, stalled, skipped).",
            None,
            MetricType::Gauge,
        )?;
        for (topic, partition, counters) in &partitions {
            for state in [
                PartitionHealth::Ok,
                PartitionHealth::Stalled,
                PartitionHealth::Skipped,
            ] {
                let labels = [
                    ("topic", topic.as_str()),
                    ("partition", partition.as_str()),
                    ("state", state.as_str()),
                ];
                ConstGauge::new(flag(counters.health == state))
                    .encode(family.encode_family(&labels)?)?;
            }
        }
        let mut family = encoder.encode_descriptor(
            counter("trimatch_consumer_errors_total"),
            "Errors the Kafka consumer reported, by partition (empty for the client's own) and librdkafka error name.",
            None,
            MetricType::Counter,
        )?;
        let client_errors = source.client_errors();
        let errors = partitions
            .iter()
            .flat_map(|(topic, partition, counters)| {
                counters
                    .errors
                    .iter()
                    .map(move |(code, count)| (topic.as_str(), partition.as_str(), code, *count))
            })
            .chain(
                client_errors
                    .iter()
                    .map(|(code, count)| ("", "", code, *count)),
            );
        for (topic, partition, code, count) in errors {
            let labels = [
                ("topic", topic),
                ("partition", partition),
                ("code", code.as_str()),
            ];
            ConstCounter::new(count).encode(family.encode_family(&labels)?)?;
        }
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        unlabelled_counter(
            &mut encoder,
            "trimatch_dead_letters_produced_total",
            "Rejected messages produced to the dead-letter topic.",
            load(&source.dead_letters_produced),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_dead_letter_produce_failures_total",
            "Rejected messages that could not be produced to the dead-letter topic.",
            load(&source.dead_letter_produce_failures),
        )
    }
}

/// Where the job is: ready, its newest complete time, subscribers, uptime.
struct Job(PipelineHandle);

impl fmt::Debug for Job {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Job")
    }
}

impl Collector for Job {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let pipeline = &self.0;
        gauge(
            &mut encoder,
            "trimatch_ready",
            "1 once every source has caught up to the high watermarks seen at start.",
            flag(pipeline.is_ready()),
        )?;
        gauge(
            &mut encoder,
            "trimatch_newest_complete_time_ms",
            "The newest logical time complete on every worker (ms since the epoch).",
            pipeline.newest_complete().unwrap_or(0),
        )?;
        gauge(
            &mut encoder,
            "trimatch_subscribers",
            "Connected Flight subscribers.",
            pipeline.hub().subscribers(),
        )?;
        gauge(
            &mut encoder,
            "trimatch_uptime_seconds",
            "Seconds since the job started.",
            pipeline.started().elapsed().as_secs_f64(),
        )
    }
}

/// The checkpoint and restore metrics (with `--state-dir`).
#[derive(Debug)]
struct Checkpoints(Arc<CheckpointMetrics>);

impl Collector for Checkpoints {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let checkpoints = &self.0;
        let load = |value: &AtomicU64| value.load(Ordering::Relaxed);
        let micros = |value: &AtomicU64| load(value) as f64 / 1e6;
        let written_at = load(&checkpoints.last_written_at_ms);
        let age = if written_at == 0 {
            f64::NAN
        } else {
            Time::now().saturating_sub(written_at) as f64 / 1e3
        };
        gauge(
            &mut encoder,
            "trimatch_checkpoint_last_time_seconds",
            "When the last checkpoint was written (seconds since the epoch; 0: none yet).",
            written_at as f64 / 1e3,
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_last_as_of",
            "The logical time (ms) the last checkpoint reflects.",
            load(&checkpoints.last_as_of),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_age_seconds",
            "Seconds since the last checkpoint was written (NaN: none yet).",
            age,
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_duration_seconds",
            "How long writing the last checkpoint took.",
            micros(&checkpoints.last_duration_micros),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_size_bytes",
            "The size of the last checkpoint file.",
            load(&checkpoints.last_bytes),
        )?;
        gauge(
            &mut encoder,
            "trimatch_checkpoint_documents",
            "Documents in the last checkpoint.",
            load(&checkpoints.last_documents),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_checkpoints_written_total",
            "Checkpoints written.",
            load(&checkpoints.written),
        )?;
        unlabelled_counter(
            &mut encoder,
            "trimatch_checkpoint_failures_total",
            "Checkpoints that could not be written.",
            load(&checkpoints.failures),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_documents",
            "Documents restored from a checkpoint at start.",
            load(&checkpoints.restored_documents),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_seconds",
            "How long loading the checkpoint took at start.",
            micros(&checkpoints.restore_micros),
        )?;
        gauge(
            &mut encoder,
            "trimatch_restore_as_of",
            "The logical time (ms) of the checkpoint restored at start (0: none).",
            load(&checkpoints.restored_as_of),
        )
    }
}

/// Rows per output collection at the newest complete time, counted at most
/// every 5 seconds: a count scans the collection's arrangement.
struct Rows {
    pipeline: PipelineHandle,
    cache: Arc<Mutex<Option<(Instant, RowCounts)>>>,
}

impl fmt::Debug for Rows {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Rows").field("cache", &self.cache).finish()
    }
}

impl Rows {
    fn counts(&self) -> RowCounts {
        let mut cache = self.cache.lock().expect("rows cache lock");
        if let Some((at, rows)) = cache.as_ref() {
            if at.elapsed() < Duration::from_secs(5) {
                return rows.clone();
            }
        }
        let Some(newest) = self.pipeline.newest_complete() else {
            return Vec::new();
        };
        let rows: RowCounts = OutputCollection::ALL
            .into_iter()
            .filter_map(|collection| {
                self.pipeline
                    .count(collection, newest)
                    .ok()
                    .map(|rows| (collection, rows))
            })
            .collect();
        *cache = Some((Instant::now(), rows.clone()));
        rows
    }
}

impl Collector for Rows {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let mut family = encoder.encode_descriptor(
            "trimatch_rows",
            "Rows per output collection at the newest complete time.",
            None,
            MetricType::Gauge,
        )?;
        for (collection, rows) in self.counts() {
            ConstGauge::new(rows)
                .encode(family.encode_family(&[("collection", collection.name())])?)?;
        }
        Ok(())
    }
}

/// Freshness, as the workers observe it (`pipeline::counters`).
#[derive(Debug)]
struct Freshness(Arc<PipelineCounters>);

impl Collector for Freshness {
    fn encode(&self, mut encoder: DescriptorEncoder) -> fmt::Result {
        let freshness = &self.0.freshness;
        encoder
            .encode_descriptor(
                "trimatch_freshness_seconds",
                "Kafka message timestamp to the change being visible to readers.",
                None,
                MetricType::Histogram,
            )?
            .encode_histogram::<NoLabelSet>(
                freshness.sum(),
                freshness.count(),
                &freshness.buckets(),
                None,
            )
    }
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use rdkafka::mocking::MockCluster;
    use trimatch_connectors::SourceConfig;
    use trimatch_dataflows::model::DocumentKind;

    use super::*;
    use crate::pipeline::{Pipeline, PipelineConfig};

    /// Every family `/metrics` serves, with its type; dashboards, alerts and
    /// tests read these names.
    const SERVING: [(&str, &str); 6] = [
        ("trimatch_sql_rows_scanned_total", "counter"),
        ("trimatch_input_topic_compacted", "gauge"),
        ("trimatch_input_history_deleted", "gauge"),
        ("trimatch_flight_requests_total", "counter"),
        ("trimatch_flight_request_errors_total", "counter"),
        ("trimatch_flight_request_seconds", "histogram"),
    ];
    const SOURCE: [(&str, &str); 11] = [
        ("trimatch_messages_consumed_total", "counter"),
        ("trimatch_messages_applied_total", "counter"),
        ("trimatch_messages_dead_lettered_total", "counter"),
        ("trimatch_messages_skipped_total", "counter"),
        ("trimatch_partition_lag", "gauge"),
        ("trimatch_partition_next_offset", "gauge"),
        ("trimatch_partition_high_watermark", "gauge"),
        ("trimatch_partition_state", "gauge"),
        ("trimatch_consumer_errors_total", "counter"),
        ("trimatch_dead_letters_produced_total", "counter"),
        ("trimatch_dead_letter_produce_failures_total", "counter"),
    ];
    const JOB: [(&str, &str); 6] = [
        ("trimatch_ready", "gauge"),
        ("trimatch_newest_complete_time_ms", "gauge"),
        ("trimatch_subscribers", "gauge"),
        ("trimatch_uptime_seconds", "gauge"),
        ("trimatch_rows", "gauge"),
        ("trimatch_freshness_seconds", "histogram"),
    ];
    const CHECKPOINTS: [(&str, &str); 11] = [
        ("trimatch_checkpoint_last_time_seconds", "gauge"),
        ("trimatch_checkpoint_last_as_of", "gauge"),
        ("trimatch_checkpoint_age_seconds", "gauge"),
        ("trimatch_checkpoint_duration_seconds", "gauge"),
        ("trimatch_checkpoint_size_bytes", "gauge"),
        ("trimatch_checkpoint_documents", "gauge"),
        ("trimatch_checkpoints_written_total", "counter"),
        ("trimatch_checkpoint_failures_total", "counter"),
        ("trimatch_restore_documents", "gauge"),
        ("trimatch_restore_seconds", "gauge"),
        ("trimatch_restore_as_of", "gauge"),
    ];

    /// A parsed text exposition.
    #[derive(Debug, Default)]
    struct Exposition {
        /// Family name → (type, help), in the order declared.
        families: Vec<(String, String, String)>,
        /// `name{labels}` → value.
        samples: BTreeMap<String, f64>,
    }

    impl Exposition {
        /// Parses `text`, checking its shape: every family declared once, its
        /// `# HELP` then its `# TYPE`, and every sample under the family it
        /// belongs to (a histogram's under its `_bucket`, `_sum`, `_count`).
        fn parse(text: &str) -> Exposition {
            let mut exposition = Exposition::default();
            let mut help: Option<(String, String)> = None;
            assert!(text.ends_with('\n'), "ends with a newline");
            for line in text.lines() {
                if let Some(rest) = line.strip_prefix("# HELP ") {
                    assert!(help.is_none(), "two HELP lines in a row at {line:?}");
                    let (name, said) = rest.split_once(' ').expect("HELP has a text");
                    assert!(!said.trim().is_empty(), "{name} has an empty help");
                    help = Some((name.to_string(), said.to_string()));
                } else if let Some(rest) = line.strip_prefix("# TYPE ") {
                    let (name, kind) = rest.split_once(' ').expect("TYPE has a type");
                    let (helped, said) = help
                        .take()
                        .unwrap_or_else(|| panic!("{name}: TYPE without HELP"));
                    assert_eq!(helped, name, "HELP and TYPE name the same family");
                    assert!(
                        ["counter", "gauge", "histogram"].contains(&kind),
                        "{name}: {kind}"
                    );
                    assert!(
                        (kind == "counter") == name.ends_with("_total"),
                        "{name}: counters, and only they, end in _total"
                    );
                    assert!(
                        exposition
                            .families
                            .iter()
                            .all(|(known, _, _)| known != name),
                        "{name} declared twice"
                    );
                    exposition
                        .families
                        .push((name.to_string(), kind.to_string(), said));
                } else {
                    assert!(!line.starts_with('#'), "an unknown comment: {line:?}");
                    assert!(help.is_none(), "a HELP without TYPE before {line:?}");
                    let (series, value) = line.rsplit_once(' ').expect("a sample has a value");
                    let name = series.split('{').next().unwrap();
                    let (family, kind, _) = exposition
                        .families
                        .last()
                        .unwrap_or_else(|| panic!("{line:?} before any family"));
                    let belongs = match kind.as_str() {
                        "histogram" => ["_bucket", "_sum", "_count"]
                            .iter()
                            .any(|suffix| name == format!("{family}{suffix}")),
                        _ => name == family,
                    };
                    assert!(belongs, "{line:?} is not of the family {family} above it");
                    let value: f64 = value
                        .parse()
                        .unwrap_or_else(|_| panic!("{line:?}: the value is a number"));
                    assert!(
                        exposition
                            .samples
                            .insert(series.to_string(), value)
                            .is_none(),
                        "{series} twice"
                    );
                }
            }
            assert!(help.is_none(), "a HELP without TYPE at the end");
            exposition
        }

        fn value(&self, series: &str) -> f64 {
            *self
                .samples
                .get(series)
                .unwrap_or_else(|| panic!("no sample {series} in {:#?}", self.samples))
        }

        /// The families' names and types.
        fn kinds(&self) -> Vec<(&str, &str)> {
            self.families
                .iter()
                .map(|(name, kind, _)| (name.as_str(), kind.as_str()))
                .collect()
        }
    }

    /// `lists` concatenated.
    fn families(lists: &[&[(&'static str, &'static str)]]) -> Vec<(&'static str, &'static str)> {
        lists.iter().flat_map(|list| list.iter().copied()).collect()
    }

    #[test]
    fn the_exposition_says_what_the_counters_say() {
        let metrics = Metrics::default();
        metrics.sql_rows_scanned(5);
        metrics.sql_rows_scanned(7);
        metrics.flight_request("do_get", false, Duration::from_millis(3));
        metrics.flight_request("do_get", true, Duration::from_millis(40));
        metrics.flight_request("sql", false, Duration::from_secs(45));
        metrics.flight_request("not_a_method", true, Duration::from_millis(1));
        metrics.set_input_topics(vec![
            TopicRetention {
                topic: "invoices".to_string(),
                cleanup_policy: Some("compact, delete".to_string()),
                low_watermarks: [(0, 5)].into(),
            },
            TopicRetention {
                topic: "payments".to_string(),
                cleanup_policy: None,
                low_watermarks: [(0, 3), (1, 0)].into(),
            },
        ]);

        let source = SourceMetrics::new();
        let invoices = source.partition("invoices", 0);
        invoices.consumed.store(10, Ordering::Relaxed);
        invoices.applied.store(7, Ordering::Relaxed);
        invoices.dead_lettered.store(2, Ordering::Relaxed);
        invoices.skipped.store(1, Ordering::Relaxed);
        invoices.next_offset.store(10, Ordering::Relaxed);
        invoices.high_watermark.store(15, Ordering::Relaxed);
        invoices.set_health(PartitionHealth::Stalled);
        invoices.count_error("BROKER_TRANSPORT_FAILURE");
        invoices.count_error("BROKER_TRANSPORT_FAILURE");
        source.partition("payments", 3);
        source.count_client_error("ALL_BROKERS_DOWN");
        source.dead_letters_produced.store(2, Ordering::Relaxed);
        source
            .dead_letter_produce_failures
            .store(1, Ordering::Relaxed);

        let checkpoints = Arc::new(CheckpointMetrics::default());
        checkpoints
            .last_written_at_ms
            .store(1_700_000_000_500, Ordering::Relaxed);
        checkpoints
            .last_as_of
            .store(1_699_999_999_000, Ordering::Relaxed);
        checkpoints
            .last_duration_micros
            .store(250_000, Ordering::Relaxed);
        checkpoints.last_bytes.store(4096, Ordering::Relaxed);
        checkpoints.last_documents.store(12, Ordering::Relaxed);
        checkpoints.written.store(3, Ordering::Relaxed);
        checkpoints.failures.store(1, Ordering::Relaxed);
        checkpoints.restored_documents.store(9, Ordering::Relaxed);
        checkpoints
            .restore_micros
            .store(1_500_000, Ordering::Relaxed);
        checkpoints
            .restored_as_of
            .store(1_600_000_000_000, Ordering::Relaxed);

        let counters = PipelineCounters::new();
        for seconds in [0.0015, 0.5, 100.0] {
            counters.freshness.observe(seconds);
        }

        let text = metrics.encode([
            Box::new(Source(source)) as Box<dyn Collector>,
            Box::new(Checkpoints(checkpoints)),
            Box::new(Freshness(counters)),
        ]);
        let exposition = Exposition::parse(&text);
        let freshness = [("trimatch_freshness_seconds", "histogram")];
        assert_eq!(
            exposition.kinds(),
            families(&[
                &SERVING[..3],
                &SOURCE,
                &CHECKPOINTS,
                &freshness,
                &SERVING[3..]
            ]),
            "{text}"
        );
        for (name, _, help) in &exposition.families {
            assert!(
                help.ends_with('.'),
                "{name}: {help:?} ends with one full stop"
            );
            assert!(
                !help.ends_with(".."),
                "{name}: {help:?} ends with one full stop"
            );
        }
        let value = |series: &str| exposition.value(series);

        assert_eq!(value("trimatch_sql_rows_scanned_total"), 12.0);
        assert_eq!(
            value("trimatch_input_topic_compacted{topic=\"invoices\"}"),
            1.0
        );
        assert!(
            !exposition
                .samples
                .contains_key("trimatch_input_topic_compacted{topic=\"payments\"}"),
            "a topic whose policy is unknown has no compacted sample"
        );
        assert_eq!(
            value("trimatch_input_history_deleted{topic=\"invoices\"}"),
            0.0
        );
        assert_eq!(
            value("trimatch_input_history_deleted{topic=\"payments\"}"),
            1.0
        );

        let invoices = "topic=\"invoices\",partition=\"0\"";
        let payments = "topic=\"payments\",partition=\"3\"";
        for (name, expected) in [
            ("trimatch_messages_consumed_total", 10.0),
            ("trimatch_messages_applied_total", 7.0),
            ("trimatch_messages_dead_lettered_total", 2.0),
            ("trimatch_messages_skipped_total", 1.0),
            ("trimatch_partition_lag", 5.0),
            ("trimatch_partition_next_offset", 10.0),
            ("trimatch_partition_high_watermark", 15.0),
        ] {
            assert_eq!(value(&format!("{name}{{{invoices}}}")), expected, "{name}");
        }
        assert_eq!(
            value(&format!("trimatch_messages_consumed_total{{{payments}}}")),
            0.0
        );
        assert_eq!(value(&format!("trimatch_partition_lag{{{payments}}}")), 0.0);
        assert_eq!(
            value(&format!("trimatch_partition_next_offset{{{payments}}}")),
            -1.0
        );
        for (partition, state, expected) in [
            (invoices, "ok", 0.0),
            (invoices, "stalled", 1.0),
            (invoices, "skipped", 0.0),
            (payments, "ok", 1.0),
            (payments, "stalled", 0.0),
            (payments, "skipped", 0.0),
        ] {
            assert_eq!(
                value(&format!(
                    "trimatch_partition_state{{{partition},state=\"{state}\"}}"
                )),
                expected
            );
        }
        assert_eq!(
            value(&format!(
                "trimatch_consumer_errors_total{{{invoices},code=\"BROKER_TRANSPORT_FAILURE\"}}"
            )),
            2.0
        );
        assert_eq!(
            value("trimatch_consumer_errors_total{topic=\"\",partition=\"\",code=\"ALL_BROKERS_DOWN\"}"),
            1.0
        );
        assert_eq!(
            exposition
                .samples
                .keys()
                .filter(|series| series.starts_with("trimatch_consumer_errors_total"))
                .count(),
            2
        );
        assert_eq!(value("trimatch_dead_letters_produced_total"), 2.0);
        assert_eq!(value("trimatch_dead_letter_produce_failures_total"), 1.0);

        assert_eq!(
            value("trimatch_checkpoint_last_time_seconds"),
            1_700_000_000.5
        );
        assert_eq!(value("trimatch_checkpoint_last_as_of"), 1_699_999_999_000.0);
        assert!(value("trimatch_checkpoint_age_seconds") > 0.0);
        assert_eq!(value("trimatch_checkpoint_duration_seconds"), 0.25);
        assert_eq!(value("trimatch_checkpoint_size_bytes"), 4096.0);
        assert_eq!(value("trimatch_checkpoint_documents"), 12.0);
        assert_eq!(value("trimatch_checkpoints_written_total"), 3.0);
        assert_eq!(value("trimatch_checkpoint_failures_total"), 1.0);
        assert_eq!(value("trimatch_restore_documents"), 9.0);
        assert_eq!(value("trimatch_restore_seconds"), 1.5);
        assert_eq!(value("trimatch_restore_as_of"), 1_600_000_000_000.0);

        // Buckets are cumulative; 100 s is above the last bound, in +Inf only.
        for (bound, expected) in [
            ("0.001", 0.0),
            ("0.002", 1.0),
            ("0.2", 1.0),
            ("0.5", 2.0),
            ("30", 2.0),
            ("+Inf", 3.0),
        ] {
            assert_eq!(
                value(&format!(
                    "trimatch_freshness_seconds_bucket{{le=\"{bound}\"}}"
                )),
                expected,
                "le={bound}"
            );
        }
        assert_eq!(
            exposition
                .samples
                .keys()
                .filter(|series| series.starts_with("trimatch_freshness_seconds_bucket"))
                .count(),
            LATENCY_BOUNDS.len() + 1
        );
        assert_eq!(value("trimatch_freshness_seconds_count"), 3.0);
        assert!((value("trimatch_freshness_seconds_sum") - 100.5015).abs() < 1e-5);

        // Every method is listed, requested or not.
        for method in FLIGHT_METHODS {
            let (requests, errors) = match method {
                "do_get" => (2.0, 1.0),
                "sql" => (1.0, 0.0),
                _ => (0.0, 0.0),
            };
            let labels = format!("method=\"{method}\"");
            assert_eq!(
                value(&format!("trimatch_flight_requests_total{{{labels}}}")),
                requests
            );
            assert_eq!(
                value(&format!("trimatch_flight_request_errors_total{{{labels}}}")),
                errors
            );
            assert_eq!(
                value(&format!(
                    "trimatch_flight_request_seconds_count{{{labels}}}"
                )),
                requests
            );
            assert_eq!(
                value(&format!(
                    "trimatch_flight_request_seconds_bucket{{{labels},le=\"+Inf\"}}"
                )),
                requests
            );
        }
        let do_get = |le: &str| {
            value(&format!(
                "trimatch_flight_request_seconds_bucket{{method=\"do_get\",le=\"{le}\"}}"
            ))
        };
        assert_eq!(
            (do_get("0.002"), do_get("0.005"), do_get("0.05")),
            (0.0, 1.0, 2.0)
        );
        assert_eq!(
            value("trimatch_flight_request_seconds_bucket{method=\"sql\",le=\"30\"}"),
            0.0
        );
        assert!(
            (value("trimatch_flight_request_seconds_sum{method=\"do_get\"}") - 0.043).abs() < 1e-9
        );
    }

    #[test]
    fn a_running_job_serves_every_family() {
        let mock = MockCluster::new(1).unwrap();
        for kind in DocumentKind::ALL {
            mock.create_topic(kind.default_topic(), 1, 1).unwrap();
        }
        let mut config = PipelineConfig::new(SourceConfig::new(mock.bootstrap_servers()));
        config.workers = 1;
        let pipeline = Pipeline::start(config).unwrap();
        let handle = pipeline.handle();
        let deadline = Instant::now() + Duration::from_secs(30);
        while handle.newest_complete().is_none() {
            assert!(Instant::now() < deadline, "no complete time");
            std::thread::sleep(Duration::from_millis(20));
        }
        let metrics = Metrics::new();
        metrics.flight_request("list_flights", false, Duration::from_millis(2));
        let text = metrics.render(&handle);
        pipeline.shutdown().unwrap();

        let exposition = Exposition::parse(&text);
        assert_eq!(
            exposition.kinds(),
            families(&[&SERVING[..3], &SOURCE, &JOB, &SERVING[3..]]),
            "without --state-dir, no checkpoint families\n{text}"
        );
        assert!(exposition.value("trimatch_newest_complete_time_ms") > 0.0);
        assert_eq!(exposition.value("trimatch_subscribers"), 0.0);
        assert!(exposition.value("trimatch_uptime_seconds") > 0.0);
        for collection in OutputCollection::ALL {
            let rows = format!("trimatch_rows{{collection=\"{}\"}}", collection.name());
            assert_eq!(exposition.value(&rows), 0.0, "{rows}");
        }
        assert_eq!(
            exposition.value("trimatch_flight_requests_total{method=\"list_flights\"}"),
            1.0
        );
    }
}

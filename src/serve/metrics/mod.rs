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
use std::sync::{Arc, Mutex};
use std::time::Duration;

use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeMetric};
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::metrics::MetricType;
use prometheus_client::registry::Registry;
use trimatch_connectors::retention::TopicRetention;

use crate::pipeline::counters::LATENCY_BOUNDS;
use crate::pipeline::PipelineHandle;

mod encode;
mod job;

use encode::*;
use job::*;

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

/// What serving counts (Flight requests, Flight SQL scans), and the
/// Prometheus exposition of every metric of the job.
#[derive(Debug)]
pub struct Metrics {
    flight_requests: Arc<FlightRequests>,
    /// Rows Flight SQL scans copied out of the collections.
    sql_rows_scanned: Counter,
    /// What the broker said of the input topics' history at start.
    input_topics: Arc<Mutex<Vec<TopicRetention>>>,
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
            Some(Box::new(Rows(Arc::clone(pipeline.counters())))),
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

#[cfg(test)]
mod tests;

//! The exposition, parsed: every family and value as the counters say.

use std::collections::BTreeMap;

use rdkafka::mocking::MockCluster;
use trimatch_connectors::metrics::SourceMetrics;
use trimatch_connectors::SourceConfig;
use trimatch_dataflows::model::DocumentKind;
use trimatch_dataflows::rows::PartitionHealth;
use trimatch_dataflows::OutputCollection;

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use super::*;
use crate::pipeline::counters::PipelineCounters;
use crate::pipeline::{CheckpointMetrics, Pipeline, PipelineConfig};

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
        value(
            "trimatch_consumer_errors_total{topic=\"\",partition=\"\",code=\"ALL_BROKERS_DOWN\"}"
        ),
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
    assert!((value("trimatch_flight_request_seconds_sum{method=\"do_get\"}") - 0.043).abs() < 1e-9);
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

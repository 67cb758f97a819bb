//! Whether the input topics still hold every document's latest version:
//! `trimatch serve` asks the broker at start and says so in its metrics, its
//! `status` action and (when history is gone) a warning. On tansu with one
//! compacted input topic (as `generate --create-topics` makes them) and three
//! plain ones; on librdkafka's mock cluster, which deletes a partition's
//! oldest records beyond 5 MB, with history deleted below a low watermark.

mod support;

use std::process::{Command, Stdio};
use std::time::Duration;

use rdkafka::mocking::MockCluster;
use rdkafka::producer::{BaseProducer, BaseRecord, Producer};
use rdkafka::ClientConfig;
use support::*;
use trimatch_connectors::admin::{create_missing_input_topics, create_missing_topics};
use trimatch_dataflows::model::DocumentKind;

/// Starts `trimatch serve` against `brokers` and waits for `metric` to appear
/// with `labels` in its metrics; returns its metrics text and log.
fn serve_until(brokers: &str, metric: &str, dir: &std::path::Path) -> (String, KillOnDrop, String) {
    let metrics = free_addr();
    let log = dir.join("serve.log");
    let serve = KillOnDrop::new(
        Command::new(env!("CARGO_BIN_EXE_trimatch"))
            .args([
                "serve",
                "--brokers",
                brokers,
                "--flight-addr",
                &free_addr(),
                "--metrics-addr",
                &metrics,
            ])
            .env("TRIMATCH_LOG_FORMAT", "json")
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .unwrap(),
    );
    let mut text = String::new();
    wait_for(metric, Duration::from_secs(60), || {
        text = http_get(&metrics, "/metrics")
            .map(|(_, body)| body)
            .unwrap_or_default();
        text.lines().any(|line| line.starts_with(metric))
    });
    (text, serve, log.to_str().unwrap().to_string())
}

#[test]
fn compacted_input_topics_are_reported_and_plain_ones_with_history_are_not_flagged() {
    let broker = Tansu::start();
    let names: Vec<&str> = DocumentKind::ALL
        .iter()
        .map(|kind| kind.default_topic())
        .collect();
    let created = create_missing_input_topics(&broker.address, &names[..1], 1, &[]).unwrap();
    assert_eq!(created, vec![names[0].to_string()]);
    create_missing_topics(&broker.address, &names[1..], 1, &[]).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (text, _serve, _) = serve_until(
        &broker.address,
        "trimatch_input_history_deleted{",
        dir.path(),
    );
    let compacted = metric_samples(&text, "trimatch_input_topic_compacted");
    let deleted = metric_samples(&text, "trimatch_input_history_deleted");
    assert_eq!(compacted.len(), names.len(), "{text}");
    for name in &names {
        let label = format!("topic=\"{name}\"");
        let expected = if *name == names[0] { 1.0 } else { 0.0 };
        assert_eq!(compacted[&label], expected, "{name}");
        assert_eq!(deleted[&label], 0.0, "{name}: nothing was deleted");
    }
}

#[test]
fn deleted_history_on_a_topic_not_known_to_be_compacted_is_flagged_and_warned_about() {
    let mock = MockCluster::new(1).unwrap();
    for kind in DocumentKind::ALL {
        mock.create_topic(kind.default_topic(), 1, 1).unwrap();
    }
    // Past the mock's 5 MB per partition, its oldest records are deleted.
    let producer: BaseProducer = ClientConfig::new()
        .set("bootstrap.servers", mock.bootstrap_servers())
        .create()
        .unwrap();
    let value = vec![b'x'; 4096];
    for index in 0..2_000 {
        let key = format!("{{\"tenant_id\": \"t\", \"invoice_id\": \"INV-{index}\"}}");
        loop {
            match producer.send(BaseRecord::to("invoices").key(&key).payload(&value)) {
                Ok(()) => break,
                Err(_) => producer.poll(Duration::from_millis(10)),
            };
        }
    }
    producer.flush(Duration::from_secs(30)).unwrap();
    let dir = tempfile::tempdir().unwrap();
    let (text, _serve, log) = serve_until(
        &mock.bootstrap_servers(),
        "trimatch_input_history_deleted{",
        dir.path(),
    );
    let deleted = metric_samples(&text, "trimatch_input_history_deleted");
    assert_eq!(deleted["topic=\"invoices\""], 1.0, "{text}");
    assert_eq!(
        deleted["topic=\"purchase_orders\""], 0.0,
        "an empty topic lost nothing"
    );
    assert!(
        metric_samples(&text, "trimatch_input_topic_compacted").is_empty(),
        "the mock does not describe configs: the policy stays unknown"
    );
    let log = std::fs::read_to_string(log).unwrap();
    assert!(
        log.lines().any(|line| line.contains("\"WARN\"")
            && line.contains("records below offset")
            && line.contains("invoices")),
        "a warning names the topic:\n{log}"
    );
}
